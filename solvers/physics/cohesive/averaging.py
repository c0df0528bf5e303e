"""The opening averaged over a particle's interface, and the springs that hold what the average misses."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from solvers.physics.cohesive.geometry import CohesiveInterface

#: scaling sweeps that make the opening averaging row-stochastic and symmetric in the area measure
SINKHORN_ITERATIONS = 50
#: support of the opening averaging, in averaging lengths (the Gaussian weight there is 4 %)
AVERAGING_CUTOFF = 2.5


def opening_averaging(points: np.ndarray, normal: np.ndarray, area: np.ndarray, particle: np.ndarray,
                      length_m: float, cutoff: float = AVERAGING_CUTOFF) -> sp.csr_matrix:
    """Averaging of interface-point values over a particle's interface, (npt, npt) sparse.

    ``W = diag(c) k diag(A c)`` with the kernel
    ``k_ij = exp(-r^2 / (2 ell^2)) max(n_i . n_j, 0)`` (``k_ii = 1``) between
    points of the same particle within ``cutoff * ell`` (``r`` their
    distance, ``A`` point areas, ``n`` smoothed normals: the two sides of a
    thin feature are not averaged together), ``c`` from ``SINKHORN_ITERATIONS``
    sweeps of symmetric Sinkhorn scaling, and what the sweeps leave of each
    row sum's distance to one put on the diagonal. Rows sum to one (a uniform opening is kept) and
    ``A_i W_ij = A_j W_ji``, so ``sum A |W x|^2 <= sum A |x|^2``: the smooth
    part never holds more energy than the opening it comes from.

    On a voxel staircase the opening of a face is the smooth opening plus a
    corner pattern: the steps shear (tangential openings of 0.2-0.3x the 3(d)
    normal opening on R = 4-8 spheres) and the nodal openings spread from
    0.3 to 2.9x their median. Averaging the opening vector over about a
    voxel cancels the pattern and keeps the smooth part.

    Parameters
    ----------
    points : (npt, 3) point positions, m
    normal : (npt, 3) unit normals
    area : (npt,) point areas, m^2
    particle : (npt,) particle label of every point
    length_m : float, ``ell`` > 0, m
    cutoff : float, support radius in units of ``ell``
    """
    pairs = cKDTree(points).query_pairs(cutoff * length_m, output_type="ndarray")
    n = points.shape[0]
    i, j = np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])
    r2 = np.einsum("pi,pi->p", points[i] - points[j], points[i] - points[j])
    k = (np.exp(-0.5 * r2 / length_m**2) * np.maximum(np.einsum("pi,pi->p", normal[i], normal[j]), 0.0)
         * (particle[i] == particle[j]))
    K = sp.csr_matrix((np.concatenate([k, np.ones(n)]), (np.concatenate([i, np.arange(n)]),
                                                        np.concatenate([j, np.arange(n)]))), shape=(n, n))
    K.eliminate_zeros()
    # symmetric Sinkhorn scaling: c_i sum_j k_ij A_j c_j = 1, so W = diag(c) K diag(A c) is row-stochastic
    # and A-self-adjoint; what the iterations leave of the row sums goes on the diagonal
    c = 1.0 / np.sqrt(K @ area)
    for _ in range(SINKHORN_ITERATIONS):
        c = np.sqrt(c / (K @ (area * c)))
    W = (sp.diags(c) @ K @ sp.diags(area * c)).tocsr()
    return W + sp.diags(1.0 - np.asarray(W.sum(axis=1)).ravel())


def fluctuation_springs(W: sp.csr_matrix, iface: CohesiveInterface) -> tuple:
    """Springs between node pairs that hold the opening's fluctuation about its average.

    With ``P`` the (npt, npair) selection of every point's pair and
    ``B = W P``, ``C = B^T diag(A) B`` has row sums equal to the pair areas
    (``W`` is row-stochastic and A-self-adjoint), so
    ``sum_{i<j} C_ij |J_i - J_j|^2 = <delta, (I - W^2) delta>_A`` for the
    point openings ``delta = P J``: the energy the averaged law does not see.

    Returns
    -------
    i, j : (ns,) int, pair indices with i < j
    c : (ns,) float, spring areas ``C_ij``, m^2
    """
    P = iface.pair_selection
    B = (W @ P).tocsr()
    C = sp.triu(B.T @ sp.diags(iface.point_area) @ B, k=1).tocoo()
    keep = C.data > 0
    return C.row[keep].astype(np.int64), C.col[keep].astype(np.int64), C.data[keep]
