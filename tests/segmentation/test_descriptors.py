"""Microstructure descriptors against closed forms, and porespy kept from changing the process."""

import logging

import numpy as np
import pytest

from pipeline.config import DescribeConfig
from pipeline.describe import PORESPY_DESCRIPTORS, describe_stage
from segmentation import descriptors as D
from segmentation.geometry import ionic_paths
from segmentation.phases import Phase
from tomomech.errors import InputError, MissingExtraError


def ball(n, r, centre=None):
    c = (n - 1) / 2 if centre is None else centre
    z, y, x = np.indices((n, n, n))
    return (z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2 <= r * r


def test_phase_fractions_and_representative_volume_converge():
    """Fractions sum to 1; the tile spread shrinks with the edge and the whole cube is the image."""
    rng = np.random.default_rng(3)
    ph = rng.choice(np.array([0, 1, 2], np.uint8), size=(64, 64, 64), p=[0.1, 0.4, 0.5])
    fr = D.phase_fractions(ph)
    assert sum(fr.values()) == pytest.approx(1.0)
    rev = D.representative_volume(ph)
    assert rev["size_voxels"] == [4, 8, 16, 32, 64] and rev["tiles"] == [4096, 512, 64, 8, 1]
    for name in ("void", "electrolyte", "active"):
        std = np.asarray(rev[f"{name}_std"])
        assert np.all(np.diff(std) < 0)  # iid voxels: the spread falls as 1 / edge^1.5
        assert rev[f"{name}_mean"][-1] == pytest.approx(fr[name], abs=1e-15) and std[-1] == 0
        # whole tiles cover the cube at every edge here, so every mean is the image's fraction
        assert np.allclose(rev[f"{name}_mean"], fr[name], atol=1e-12)


def test_interface_area_of_a_sphere():
    """Marching cubes gives 4 pi R^2 within 5 % (voxel faces: about 1.5x); SE and void split by side."""
    n, r = 48, 12
    s = ball(n, r)
    ph = np.full((n, n, n), Phase.ELECTROLYTE, np.uint8)
    ph[s] = Phase.ACTIVE
    a = D.interface_areas(ph, (0.5, 0.5, 0.5))
    exact = 4 * np.pi * (r * 0.5) ** 2 / (n * 0.5) ** 3
    assert a["ap_se_area_per_volume_per_um"] == pytest.approx(exact, rel=0.05)
    assert a["ap_void_area_per_volume_per_um"] == 0 and a["ap_se_area_fraction"] == 1
    assert 1.4 < a["ap_se_area_per_volume_per_um_faces"] / exact < 1.6
    half = ph.copy()
    half[:, :, : n // 2][~s[:, :, : n // 2]] = Phase.VOID
    h = D.interface_areas(half, (0.5, 0.5, 0.5))
    assert h["ap_se_area_fraction"] == pytest.approx(0.5, abs=0.01)
    assert h["ap_se_area_per_volume_per_um"] + h["ap_void_area_per_volume_per_um"] == pytest.approx(
        a["ap_se_area_per_volume_per_um"], rel=1e-12)


def test_ionic_paths():
    """A particle on electrolyte that reaches the separator (z top) has a path; behind void it has none."""
    ph = np.full((12, 10, 10), Phase.VOID, np.uint8)
    lab = np.zeros(ph.shape, np.int32)
    ph[:, 0:3, 0:3] = Phase.ELECTROLYTE  # a column from bottom to the separator
    ph[2:5, 3:5, 0:3] = Phase.ACTIVE  # particle 1 beside the column
    lab[2:5, 3:5, 0:3] = 1
    ph[1:4, 6:9, 6:9] = Phase.ELECTROLYTE  # an electrolyte pocket that does not reach the top
    ph[2:3, 7:8, 7:8] = Phase.ACTIVE  # particle 2 inside it
    lab[2:3, 7:8, 7:8] = 2
    frac, path = ionic_paths(ph, lab)
    se = ph == Phase.ELECTROLYTE
    assert frac == pytest.approx(12 * 9 / se.sum())  # the column; the pocket (26 voxels) is cut off
    assert path.tolist() == [True, False]


@pytest.mark.parametrize("r", [6, 9])
def test_local_thickness_of_spheres(r):
    """The local thickness of a ball is its diameter within one voxel (here 2 voxels of diameter)."""
    pytest.importorskip("porespy")
    lt = D.local_thickness(ball(2 * r + 6, r), 1.0)
    assert abs(lt["d50_um"] - 2 * r) <= 2.0
    assert lt["d90_um"] <= 2 * r + 1


def test_chords_and_two_point_correlation_of_a_sphere():
    """Mean chord of a ball along an axis, 4R/3, within 2 %; S2(0) is the volume fraction."""
    pytest.importorskip("porespy")
    s = ball(48, 12)
    ch = D.chord_lengths(s, 0, 0.5)
    assert ch["mean_um"] == pytest.approx(4 * 12 / 3 * 0.5, rel=0.02)
    assert ch["count"] == np.count_nonzero(s.any(axis=0))
    rng = np.random.default_rng(0)
    im = rng.random((40, 40, 40)) < 0.3
    t = D.two_point_correlation(im, 1.0, bins=20)
    assert t["probability"][0] == pytest.approx(im.mean(), rel=1e-9)
    assert np.mean(t["probability"][5:]) == pytest.approx(im.mean() ** 2, rel=0.03)


def test_anisotropic_voxels_resampled_with_volumes_kept():
    """porespy needs cubic voxels: nearest-neighbour resampling keeps every phase's volume within 1 %."""
    rng = np.random.default_rng(1)
    ph = np.repeat(np.repeat(rng.integers(0, 3, (10, 14, 12), dtype=np.uint8), 3, axis=1), 3, axis=2)
    sp = (0.3, 0.2, 0.2)
    iso, h = D.isotropic(ph, sp)
    assert h == 0.2 and iso.shape == (15, 42, 36)
    for code in range(3):
        assert np.count_nonzero(iso == code) * h**3 == pytest.approx(np.count_nonzero(ph == code) * 0.3 * 0.04,
                                                                      rel=0.01)
    same, h1 = D.isotropic(ph, (0.2, 0.2, 0.2))
    assert same is ph and h1 == 0.2


def composite():
    from segmentation import label_particles, make_composite

    ph, _ = make_composite((24, 24, 24), active_fraction=0.45, void_fraction=0.08, radius=4, seed=11)
    return ph, label_particles(ph)


def test_describe_leaves_numpy_and_logging_as_they_were():
    """porespy's import sets np.seterr and the root logger: a describe run must undo both."""
    pytest.importorskip("porespy")
    root = logging.getLogger()
    before = (np.geterr(), list(root.handlers), root.level)
    ms = describe_stage(*composite(), (0.5, 0.5, 0.5), DescribeConfig())
    assert (np.geterr(), list(root.handlers), root.level) == before
    assert ms["needs_porespy"] == [] and "active_local_thickness_mean_um" in ms["scalars"]


def test_describe_without_porespy(monkeypatch):
    """Without porespy, describe writes what the project computes itself and names what needs the extra."""
    import segmentation.porespy_compat as pc

    monkeypatch.setattr(pc, "available", lambda: False)
    ms = describe_stage(*composite(), (0.5, 0.5, 0.5), DescribeConfig(tortuosity_axes=["z"]))
    assert ms["needs_porespy"] == list(PORESPY_DESCRIPTORS)
    s = ms["scalars"]
    assert {"electrolyte_tortuosity_z", "ap_se_area_per_volume_per_um", "active_fraction"} <= set(s)
    assert not any("local_thickness" in k or "chord" in k for k in s)
    with pytest.raises(MissingExtraError, match=r"tomomech\[porespy\]"):
        with pc.porespy():
            pass


def test_bad_phase_image():
    with pytest.raises(InputError, match="phase codes"):
        D.check_phases(np.full((4, 4, 4), 7, np.uint8))
    with pytest.raises(InputError, match="3-D integer"):
        D.check_phases(np.zeros((4, 4)))
