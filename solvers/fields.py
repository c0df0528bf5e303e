"""Stress recovery and reductions: invariants, interface tractions, per group stats.

Everything is vectorised over cells, faces and particles (``bincount`` and
one ``lexsort`` for percentiles); no Python loop over them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from solvers.mesh.tet import triangle_cells

ACTIVE, ELECTROLYTE = 2, 1


def von_mises(sig: np.ndarray) -> np.ndarray:
    """Von Mises stress of (..., 3, 3) tensors."""
    dev = sig - np.trace(sig, axis1=-2, axis2=-1)[..., None, None] * np.eye(3) / 3.0
    return np.sqrt(1.5 * np.einsum("...ij,...ij->...", dev, dev))


def hydrostatic(sig: np.ndarray) -> np.ndarray:
    """Mean normal stress ``tr(sigma) / 3`` (tension positive)."""
    return np.trace(sig, axis1=-2, axis2=-1) / 3.0


def max_principal(sig: np.ndarray) -> np.ndarray:
    """Largest principal stress of (..., 3, 3) symmetric tensors."""
    return np.linalg.eigvalsh(sig)[..., -1]


def smoothed_normals(indicator: np.ndarray, spacing, sigma_voxels: float = 1.5) -> np.ndarray:
    """Outward unit normals of a region from its Gaussian-smoothed indicator.

    Parameters
    ----------
    indicator : (Z, Y, X) bool
        The region (e.g. the active phase).
    spacing : (3,) voxel size
    sigma_voxels : float
        Gaussian width in voxels.

    Returns
    -------
    (Z, Y, X, 3) float: ``-grad(G * indicator)``, not normalised (normalise
    after averaging to face centres).
    """
    sm = ndi.gaussian_filter(indicator.astype(float), sigma_voxels, mode="nearest")
    return -np.stack(np.gradient(sm, *np.asarray(spacing, float)), axis=-1)


def interface_faces(phases: np.ndarray, particles: np.ndarray, spacing, *,
                    sigma_voxels: float = 1.5) -> dict[str, np.ndarray]:
    """All AP|SE voxel faces with their smoothed outward normal.

    Returns
    -------
    dict of (nf,) arrays
        ``ap_voxel``, ``se_voxel`` (flat indices), ``particle``, ``axis``,
        ``area`` (m^2 if spacing is in m), ``normal`` (nf, 3) unit vectors
        pointing from the particle into the electrolyte.
    """
    shape = phases.shape
    ph = phases.ravel()
    idx = np.arange(ph.size).reshape(shape)
    sp = np.asarray(spacing, float)
    areas = np.array([sp[1] * sp[2], sp[0] * sp[2], sp[0] * sp[1]])
    g = smoothed_normals(phases == ACTIVE, sp, sigma_voxels).reshape(-1, 3)
    ap, se, axis = [], [], []
    for ax in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax] = slice(0, -1)
        hi[ax] = slice(1, None)
        a, b = idx[tuple(lo)].ravel(), idx[tuple(hi)].ravel()
        for p, q in ((a, b), (b, a)):
            sel = (ph[p] == ACTIVE) & (ph[q] == ELECTROLYTE)
            ap.append(p[sel])
            se.append(q[sel])
            axis.append(np.full(int(sel.sum()), ax))
    ap = np.concatenate(ap)
    se = np.concatenate(se)
    axis = np.concatenate(axis)
    n = 0.5 * (g[ap] + g[se])
    # fall back to the face axis where the smoothed gradient vanishes (thin features)
    axis_n = np.zeros_like(n)
    axis_n[np.arange(ap.size), axis] = np.sign(se - ap)
    norm = np.linalg.norm(n, axis=1)
    bad = norm < 1e-12 * max(norm.max(initial=0), 1e-300)
    n[bad] = axis_n[bad]
    n /= np.linalg.norm(n, axis=1)[:, None]
    return {"ap_voxel": ap, "se_voxel": se, "particle": particles.ravel()[ap], "axis": axis,
            "area": areas[axis], "normal": n}


def normal_traction(sig_ap: np.ndarray, sig_se: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Normal traction ``n . sigma . n`` on faces, tension positive.

    The face stress is the mean of the two adjacent cells' stresses.
    """
    s = 0.5 * (sig_ap + sig_se)
    return np.einsum("fi,fij,fj->f", normal, s, normal)


