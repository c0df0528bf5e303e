"""Shared fixtures: tiny synthetic stacks and configs."""

import pytest

from pipeline.io import write_volume
from segmentation import make_composite


@pytest.fixture
def label_stack(tmp_path):
    """A 20^3 synthetic composite written as a label TIFF with voxel size 0.5 um."""
    phases, _ = make_composite((20, 20, 20), active_fraction=0.45, void_fraction=0.08, radius=4, seed=11)
    path = tmp_path / "stack.tif"
    write_volume(path, phases, (0.5, 0.5, 0.5))
    return path, phases


@pytest.fixture
def config_file(tmp_path, label_stack):
    path, _ = label_stack
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""
[input]
path = "{path.name}"
[segmentation]
method = "labels"
phase_map = {{ 0 = "void", 1 = "electrolyte", 2 = "active" }}
min_particle_voxels = 5
[cycling]
soc_start = 1.0
soc_end = 0.4
steps = 2
[output]
dir = "out"
""")
    return cfg
