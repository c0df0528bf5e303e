"""Per-particle geometry from voxel faces, vectorised with bincount."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from segmentation.phases import Phase


def face_slices() -> list[tuple[tuple[slice, ...], tuple[slice, ...], int]]:
    """Index tuples of the voxels on the two sides of every interior face, per axis.

    Returns
    -------
    list of (lo, hi, axis)
        ``image[lo]`` and ``image[hi]`` are views of the same shape whose elements share a
        face normal to ``axis``, ``hi`` on the positive side.
    """
    out = []
    for ax in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        out.append((tuple(lo), tuple(hi), ax))
    return out


def face_pairs(shape) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Flat indices of the two voxels on each side of every interior face.

    Parameters
    ----------
    shape : (Z, Y, X)

    Returns
    -------
    list of (a, b, axis)
        For each axis, ``a`` and ``b`` are int64 flat indices of voxels that
        share a face normal to ``axis``, ``b`` on the positive side.
    """
    idx = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    return [(idx[lo].ravel(), idx[hi].ravel(), ax) for lo, hi, ax in face_slices()]


def ionic_paths(phases: np.ndarray, particles: np.ndarray) -> tuple[float, np.ndarray]:
    """Electrolyte percolation to the separator face and the ionic path of every particle.

    Parameters
    ----------
    phases : (Z, Y, X) uint8 phase codes
    particles : (Z, Y, X) int labels 1..N, 0 outside particles

    Returns
    -------
    connected_fraction : float
        Fraction of the electrolyte volume 6-connected to the separator face (z = top).
    ionic_path : (N,) bool
        Particle ``i + 1`` shares a voxel face with electrolyte connected to the separator.
    """
    se = np.asarray(phases) == Phase.ELECTROLYTE
    lab = np.asarray(particles).astype(np.int64)
    n = int(lab.max()) if lab.size else 0
    if not se.any():
        return 0.0, np.zeros(n, bool)
    comp, _ = ndi.label(se)
    top = np.zeros(int(comp.max()) + 1, bool)
    top[comp[-1]] = True
    top[0] = False
    reach = top[comp]
    path = np.zeros(n + 1, bool)
    for lo, hi, _ in face_slices():
        for own, other in ((lab[lo], reach[hi]), (lab[hi], reach[lo])):
            path[np.unique(own[other & (own > 0)])] = True
    return float(reach.sum()) / float(se.sum()), path[1:]


def face_areas(spacing) -> np.ndarray:
    """Area of a voxel face normal to z, y, x, in the units of spacing squared."""
    hz, hy, hx = (float(s) for s in spacing)
    return np.array([hy * hx, hz * hx, hz * hy])


def voronoi_shells(particles: np.ndarray, spacing, shell_voxels: float) -> np.ndarray:
    """(Z, Y, X) int: the particle whose Voronoi shell each voxel lies in, 0 outside every shell.

    A particle's shell holds the non-particle voxels whose nearest particle voxel is its own and
    within ``shell_voxels`` (in voxels of the smallest spacing), so neighbouring shells never
    overlap.
    """
    lab = np.asarray(particles)
    sp = np.asarray(spacing, float)
    dist, idx = ndi.distance_transform_edt(lab == 0, sampling=sp / sp.min(), return_indices=True)
    return np.where((dist > 0) & (dist <= shell_voxels), lab[tuple(idx)], 0)


