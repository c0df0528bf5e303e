"""Helpers shared by tests (fixtures live in conftest.py)."""

LABELS_INPUT = """
[input]
path = "stack.tif"
[segmentation]
method = "labels"
phase_map = { 0 = "void", 1 = "electrolyte", 2 = "active" }
min_particle_voxels = 5
"""


def label_run_config(sections: str) -> str:
    """A run config reading the label stack ``stack.tif`` beside it, followed by ``sections`` (TOML)."""
    return LABELS_INPUT + sections