def group_stats(groups: np.ndarray, values: np.ndarray, n_groups: int, *,
                weights: np.ndarray | None = None, percentiles=()) -> dict[str, np.ndarray]:
    """Mean, min, max and percentiles of ``values`` per integer group.

    Parameters
    ----------
    groups : (m,) int in [0, n_groups)
    values : (m,) float
    n_groups : int
    weights : (m,) float, optional
        Weights of the mean and the percentiles (cell volumes on tetrahedral
        meshes, face areas); equal weights when omitted.
    percentiles : iterable of float in [0, 100]
        Weighted nearest-rank percentiles: the smallest value whose cumulative
        weight in its group reaches q/100 of the group's weight (with equal
        weights, the value at rank ceil(q/100 * count)).

    Returns
    -------
    dict with ``mean``, ``min``, ``max``, ``count`` and ``p{q}`` (n_groups,)
    arrays; NaN for empty groups.
    """
    groups = np.asarray(groups, np.int64)
    values = np.asarray(values, float)
    w = np.ones_like(values) if weights is None else np.asarray(weights, float)
    cnt = np.bincount(groups, minlength=n_groups)
    wsum = np.bincount(groups, weights=w, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(groups, weights=w * values, minlength=n_groups) / wsum
    mn = np.full(n_groups, np.inf)
    mx = np.full(n_groups, -np.inf)
    np.minimum.at(mn, groups, values)
    np.maximum.at(mx, groups, values)
    empty = cnt == 0
    out = {"count": cnt, "mean": np.where(empty, np.nan, mean),
           "min": np.where(empty, np.nan, mn), "max": np.where(empty, np.nan, mx)}
    if percentiles:
        order = np.lexsort((values, groups))
        start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
        sv = values[order]
        cum = np.cumsum(w[order])  # cumulative weight over the sorted groups
        before = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)
        last = np.maximum(start + cnt - 1, start)
        for q in percentiles:
            target = before + q / 100.0 * wsum - 1e-9 * wsum  # the slack absorbs the rounding of cumsum
            pos = np.clip(np.searchsorted(cum, target, side="left"), start, last)
            out[f"p{q:g}"] = np.where(empty, np.nan, sv[np.clip(pos, 0, max(sv.size - 1, 0))]
                                      if sv.size else np.nan)
    return out


def tet_interface_faces(mesh, *, sigma_voxels: float | None = None) -> dict[str, np.ndarray]:
    """AP|SE triangles of a tetrahedral mesh with their unit normals (from the particle outwards).

    Parameters
    ----------
    mesh : TetMesh
    sigma_voxels : float, optional
        Replace the triangle normals by the smoothed normals of the voxel
        image (:func:`smoothed_normals`, averaged over the voxels of the two
        cells), as on voxel-hex meshes: voxel-tet triangles lie on staircase
        voxel faces whose own normals are the grid axes. Conforming meshes
        keep their geometric normals (the default).

    Returns
    -------
    dict of (nf,) arrays: ``ap_cell``, ``se_cell``, ``particle``, ``area`` (m^2), ``normal`` (nf, 3),
    ``nodes`` (nf, 3) the triangle's corner node indices.
    """
    cells = mesh.corners  # quadratic tets list their mid-edge nodes after the corners
    tri, sides = triangle_cells(cells)
    inner = sides[:, 1] >= 0
    a, b = sides[inner, 0], sides[inner, 1]
    pa, pb = mesh.cell_phase[a], mesh.cell_phase[b]
    sel = ((pa == ACTIVE) & (pb == ELECTROLYTE)) | ((pa == ELECTROLYTE) & (pb == ACTIVE))
    ap = np.where(pa == ACTIVE, a, b)[sel]
    se = np.where(pa == ACTIVE, b, a)[sel]
    t = tri[inner][sel]
    p = mesh.points[t]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    area = 0.5 * np.linalg.norm(n, axis=1)
    n /= (2 * area)[:, None]
    out_dir = mesh.points[cells[se]].mean(axis=1) - mesh.points[cells[ap]].mean(axis=1)
    n *= np.sign(np.einsum("fi,fi->f", n, out_dir))[:, None]
    if sigma_voxels is not None and ap.size:
        g = smoothed_normals(mesh.phases == ACTIVE, mesh.spacing, sigma_voxels).reshape(-1, 3)
        gs = 0.5 * (g[mesh.cell_voxel[ap]] + g[mesh.cell_voxel[se]])
        norm = np.linalg.norm(gs, axis=1)
        ok = norm > 1e-12 * norm.max()
        n[ok] = gs[ok] / norm[ok, None]
    return {"ap_cell": ap, "se_cell": se, "particle": mesh.cell_particle[ap], "area": area, "normal": n,
            "nodes": t}
