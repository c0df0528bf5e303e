"""Preconditioner tricks of the node-pair model: (mean, jump) pair coordinates and dropped weak pair blocks."""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

#: pair blocks of the assembled nonlocal tangent below this fraction of their diagonals' geometric mean
#: are moved onto the diagonals in the preconditioner's matrix (0: keep all)
PRECONDITIONER_DROP = 0.01
#: the preconditioner works in (mean, jump) coordinates on the node pairs whose interface coupling is
#: stiffer than this multiple of their bulk diagonal (the penalty makes undamaged pairs about 100x stiffer:
#: AMG on the split matrix then took 62 CG iterations where the bonded one takes 18; in pair coordinates 17)
STIFF_PAIR_RATIO = 1.0


def _block_diagonal(blocks: np.ndarray) -> sp.csr_matrix:
    """Block-diagonal sparse matrix of (n, 3, 3) blocks, (3n, 3n)."""
    n = blocks.shape[0]
    return sp.bsr_matrix((blocks, np.arange(n), np.arange(n + 1)), shape=(3 * n, 3 * n)).tocsr()


def _drop_weak_blocks(G: sp.spmatrix, tau: float) -> sp.csr_matrix:
    """Drop the 3x3 off-diagonal blocks with ``|G_ij| < tau sqrt(|G_ii| |G_jj|)`` (Frobenius norms).

    Each dropped block's norm goes onto both diagonal blocks (times the
    identity), so the result minus ``G`` is positive semi-definite: a
    positive definite ``G`` stays so.
    """
    Gb = sp.bsr_matrix(G, blocksize=(3, 3))
    Gb.sort_indices()
    nb = Gb.shape[0] // 3
    rows = np.repeat(np.arange(nb), np.diff(Gb.indptr))
    cols = Gb.indices.astype(np.int64)
    norm = np.sqrt(np.einsum("kij,kij->k", Gb.data, Gb.data))
    on_diag = rows == cols
    dnorm = np.zeros(nb)
    dnorm[rows[on_diag]] = norm[on_diag]
    weak = ~on_diag & (norm < tau * np.sqrt(dnorm[rows] * dnorm[cols]))
    comp = np.bincount(rows[weak], weights=norm[weak], minlength=nb)
    data = Gb.data.copy()
    data[on_diag] += comp[rows[on_diag]][:, None, None] * np.eye(3)
    keep = ~weak
    out = sp.bsr_matrix((data[keep], cols[keep], np.r_[0, np.cumsum(np.bincount(rows[keep], minlength=nb))]),
                        shape=Gb.shape)
    return out.tocsr()


@dataclasses.dataclass(frozen=True)
class PairBasis:
    """(mean, jump) coordinates on node pairs, for the preconditioner (:meth:`LinearSolver.rebuild`).

    ``T`` maps the mean ``m`` (stored at the SE node) and the jump ``j``
    (stored at the AP node) to ``u_SE = m - j / 2``, ``u_AP = m + j / 2``;
    every other node keeps its displacement. A stiff interface spring then
    acts on the jump alone (block Gauss-Seidel removes it at once: it has no
    coarse-grid part, as ``T^-1`` of a rigid-body mode has no jump) and the
    means see the bonded stiffness. Undamaged 24^3 cohesive matrix, CG to
    1e-8: 62 AMG-CG iterations on the split nodes, 17 in these coordinates
    (bonded: 18). Each SE and AP node may belong to one pair only.

    Attributes
    ----------
    se, ap : (np,) int
        The pairs' SE and AP node indices.
    n_nodes : int
    """

    se: np.ndarray
    ap: np.ndarray
    n_nodes: int

    #: (SE, AP) rows of each map, acting on the pair's (SE-slot, AP-slot) values
    T = ((1.0, -0.5), (1.0, 0.5))
    T_TRANSPOSE = ((1.0, 1.0), (-0.5, 0.5))
    T_INVERSE = ((0.5, 0.5), (-1.0, 1.0))

    def _mix(self, v: np.ndarray, m) -> np.ndarray:
        """Apply the 2x2 map ``m`` on every pair's (SE, AP) nodes; (3 nn,) or (3 nn, k)."""
        w = np.asarray(v).reshape(self.n_nodes, 3, -1)
        out = w.copy()
        s, a = w[self.se], w[self.ap]
        out[self.se] = m[0][0] * s + m[0][1] * a
        out[self.ap] = m[1][0] * s + m[1][1] * a
        return out.reshape(np.shape(v))

    def apply(self, y: np.ndarray) -> np.ndarray:
        """``T y``: pair coordinates -> displacements."""
        return self._mix(y, self.T)

    def apply_t(self, r: np.ndarray) -> np.ndarray:
        """``T^T r``: forces -> pair coordinates."""
        return self._mix(r, self.T_TRANSPOSE)

    def inverse(self, u: np.ndarray) -> np.ndarray:
        """``T^-1 u``: displacements -> pair coordinates (mean, jump)."""
        return self._mix(u, self.T_INVERSE)

    def matrix(self) -> sp.csr_matrix:
        """``T`` as a sparse (3 nn, 3 nn) matrix."""
        n = self.n_nodes
        (ss, sa), (as_, aa) = self.T
        diag = np.ones(n)
        diag[self.se], diag[self.ap] = ss, aa
        rows = np.r_[np.arange(n), self.se, self.ap]
        cols = np.r_[np.arange(n), self.ap, self.se]
        vals = np.r_[diag, np.full(self.se.size, sa), np.full(self.se.size, as_)]
        return sp.kron(sp.csr_matrix((vals, (rows, cols)), shape=(n, n)), sp.identity(3), format="csr")

    def galerkin(self, A: sp.spmatrix) -> sp.bsr_matrix:
        """``T^T A T`` (3x3 BSR; block products, no scalar copy of ``A``)."""
        T = sp.bsr_matrix(self.matrix(), blocksize=(3, 3))
        A = A if sp.isspmatrix_bsr(A) and A.blocksize == (3, 3) else sp.bsr_matrix(A, blocksize=(3, 3))
        out = sp.bsr_matrix(T.T.tobsr(blocksize=(3, 3)) @ A @ T, blocksize=(3, 3))
        out.sort_indices()
        return out


