"""Segmentation uncertainty: draws, particle matching, and intervals that cover the true segmentation."""

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from pipeline import io
from pipeline.cli import main
from pipeline.config import config_from_dict
from pipeline.uncertainty import draws, match_particles, valley_ranges
from segmentation import make_composite

INTENSITY = np.array([0.2, 0.5, 0.8])  # void, electrolyte, active
TRUE_THRESHOLDS = (0.35, 0.65)


def grey_composite(tmp_path):
    """A 24^3 composite (true labels) imaged with blur (0.7 voxel) and noise (0.03)."""
    ph, _ = make_composite((24, 24, 24), active_fraction=0.45, void_fraction=0.08, radius=4, seed=11)
    grey = ndi.gaussian_filter(INTENSITY[ph], 0.7) + np.random.default_rng(0).normal(0, 0.03, ph.shape)
    io.write_volume(tmp_path / "grey.tif", grey.astype(np.float32), (0.5, 0.5, 0.5))
    io.write_volume(tmp_path / "truth.tif", ph, (0.5, 0.5, 0.5))
    return grey


def test_match_particles_by_overlap():
    a = np.zeros((1, 4, 12), np.int32)
    a[0, :, 0:3], a[0, :, 4:7], a[0, :, 8:12] = 1, 2, 3
    b = np.zeros_like(a)
    b[0, :, 0:3] = 5  # particle 1, relabelled
    b[0, :, 4:7] = np.array([7] * 5 + [8] * 4 + [9] * 3).reshape(4, 3)  # particle 2 in three parts: IoU 5/12 at most
    b[0, :, 8:11] = 2  # particle 3 eroded by a quarter: IoU 0.75
    assert match_particles(a, b).tolist() == [5, 0, 2]
    assert match_particles(a, b, min_iou=0.4).tolist() == [5, 7, 2]  # the largest overlap wins


def test_valley_ranges_reach_the_half_maximum_of_the_peaks():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0.2, 0.05, 20000), rng.normal(0.8, 0.05, 20000)])
    (lo, hi), = valley_ranges(x, [0.5])
    # half-way from the (empty) valley floor to the peaks: the half-maximum points mu +- 1.1774 sd, to a bin
    # and the 2-bin smoothing
    assert abs(lo - (0.2 + 1.1774 * 0.05)) < 0.01 and abs(hi - (0.8 - 1.1774 * 0.05)) < 0.01


def test_the_same_seed_gives_the_same_draws(tmp_path):
    grey = grey_composite(tmp_path)
    cfg = config_from_dict({"input": {"path": str(tmp_path / "grey.tif")},
                            "uncertainty": {"samples": 5, "seed": 3}})
    a, b = draws(cfg, grey), draws(cfg, grey)
    assert a == b and len(a) == 5
    other = draws(config_from_dict({"input": {"path": str(tmp_path / "grey.tif")},
                                    "uncertainty": {"samples": 5, "seed": 4}}), grey)
    assert other != a
    for d in a:
        assert d["segmentation.method"] == "thresholds" and d["segmentation.thresholds"] == sorted(
            d["segmentation.thresholds"])
        assert 0.5 <= d["segmentation.split_depth_voxels"] <= 1.5
    snow = draws(config_from_dict({"input": {"path": str(tmp_path / "grey.tif")}, "segmentation": {
        "split_method": "snow"}, "uncertainty": {"samples": 2, "seed": 3}}), grey)
    assert all("segmentation.split_depth_voxels" not in d for d in snow)  # SNOW has no depth to perturb


@pytest.mark.slow
def test_interval_covers_the_true_segmentation(tmp_path):
    """Multi-Otsu on a blurred, noisy image with 8 perturbed segmentations whose threshold ranges
    straddle the true class boundaries: the 90 % interval of the active-phase mean stress covers the
    value of the run on the true labels."""
    grey_composite(tmp_path)
    common = "[cycling]\nsoc_start = 1.0\nsoc_end = 0.4\n[input]\nvoxel_size_um = 0.5\n"
    (tmp_path / "truth.toml").write_text(
        common + 'path = "truth.tif"\n[segmentation]\nmethod = "labels"\n'
        'phase_map = { 0 = "void", 1 = "electrolyte", 2 = "active" }\n[output]\ndir = "truth"\n')
    (tmp_path / "grey.toml").write_text(common + 'path = "grey.tif"\n[uncertainty]\nsamples = 8\nseed = 1\n'
                                        "workers = 2\n[output]\ndir = \"grey\"\n")
    assert main(["-q", "run", str(tmp_path / "truth.toml")]) == 0
    assert main(["-q", "run", str(tmp_path / "grey.toml")]) == 0
    truth = json.loads((tmp_path / "truth/summary.json").read_text())["steps"][-1]
    true_stress = truth["phases"]["active"]["von_mises_mean_MPa"]
    u = json.loads((tmp_path / "grey/uncertainty/summary.json").read_text())
    assert u["done"] == 8
    ths = np.array([d["segmentation.thresholds"] for d in u["draws"]])
    for k, t in enumerate(TRUE_THRESHOLDS):  # the perturbations straddle the truth
        assert ths[:, k].min() < t < ths[:, k].max()
    e = u["electrode"]["active_von_mises_mean_MPa"]
    assert e["p05"] <= true_stress <= e["p95"], (e, true_stress)
    assert 0.5 <= u["matched_share_mean"] <= 1.0
    table = io.read_csv(tmp_path / "grey/uncertainty/particles.csv")
    assert {"von_mises_mean_MPa_median", "von_mises_mean_MPa_p05", "matched_share"} <= set(table)
    assert "Segmentation uncertainty" in (tmp_path / "grey/report.html").read_text()
    # a rerun (the run itself forced) finds every perturbed case done: the same draws and intervals
    assert main(["-q", "run", str(tmp_path / "grey.toml"), "--force"]) == 0
    again = json.loads((tmp_path / "grey/uncertainty/summary.json").read_text())
    assert again["draws"] == u["draws"]
    for k, v in u["electrode"].items():
        assert [again["electrode"][k][q] for q in ("median", "p05", "p95")] == [v[q] for q in ("median", "p05", "p95")]
