"""Effective transport through one phase of a voxel image: conductivity ratio and tortuosity factor.

The steady potential ``phi`` of a phase of uniform conductivity ``kappa`` is solved on the
voxels of that phase by cell-centred finite volumes (the two-point flux of TauFactor, PuMA and
porespy's ``tortuosity_fd``): one unknown per voxel, a face shared by two voxels of the phase
conducts ``kappa A / h``, every other face is insulating. Along ``axis`` the two end faces of
the box are electrodes, ``phi = 1`` and ``phi = 0``, reached from the first and last voxel
layers through half a voxel (``2 kappa A / h``). The current ``I`` gives

    kappa_eff / kappa = I L / (A_box kappa dphi),      tau = eps_p / (kappa_eff / kappa),

with ``L`` the box length along the axis, ``A_box`` its cross-section and ``eps_p`` the volume
fraction of the phase that joins the two end faces (porespy's convention; dead ends count,
floating islands do not). Series and parallel layers give the exact continuum values.

The linear system is symmetric positive definite; it is solved by flexible CG preconditioned by
the block-aggregation K-cycle of :mod:`solvers.aggregation` (2 x 2 x 2 voxel blocks split into
their connected pieces), whose iteration count stays flat with the image size: 18-20 from 64^3
to 251^3 on the MATBOX electrolyte (docs/microstructure.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import ndimage as ndi

from solvers.aggregation import BlockAggregation
from solvers.linalg import flexible_cg
from tomomech.errors import ConvergenceError, InputError

log = logging.getLogger(__name__)

AXES = ("z", "y", "x")


@dataclass(frozen=True)
class Transport:
    """Effective transport of a phase along one axis.

    Attributes
    ----------
    axis : "z" | "y" | "x"
    volume_fraction : float
        Of the whole phase in the box.
    percolating_fraction : float
        Of the phase joined (6-connected) to both end faces, eps_p.
    conductivity_ratio : float
        kappa_eff / kappa (0 when no path joins the end faces).
    tortuosity : float
        tau = eps_p / (kappa_eff / kappa) (inf without a path).
    unknowns : int
    iterations : int
        Preconditioned CG iterations.
    flux_mismatch : float
        |I_in - I_out| / I_in: the conservation check of the solve.
    """

    axis: str
    volume_fraction: float
    percolating_fraction: float
    conductivity_ratio: float
    tortuosity: float
    unknowns: int
    iterations: int
    flux_mismatch: float


def _end_slices(axis: int, ndim: int = 3):
    lo = [slice(None)] * ndim
    hi = [slice(None)] * ndim
    lo[axis], hi[axis] = 0, -1
    return tuple(lo), tuple(hi)


def percolating(mask: np.ndarray, axis: int) -> np.ndarray:
    """The voxels of ``mask`` 6-connected to both end faces along ``axis``. (Z, Y, X) bool."""
    lab, _ = ndi.label(mask)
    lo, hi = _end_slices(axis)
    keep = np.zeros(int(lab.max()) + 1, bool)
    keep[np.intersect1d(lab[lo], lab[hi])] = True
    keep[0] = False
    return keep[lab]


def conductance_matrix(index: np.ndarray, kappa: np.ndarray, spacing) -> sp.csr_matrix:
    """Face-conductance (weighted graph Laplacian) matrix of the voxels with ``index >= 0``.

    Parameters
    ----------
    index : (Z, Y, X) int64
        Unknown number of every voxel of the phase, -1 elsewhere.
    kappa : (Z, Y, X) float
        Conductivity of every voxel; a face between two voxels conducts the harmonic mean of
        theirs times area over voxel length (exact for layers in series).
    spacing : (3,) float
        Voxel size along z, y, x.

    Returns
    -------
    (n, n) csr_matrix, symmetric, zero row sums.
    """
    h = np.asarray(spacing, float)
    area = np.array([h[1] * h[2], h[0] * h[2], h[0] * h[1]])
    flat, kap = index.ravel(), kappa.ravel()
    voxel = np.flatnonzero(flat >= 0)  # the unknowns' voxels, in unknown order (raster)
    n = voxel.size
    coord = np.unravel_index(voxel, index.shape)
    stride = np.array([index.shape[1] * index.shape[2], index.shape[2], 1])
    rows, cols, vals = [], [], []
    for ax in range(3):
        src = np.flatnonzero(coord[ax] < index.shape[ax] - 1)  # unknowns with a voxel beyond them
        nbr = voxel[src] + stride[ax]
        dst = flat[nbr]
        ok = dst >= 0
        src, dst, nbr = src[ok], dst[ok], nbr[ok]
        ka, kb = kap[voxel[src]], kap[nbr]
        rows.append(src)
        cols.append(dst)
        vals.append(2.0 * ka * kb / (ka + kb) * (area[ax] / h[ax]))
    upper = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    off = upper + upper.T
    return (sp.diags(np.asarray(off.sum(axis=1)).ravel()) - off).tocsr()


def transport(mask: np.ndarray, axis: str | int = "z", spacing=(1.0, 1.0, 1.0), *, rtol: float = 1e-6,
              maxiter: int = 200) -> Transport:
    """Conductivity ratio and tortuosity factor of the phase ``mask`` along one axis.

    Parameters
    ----------
    mask : (Z, Y, X) bool, or float conductivities
        The conducting phase. A float image gives every voxel its own conductivity (>= 0,
        0 insulating): the phase is where it is positive and ``conductivity_ratio`` is
        kappa_eff over the largest conductivity (layered images then have exact series and
        parallel values).
    axis : "z" | "y" | "x" or 0 | 1 | 2
    spacing : (3,) float
        Voxel size along z, y, x (anisotropic voxels are exact here).
    rtol : float
        Relative residual of the CG solve.
    maxiter : int

    Returns
    -------
    Transport

    Raises
    ------
    InputError
        ``mask`` is not a 3-D boolean image of at least 2 voxels along ``axis``.
    ConvergenceError
        CG did not reach ``rtol`` in ``maxiter`` iterations.
    """
    field = np.asarray(mask)
    if field.ndim != 3 or not (field.dtype == bool or np.issubdtype(field.dtype, np.floating)):
        raise InputError(f"transport needs a 3-D boolean phase mask or float conductivities, got {field.dtype} "
                         f"of shape {field.shape}")
    if field.dtype != bool and not (np.all(np.isfinite(field)) and field.min() >= 0 and field.max() > 0):
        raise InputError("transport: conductivities must be finite, >= 0 and not all 0")
    kappa = field.astype(float) / (1.0 if field.dtype == bool else float(field.max()))
    mask = kappa > 0
    ax = AXES.index(axis) if isinstance(axis, str) else int(axis)
    if mask.shape[ax] < 2:
        raise InputError(f"transport along {AXES[ax]} needs at least 2 voxels along it, the image has "
                         f"{mask.shape[ax]}")
    h = np.asarray(spacing, float)
    eps = float(mask.mean())
    perc = percolating(mask, ax)
    n = int(perc.sum())
    if n == 0:
        log.info("transport along %s: no path of the phase joins the end faces", AXES[ax])
        return Transport(AXES[ax], eps, 0.0, 0.0, float("inf"), 0, 0, 0.0)
    index = np.full(mask.shape, -1, np.int64)
    index[perc] = np.arange(n)
    A = conductance_matrix(index, kappa, h)
    face_area = float(np.prod(h)) / h[ax]
    lo, hi = _end_slices(ax)
    inlet, outlet = index[lo][index[lo] >= 0], index[hi][index[hi] >= 0]
    g_in = 2.0 * kappa[lo][index[lo] >= 0] * face_area / h[ax]  # voxel centre to the end face: half a voxel
    g_out = 2.0 * kappa[hi][index[hi] >= 0] * face_area / h[ax]
    end = np.bincount(inlet, weights=g_in, minlength=n) + np.bincount(outlet, weights=g_out, minlength=n)
    A = (A + sp.diags(end)).tocsr()
    b = np.bincount(inlet, weights=g_in, minlength=n)  # phi = 1 at the inlet face, 0 at the outlet
    mg = BlockAggregation(A, np.argwhere(perc))
    x, its = flexible_cg(lambda v: A @ v, b, mg.cycle, rtol=rtol, maxiter=maxiter)
    rel = float(np.linalg.norm(b - A @ x) / np.linalg.norm(b))
    if not rel <= 10 * rtol:
        raise ConvergenceError(f"transport along {AXES[ax]}: CG reached a relative residual of {rel:.2e} in "
                               f"{maxiter} iterations (rtol {rtol:g}); raise [describe] tortuosity_rtol", its, rel)
    i_in = float(np.sum(g_in * (1.0 - x[inlet])))
    i_out = float(np.sum(g_out * x[outlet]))
    length = mask.shape[ax] * h[ax]
    box_area = float(np.prod(np.asarray(mask.shape) * h)) / length
    ratio = i_in * length / box_area
    eps_p = n / mask.size
    out = Transport(AXES[ax], eps, eps_p, ratio, eps_p / ratio, n, its, abs(i_in - i_out) / i_in)
    log.info("transport along %s: eps %.4f (percolating %.4f), kappa_eff/kappa %.5f, tau %.4f; %d unknowns, "
             "%d CG iterations", out.axis, eps, eps_p, ratio, out.tortuosity, n, out.iterations)
    return out