def stiff_pairs(A: sp.spmatrix, se: np.ndarray, ap: np.ndarray, ratio: float,
                fixed: np.ndarray | None = None) -> np.ndarray:
    """Node pairs whose interface coupling in ``A`` is stiffer than ``ratio`` times their bulk, (np,) bool.

    The coupling is ``S = -A[se, ap]`` (3x3, symmetrised); a pair is stiff
    when the smallest eigenvalue of ``S`` exceeds ``ratio`` times the largest
    of the bulk block ``A[i, i] - S`` on either side. Components fixed on
    either node (``fixed``, (nn, 3) bool: Dirichlet rows carry no coupling)
    count as stiff. Pairs that share a node with another pair are left out
    (:class:`PairBasis` needs disjoint pairs).
    """
    A = A if sp.isspmatrix_bsr(A) and A.blocksize == (3, 3) else sp.bsr_matrix(A, blocksize=(3, 3))
    A.sort_indices()

    def blocks(rows, cols):  # (np, 3, 3) blocks A[rows[k], cols[k]], zero where the pattern has none
        pos = _block_positions(A, rows, cols, missing="mark")
        return np.where((pos >= 0)[:, None, None], A.data[pos], 0.0)

    S = -blocks(se, ap)
    S = 0.5 * (S + S.transpose(0, 2, 1))
    bulk = np.minimum(np.linalg.eigvalsh(blocks(se, se) - S)[:, -1], np.linalg.eigvalsh(blocks(ap, ap) - S)[:, -1])
    if fixed is not None:
        either = (fixed[se] | fixed[ap]).astype(float)
        S = S + either[:, :, None] * np.eye(3) * (ratio + 1.0) * bulk[:, None, None]
    stiff = np.linalg.eigvalsh(S)[:, 0] > ratio * bulk
    for nodes in (se, ap):
        stiff &= np.bincount(nodes, minlength=int(nodes.max(initial=0)) + 1)[nodes] == 1
    return stiff


def _block_positions(A: sp.bsr_matrix, rows: np.ndarray, cols: np.ndarray, missing: str = "raise") -> np.ndarray:
    """Index into ``A.data`` of the blocks (rows[i], cols[i]); ``missing="mark"``: -1 where there is none."""
    # blocks are sorted by (row, column): one binary search over a global (row, column) key
    nb = A.indptr.size - 1
    key = np.repeat(np.arange(nb, dtype=np.int64), np.diff(A.indptr)) * nb + A.indices
    want = rows.astype(np.int64) * nb + cols
    pos = np.minimum(np.searchsorted(key, want), key.size - 1)
    found = key[pos] == want
    if missing == "mark":
        return np.where(found, pos, -1)
    if not found.all():
        raise RuntimeError("interface block missing from the matrix pattern")
    return pos

