"""Smooth upsampling of label images for conforming meshes (solvers/mesh/upsample.py)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from solvers.mesh.upsample import smooth_upsample
from tomomech.errors import ConfigError


def sphere(R=4.0, n=16):
    z, y, x = np.indices((n, n, n)) + 0.5
    ph = np.where((z - n / 2) ** 2 + (y - n / 2) ** 2 + (x - n / 2) ** 2 < R**2, 2, 1).astype(np.uint8)
    return ph, (ph == 2).astype(np.int32)


def surface_radii(active, f, n):
    """Distance of the centres of the active voxels on the surface from the box centre, voxels."""
    edge = active & ~ndi.binary_erosion(active)
    c = (np.argwhere(edge) + 0.5) / f
    return np.linalg.norm(c - n / 2, axis=1)


def test_smooth_sphere_keeps_its_volume_and_loses_the_staircase():
    ph, pa = sphere()
    fine, fine_pa = smooth_upsample(ph, pa, 4, 1.0)
    assert fine.shape == (64, 64, 64)
    assert (fine == 2).sum() == 4**3 * (ph == 2).sum() and (fine == 1).sum() == 4**3 * (ph == 1).sum()
    assert np.array_equal(fine_pa > 0, fine == 2) and set(np.unique(fine_pa)) == {0, 1}
    r0, r1 = surface_radii(ph == 2, 1, 16), surface_radii(fine == 2, 4, 16)
    w0, w1 = (np.subtract(*np.percentile(r, [95, 5])) for r in (r0, r1))
    print(f"surface radius p5-p95 width: voxels {w0:.3f}, upsampled {w1:.3f}")
    assert w1 < 0.5 * w0


def test_three_phases_and_particle_labels():
    from segmentation import make_composite

    ph, pa = make_composite((14, 14, 14), active_fraction=0.4, void_fraction=0.05, radius=3, seed=4)
    fine, fine_pa = smooth_upsample(ph, pa, 2, 0.7)
    for code in (0, 1, 2):
        assert (fine == code).sum() == 8 * (ph == code).sum()
    assert np.array_equal(fine_pa > 0, fine == 2)
    assert set(np.unique(fine_pa[fine_pa > 0])) == set(np.unique(pa[pa > 0]))  # no particle lost
    # where the coarse voxel is active, the fine voxel mostly keeps its particle
    coarse = np.repeat(np.repeat(np.repeat(pa, 2, 0), 2, 1), 2, 2)
    both = (coarse > 0) & (fine_pa > 0)
    assert np.mean(coarse[both] == fine_pa[both]) > 0.95
    with pytest.raises(ConfigError, match="integer >= 2"):
        smooth_upsample(ph, pa, 1)
