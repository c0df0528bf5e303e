"""Seeded synthetic 3-phase composites (active spheres, electrolyte, void)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from segmentation.phases import Phase
from tomomech.errors import InputError


def make_composite(
    shape=(48, 48, 48),
    *,
    active_fraction: float = 0.5,
    void_fraction: float = 0.1,
    radius: float = 6.0,
    void_blob: float = 2.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate a composite cathode with exact phase fractions.

    Particles: overlapping spheres around Poisson seed points; the sphere
    radius is then tuned (a quantile of the distance to the nearest seed) so
    the active fraction is met to one voxel; each active voxel belongs to its
    nearest seed, so overlapping spheres are split on their Voronoi plane.
    Void: a Gaussian random field of correlation length ``void_blob`` voxels,
    thresholded inside the non-active region at the quantile that gives
    ``void_fraction`` of the whole volume (void replaces electrolyte).

    Parameters
    ----------
    shape : 3 ints
    active_fraction, void_fraction : float
        Volume fractions, ``active + void < 1``.
    radius : float
        Nominal particle radius in voxels.
    void_blob : float
        Correlation length of the void field, voxels.
    seed : int
        Seed of ``numpy.random.default_rng``; same seed, same volume.

    Returns
    -------
    phases : (Z, Y, X) uint8
    particles : (Z, Y, X) int32
    """
    if not (0 < active_fraction < 1 and 0 <= void_fraction < 1
            and active_fraction + void_fraction < 1):
        raise InputError(
            f"fractions must satisfy 0 < active, 0 <= void, active + void < 1; "
            f"got active={active_fraction}, void={void_fraction}"
        )
    shape = tuple(int(s) for s in shape)
    rng = np.random.default_rng(seed)
    n_vox = int(np.prod(shape))
    vsphere = 4.0 / 3.0 * np.pi * radius**3
    n_seeds = max(1, int(round(-np.log(1.0 - active_fraction) * n_vox / vsphere)))
    seeds = np.zeros(shape, bool)
    pts = np.stack([rng.integers(0, s, n_seeds) for s in shape], axis=1)
    seeds[tuple(pts.T)] = True
    dist, idx = ndi.distance_transform_edt(~seeds, return_indices=True)
    order = np.argsort(dist, axis=None, kind="stable")  # the closest voxels to any seed
    active = np.zeros(n_vox, bool)
    active[order[: int(round(active_fraction * n_vox))]] = True
    active = active.reshape(shape)

    seed_id = np.zeros(shape, np.int32)
    seed_id[tuple(pts.T)] = np.arange(1, n_seeds + 1, dtype=np.int32)
    particles = np.where(active, seed_id[tuple(idx)], 0).astype(np.int32)

    phases = np.full(shape, Phase.ELECTROLYTE, np.uint8)
    phases[active] = Phase.ACTIVE
    n_void = int(round(void_fraction * n_vox))
    if n_void:
        field = ndi.gaussian_filter(rng.standard_normal(shape), void_blob, mode="wrap")
        field[active] = -np.inf
        vorder = np.argsort(field, axis=None, kind="stable")[::-1]
        phases.ravel()[vorder[:n_void]] = Phase.VOID

    # renumber particles 1..N in raster order
    uniq, first = np.unique(particles.ravel(), return_index=True)
    keep = uniq > 0
    lut = np.zeros(int(uniq.max()) + 1, np.int32)
    lut[uniq[keep][np.argsort(first[keep])]] = np.arange(1, keep.sum() + 1, dtype=np.int32)
    return phases, lut[particles]
