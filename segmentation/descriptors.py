"""Microstructure descriptors of a segmented composite: pure functions over label arrays.

What the project computes itself (no extra needed): phase fractions and their
representative-volume curve and specific interface areas (electrolyte percolation to
the separator face and each particle's ionic path are
:func:`segmentation.geometry.ionic_paths`, a particles.csv column too). What porespy does well
(the optional ``[porespy]`` extra, imported through :mod:`segmentation.porespy_compat`):
local thickness, chord lengths and the two-point correlation.

Arrays are (z, y, x); the separator is the face z = top (the last z slice), as in the
electrochemistry; lengths are micrometres.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage as ndi

from segmentation.geometry import face_slices
from segmentation.phases import Phase
from tomomech.errors import InputError

log = logging.getLogger(__name__)

PHASES = {"void": Phase.VOID, "electrolyte": Phase.ELECTROLYTE, "active": Phase.ACTIVE}


# ----------------------------------------------------------------------------- own descriptors

def phase_fractions(phases: np.ndarray) -> dict[str, float]:
    """Volume fraction of void, electrolyte and active phase. Sums to 1."""
    counts = np.bincount(np.asarray(phases).ravel(), minlength=3)
    return {name: float(counts[code]) / phases.size for name, code in PHASES.items()}


def representative_volume(phases: np.ndarray, sizes=None) -> dict[str, list]:
    """Phase fractions of all non-overlapping cubic tiles, against the tile edge.

    The image is cut into as many whole cubes of edge ``s`` voxels as fit (from the corner
    z = y = x = 0); the spread of a phase's fraction over the tiles shrinks as ``s`` grows
    and, where one tile is the whole (cubic) image, it is the whole-image fraction. A
    representative volume is an edge at which the spread is small against the mean.

    Parameters
    ----------
    phases : (Z, Y, X) uint8 phase codes
    sizes : sequence of int, optional
        Tile edges in voxels; default: powers of 2 from 4, then the smallest image edge.

    Returns
    -------
    dict
        ``size_voxels``, ``tiles`` (count per size) and, per phase name, ``{name}_mean``,
        ``{name}_std``, ``{name}_min``, ``{name}_max`` (lists over the sizes).
    """
    phases = np.asarray(phases)
    m = min(phases.shape)
    if sizes is None:
        sizes = [s for s in (4, 8, 16, 32, 64, 128, 256) if s < m] + [m]
    out: dict[str, list] = {"size_voxels": [], "tiles": []}
    for name in PHASES:
        for stat in ("mean", "std", "min", "max"):
            out[f"{name}_{stat}"] = []
    for s in sizes:
        n = [d // s for d in phases.shape]
        if min(n) == 0:
            continue
        block = phases[: n[0] * s, : n[1] * s, : n[2] * s]
        out["size_voxels"].append(int(s))
        out["tiles"].append(int(np.prod(n)))
        for name, code in PHASES.items():
            frac = (block == code).reshape(n[0], s, n[1], s, n[2], s).mean(axis=(1, 3, 5))
            out[f"{name}_mean"].append(float(frac.mean()))
            out[f"{name}_std"].append(float(frac.std()))
            out[f"{name}_min"].append(float(frac.min()))
            out[f"{name}_max"].append(float(frac.max()))
    return out


def interface_areas(phases: np.ndarray, spacing) -> dict[str, float]:
    """Specific AP|SE and AP|void interface areas per box volume (1/um).

    The area is that of the marching-cubes surface of the active phase (level 0.5 of its
    indicator; a voxelised sphere comes within a few per cent of 4 pi R^2, where counting
    voxel faces gives about 1.5x). Each triangle goes to the phase found half a voxel
    outside it. Surface on the box faces is not interface. The voxel-face counts, which
    ``particles.csv`` uses, are given beside.

    Parameters
    ----------
    phases : (Z, Y, X) uint8 phase codes
    spacing : (3,) float, um

    Returns
    -------
    dict
        ``ap_se_area_per_volume_per_um``, ``ap_void_area_per_volume_per_um``,
        ``ap_se_area_fraction`` (of the active surface inside the box) and the same two
        areas from voxel faces, ``..._faces``.
    """
    from skimage.measure import marching_cubes

    phases = np.asarray(phases)
    sp = np.asarray(spacing, float)
    volume = float(np.prod(np.asarray(phases.shape) * sp))
    active = (phases == Phase.ACTIVE).astype(np.float32)
    out: dict[str, float] = {}
    if 0 < active.sum() < active.size:
        verts, faces, _, _ = marching_cubes(active, level=0.5, spacing=tuple(sp), allow_degenerate=False)
        tri = verts[faces]  # (nt, 3, 3) um
        cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        area = 0.5 * np.linalg.norm(cross, axis=1)
        centre = tri.mean(axis=1)
        unit = cross / np.maximum(2 * area, 1e-30)[:, None]
        # the side of each triangle that is not active: sample half a voxel along +-normal
        probes = [np.clip(np.rint((centre + s * 0.5 * unit * sp) / sp), 0, np.asarray(phases.shape) - 1).astype(int)
                  for s in (1.0, -1.0)]
        ph = [phases[p[:, 0], p[:, 1], p[:, 2]] for p in probes]
        other = np.where(ph[0] != Phase.ACTIVE, ph[0], ph[1])
        out["ap_se_area_per_volume_per_um"] = float(area[other == Phase.ELECTROLYTE].sum()) / volume
        out["ap_void_area_per_volume_per_um"] = float(area[other == Phase.VOID].sum()) / volume
        tot = out["ap_se_area_per_volume_per_um"] + out["ap_void_area_per_volume_per_um"]
        out["ap_se_area_fraction"] = out["ap_se_area_per_volume_per_um"] / tot if tot > 0 else float("nan")
    else:
        out.update(ap_se_area_per_volume_per_um=0.0, ap_void_area_per_volume_per_um=0.0,
                   ap_se_area_fraction=float("nan"))
    faces_area = np.array([sp[1] * sp[2], sp[0] * sp[2], sp[0] * sp[1]])
    se = void = 0.0
    for lo, hi, ax in face_slices():
        pa, pb = phases[lo], phases[hi]
        act = (pa == Phase.ACTIVE) ^ (pb == Phase.ACTIVE)
        otherv = np.where(pa == Phase.ACTIVE, pb, pa)
        se += np.count_nonzero(act & (otherv == Phase.ELECTROLYTE)) * faces_area[ax]
        void += np.count_nonzero(act & (otherv == Phase.VOID)) * faces_area[ax]
    out["ap_se_area_per_volume_per_um_faces"] = se / volume
    out["ap_void_area_per_volume_per_um_faces"] = void / volume
    return out


# ----------------------------------------------------------------------------- porespy descriptors

def isotropic(phases: np.ndarray, spacing) -> tuple[np.ndarray, float]:
    """The labels resampled (nearest neighbour) to cubic voxels of the smallest spacing.

    porespy's filters take cubic voxels only. Returns the image unchanged when the voxels
    are already cubic (to 1e-6).

    Returns
    -------
    (Z', Y', X') labels, voxel edge (um)
    """
    sp = np.asarray(spacing, float)
    h = float(sp.min())
    if np.allclose(sp, h, rtol=1e-6):
        return np.asarray(phases), h
    shape = np.maximum(np.rint(np.asarray(phases.shape) * sp / h).astype(int), 1)
    idx = [np.minimum(((np.arange(m) + 0.5) * h / s).astype(int), d - 1) for m, s, d in zip(shape, sp, phases.shape)]
    out = np.asarray(phases)[np.ix_(*idx)]
    log.info("microstructure: voxels of %s um resampled to cubic %.4g um voxels for porespy (shape %s -> %s)",
             np.round(sp, 4).tolist(), h, phases.shape, out.shape)
    return out, h


def histogram(values_um: np.ndarray, bins: int, weights=None) -> dict[str, list]:
    """Fractions (of the count, or of ``weights``) in ``bins`` equal bins from 0 to the largest value."""
    if values_um.size == 0:
        return {"edges_um": [], "fraction": []}
    hi = float(values_um.max())
    edges = np.linspace(0.0, hi if hi > 0 else 1.0, bins + 1)
    h, _ = np.histogram(values_um, bins=edges, weights=weights)
    tot = h.sum()
    return {"edges_um": edges.tolist(), "fraction": (h / tot if tot > 0 else h).tolist()}


def local_thickness(mask: np.ndarray, voxel_um: float, bins: int = 25) -> dict:
    """Local thickness (diameter of the largest inscribed sphere covering each voxel) of a phase.

    Parameters
    ----------
    mask : (Z, Y, X) bool, cubic voxels
    voxel_um : float
    bins : int

    Returns
    -------
    dict
        ``mean_um`` and ``d10_um``, ``d50_um``, ``d90_um`` (volume-weighted quantiles of the
        diameter), and the volume distribution ``edges_um``/``fraction``.
    """
    from segmentation.porespy_compat import porespy

    if not mask.any():
        return {"mean_um": float("nan"), "d10_um": float("nan"), "d50_um": float("nan"), "d90_um": float("nan"),
                "edges_um": [], "fraction": []}
    with porespy() as ps:
        radius = ps.filters.local_thickness(mask, method="dt")
    d = 2.0 * radius[mask] * voxel_um
    q = np.percentile(d, [10, 50, 90])
    return {"mean_um": float(d.mean()), "d10_um": float(q[0]), "d50_um": float(q[1]), "d90_um": float(q[2]),
            **histogram(d, bins)}


def chord_lengths(mask: np.ndarray, axis: int, voxel_um: float, bins: int = 25) -> dict:
    """Chord length distribution of a phase along an axis (chords cut by the box are dropped).

    Returns
    -------
    dict
        ``mean_um`` (number mean), ``count`` and the length-weighted distribution
        ``edges_um``/``fraction`` (the fraction of the phase's chord length in each bin).
    """
    from segmentation.porespy_compat import porespy

    with porespy() as ps:
        chords = ps.filters.apply_chords(mask, axis=axis, spacing=0, trim_edges=True)
    lab, n = ndi.label(chords > 0, structure=_line(axis))
    if n == 0:
        return {"mean_um": float("nan"), "count": 0, "edges_um": [], "fraction": []}
    length = np.bincount(lab.ravel())[1:] * voxel_um
    return {"mean_um": float(length.mean()), "count": int(n), **histogram(length, bins, weights=length)}


def _line(axis: int) -> np.ndarray:
    s = np.zeros((3, 3, 3), bool)
    idx = [1, 1, 1]
    for k in range(3):
        idx[axis] = k
        s[tuple(idx)] = True
    return s


def two_point_correlation(mask: np.ndarray, voxel_um: float, bins: int = 50, max_edge: int = 128) -> dict:
    """Two-point correlation S2(r) of a phase: the probability that two points r apart both lie in it.

    S2(0) is the volume fraction of the phase and S2 tends to its square at large r. porespy
    zero-pads the image to twice its size for the FFT (eight times the memory), and r reaches
    half the smallest edge only, so images larger than ``max_edge`` voxels along an axis are
    measured on their central ``max_edge`` voxels along it.

    Returns
    -------
    dict
        ``distance_um``, ``probability`` (lists), ``volume_fraction`` (of the measured region),
        ``region_voxels`` (its shape).
    """
    from segmentation.porespy_compat import porespy

    sl = tuple(slice((d - min(d, max_edge)) // 2, (d - min(d, max_edge)) // 2 + min(d, max_edge))
               for d in mask.shape)
    region = mask[sl]
    with porespy() as ps:
        tpc = ps.metrics.two_point_correlation(region, voxel_size=voxel_um, bins=bins)
    return {"distance_um": np.asarray(tpc.distance).tolist(),
            "probability": np.asarray(tpc.probability_scaled).tolist(),
            "volume_fraction": float(region.mean()), "region_voxels": list(region.shape)}


def check_phases(phases: np.ndarray) -> None:
    """Refuse anything but a 3-D image of phase codes 0, 1, 2."""
    phases = np.asarray(phases)
    if phases.ndim != 3 or not np.issubdtype(phases.dtype, np.integer):
        raise InputError(f"microstructure descriptors need a 3-D integer phase image, got {phases.dtype} "
                         f"of shape {phases.shape}")
    if phases.size and int(phases.max()) > 2:
        raise InputError(f"phase codes must be 0 (void), 1 (electrolyte), 2 (active); found {int(phases.max())}")
