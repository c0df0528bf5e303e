"""A stack with a cylindrical field of view: the dead outside is found, masked, and kept out of the answers."""

import json

import numpy as np
from scipy import ndimage as ndi

from pipeline import io
from pipeline.cli import main
from pipeline.config import SegmentationConfig
from pipeline.run import segment_stage
from segmentation import field_of_view, make_composite


def cylinder_stack(dead_value=0.0, n=28, seed=4):
    """A blurred, noisy grey composite (void 0.2, electrolyte 0.5, active 0.8) inside a cylinder of radius
    n/2 about the z axis; the columns outside hold ``dead_value`` in every slice."""
    ph, _ = make_composite((16, n, n), active_fraction=0.45, void_fraction=0.08, radius=4, seed=seed)
    grey = ndi.gaussian_filter(np.array([0.2, 0.5, 0.8])[ph], 0.7)
    grey += np.random.default_rng(seed).normal(0, 0.03, ph.shape)
    y, x = np.mgrid[:n, :n] + 0.5
    inside = (y - n / 2) ** 2 + (x - n / 2) ** 2 <= (n / 2) ** 2
    grey[:, ~inside] = dead_value
    return grey.astype(np.float32), inside


def test_field_of_view_is_found_exactly_and_only_where_there_is_one():
    grey, inside = cylinder_stack()
    assert np.array_equal(field_of_view(grey), inside)
    assert field_of_view(cylinder_stack(dead_value=1.0)[0]) is not None  # any constant value
    full, _ = cylinder_stack()
    full[:, ~inside] = np.random.default_rng(0).normal(0.5, 0.1, (full.shape[0], int((~inside).sum())))
    assert field_of_view(full) is None  # a real image has no constant columns
    corner = full.copy()
    corner[:, :3, :3] = 0.0  # a dead patch that is not all around
    assert field_of_view(corner) is None


def test_the_outside_is_void_and_does_not_move_the_thresholds(caplog):
    """The segmentation inside is the same whatever the dead value (dark as void, or bright as active)."""
    sc = SegmentationConfig(min_particle_voxels=5)
    caplog.set_level("INFO")
    dark, inside = cylinder_stack(0.0)
    bright, _ = cylinder_stack(1.0)
    ph_dark, pa_dark = segment_stage(dark, sc, (0.5,) * 3)
    ph_bright, pa_bright = segment_stage(bright, sc, (0.5,) * 3)
    assert (ph_dark[:, ~inside] == 0).all() and (pa_dark[:, ~inside] == 0).all()
    assert np.array_equal(ph_dark, ph_bright) and np.array_equal(pa_dark, pa_bright)
    assert np.mean(ph_dark[:, inside] == 2) > 0.3  # the particles are found inside
    assert "outside the reconstructed cylinder" in caplog.text


def test_run_reports_phase_fractions_inside_the_field_of_view(tmp_path):
    grey, inside = cylinder_stack()
    io.write_volume(tmp_path / "cyl.tif", grey, (0.5, 0.5, 0.5))
    assert main(["-q", "run", str(tmp_path / "cyl.tif"), "-o", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["field_of_view"]["inside_fraction"] == float(inside.mean())
    phases = io.read_volume(tmp_path / "out/phases.tif").data
    frac = summary["steps"][-1]["phase_fractions"]
    # the void share counts the voxels inside the cylinder (solid the mesh leaves out as floating is void
    # there too), not the 21 % of the box outside it
    assert abs(frac["void"] - np.mean(phases[:, inside] == 0)) < 0.01
    assert np.mean(phases == 0) - frac["void"] > 0.15
    assert abs(sum(frac.values()) - 1.0) < 1e-12
