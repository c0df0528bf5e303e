"""Effective transport of a voxel phase: exact layered and channel images, conservation, porespy."""

from pathlib import Path

import numpy as np
import pytest

from solvers.physics.tortuosity import percolating, transport
from tomomech.errors import InputError

MATBOX = Path(__file__).resolve().parents[2] / "samples" / "matbox_nmc" / "nmc-1-cal_generatedCBD_bridge.tif"


def layers(n=12, k=(1.0, 0.25, 0.5)):
    """Conductivity layers normal to z: k[i % len(k)] in z-slice i."""
    kz = np.asarray(k)[np.arange(n) % len(k)]
    return np.broadcast_to(kz[:, None, None], (n, 6, 7)).copy(), kz


def test_series_layers_exact():
    """Layers across the current: kappa_eff is the harmonic mean (1e-6, here 1e-9)."""
    field, kz = layers()
    r = transport(field, "z", rtol=1e-12)
    assert r.conductivity_ratio == pytest.approx(1.0 / np.mean(1.0 / kz), rel=1e-9)
    assert r.flux_mismatch < 1e-9


@pytest.mark.parametrize("axis", ["y", "x"])
def test_parallel_layers_exact(axis):
    """Layers along the current: kappa_eff is the arithmetic mean."""
    field, kz = layers()
    r = transport(field, axis, spacing=(0.5, 1.0, 2.0), rtol=1e-12)
    assert r.conductivity_ratio == pytest.approx(np.mean(kz), rel=1e-9)


def test_binary_slabs_and_channels():
    """Binary slabs and straight channels along the axis: ratio = eps, tau = 1; across: no path."""
    im = np.zeros((10, 9, 12), bool)
    im[:, :, ::3] = True  # slabs normal to x
    r = transport(im, "z", spacing=(0.3, 0.4, 0.5), rtol=1e-12)
    assert r.conductivity_ratio == pytest.approx(im.mean(), rel=1e-9)
    assert r.tortuosity == pytest.approx(1.0, rel=1e-9)
    assert r.percolating_fraction == pytest.approx(im.mean())
    across = transport(im, "x")
    assert across.conductivity_ratio == 0 and np.isinf(across.tortuosity) and across.unknowns == 0
    ch = np.zeros((16, 10, 10), bool)
    ch[:, 2:5, 2:5] = True
    ch[:, 7, 6:9] = True
    r = transport(ch, "z", rtol=1e-12)
    assert r.conductivity_ratio == pytest.approx(ch.mean(), rel=1e-9)


def test_dead_ends_and_islands():
    """A dead end carries no current but counts in eps_p; a floating island counts in neither."""
    im = np.zeros((12, 8, 8), bool)
    im[:, 3, 3] = True  # one straight channel, 12 voxels
    im[4, 3, 4:7] = True  # a dead end hanging on it, 3 voxels
    im[2:4, 6, 6] = True  # an island, 2 voxels
    r = transport(im, "z", rtol=1e-12)
    assert r.percolating_fraction == pytest.approx(15 / im.size)
    assert r.volume_fraction == pytest.approx(17 / im.size)
    assert r.conductivity_ratio == pytest.approx(1 / 64, rel=1e-9)  # one voxel of 64 in the cross-section
    assert r.tortuosity == pytest.approx(15 / 12, rel=1e-9)
    assert percolating(im, 0).sum() == 15


def test_bad_input():
    with pytest.raises(InputError, match="boolean phase mask"):
        transport(np.zeros((4, 4, 4), np.int32))
    with pytest.raises(InputError, match="at least 2 voxels"):
        transport(np.ones((1, 4, 4), bool), "z")
    with pytest.raises(InputError, match="finite"):
        transport(-np.ones((4, 4, 4)), "z")


def matbox_electrolyte(n=48):
    import tifffile

    a = tifffile.imread(MATBOX)
    c = [s // 2 - n // 2 for s in a.shape]
    return a[c[0]:c[0] + n, c[1]:c[1] + n, c[2]:c[2] + n] == 0  # pore, read as electrolyte


@pytest.mark.parametrize("axis", [0, 2])
def test_matbox_against_porespy(axis):
    """The MATBOX electrolyte's tortuosity within 2 % of porespy's ``tortuosity_fd`` (openpnm).

    porespy fixes the potential at the centres of the end voxel layers and measures over L - 1
    voxels; here the end faces are the electrodes (length L). The two agree as the image grows;
    the difference at 48^3 is the boundary convention (measured 0.6 % at 64^3).
    """
    pytest.importorskip("openpnm")
    from segmentation.porespy_compat import porespy

    im = matbox_electrolyte()
    ours = transport(im, axis, rtol=1e-10)
    with porespy() as ps:
        ref = ps.simulations.tortuosity_fd(im, axis=axis)
    assert ours.percolating_fraction == pytest.approx(ref.effective_porosity, rel=1e-12)
    assert ours.tortuosity == pytest.approx(ref.tortuosity, rel=0.02)
    assert ours.flux_mismatch < 1e-6