def particle_geometry(
    phases: np.ndarray,
    particles: np.ndarray,
    spacing=(1.0, 1.0, 1.0),
    shell_voxels: float = 3.0,
    region: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Geometry of every particle, one entry per particle id 1..N.

    Parameters
    ----------
    phases : (Z, Y, X) uint8 phase codes
    particles : (Z, Y, X) int32 labels, 0 outside particles
    spacing : 3 floats, micrometres
    shell_voxels : float
        Thickness of the shell, in voxels of the smallest spacing, in which
        ``local_void_fraction`` is measured. Each non-particle voxel belongs to
        the shell of its nearest particle (a Voronoi shell), so neighbouring
        shells never double count.
    region : (Z, Y, X) bool, optional
        The voxels that hold sample (a field of view). Faces to voxels outside it
        count as box faces: not in any area, and a particle with one touches the
        boundary; the shells hold voxels inside it only.

    Returns
    -------
    dict of (N,) arrays
        ``particle_id``, ``volume_um3``, ``eq_diameter_um``,
        ``centroid_{z,y,x}_um``, ``surface_area_um2`` (faces inside the box to
        anything else), ``se_contact_area_um2``, ``void_contact_area_um2``,
        ``particle_contact_area_um2``, ``contact_fraction`` (SE area over
        surface area), ``touches_boundary``, ``isolated`` (no SE contact),
        ``ionic_path`` (a face on electrolyte that reaches the separator face,
        z = top: :func:`ionic_paths`),
        ``local_void_fraction``.
    """
    ph = np.asarray(phases).ravel()
    inside = np.ones(ph.size, bool) if region is None else np.asarray(region, bool).ravel()
    lab = np.asarray(particles).ravel().astype(np.int64)
    shape = np.shape(particles)
    n = int(lab.max()) if lab.size else 0
    sp = np.asarray(spacing, dtype=float)
    vvox = float(np.prod(sp))
    m = n + 1

    count = np.bincount(lab, minlength=m).astype(float)
    zz, yy, xx = np.indices(shape, dtype=float).reshape(3, -1)
    cen = [np.bincount(lab, weights=(c + 0.5) * s, minlength=m) / np.maximum(count, 1)
           for c, s in zip((zz, yy, xx), sp)]

    area = face_areas(sp)
    surf = np.zeros(m)
    se = np.zeros(m)
    void = np.zeros(m)
    pp = np.zeros(m)
    for a, b, ax in face_pairs(shape):
        la, lb = lab[a], lab[b]
        diff = la != lb
        for own, other, oth_idx in ((la, lb, b), (lb, la, a)):
            sel = diff & (own > 0) & inside[oth_idx]
            o = own[sel]
            surf += np.bincount(o, minlength=m) * area[ax]
            oph = ph[oth_idx[sel]]
            se += np.bincount(o[oph == Phase.ELECTROLYTE], minlength=m) * area[ax]
            void += np.bincount(o[oph == Phase.VOID], minlength=m) * area[ax]
            pp += np.bincount(o[other[sel] > 0], minlength=m) * area[ax]

    lab3 = lab.reshape(shape)
    border = np.zeros(shape, bool)
    border[[0, -1], :, :] = True
    border[:, [0, -1], :] = True
    border[:, :, [0, -1]] = True
    if region is not None:  # next to the outside of the field of view
        border |= ndi.binary_dilation(~np.asarray(region, bool)) & np.asarray(region, bool)
    touches = np.bincount(lab3[border], minlength=m) > 0

    owner = voronoi_shells(lab3, sp, shell_voxels).ravel()
    shell = (owner > 0) & inside
    shell_n = np.bincount(owner[shell], minlength=m).astype(float)
    shell_void = np.bincount(owner[shell & (ph == Phase.VOID)], minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        lvf = np.where(shell_n > 0, shell_void / shell_n, np.nan)
        cfrac = np.where(surf > 0, se / surf, np.nan)

    vol = count * vvox
    sl = slice(1, None)
    return {
        "particle_id": np.arange(1, m, dtype=np.int64),
        "volume_um3": vol[sl],
        "eq_diameter_um": np.cbrt(6.0 * vol[sl] / np.pi),
        "centroid_z_um": cen[0][sl],
        "centroid_y_um": cen[1][sl],
        "centroid_x_um": cen[2][sl],
        "surface_area_um2": surf[sl],
        "se_contact_area_um2": se[sl],
        "void_contact_area_um2": void[sl],
        "particle_contact_area_um2": pp[sl],
        "contact_fraction": cfrac[sl],
        "touches_boundary": touches[sl],
        "isolated": se[sl] == 0,
        "ionic_path": ionic_paths(phases, lab3)[1],
        "local_void_fraction": lvf[sl],
    }
