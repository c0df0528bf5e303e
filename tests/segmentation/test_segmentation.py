"""Segmentation on synthetic volumes with known particle counts, fractions and areas."""

import numpy as np
import pytest

from segmentation import (
    Phase,
    classify_multiotsu,
    classify_thresholds,
    denoise,
    label_particles,
    make_composite,
    map_phases,
    particle_geometry,
    remove_small_particles,
)
from tomomech.errors import InputError, SegmentationError


def balls(shape, centres, radii):
    z, y, x = np.indices(shape) + 0.5
    ph = np.full(shape, Phase.ELECTROLYTE, np.uint8)
    for c, r in zip(centres, radii):
        ph[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < r**2] = Phase.ACTIVE
    return ph


def test_separate_spheres_counted_exactly():
    ph = balls((40, 40, 40), [(10, 10, 10), (30, 10, 25), (20, 30, 20)], [5, 6, 4])
    lab = label_particles(ph, split_touching=True)
    assert lab.max() == 3
    assert set(np.unique(lab[ph == Phase.ACTIVE])) == {1, 2, 3}


def test_touching_spheres_split_by_watershed():
    ph = balls((30, 30, 44), [(15, 15, 14), (15, 15, 28)], [8, 8])  # overlap by 2 voxels
    assert label_particles(ph, split_touching=False).max() == 1
    lab = label_particles(ph, split_touching=True, split_depth=1.0)
    assert lab.max() == 2
    # the split runs near the neck plane x = 21
    left = lab[15, 15, :19]
    assert len(set(left[left > 0])) == 1
    sizes = np.bincount(lab.ravel())[1:]
    assert abs(sizes[0] - sizes[1]) < 0.05 * sizes.sum()


def _two_touching_spheres():
    """Radii 10 and 8 voxels, centres 17 voxels apart: they overlap by one voxel."""
    return balls((32, 32, 44), [(16, 16, 12), (16, 16, 29)], [10, 8])


def test_snow_splits_touching_spheres_each_within_5_percent_of_its_volume():
    pytest.importorskip("porespy")
    ph = _two_touching_spheres()
    lab = label_particles(ph, spacing=(0.4, 0.4, 0.4), split_touching=True, method="snow")
    assert lab.max() == 2
    sizes = np.bincount(lab.ravel())[1:]
    # label 1 is the first in raster order: the big sphere reaches the lowest z
    for size, r in zip(sizes, (10, 8)):
        assert abs(size - 4 / 3 * np.pi * r**3) < 0.05 * (4 / 3 * np.pi * r**3)


def test_snow_labels_only_the_active_phase_numbered_consecutively():
    pytest.importorskip("porespy")
    ph = balls((40, 40, 40), [(10, 10, 10), (30, 10, 25), (20, 30, 20), (20, 30, 31)], [5, 6, 6, 7])
    ph[ph == Phase.ELECTROLYTE] = np.where(np.indices(ph.shape)[0] < 20, Phase.VOID, Phase.ELECTROLYTE)[
        ph == Phase.ELECTROLYTE]
    lab = label_particles(ph, split_touching=True, method="snow")
    active = ph == Phase.ACTIVE
    assert (lab[~active] == 0).all() and (lab[active] > 0).all()
    n = lab.max()
    assert n >= 4 and set(np.unique(lab)) == set(range(n + 1))
    # numbered in raster order of the first voxel
    _, first = np.unique(lab.ravel(), return_index=True)
    assert (np.diff(first[1:]) > 0).all()


def test_snow_leaves_numpy_error_state_and_root_logging_alone():
    import logging

    pytest.importorskip("porespy")
    err, root = np.geterr(), logging.getLogger()
    handlers, level = list(root.handlers), root.level
    label_particles(_two_touching_spheres(), split_touching=True, method="snow")
    assert np.geterr() == err
    assert root.handlers == handlers and root.level == level


def test_unknown_split_method_is_refused():
    with pytest.raises(InputError, match="'watershed' or 'snow'"):
        label_particles(_two_touching_spheres(), method="bogus")


def test_multiotsu_recovers_phase_fractions():
    phases, _ = make_composite((40, 40, 40), active_fraction=0.45, void_fraction=0.15, seed=2)
    rng = np.random.default_rng(0)
    grey = np.array([1000.0, 20000.0, 45000.0])[phases] + rng.normal(0, 2500, phases.shape)
    classes, thr = classify_multiotsu(grey, 3)
    got = map_phases(classes, {0: "void", 1: "electrolyte", 2: "active"})
    frac = np.bincount(got.ravel(), minlength=3) / got.size
    assert np.allclose(frac, [0.15, 0.40, 0.45], atol=0.01)
    assert np.mean(got == phases) > 0.98


def test_thresholds_and_phase_map_errors():
    img = np.arange(27, dtype=float).reshape(3, 3, 3)
    cls = classify_thresholds(img, [5, 20])
    assert cls.min() == 0 and cls.max() == 2 and (cls == 1).sum() == 15
    with pytest.raises(InputError, match="increasing"):
        classify_thresholds(img, [20, 5])
    with pytest.raises(InputError, match="not in segmentation.phase_map"):
        map_phases(cls, {0: "void", 1: "active"})
    with pytest.raises(SegmentationError, match="active"):
        map_phases(cls, {0: "void", 1: "electrolyte", 2: "void"})


