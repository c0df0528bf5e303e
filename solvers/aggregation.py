"""Geometric aggregation multigrid for scalar Laplacians on voxel graphs (tortuosity, ionic transport).

Every level groups the unknowns of one 2 x 2 x 2 block of its grid that are joined, inside the block,
by a connection of the level's matrix: a block of electrolyte voxels cut by a particle gives one
aggregate per piece, so no coarse unknown ties together electrolyte that only meets around a corner
(the scalar cousin of :mod:`solvers.topology`'s split levels). The prolongation is piecewise constant,
the coarse matrices are Galerkin products, and the levels are visited by the K-cycle of
:class:`solvers.topology.KCycle`, which keeps the iteration count flat where a V-cycle of plain
aggregates would not. The set-up is a few sparse products and one graph labelling per level, a tenth
of a classical algebraic multigrid's on the same matrix.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from solvers.topology import KCycle


def block_aggregates(A: sp.csr_matrix, coords: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """One coarsening step: the pieces of every 2 x 2 x 2 block that ``A`` connects.

    Parameters
    ----------
    A : (n, n) csr
        The level's matrix (its off-diagonal pattern is the connection graph).
    coords : (n, 3) int
        Grid position of every unknown on this level.

    Returns
    -------
    P : (n, m) csr
        0/1 prolongation, one entry per row (the unknown's aggregate).
    coarse_coords : (m, 3) int
        Grid position of every aggregate on the next level (its block).
    """
    n = A.shape[0]
    block = np.asarray(coords) // 2
    bid = np.ravel_multi_index(tuple(block.T), tuple(block.max(axis=0) + 1))
    coo = sp.triu(A, k=1, format="coo")
    inside = (bid[coo.row] == bid[coo.col]) & (coo.data != 0)
    graph = sp.csr_matrix((np.ones(int(inside.sum())), (coo.row[inside], coo.col[inside])), shape=(n, n))
    m, agg = csgraph.connected_components(graph, directed=False)
    P = sp.csr_matrix((np.ones(n), (np.arange(n), agg)), shape=(n, m))
    coarse = np.zeros((m, 3), np.int64)
    coarse[agg] = block
    return P, coarse


class BlockAggregation:
    """Set up once per matrix; ``cycle(r)`` is a preconditioner for flexible CG.

    Parameters
    ----------
    A : (n, n) csr, symmetric positive definite
    coords : (n, 3) int
        Voxel position of every unknown.
    coarsest : int
        Unknowns at or below which a level is factorised exactly.
    inner : int
        Flexible-CG steps of the coarse correction per level (the K-cycle; 2 is Notay's choice).
    """

    def __init__(self, A, coords, *, coarsest: int = 4000, inner: int = 2):
        ops, Ps = [sp.csr_matrix(A)], []
        c = np.asarray(coords)
        while ops[-1].shape[0] > coarsest:
            P, c = block_aggregates(ops[-1], c)
            if P.shape[1] > 0.75 * P.shape[0]:  # no longer coarsening: factorise this level
                break
            Ps.append(P)
            ops.append((P.T @ ops[-1] @ P).tocsr())
        self.kcycle = KCycle(ops, Ps, inner=inner, shift=0.0)

    @property
    def sizes(self) -> list[int]:
        """Unknowns per level, finest first."""
        return [op.shape[0] for op in self.kcycle.ops]

    def cycle(self, r: np.ndarray) -> np.ndarray:
        """One K-cycle from the finest level."""
        return self.kcycle.cycle(r)