def test_remove_small_particles_gives_voxels_to_neighbour_phase():
    ph = balls((20, 20, 20), [(10, 10, 10)], [5])
    ph[1, 1, 1] = Phase.ACTIVE  # speck in electrolyte
    ph[15:18, 15:18, 15:18] = Phase.VOID
    ph[16, 16, 16] = Phase.ACTIVE  # speck in a pore
    out = remove_small_particles(ph, 5)
    assert out[1, 1, 1] == Phase.ELECTROLYTE and out[16, 16, 16] == Phase.VOID
    assert (out == Phase.ACTIVE).sum() == (ph == Phase.ACTIVE).sum() - 2


def test_geometry_of_a_box_particle_exact():
    ph = np.full((10, 10, 10), Phase.ELECTROLYTE, np.uint8)
    ph[2:5, 3:7, 4:9] = Phase.ACTIVE  # 3 x 4 x 5 voxels
    ph[2:5, 3:7, 9] = Phase.VOID  # void on its +x face
    lab = label_particles(ph, split_touching=False)
    sp = (0.5, 1.0, 2.0)
    g = particle_geometry(ph, lab, sp)
    assert g["volume_um3"][0] == pytest.approx(60 * 1.0)
    # faces: z faces 2 x (4*5) of area 1*2, y faces 2 x (3*5) of 0.5*2, x faces 2 x (3*4) of 0.5*1
    assert g["surface_area_um2"][0] == pytest.approx(2 * 20 * 2 + 2 * 15 * 1 + 2 * 12 * 0.5)
    assert g["void_contact_area_um2"][0] == pytest.approx(12 * 0.5)
    assert g["se_contact_area_um2"][0] == pytest.approx(80 + 30 + 12 * 0.5)
    assert g["centroid_x_um"][0] == pytest.approx(6.5 * 2.0)
    assert not g["touches_boundary"][0] and not g["isolated"][0]
    assert g["eq_diameter_um"][0] == pytest.approx((6 * 60 / np.pi) ** (1 / 3))


def test_geometry_with_a_field_of_view_leaves_the_outside_out():
    """The void column on the particle's +x face made the outside of a field of view: its faces leave the
    surface and void contact areas, the particle touches the boundary, and the shell holds no outside voxel."""
    ph = np.full((10, 10, 10), Phase.ELECTROLYTE, np.uint8)
    ph[2:5, 3:7, 4:9] = Phase.ACTIVE
    ph[:, :, 9] = Phase.VOID
    lab = label_particles(ph, split_touching=False)
    sp = (0.5, 1.0, 2.0)
    full = particle_geometry(ph, lab, sp, shell_voxels=5)
    same = particle_geometry(ph, lab, sp, shell_voxels=5, region=np.ones(ph.shape, bool))
    assert all(np.array_equal(full[k], same[k], equal_nan=True) for k in full)
    region = np.ones(ph.shape, bool)
    region[:, :, 9] = False
    g = particle_geometry(ph, lab, sp, shell_voxels=5, region=region)
    assert g["void_contact_area_um2"][0] == 0 and full["void_contact_area_um2"][0] == pytest.approx(12 * 0.5)
    assert g["surface_area_um2"][0] == pytest.approx(full["surface_area_um2"][0] - 12 * 0.5)
    assert g["se_contact_area_um2"][0] == full["se_contact_area_um2"][0]
    assert g["touches_boundary"][0] and not full["touches_boundary"][0]
    assert g["local_void_fraction"][0] == 0 < full["local_void_fraction"][0]


def test_isolated_and_local_void_fraction():
    ph = np.full((12, 12, 12), Phase.VOID, np.uint8)
    ph[4:8, 4:8, 4:8] = Phase.ACTIVE  # only void around: isolated, local void fraction 1
    g = particle_geometry(ph, label_particles(ph, split_touching=False), (1, 1, 1))
    assert g["isolated"][0] and g["local_void_fraction"][0] == 1.0


def test_synthetic_generator_exact_fractions_and_seeded():
    a, pa = make_composite((30, 32, 34), active_fraction=0.5, void_fraction=0.1, seed=7)
    b, pb = make_composite((30, 32, 34), active_fraction=0.5, void_fraction=0.1, seed=7)
    assert np.array_equal(a, b) and np.array_equal(pa, pb)
    frac = np.bincount(a.ravel(), minlength=3) / a.size
    assert np.allclose(frac, [0.1, 0.4, 0.5], atol=1 / a.size)
    assert np.array_equal(pa > 0, a == Phase.ACTIVE)
    c, _ = make_composite((30, 32, 34), active_fraction=0.5, void_fraction=0.1, seed=8)
    assert not np.array_equal(a, c)
    with pytest.raises(InputError):
        make_composite((8, 8, 8), active_fraction=0.7, void_fraction=0.4)


def test_real_ct_multiotsu_agrees_with_expert_scribbles():
    """nmc1cal (real CT): multi-Otsu after a median filter puts the expert's bright scribbles in the
    active phase and the dark ones outside it (slices 0, 33, 74 are labelled)."""
    from pathlib import Path

    import tifffile

    root = Path(__file__).resolve().parents[2] / "samples" / "nmc1cal"
    grey = tifffile.imread(root / "nmc1cal.tif")
    scribbles = tifffile.imread(root / "nmc1cal_labels.tiff")
    classes, _ = classify_multiotsu(denoise(grey, "median", 1), 3)
    phases = map_phases(classes, {0: "void", 1: "electrolyte", 2: "active"})
    bright = np.mean(phases[scribbles == 1] == Phase.ACTIVE)
    dark = np.mean(phases[scribbles == 2] != Phase.ACTIVE)
    print(f"bright scribbles in active: {bright:.3f}, dark scribbles outside: {dark:.3f}")
    assert bright > 0.95 and dark > 0.97
