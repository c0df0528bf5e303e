"""Matrix-free voxel elasticity with a geometric multigrid preconditioner, and matrix-free diffusion.

No global matrix: every level stores one small element matrix per distinct
material and a material index per voxel. The operator is applied voxel by
voxel (voxel planes of one parity in parallel, so threads never add to the
same node) by a numba kernel on the CPU, or by array expressions on the GPU
(CuPy). On the CPU the fine level, where every element matrix is
``lam K_lam + mu K_mu`` of its voxel, runs one BLAS product per voxel row
instead (:class:`LameOperator`, 5x faster), and so do the coarse voxels whose 8
children share one phase (their Galerkin matrix is the 2h one). The preconditioner is a geometric V-cycle: 2x2x2
coarsening with averaged Lame moduli (a coarse voxel is void only if all 8
fine ones are), Chebyshev-Jacobi smoothing, trilinear prolongation and its
transpose, and a direct solve on the coarsest grid.

Voxel data have features the coarse grids cannot represent: single voxels
and one-voxel sheets hanging on the solid by one face, thin necks between
void blobs. Their soft local modes are neither smoothed (too low in the
spectrum) nor corrected (trilinear coarse functions tie them to material
across the void), and they alone made the iteration count grow with the
volume. Setup finds them the way adaptive multigrid does: a few V-cycles
as a stationary iteration on a random error leave only the modes the cycle
misses; the nodes where that error stays above ``local_threshold`` (of its
unit start), and their neighbours, get an exact local solve on the
fine level before and after the coarse correction (a multiplicative
Schwarz step, so the preconditioner stays symmetric). The local solves are
block Jacobi between boxes of ``LOCAL_BOX`` nodes a side; a thin feature
that straddles a box face is corrected by both boxes and its error grows,
so three more setup cycles find such features and a second, small stage
solves each one together with the boxes it touches.

The diffusion of the transient model (:class:`CellOperator`,
:class:`JacobiCG`) runs on its own unknowns (mesh nodes duplicated per
particle, so not a grid) with the same element-by-element kernel; every
particle is its own diffusion domain, so the diagonal preconditioner keeps
the iterations flat in the sample size (they grow with particle size in
voxels and with ``D dt / h^2``).

Elasticity vectors live on the full node grid, shape (Z+1, Y+1, X+1, 3); fixed dofs
(box conditions, and nodes that touch no solid voxel) carry the identity
scaled by ``scale``, exactly as :func:`solvers.fem.assembly.apply_dirichlet`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndimage
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse.csgraph import connected_components
from threadpoolctl import threadpool_limits

from solvers.fem.assembly import apply_dirichlet, assemble_voxel_stiffness, elasticity_parts
from solvers.fem.elements import HEX8
from solvers.linalg import SolveStats, checked_solve, flexible_cg, pcg
from solvers.matfree_band import BandBlocks
from solvers.mesh.voxel import ACTIVE, nodes_of
from tomomech.errors import ConfigError, ConvergenceError

log = logging.getLogger(__name__)

CORNERS = HEX8.nodes.astype(np.int64)  # (8, 3) local corner offsets (z, y, x)
COARSEST_DOF = 30_000
#: with a band the coarsest factor is renewed at every update: SuperLU took 13 s for 27 k dof, so go one level further
COARSEST_DOF_BAND = 10_000
LOCAL_BOX = 10  # nodes per side of a local exact solve (at most; the boxes split each axis evenly)
REFINE_CYCLES = 3  # V-cycles with the local solves in place, to find the features their blocks cut
REFINE_FRACTION = 0.1  # nodes whose error stays above this fraction of the largest get their blocks merged


@functools.cache  # each kernel factory compiles on first use (numba import and JIT cost seconds)
def _numba_kernel():
    import numba

    cz, cy, cx = (np.ascontiguousarray(CORNERS[:, i]) for i in range(3))

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def apply(x, mat, ke, y):
        # element by element: gather the 24 dofs, a dense 24 x 24 product, scatter-add. Voxel planes
        # of one parity touch disjoint node planes, so the two parities run one after the other and
        # the planes of each in parallel without two threads adding to the same node.
        Z, Y, X = mat.shape
        y[:] = 0.0
        for parity in range(2):
            for iz in numba.prange((Z - parity + 1) // 2):
                ez = 2 * iz + parity
                xe = np.empty(24, x.dtype)
                ye = np.empty(24, x.dtype)
                for ey in range(Y):
                    for ex in range(X):
                        m = mat[ez, ey, ex]
                        if m < 0:
                            continue
                        for a in range(8):
                            for c in range(3):
                                xe[3 * a + c] = x[ez + cz[a], ey + cy[a], ex + cx[a], c]
                        km = ke[m]
                        for i in range(24):
                            acc = 0.0
                            for j in range(24):
                                acc += km[i, j] * xe[j]
                            ye[i] = acc
                        for a in range(8):
                            for c in range(3):
                                y[ez + cz[a], ey + cy[a], ex + cx[a], c] += ye[3 * a + c]

    return apply


def apply_numba(x, mat, ke):
    """``y = K x`` of the unconstrained voxel operator (numba, parallel over voxel planes).

    ``x`` (Z+1, Y+1, X+1, 3), ``mat`` (Z, Y, X) int32 (-1: void), ``ke``
    (n_mat, 8, 3, 8, 3) element matrices; float32 or float64 (``x`` and
    ``ke`` alike).
    """
    y = np.empty_like(x)
    _numba_kernel()(x, mat, ke.reshape(ke.shape[0], 24, 24), y)
    return y


# Corners in pairs along x: (0, 1), (3, 2), (4, 5), (7, 6) share (z, y) and sit at x and x + 1, so the six
# dofs of a pair are six consecutive numbers in a C-ordered node grid row.
_PAIRED = np.array([0, 1, 3, 2, 4, 5, 7, 6])


@functools.cache
def _numba_lame_kernel():
    import numba

    qz = np.array([0, 0, 1, 1])
    qy = np.array([0, 1, 0, 1])

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def apply(x, phase, lam, mu, k2t, free, scale, y):
        # One voxel row (fixed z, y) at a time: gather the 24 dofs of its n solid-spanned voxels into
        # an (n, 24) block (four copies of six consecutive numbers per voxel), one BLAS product with
        # [K_lam K_mu] (24 x 48), then add lam * (.)_lam + mu * (.)_mu back. Planes of one z parity
        # touch disjoint node planes, as in the per-voxel kernel.
        Z, Y, X = phase.shape
        xf = x.reshape(Z + 1, Y + 1, 3 * (X + 1))
        ff = free.reshape(Z + 1, Y + 1, 3 * (X + 1))
        yf = y.reshape(Z + 1, Y + 1, 3 * (X + 1))
        for iz in numba.prange(Z + 1):
            yf[iz] = 0.0
        for parity in range(2):
            for iz in numba.prange((Z - parity + 1) // 2):
                ez = 2 * iz + parity
                for ey in range(Y):
                    lo = X
                    hi = -1
                    for ex in range(X):
                        if phase[ez, ey, ex] >= 0:
                            if lo == X:
                                lo = ex
                            hi = ex
                    if hi < 0:
                        continue
                    n = hi + 1 - lo
                    ut = np.empty((n, 24), x.dtype)
                    for q in range(4):
                        zq = ez + qz[q]
                        yq = ey + qy[q]
                        for k in range(n):
                            for t in range(6):
                                j = 3 * (lo + k) + t
                                ut[k, 6 * q + t] = xf[zq, yq, j] if ff[zq, yq, j] else 0.0
                    pt = np.dot(ut, k2t)
                    for k in range(n):
                        m = phase[ez, ey, lo + k]
                        if m < 0:
                            continue
                        lk = lam[m]
                        mk = mu[m]
                        for q in range(4):
                            for t in range(6):
                                yf[ez + qz[q], ey + qy[q], 3 * (lo + k) + t] += lk * pt[k, 6 * q + t] + \
                                    mk * pt[k, 24 + 6 * q + t]
        for iz in numba.prange(Z + 1):
            for iy in range(Y + 1):
                for j in range(3 * (X + 1)):
                    if not ff[iz, iy, j]:
                        yf[iz, iy, j] = scale * xf[iz, iy, j]

    return apply


class LameOperator:
    """``y = M K M x + scale (I - M) x`` over the voxels whose ``K_e = lam K_lam + mu K_mu`` (numba, CPU).

    Every fine element matrix, and every coarse one whose 8 children share a
    phase, is ``lam K_lam + mu K_mu`` of its grid, so a row of voxels needs one
    dense product of its gathered dofs with ``[K_lam K_mu]``, scaled per voxel
    afterwards (BLAS instead of one 24 x 24 product per voxel: 5x faster in
    float32, 2.8x in float64 at 96^3). The box conditions enter through the
    mask ``M`` instead of the element matrices.

    Parameters
    ----------
    phase : (Z, Y, X) int
        Index into ``lame`` of each voxel, -1 for void and for voxels left to
        the per-voxel kernel.
    lame : (n_phase, 2) float
        Lame lambda and mu of each phase, Pa.
    spacing : (3,) float
        Voxel size of this grid, m.
    fixed : (Z+1, Y+1, X+1, 3) bool
        Dofs with an identity row.
    scale : float
        Diagonal of the fixed dofs, N/m.
    """

    def __init__(self, phase, lame, spacing, fixed, scale):
        k_lam, k_mu = (k.reshape(24, 24) for k in elasticity_parts(HEX8, spacing))
        dofs = (3 * _PAIRED[:, None] + np.arange(3)).ravel()
        k2t = np.concatenate([k_lam[dofs][:, dofs], k_mu[dofs][:, dofs]]).T  # (24, 48), symmetric blocks
        self.phase = np.ascontiguousarray(phase, np.int32)
        self.free = np.ascontiguousarray(~np.asarray(fixed, bool))
        self.scale = float(scale)
        lame = np.asarray(lame, np.float64).reshape(-1, 2)
        self._tables = {np.dtype(dt): (np.ascontiguousarray(lame[:, 0], dt), np.ascontiguousarray(lame[:, 1], dt),
                                       np.ascontiguousarray(k2t, dt)) for dt in (np.float32, np.float64)}

    def __call__(self, x):
        """``y`` for ``x`` (Z+1, Y+1, X+1, 3), float32 or float64 (the product runs in that precision)."""
        x = np.ascontiguousarray(x)
        lam, mu, k2t = self._tables[x.dtype]
        y = np.empty_like(x)
        _numba_lame_kernel()(x, self.phase, lam, mu, k2t, self.free, x.dtype.type(self.scale), y)
        return y


#: entries of the per-chunk temporaries of :func:`apply_arrays` (voxels x values per voxel)
CHUNK_ENTRIES = 2**25
#: :func:`apply_arrays` loops over the element matrices when a level has at most this many (else it gathers them)
FEW_MATRICES = 8


class PhaseArrays:
    """:class:`LameOperator` as array expressions (the GPU): ``M K M x + scale (I - M) x`` over the voxels
    with one phase's ``lam K_lam + mu K_mu``, with unmasked per-phase matrices, so that
    :func:`apply_arrays` runs its few-matrix form (a fine level has one matrix per phase and box-corner
    pattern, 28-37 at 32^3; here one per phase).

    Parameters as :class:`LameOperator`, but ``free`` and ``fixed`` are the level's masks already on
    the device (not uploaded again), and ``xp`` is the array namespace the tables live in.
    """

    def __init__(self, phase, lame, spacing, free, fixed, scale, xp):
        k_lam, k_mu = elasticity_parts(HEX8, spacing)
        lame = np.asarray(lame, np.float64).reshape(-1, 2)
        ke = lame[:, 0, None, None, None, None] * k_lam + lame[:, 1, None, None, None, None] * k_mu
        self.xp, self.scale = xp, float(scale)
        self.phase = xp.asarray(np.asarray(phase, np.int32))
        self.free, self.fixed = free, fixed
        self._ke = {np.dtype(dt): xp.asarray(ke.astype(dt)) for dt in (np.float32, np.float64)}

    def __call__(self, x):
        y = apply_arrays(x * self.free, self.phase, self._ke[np.dtype(x.dtype)], self.xp) * self.free
        y += self.scale * (x * self.fixed)
        return y


def apply_arrays(x, mat, ke, xp=np):
    """The same operator as array expressions (CuPy on the GPU, numpy for tests).

    Slabs of voxel planes at a time, so that no temporary spans the grid: the 24 dofs of every
    voxel of the slab are gathered once (8 shifted slices), multiplied by the voxel's element
    matrix and added back to the 8 corners. With few distinct matrices (the fine level: one per
    phase) the product is one ``(n, 24) @ (24, 24)`` per matrix, masked by the voxels that use it;
    otherwise (coarse Galerkin levels) the slab's matrices are gathered, in thinner slabs.
    """
    Z, Y, X = mat.shape
    nm = ke.shape[0]
    kf = ke.reshape(nm, 24, 24)
    few = nm <= FEW_MATRICES
    per_voxel = 24 * 3 if few else 24 * 24
    rows = max(1, min(Z, CHUNK_ENTRIES // (Y * X * per_voxel)))
    y = xp.zeros_like(x)
    for z0 in range(0, Z, rows):
        z1 = min(Z, z0 + rows)
        flat = mat[z0:z1].reshape(-1)
        xe = xp.stack([x[z0 + dz:z1 + dz, dy:dy + Y, dx:dx + X] for dz, dy, dx in CORNERS.tolist()], axis=-2)
        xe = xe.reshape(-1, 24)
        if few:
            ye = xp.zeros_like(xe)
            for k in range(nm):
                ye += (flat == k)[:, None] * (xe @ kf[k].T)
        else:
            ye = xp.einsum("nij,nj->ni", kf[xp.where(flat >= 0, flat, 0)], xe) * (flat >= 0)[:, None]
        ye = ye.reshape(z1 - z0, Y, X, 8, 3)
        for a, (dz, dy, dx) in enumerate(CORNERS.tolist()):
            y[z0 + dz:z1 + dz, dy:dy + Y, dx:dx + X] += ye[..., a, :]
    return y


@functools.cache
def _numba_cell_kernel():
    import numba

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def apply(x, cells, starts, ke, y):
        # cells sorted into the 8 voxel parity classes (z, y, x mod 2): cells of one class share no
        # node, so each class runs in parallel and the classes one after the other
        y[:] = 0.0
        for k in range(8):
            for e in numba.prange(starts[k], starts[k + 1]):
                for i in range(8):
                    acc = 0.0
                    for j in range(8):
                        acc += ke[i, j] * x[cells[e, j]]
                    y[cells[e, i]] += acc

    return apply


@functools.cache
def _numba_chebyshev_step():
    import numba

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def step(x, d, r, ad, dinv, c_d, c_r):
        for i in numba.prange(x.size):
            x[i] += d[i]
            r[i] -= dinv[i] * ad[i]
            d[i] = c_d * d[i] + c_r * r[i]

    return step


def chebyshev_step(x, d, r, ad, dinv, c_d, c_r, xp=np):
    """One Chebyshev update in place: ``x += d; r -= dinv * ad; d = c_d d + c_r r``.

    On the CPU one parallel pass over the five arrays (same shape, contiguous)
    instead of six numpy temporaries, each a single-threaded pass.
    """
    if xp is not np:
        x += d
        r -= dinv * ad
        d *= c_d
        d += c_r * r
        return
    t = x.dtype.type
    flat = (a.reshape(-1) for a in (x, d, r, ad, dinv))
    _numba_chebyshev_step()(*flat, t(c_d), t(c_r))


class CellOperator:
    """Matrix-free ``y = sum_e K_e x_e`` of one scalar element matrix over voxel cells with own node numbering.

    The diffusion unknowns are the mesh nodes duplicated per particle, so they
    are not a grid; the operator gathers the 8 unknowns of every cell, one
    8 x 8 product, and scatters back.

    Parameters
    ----------
    cells : (na, 8) int
        Unknown of each corner of each cell.
    voxel : (na, 3) int
        Voxel (z, y, x) of each cell (its parity class orders the parallel work).
    ke : (8, 8) float
        The element matrix of every cell.
    n : int
        Number of unknowns.
    device : {"cpu", "gpu"}
        ``gpu``: array expressions through CuPy (a clear error without a CUDA device).
    """

    def __init__(self, cells, voxel, ke, n, device="cpu"):
        xp = _cupy() if device == "gpu" else np
        parity = (np.asarray(voxel) % 2) @ np.array([4, 2, 1])
        order = np.argsort(parity, kind="stable")
        self.cells = np.ascontiguousarray(np.asarray(cells, np.int64)[order])
        self.starts = np.searchsorted(parity[order], np.arange(9)).astype(np.int64)
        self.ke = np.ascontiguousarray(ke, np.float64)
        self.n, self.xp = int(n), xp
        if xp is not np:
            self.cells_dev, self.ke_dev = xp.asarray(self.cells), xp.asarray(self.ke)
        self.diagonal = np.bincount(self.cells.ravel(), weights=np.tile(np.diag(self.ke), len(self.cells)),
                                    minlength=self.n)

    def __call__(self, x):
        """``A x`` for x (n,) float64 (numpy or, with ``xp`` = cupy, on the device)."""
        if self.xp is np:
            y = np.empty(self.n)
            _numba_cell_kernel()(np.ascontiguousarray(x, np.float64), self.cells, self.starts, self.ke, y)
            return y
        return self.apply_arrays(x, self.cells_dev, self.ke_dev, self.xp)

    def apply_arrays(self, x, cells, ke, xp=np):
        """The same operator as array expressions (CuPy on the GPU; numpy for tests)."""
        contrib = x[cells] @ ke.T  # (na, 8)
        return xp.bincount(cells.ravel(), weights=contrib.ravel(), minlength=self.n)


class JacobiCG:
    """CG with the diagonal preconditioner on a :class:`CellOperator`.

    Enough where every connected domain is small against the sample: the
    condition number of one particle's ``M/dt + K`` is bounded by its size in
    voxels, not by the sample's, so the iterations stay flat as the volume grows.
    """

    def __init__(self, op: CellOperator, *, rtol=1e-10, maxiter=2000, name="matrix-free-jacobi-cpu"):
        self.op = op
        self.rtol, self.maxiter = float(rtol), int(maxiter)
        self.stats = SolveStats(name)
        self._dinv = op.xp.asarray(1.0 / op.diagonal)

    def solve(self, b, x0=None):
        """CG to ``rtol`` (true residual checked); raises ConvergenceError otherwise.
        ``b``, ``x0`` and the result are host arrays; on the GPU CG runs on the device and only they cross."""
        xp = self.op.xp
        x = _pcg(self.stats, self.op, lambda r: self._dinv * r, xp.asarray(np.asarray(b, np.float64)),
                 None if x0 is None else xp.asarray(np.asarray(x0, np.float64)), self.rtol, self.maxiter, xp=xp)
        return x if xp is np else x.get()


@dataclass
class Level:
    """One grid of the hierarchy."""

    mat: np.ndarray  # (Z, Y, X) int32 index into ke, -1 void
    ke: np.ndarray  # (n_mat, 8, 3, 8, 3) element matrices, box constraints masked in
    fixed: np.ndarray  # (Z+1, Y+1, X+1, 3) bool: identity rows (box conditions, nodes without solid)
    box: np.ndarray  # (Z+1, Y+1, X+1, 3) bool: the box conditions alone
    scale: float = 1.0
    diag_inv: np.ndarray | None = None
    lmax: float = 1.0
    top_vector: object = None  # the top eigenvector estimate of D^-1/2 A D^-1/2 (band updates warm-start from it)
    fixed_dev: object = None
    free_dev: object = None
    phase: np.ndarray | None = None  # (Z, Y, X) int32: Lame index where K_e = lam K_lam + mu K_mu of this grid, else -1
    lame: LameOperator | None = None  # on the CPU: the voxels with a phase, through the faster row kernel
    rest: np.ndarray | None = None  # (Z, Y, X) int32: ``mat`` of the other voxels (-1 elsewhere), with ``lame``
    band: BandBlocks | None = None  # fine level: voxels with their own stiffness (cohesive band), not in ``mat``
    dynamic: np.ndarray | None = None  # (Z, Y, X) bool: voxels whose matrix can change (band, or own slots)
    ke_host: np.ndarray | None = None  # float64 host copy of ``ke`` where the level has dynamic voxels

    @property
    def node_shape(self):
        return tuple(s + 1 for s in self.mat.shape) + (3,)


def _corner_pattern(box):
    """Per voxel, the box-fixed flags of its 8 x 3 dofs packed in 3 bytes, (Z, Y, X, 3) uint8."""
    Z, Y, X = (s - 1 for s in box.shape[:3])
    pattern = np.zeros((Z, Y, X, 8, 3), bool)
    for a, (dz, dy, dx) in enumerate(CORNERS):
        pattern[:, :, :, a] = box[dz:dz + Z, dy:dy + Y, dx:dx + X]
    return np.packbits(pattern.reshape(Z, Y, X, 24), axis=-1, bitorder="little")


def _unpack_keep(codes):
    """(n, 3) packed patterns -> (n, 8, 3) float, 1 where the dof is free."""
    bits = np.unpackbits(codes.astype(np.uint8), axis=1, bitorder="little")[:, :24].astype(bool)
    return (~bits).astype(float).reshape(-1, 8, 3)


def _unique_rows(key):
    """Distinct rows of ``key`` (n, k) int and the row of each: ``np.unique(axis=0, return_inverse=True)``.

    Sorts one 64-bit hash per row instead of the rows (np.unique over rows took 12 of the 78 s of
    multigrid setup at 128^3); rows that share a hash are checked equal, and a collision falls back to
    the row sort. The distinct rows come in hash order, not lexicographic order.
    """
    key = np.ascontiguousarray(key, np.int64)
    mult = np.random.default_rng(7).integers(1, 2**62, size=key.shape[1]).astype(np.uint64) * 2 + 1
    h = (key.astype(np.uint64) * mult).sum(axis=1, dtype=np.uint64)  # arithmetic modulo 2^64
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    inv = inv.ravel()
    if not all(np.array_equal(key[first, j][inv], key[:, j]) for j in range(key.shape[1])):
        uniq, inv = np.unique(key, axis=0, return_inverse=True)
        return uniq, inv.ravel()
    return key[first], inv


def _fine_level(mat_phase, ke_phase, box_fixed):
    """Fine level: one masked element matrix per (material, box-constraint pattern) in use.

    ``box_fixed`` (Z+1, Y+1, X+1, 3) marks the box conditions; the element
    matrix of a voxel has the rows and columns of its fixed dofs zeroed, so the
    summed operator is ``M A M`` exactly as the assembled path.
    """
    Z, Y, X = mat_phase.shape
    code = _corner_pattern(box_fixed)
    key = np.concatenate([mat_phase[..., None].astype(np.int64), code.astype(np.int64)], axis=-1)
    solid = mat_phase >= 0
    uniq, inv = _unique_rows(key[solid])
    mat = np.full((Z, Y, X), -1, np.int32)
    mat[solid] = inv.ravel()
    keep = _unpack_keep(uniq[:, 1:])
    ke = ke_phase[uniq[:, 0]] * keep[:, :, :, None, None] * keep[:, None, None, :, :]
    return mat, np.ascontiguousarray(ke)


def _sub_prolongations() -> np.ndarray:
    """P[s, a, b]: weight of coarse corner b at fine corner a of sub-voxel s (8, 8, 8)."""
    P = np.empty((8, 8, 8))
    for s_, off in enumerate(CORNERS):
        xi = (off[None, :] + CORNERS) / 2.0  # fine corners in coarse reference coordinates
        P[s_] = HEX8.shape(xi)
    return P


_P_SUB = _sub_prolongations()


def _children(fine_array, fill):
    """(z, y, x, 8) values of the 8 children of every coarse voxel (odd sizes padded with ``fill``),
    children in :data:`CORNERS` order."""
    a = np.pad(fine_array, [(0, s % 2) for s in fine_array.shape], constant_values=fill)
    z, y, x = (s // 2 for s in a.shape)
    order = [int(dz * 4 + dy * 2 + dx) for dz, dy, dx in CORNERS]
    return a.reshape(z, 2, y, 2, x, 2).transpose(0, 2, 4, 1, 3, 5).reshape(z, y, x, 8)[..., order]


def _galerkin(k, keep):
    """Coarse element matrices ``sum_s P_s^T K_s P_s``, masked: k (n, 8 sub, 8, 3, 8, 3), keep (n, 8, 3)."""
    kc = np.einsum("sab,nsaicj,scd->nbidj", _P_SUB, k, _P_SUB, optimize=True)
    return kc * keep[:, :, :, None, None] * keep[:, None, None, :, :]


def _coarse_box(box):
    """Box conditions of the coarse nodes: those of the fine node on each; for an odd fine size, the
    coarse node one fine node beyond the grid takes those of the fine boundary node half-way to it.

    That node carries half the weight of the fine boundary node (trilinear prolongation), so fixing
    it (as a node outside the grid once was) took constant displacements off every face of odd size:
    CG needed 51 iterations on a 65^3 crop against 14 on 64^3.
    """
    idx = [np.minimum(np.arange(0, n + 1, 2), n - 1) for n in box.shape[:3]]  # n: fine node count
    return np.ascontiguousarray(box[np.ix_(*idx)])


def _galerkin_level(fine: Level, chunk: int = 4096, child_matrices=None):
    """Coarse level whose element matrices are exactly ``P^T A P`` (element by element).

    Each coarse voxel holds 2x2x2 fine voxels and trilinear prolongation is local
    to it, so its element matrix is ``sum_s P_s^T K_s P_s``, with the coarse
    box-fixed dofs masked (a coarse node is fixed where the fine node on it is);
    coarse voxels with the same children and pattern share one matrix. Odd fine
    sizes are padded with void. Coarse voxels with a ``fine.dynamic`` child get
    a matrix of their own (after the shared ones), from ``child_matrices(fine, czyx)``
    ((m, 8, 8, 3, 8, 3) children matrices of the coarse voxels ``czyx`` (m, 3)), so
    that they can be recomputed when their children change.
    """
    children = _children(fine.mat, -1)
    z, y, x = children.shape[:3]
    cbox = _coarse_box(fine.box)
    code = _corner_pattern(cbox)
    key = np.concatenate([children.astype(np.int64), code.astype(np.int64)], axis=-1)
    own = np.zeros((z, y, x), bool) if fine.dynamic is None else _children(fine.dynamic, False).any(axis=-1)
    shared = (children >= 0).any(axis=-1) & ~own
    uniq, inv = _unique_rows(key[shared])
    cmat = np.full((z, y, x), -1, np.int32)
    cmat[shared] = inv.ravel()
    ke_f = np.concatenate([fine.ke, np.zeros((1,) + fine.ke.shape[1:])])  # index -1 -> zeros
    n_own = int(own.sum())
    ke_c = np.empty((len(uniq) + n_own, 8, 3, 8, 3))
    keep = _unpack_keep(uniq[:, 8:])
    for i in range(0, len(uniq), chunk):
        ke_c[i:min(i + chunk, len(uniq))] = _galerkin(ke_f[uniq[i:i + chunk, :8]], keep[i:i + chunk])
    lv = Level(cmat, ke_c, cbox.copy(), cbox)
    if n_own:
        czyx = np.argwhere(own)
        cmat[own] = len(uniq) + np.arange(n_own)
        for i in range(0, n_own, chunk):
            c = czyx[i:i + chunk]
            first = len(uniq) + i
            ke_c[first:first + len(c)] = _galerkin(child_matrices(fine, c), _unpack_keep(code[tuple(c.T)]))
        lv.dynamic = own
    # A coarse voxel whose 8 children share one phase has exactly the element matrix of that phase
    # on the 2h grid (nested trilinear spaces, exact quadrature); box conditions mask the fine and
    # the coarse face dofs alike, so the masked matrices agree as well.
    cph = _children(fine.phase, -1)
    pure = (cph == cph[..., :1]).all(axis=-1) & (cph[..., 0] >= 0) & ~own
    lv.phase = np.where(pure, cph[..., 0], -1).astype(np.int32)
    d = _diagonal(lv)
    lv.fixed = cbox | (d <= 1e-12 * d.max())  # box-fixed, and dofs with no solid left
    lv.scale = float(d[~lv.fixed].mean())
    return lv


@functools.cache
def _numba_transfers():
    import numba

    @numba.njit(inline="always")
    def taps(i):  # coarse neighbours and weights of fine node i along one axis
        return (i // 2, (i + 1) // 2, 1.0 if i % 2 == 0 else 0.5)

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def prolong_kernel(xc, out):
        Zf, Yf, Xf, C = out.shape
        for i in numba.prange(Zf):
            i0, i1, wi = taps(i)
            for j in range(Yf):
                j0, j1, wj = taps(j)
                for k in range(Xf):
                    k0, k1, wk = taps(k)
                    for c in range(C):
                        v = 0.0
                        for ii, wa in ((i0, wi), (i1, 1.0 - wi)):
                            if wa == 0.0:
                                continue
                            for jj, wb in ((j0, wj), (j1, 1.0 - wj)):
                                if wb == 0.0:
                                    continue
                                for kk, wc in ((k0, wk), (k1, 1.0 - wk)):
                                    if wc == 0.0:
                                        continue
                                    v += wa * wb * wc * xc[ii, jj, kk, c]
                        out[i, j, k, c] = v

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def restrict_kernel(xf, out):
        Zc, Yc, Xc, C = out.shape
        Zf, Yf, Xf, _ = xf.shape
        for I in numba.prange(Zc):
            for J in range(Yc):
                for K in range(Xc):
                    for c in range(C):
                        v = 0.0
                        for i in range(max(2 * I - 1, 0), min(2 * I + 2, Zf)):
                            wa = 1.0 if i == 2 * I else 0.5
                            for j in range(max(2 * J - 1, 0), min(2 * J + 2, Yf)):
                                wb = 1.0 if j == 2 * J else 0.5
                                for k in range(max(2 * K - 1, 0), min(2 * K + 2, Xf)):
                                    wc = 1.0 if k == 2 * K else 0.5
                                    v += wa * wb * wc * xf[i, j, k, c]
                        out[I, J, K, c] = v

    return prolong_kernel, restrict_kernel


def _transfer_numba(kernel, x, nodes):
    """Run one of the :func:`_numba_transfers` kernels from ``x`` to a new (``nodes``, 3) grid."""
    out = np.empty(tuple(nodes) + x.shape[3:], x.dtype)
    kernel(np.ascontiguousarray(x), out)
    return out


def prolong(xc, fine_nodes, xp=np):
    """Trilinear interpolation from a coarse node grid to the fine one (2h -> h), per component.

    ``xc`` (Zc, Yc, Xc, 3) to (``fine_nodes``, 3); numba on the CPU, array expressions otherwise.
    """
    if xp is np:
        return _transfer_numba(_numba_transfers()[0], xc, fine_nodes)
    return prolong_arrays(xc, fine_nodes, xp)


def restrict(xf, coarse_nodes, xp=np):
    """Transpose of :func:`prolong`."""
    if xp is np:
        return _transfer_numba(_numba_transfers()[1], xf, coarse_nodes)
    return restrict_arrays(xf, coarse_nodes, xp)


def prolong_arrays(xc, fine_nodes, xp=np):
    """:func:`prolong` as array expressions (CuPy on the GPU)."""
    out = xc
    for ax in range(3):
        nf = fine_nodes[ax]
        n2 = 2 * (out.shape[ax] - 1) + 1
        shape = list(out.shape)
        shape[ax] = n2
        f = xp.zeros(shape, dtype=out.dtype)
        even = [slice(None)] * 4
        even[ax] = slice(0, n2, 2)
        f[tuple(even)] = out
        odd = [slice(None)] * 4
        odd[ax] = slice(1, n2, 2)
        lo = [slice(None)] * 4
        lo[ax] = slice(0, -1)
        hi = [slice(None)] * 4
        hi[ax] = slice(1, None)
        f[tuple(odd)] = 0.5 * (out[tuple(lo)] + out[tuple(hi)])
        keep = [slice(None)] * 4
        keep[ax] = slice(0, nf)
        out = f[tuple(keep)]
    return out


def restrict_arrays(xf, coarse_nodes, xp=np):
    """:func:`restrict` as array expressions (CuPy on the GPU)."""
    out = xf
    for ax in (2, 1, 0):
        nc = coarse_nodes[ax]
        n2 = 2 * (nc - 1) + 1
        pad = [(0, 0)] * 4
        pad[ax] = (0, n2 - out.shape[ax])
        f = xp.pad(out, pad) if n2 > out.shape[ax] else out
        shape = list(f.shape)
        shape[ax] = nc
        c = xp.zeros(shape, dtype=f.dtype)
        even = [slice(None)] * 4
        even[ax] = slice(0, n2, 2)
        c += f[tuple(even)]
        odd = [slice(None)] * 4
        odd[ax] = slice(1, n2, 2)
        lo = [slice(None)] * 4
        lo[ax] = slice(0, nc - 1)
        hi = [slice(None)] * 4
        hi[ax] = slice(1, nc)
        c[tuple(lo)] += 0.5 * f[tuple(odd)]
        c[tuple(hi)] += 0.5 * f[tuple(odd)]
        out = c
    return out


class MatrixFreeSolver:
    """CG on the matrix-free operator, preconditioned by geometric multigrid.

    Parameters
    ----------
    mesh : VoxelMesh
    cell_lame : (ne, 2) float
        Lame lambda and mu of every cell, Pa.
    fixed : (nn, 3) bool
        Fixed dofs of the mesh's nodes (box conditions).
    scale : float
        Diagonal of fixed dofs (same as the assembled path).
    rtol, maxiter : CG tolerance and limit
    device : {"cpu", "gpu"}
    precision : {"float64", "mixed"}
        ``mixed``: multigrid in float32, CG in float64.
    chebyshev_degree : int
    local_cycles : int
        V-cycles run at setup to find the modes the cycle misses (0: no local solves).
    local_threshold : float
        Node error left after ``local_cycles`` cycles, relative to the unit
        random start, above which a node joins the local solve.
    local_max_fraction : float
        At most this fraction of the fine free nodes join (the largest errors).
    band : dict, optional
        Voxels with a stiffness of their own that changes during a run (the cohesive
        band, :mod:`solvers.matfree_band`): ``voxel`` (nb,) flat voxel indices, ``C``
        (nb, 6, 6) Mandel stiffness, ``hourglass`` (nb,) scales of ``Khg`` (24, 24).
        :meth:`update_band` changes them and updates the levels above them in place.
        With a band, local solves are not built at set-up: a CG solve that does not converge
        finds them then (and the rigid modes below), solves again, and keeps both, refactoring
        the local solves at every later update.
    deflate : (Z, Y, X) int, optional
        Particle labels (0: none). With a band, a CG solve that does not converge is run again
        with the six rigid-body modes of every particle as a coarse space
        (:mod:`solvers.deflation`): particles that the band debonds all round float on its
        residual stiffness, a mode multigrid does not see.
    coarse : {"trilinear", "split"}
        ``trilinear``: the grid hierarchy above. ``split``: coarse levels that follow the solid's
        topology (:mod:`solvers.topology`): every coarse node is split into one copy per connected
        piece of solid in its support, with an open band (``band["open"]``) as a gap between the
        particles and the electrolyte; the nodes whose solid voxels are all open get exact local
        solves; the coarse levels are assembled and visited by a K-cycle, and CG is flexible.
        With a band, once voxels open or close the old split levels are kept while CG needs at most
        twice the iterations it took when they were new; a solve that needs more rebuilds them.
    """

    def __init__(self, mesh, cell_lame, fixed, *, scale=None, rtol=1e-8, maxiter=500, device="cpu",
                 precision="float64", chebyshev_degree=2, local_cycles=8, local_threshold=0.003,
                 local_max_fraction=0.02, band=None, deflate=None, coarse="trilinear"):
        if device not in ("cpu", "gpu"):
            raise ConfigError(f"solver.device = {device!r}: use 'cpu' or 'gpu'")
        if precision not in ("float64", "mixed"):
            raise ConfigError(f"solver.precision = {precision!r}: use 'float64' or 'mixed'")
        if coarse not in ("trilinear", "split"):
            raise ConfigError(f"solver.coarse = {coarse!r}: use 'trilinear' or 'split'")
        if coarse == "split" and device == "gpu":
            raise ConfigError("solver.coarse = 'split' runs on the CPU only (its coarse levels are scipy sparse "
                              "matrices); use coarse = 'trilinear' with device = 'gpu'")
        self.split = coarse == "split"
        self._split = None
        self._split_its = None  # CG iterations of the first solve after they were built
        self.split_patience = 2.0  # stale split levels may take this many times those iterations (0: rebuild at once)
        self.xp = np
        if device == "gpu":
            self.xp = _cupy()
        self.mesh = mesh
        self.rtol, self.maxiter = float(rtol), int(maxiter)
        self.degree = int(chebyshev_degree)
        self.chebyshev_ratio = 30.0  # smooth the upper part [lmax / ratio, lmax] of the spectrum
        self.pdtype = np.float32 if precision == "mixed" else np.float64
        self.stats = SolveStats(f"matrix-free-gmg{'-split' if coarse == 'split' else ''}-{device}-{precision}")
        t0 = time.perf_counter()
        Z, Y, X = mesh.shape
        # per-phase element matrices from the cells' Lame constants
        pairs, inv = np.unique(np.asarray(cell_lame, float), axis=0, return_inverse=True)
        k_lam, k_mu = elasticity_parts(HEX8, mesh.spacing)
        ke_phase = pairs[:, 0, None, None, None, None] * k_lam + pairs[:, 1, None, None, None, None] * k_mu
        mat_phase = np.full(Z * Y * X, -1, np.int64)
        mat_phase[mesh.cell_voxel] = inv.ravel()
        if band is not None:  # band voxels are applied by their own kernel, not through a shared matrix
            mat_phase[band["voxel"]] = -1
        box = np.zeros(((Z + 1) * (Y + 1) * (X + 1), 3), bool)
        box[mesh.node_grid] = fixed
        box = box.reshape(Z + 1, Y + 1, X + 1, 3)
        mat, ke = _fine_level(mat_phase.reshape(Z, Y, X), ke_phase, box)
        fixed_full = np.ones(((Z + 1) * (Y + 1) * (X + 1), 3), bool)
        fixed_full[mesh.node_grid] = fixed
        fine = Level(mat, ke, fixed_full.reshape(Z + 1, Y + 1, X + 1, 3), box)
        fine.scale = float(scale) if scale is not None else _mean_diag(fine)
        fine.phase = mat_phase.reshape(Z, Y, X).astype(np.int32)
        if band is not None:
            from solvers.fem.mandel import hex_strain_matrix

            zyx = np.stack(np.unravel_index(np.asarray(band["voxel"]), (Z, Y, X)), axis=1)
            fine.band = BandBlocks.build(zyx, band["C"], band["hourglass"],
                                         hex_strain_matrix(mesh.spacing, (0.5, 0.5, 0.5)), band["Khg"],
                                         float(np.prod(mesh.spacing)))
            fine.dynamic = np.zeros((Z, Y, X), bool)
            fine.dynamic[tuple(zyx.T)] = True
            self._band_pos = np.full((Z, Y, X), -1, np.int64)  # kernel position of every band voxel
            self._band_pos[tuple(fine.band.zyx.T)] = np.arange(fine.band.n)
            self._band_keep = _unpack_keep(_corner_pattern(box)[tuple(fine.band.zyx.T)])
            self.band_updates = {"calls": 0, "coarse_voxels": 0, "seconds": 0.0, "local_rebuilds": 0,
                                 "local_seconds": 0.0}
        # with a band, local solves are found only for a solve that fails without them (damage made soft features):
        # found whenever CG slowed down, they were refactored at every update and cost more than they saved at 96^3
        self._local_options = (local_cycles, local_threshold, local_max_fraction)
        self._adaptive_local = band is not None and local_cycles > 0
        if band is not None:
            local_cycles = 0
        self._open = None
        if band is not None:
            self._open = np.zeros(fine.band.n, bool) if band.get("open") is None else np.asarray(band["open"], bool)
        self._seen_open = None if self._open is None else self._open.copy()  # open set of the smoothers' bounds
        self.levels = [fine]
        self._local = []  # stages of exact local solves, each (local dofs, factor, rows it changes, columns)
        self._local_regions = []  # the (nodes, blocks) of each stage, to refactor after a band update
        self._build_hierarchy(pairs)
        self._deflate = None if deflate is None else np.asarray(deflate)
        self._deflation = None  # built when CG fails to converge with local solves alone (floating particles)
        if local_cycles > 0 and (len(self.levels) > 1 or self.split):
            self._local = self._local_solve_setup(local_cycles, local_threshold, local_max_fraction)
        self.stats.setup_s = time.perf_counter() - t0
        log.info("geometric multigrid: %d levels %s, setup %.2f s", len(self.levels),
                 [lv.mat.shape for lv in self.levels], self.stats.setup_s)

    # -- hierarchy -------------------------------------------------------------------------
    def _build_hierarchy(self, lame):
        """Galerkin levels down to ``COARSEST_DOF``, their smoother data and the coarsest factor;
        ``lame`` (n_phase, 2): the Lame constants the levels' ``phase`` index (row kernels on the CPU)."""
        lv = self.levels[0]
        coarsest = COARSEST_DOF if lv.band is None else COARSEST_DOF_BAND
        while not self.split and 3 * int(np.prod(lv.node_shape[:3])) > coarsest and min(lv.mat.shape) >= 4:
            lv = _galerkin_level(lv, child_matrices=self._child_matrices)
            self.levels.append(lv)
        for k, lv in enumerate(self._smoothed()):  # pure-phase voxels by the Lame form (the GPU's: below)
            spacing = np.asarray(self.mesh.spacing, float) * 2**k
            lv.lame = LameOperator(lv.phase, lame, spacing, lv.fixed, lv.scale)
            rest = np.where(lv.phase >= 0, -1, lv.mat).astype(np.int32)
            lv.rest = rest if (rest >= 0).any() else None
        for lv in self._smoothed():
            d = _diagonal(lv)
            lv.diag_inv = np.where(lv.fixed, 1.0 / lv.scale, 1.0 / np.where(d > 0, d, 1.0))
            lv.lmax = self._lambda_max(lv)
        if self.split:
            self._build_split()
        else:
            self._coarse_lu = self._factor(self.levels[-1])
        self._ke_fine64 = self.xp.asarray(self.levels[0].ke)  # the operator CG sees stays float64
        for lv in self.levels:  # device and precision of the preconditioner
            if lv.dynamic is not None or lv.band is not None:
                lv.ke_host = lv.ke  # float64 on the host: the levels above are recomputed from it
            lv.ke = self.xp.asarray(lv.ke.astype(self.pdtype))
            lv.mat = self.xp.asarray(lv.mat)
            if lv.diag_inv is not None:
                lv.diag_inv = self.xp.asarray(lv.diag_inv.astype(self.pdtype))
            lv.fixed_dev = self.xp.asarray(lv.fixed)
            lv.free_dev = ~lv.fixed_dev
        for k, lv in enumerate(self._smoothed() if self.xp is not np else []):  # the bounds above came from the host
            lv.lame = PhaseArrays(lv.phase, lame, np.asarray(self.mesh.spacing, float) * 2**k, lv.free_dev,
                                  lv.fixed_dev, lv.scale, self.xp)
            lv.rest = None if lv.rest is None else self.xp.asarray(lv.rest)

    def _smoothed(self):
        """The grid levels that are smoothed (all but the coarsest, which is factored; with split coarse
        levels the fine level alone)."""
        return self.levels if self.split else self.levels[:-1]

    def _build_split(self):
        """The split coarse levels (:mod:`solvers.topology`) for the fine level's current operator, and
        exact local solves on the nodes whose solid voxels are all open band voxels."""
        from solvers.topology import SplitHierarchy, coarse_levels, gap_only_nodes

        t0 = time.perf_counter()
        fine = self.levels[0]
        mat, ke = self._with_band(fine)
        solid = mat >= 0
        gap = np.zeros(solid.shape, bool)
        if fine.band is not None:
            gap[tuple(fine.band.zyx[fine.band.order[self._open]].T)] = True
            se = solid & (self.mesh.phases != ACTIVE)
            glue = np.zeros_like(gap)  # the electrolyte joins the particles only through bonded band voxels
            glue[tuple(fine.band.zyx[fine.band.order[~self._open]].T)] = True
            pieces = (se, solid & ~se)
        else:
            pieces, glue = (solid, np.zeros_like(solid)), solid
        P1, more, cid, mixed = coarse_levels(pieces, glue, gap, coarsest_dof=COARSEST_DOF_BAND)
        A1 = _split_level_one(mat, ke, P1, cid, mixed)
        self._split = SplitHierarchy(P1, A1, more)
        weak = gap_only_nodes(solid, gap) & ~_host_view(fine).fixed.all(axis=-1)
        self._local, self._local_regions = [], []
        if weak.any():
            block = _box_blocks(weak.shape)
            self._local = [self._local_factor(weak, block)]
            self._local_regions = [(weak, block)]
        self._split_open = self._open.copy() if self._open is not None else None
        self._split_its = None
        log.info("split coarse levels: dof %s, %d open band voxels, local solves on %d nodes, %.1f s",
                 self._split.sizes, int(gap.sum()), int(weak.sum()), time.perf_counter() - t0)

    def deflate_rigid_modes(self):
        """Add the rigid-body modes of the particles given at set-up (``deflate``) to the preconditioner."""
        if self._deflation is None and self._deflate is not None:
            self._deflation = self._rigid_deflation(self._deflate)

    def _rigid_deflation(self, labels):
        """The rigid modes of the particles ``labels``, with ``E`` summed over the band voxels and the particle
        voxels that have a fixed dof or a corner of another particle (the only voxels a rigid motion strains)."""
        from solvers.deflation import RigidDeflation, RigidModes, node_clusters

        fine = _host_view(self.levels[0])
        clusters, p = node_clusters(labels)
        modes = RigidModes.build(clusters, p, ~fine.fixed)
        Z, Y, X = fine.mat.shape
        first = clusters[:Z, :Y, :X]
        strained, touched = np.zeros((Z, Y, X), bool), np.zeros((Z, Y, X), bool)
        for dz, dy, dx in CORNERS:  # a fixed dof, or corners of two particles (or of one and of none)
            corner = clusters[dz:dz + Z, dy:dy + Y, dx:dx + X]
            strained |= fine.fixed[dz:dz + Z, dy:dy + Y, dx:dx + X].any(axis=-1) | (corner != first)
            touched |= corner >= 0
        table = np.argwhere(strained & touched & (fine.mat >= 0))
        elements = {"table": table}
        if fine.band is not None:
            elements["band"] = fine.band.zyx

        def products(kind, which, X):
            if kind == "band":
                return fine.band.products(which, X)
            return fine.ke[fine.mat[tuple(table[which].T)]].reshape(-1, 24, 24) @ X

        deflation = RigidDeflation(modes, products, elements)
        log.info("rigid-body deflation: %d particle clusters, %d modes", p, modes.size - int(deflation.dead.sum()))
        return deflation

    def _child_matrices(self, fine, czyx):
        """(m, 8, 8, 3, 8, 3) matrices of the children of the coarse voxels ``czyx`` (m, 3) of ``fine``'s
        next level: band voxels from their stiffness (box-masked), the others from ``fine``'s table."""
        host = _host_view(fine)
        ke = np.concatenate([host.ke, np.zeros((1,) + host.ke.shape[1:])])  # index -1 -> zeros
        cz = 2 * np.asarray(czyx)[:, None, :] + CORNERS[None]  # (m, 8, 3)
        inside = (cz < np.array(host.mat.shape)).all(axis=-1)
        c = tuple(np.minimum(cz, np.array(host.mat.shape) - 1).transpose(2, 0, 1))
        k = ke[np.where(inside, host.mat[c], -1)]
        if fine.band is not None:
            pos = np.where(inside, self._band_pos[c], -1)
            sel = pos >= 0
            kb = fine.band.element_matrices(pos[sel]).reshape(-1, 8, 3, 8, 3)
            keep = self._band_keep[pos[sel]]
            k[sel] = kb * keep[:, :, :, None, None] * keep[:, None, None, :, :]
        return k

    def update_band(self, C, hourglass, which=None, open=None):
        """New stiffness of band voxels (all, or the indices ``which`` into the band given at setup).

        The coarse voxels above them are recomputed in place level by level (Galerkin, exactly as at
        setup), the smoothers' diagonals and spectral bounds and the coarsest factor are renewed.
        ``open`` (nb,) bool: the band voxels that are open now (split coarse levels are rebuilt when
        it changes; with unchanged topology they keep their values, a preconditioner need not be exact).
        """
        t0 = time.perf_counter()
        fine = self.levels[0]
        which = np.arange(fine.band.n) if which is None else np.asarray(which)
        if open is not None:
            self._open = np.asarray(open, bool)
        if which.size == 0:
            return
        if self._deflation is not None:
            self._deflation.update("band", fine.band.order[which], before=True)
        fine.band.set(C, hourglass, which)
        if self._deflation is not None:
            self._deflation.update("band", fine.band.order[which], before=False)
        dirty = fine.band.zyx[fine.band.order[which]] // 2
        n_coarse = 0
        for k in range(1, len(self.levels)):
            lv, below = self.levels[k], self.levels[k - 1]
            dirty = np.unique(dirty, axis=0)
            slots = _host_view(lv).mat[tuple(dirty.T)]
            code = _corner_pattern(lv.box)[tuple(dirty.T)]
            new = _galerkin(self._child_matrices(below, dirty), _unpack_keep(code))
            lv.ke_host[slots] = new
            if self.xp is np:
                lv.ke[slots] = new.astype(self.pdtype)
            else:
                lv.ke[self.xp.asarray(slots)] = self.xp.asarray(new.astype(self.pdtype))
            n_coarse += len(dirty)
            dirty = dirty // 2
        opened = self._open is not None and bool((self._open & ~self._seen_open).any())
        if opened:  # voxels that were never open before: the bounds stay valid for those that close again
            self._seen_open |= self._open
        for lv in self._smoothed():
            d = _diagonal(_host_view(lv))
            lv.diag_inv = self.xp.asarray(np.where(lv.fixed, 1.0 / lv.scale, 1.0 / np.where(d > 0, d, 1.0))
                                          .astype(self.pdtype))
            # the spectrum's top may move: a few power steps from the last top vector follow it while the
            # damage grows, but where voxels open it moves elsewhere (48^3, all open: 3.76 against 4.87 from
            # a fresh Lanczos; Chebyshev beyond its range made 176 CG its of 41), so then a fresh estimate
            lv.lmax = max(lv.lmax, self._lambda_max(lv, xp=self.xp) if opened else
                          self._lambda_max_update(lv, xp=self.xp))
        if self.split:  # the split levels are rebuilt by ``solve`` once they stop paying
            self.band_updates["calls"] += 1
            self.band_updates["seconds"] += time.perf_counter() - t0
            return
        self._coarse_lu = self._factor(_host_view(self.levels[-1]))
        t1 = time.perf_counter()
        touched = fine.band.zyx[fine.band.order[which]]
        for i, (weak, block) in enumerate(self._local_regions):  # the stages over changed voxels: new matrices
            if _cells_of(weak)[tuple(touched.T)].any():
                self._local[i] = self._local_factor(weak, block)
        self.band_updates["local_seconds"] += time.perf_counter() - t1
        self.band_updates["calls"] += 1
        self.band_updates["coarse_voxels"] += n_coarse
        self.band_updates["seconds"] += time.perf_counter() - t0

    def _factor(self, lv):
        mat, ke = self._with_band(lv)  # a one-level hierarchy: its band voxels go into the factor too
        A, nodes = _assemble_cells(mat >= 0, mat, ke)
        A = apply_dirichlet(A, lv.fixed.reshape(-1, 3)[nodes], scale=lv.scale)
        # A Galerkin coarse matrix can be semi-definite where coarse dofs reach the fine free dofs
        # only together; those directions prolong to zero, so a tiny shift makes them harmless.
        A = A + sp.identity(A.shape[0], format="csr") * (1e-10 * lv.scale)
        self._coarse_rows = self.xp.asarray(nodes)  # the grid nodes the factor's rows belong to
        return self._device_lu(A)

    def _with_band(self, lv, cells=None):
        """Host ``mat`` and float64 ``ke`` of a level with its band voxels (if any; those in ``cells`` (Z, Y, X)
        bool if given) as matrices of their own."""
        lv = _host_view(lv)
        mat, ke = lv.mat, np.asarray(lv.ke if isinstance(lv.ke, np.ndarray) else lv.ke.get(), np.float64)
        if lv.band is None:
            return mat, ke
        b = lv.band
        pos = np.arange(b.n) if cells is None else np.flatnonzero(cells[tuple(b.zyx.T)])
        mat = mat.copy()
        mat[tuple(b.zyx[pos].T)] = len(ke) + np.arange(pos.size)
        kb = b.element_matrices(pos).reshape(-1, 8, 3, 8, 3)
        keep = self._band_keep[pos]
        return mat, np.concatenate([ke, kb * keep[:, :, :, None, None] * keep[:, None, None, :, :]])

    def _lambda_max_update(self, lv, steps=3, xp=np):
        """A new lower estimate (times 1.1) of the largest eigenvalue of D^-1 A after an update: a few power
        steps on D^-1/2 A D^-1/2 from the last top vector (kept on the level; 16 Lanczos steps from a random
        one at first). The caller keeps the larger of it and the bound it had, so the bound only grows."""
        dh = xp.sqrt(xp.asarray(lv.diag_inv, dtype=np.float64))
        v = lv.top_vector
        if v is None:
            v = xp.asarray(np.random.default_rng(0).standard_normal(lv.node_shape))
        rq = 0.0
        for _ in range(steps):
            v = v / float(xp.linalg.norm(v))
            w = dh * self._apply_level(lv, dh * v, xp).astype(np.float64)
            rq = float(xp.sum(w * v))
            v = w
        lv.top_vector = v / float(xp.linalg.norm(v))
        return 1.1 * rq

    def _lambda_max(self, lv, steps=16, xp=np):
        """Largest eigenvalue of D^-1 A (times 1.1): Lanczos on D^-1/2 A D^-1/2, the top Ritz value
        (``xp``: where the level's arrays are, float64 Lanczos vectors)."""
        rng = np.random.default_rng(0)
        dh = xp.sqrt(xp.asarray(lv.diag_inv, dtype=np.float64))
        v = xp.asarray(rng.standard_normal(lv.node_shape))
        v /= float(xp.linalg.norm(v))
        v_old = xp.zeros_like(v)
        alpha, beta = [], [0.0]
        for _ in range(steps):
            w = dh * self._apply_level(lv, dh * v, xp).astype(np.float64) - beta[-1] * v_old
            alpha.append(float(xp.sum(w * v)))
            w -= alpha[-1] * v
            beta.append(float(xp.linalg.norm(w)))
            if beta[-1] <= 1e-12 * abs(alpha[-1]):
                break
            v_old, v = v, w / beta[-1]
        k = len(alpha)
        T = np.diag(alpha) + np.diag(beta[1:k], 1) + np.diag(beta[1:k], -1)
        return 1.1 * float(np.linalg.eigvalsh(T)[-1])

    def _local_solve_setup(self, cycles, threshold, max_fraction):
        """Nodes the V-cycle leaves behind, their exact local solve and their columns of the operator."""
        lv = self.levels[0]
        xp = self.xp
        rng = np.random.default_rng(0)
        free = ~lv.fixed
        e = xp.asarray((rng.standard_normal(lv.node_shape) * free).astype(self.pdtype))
        for _ in range(cycles):
            e = self._error_cycle(e)
        mag = np.linalg.norm(np.asarray(e.get() if xp is not np else e, float), axis=-1)
        cap = max(1, int(max_fraction * free.any(-1).sum()))
        over = int((mag > threshold).sum())
        if over > cap:
            log.warning("multigrid local solves: %d nodes keep an error above %.3g after %d cycles, more than "
                        "the cap of %d (local_max_fraction); the rest may slow CG down", over, threshold, cycles, cap)
            threshold = np.partition(mag.ravel(), -cap)[-cap]
        seed = mag > threshold
        if not seed.any():
            log.info("multigrid local solves: none needed (error after %d cycles %.1e)", cycles, mag.max())
            return []
        weak = ndimage.binary_dilation(seed)  # and their face neighbours
        block = _box_blocks(weak.shape)  # block Jacobi between boxes: one factor of all fills in like 3D
        local = self._local_factor(weak, block)
        log.info("multigrid local solves: %d nodes (%d dof) where %d cycles leave an error above %.3g; "
                 "factor %.1f M entries", int(weak.sum()), local[0].size, cycles, threshold,
                 local[1].nnz / 1e6)  # not lu.L / lu.U: they build (and keep) copies of the factor
        self._local_regions = [(weak, block)]
        if REFINE_CYCLES == 0:
            return [local]
        # Block Jacobi between boxes lets the error of a feature that straddles a box face grow (the
        # two boxes correct it twice). A few more cycles with the local solves show where; a second,
        # small stage solves each such feature exactly together with every box it touches.
        self._local = [local]
        for _ in range(REFINE_CYCLES):
            e = self._error_cycle(e)
        mag = np.linalg.norm(np.asarray(e.get() if xp is not np else e, float), axis=-1)
        left = mag > max(REFINE_FRACTION * mag.max(), threshold)
        if not left.any():
            return [local]
        left = ndimage.binary_dilation(left, iterations=2) & free.any(-1)
        weak, block = _merge_blocks(weak, block, left)
        weak &= np.isin(block, np.unique(block[left]))
        second = self._local_factor(weak, block)
        self._local_regions.append((weak, block))
        log.info("multigrid local solves: %d cycles more leave %.2g; second stage on %d nodes around the %d "
                 "where the error stays, factor %.1f M entries", REFINE_CYCLES, mag.max(), int(weak.sum()),
                 int(left.sum()), second[1].nnz / 1e6)
        return [local, second]

    def _error_cycle(self, e):
        """One step ``e - M A e`` of the preconditioned iteration on an error ``e`` (float ``pdtype``)."""
        lv = self.levels[0]
        if self._deflation is None:
            return e - self._vcycle(0, self._apply_level(lv, e, self.xp, ke=lv.ke))
        return (e - self.precondition(self.apply(e.astype(np.float64)))).astype(self.pdtype)

    def _redetect_local(self):
        """Find the nodes the preconditioner now leaves behind and give them exact local solves."""
        self._local, self._local_regions = [], []
        self._local = self._local_solve_setup(*self._local_options)
        self.band_updates["local_rebuilds"] += 1

    def _local_factor(self, weak, block):
        """Exact block solves on the nodes ``weak``, one block per distinct ``block`` id (both node grids)."""
        lv = self.levels[0]
        xp = self.xp
        cells = _cells_of(weak)
        mat, ke = self._with_band(lv, cells)
        cells &= mat >= 0
        A, grid_nodes = _assemble_cells(cells, mat, ke)
        dofs = (grid_nodes[:, None] * 3 + np.arange(3)).ravel()  # full-grid dof of each matrix row
        local = np.flatnonzero(np.repeat(weak.ravel()[grid_nodes], 3) & ~lv.fixed.reshape(-1)[dofs])
        A = A.tocsr()
        blk = block.ravel()[dofs[local] // 3]
        All = A[local][:, local].tocoo()
        same = blk[All.row] == blk[All.col]
        All = sp.csc_matrix((All.data[same], (All.row[same], All.col[same])), shape=All.shape)
        lu = self._device_lu(All)
        couple = A[:, local].tocsr()  # rows: every dof the local correction changes the residual of
        if xp is not np:
            import cupyx.scipy.sparse as csp

            couple = csp.csr_matrix(couple.astype(self.pdtype))
            return xp.asarray(dofs[local]), lu, xp.asarray(dofs), couple
        return dofs[local], lu, dofs, couple.astype(self.pdtype)

    def _device_lu(self, A):
        """Sparse LU of ``A`` factored on the host (SuperLU); on the GPU its solves run on the device
        (``cupyx.scipy.sparse.linalg.SuperLU``: triangular solves by cuSPARSE, no round trip per V-cycle)."""
        lu = spla.splu(A.tocsc())
        if self.xp is np:
            return lu
        import cupyx.scipy.sparse.linalg as cspla

        return cspla.SuperLU(lu)

    def _local_correct(self, x, r, stage):
        """Exact solve on the local nodes of ``stage``: ``x += dx`` and ``r -= A dx`` in place."""
        dof_local, lu, dof_rows, couple = stage
        dx = lu.solve(r.reshape(-1)[dof_local].astype(np.float64)).astype(r.dtype)  # on the device with a GPU
        x.reshape(-1)[dof_local] += dx
        r.reshape(-1)[dof_rows] -= couple @ dx

    # -- operator ----------------------------------------------------------------------------
    def _apply_level(self, lv, x, xp, ke=None):
        """``M A M x + scale (I - M) x`` on one level (masks live in the element matrices, and in the
        free mask of the Lame row kernel where it runs)."""
        ke = lv.ke if ke is None else ke
        if lv.lame is not None:
            y = lv.lame(x)  # in the precision of x
            if lv.rest is not None:
                y += apply_numba(np.ascontiguousarray(x), lv.rest, ke) if xp is np else apply_arrays(x, lv.rest, ke, xp)
        else:
            fixed = lv.fixed if xp is np else lv.fixed_dev
            y = apply_numba(np.ascontiguousarray(x), lv.mat, ke) if xp is np else apply_arrays(x, lv.mat, ke, xp)
            y = y + lv.scale * (x * fixed)
        if lv.band is not None:  # free dofs only: the fixed ones already hold scale * x
            if xp is np:
                lv.band.add_apply(x, lv.lame.free if lv.lame is not None else ~lv.fixed, y)
            else:
                lv.band.add_apply_arrays(x, lv.free_dev, y, xp)
        return y

    def apply(self, x_grid):
        """The constrained fine-level operator on a full-grid vector (float64, CPU or GPU)."""
        return self._apply_level(self.levels[0], x_grid, self.xp, self._ke_fine64)

    # -- V-cycle -------------------------------------------------------------------------------
    def _smooth(self, lv, x, b, res=None):
        """Chebyshev polynomial smoothing of D^-1 A on [lmax / 30, lmax] (``res``: ``b - A x`` if known;
        ``x`` None: start from zero, so the residual is ``b``, one operator product fewer; otherwise
        ``x`` is updated in place)."""
        xp = self.xp
        hi, lo = lv.lmax, lv.lmax / self.chebyshev_ratio
        theta, delta = 0.5 * (hi + lo), 0.5 * (hi - lo)
        sigma = theta / delta
        rho = 1.0 / sigma
        if x is None:
            x, res = xp.zeros_like(b), b
        r = lv.diag_inv * (b - self._apply_level(lv, x, xp) if res is None else res)
        d = r / theta
        for _ in range(self.degree):
            rho_new = 1.0 / (2.0 * sigma - rho)
            chebyshev_step(x, d, r, self._apply_level(lv, d, xp), lv.diag_inv, rho_new * rho,
                           2.0 * rho_new / delta, xp)
            rho = rho_new
        x += d
        return x

    def _vcycle(self, k, b):
        xp = self.xp
        lv = self.levels[k]
        if k == len(self.levels) - 1 and self._split is None:
            bc = b.reshape(-1, 3)
            x = xp.zeros_like(bc)  # untouched nodes: identity with zero right-hand side
            rows = self._coarse_rows
            x[rows] = self._coarse_lu.solve(bc[rows].reshape(-1).astype(np.float64)).reshape(-1, 3).astype(b.dtype)
            return x.reshape(lv.node_shape)
        x = self._smooth(lv, None, b)
        r = b - self._apply_level(lv, x, xp)
        local = self._local if k == 0 else []  # on both sides, in mirrored order: a symmetric cycle
        for stage in local:
            self._local_correct(x, r, stage)
        if self._split is not None:  # split coarse levels below the fine grid (CPU)
            rc = self._split.restrict(np.asarray(r * lv.free_dev, np.float64).reshape(-1, 3))
            xc = self._split.prolong(self._split.solve(rc)).reshape(lv.node_shape)
            x = x + xc.astype(x.dtype) * lv.free_dev
        else:
            c = self.levels[k + 1]
            rc = restrict(r * lv.free_dev, c.node_shape[:3], xp) * c.free_dev  # the transpose of P below
            x = x + prolong(self._vcycle(k + 1, rc), lv.node_shape[:3], xp) * lv.free_dev
        r = None
        if local:
            r = b - self._apply_level(lv, x, xp)
            for stage in local[::-1]:
                self._local_correct(x, r, stage)
        return self._smooth(lv, x, b, res=r)

    def precondition(self, r_grid):
        y = self._vcycle(0, r_grid.astype(self.pdtype)).astype(np.float64)
        if self._deflation is not None:  # A-DEF2: y + Q (r - A y), Q = Z E^-1 Z^T (Tang et al. 2009)
            y += self._deflation.correct(r_grid - self.apply(y), self.xp)
        return y

    # -- solve on mesh dofs ---------------------------------------------------------------------
    def _to_grid(self, v):
        lv = self.levels[0]
        g = np.zeros((int(np.prod(lv.node_shape[:3])), 3))
        g[self.mesh.node_grid] = np.asarray(v).reshape(-1, 3)
        return self.xp.asarray(g.reshape(lv.node_shape))

    def _from_grid(self, g):
        g = g.get() if self.xp is not np else g
        return np.asarray(g).reshape(-1, 3)[self.mesh.node_grid].ravel()

    def matvec(self, v):
        """Operator on mesh dofs (3 nn,), for comparison with the assembled matrix."""
        return self._from_grid(self.apply(self._to_grid(v)))

    def apply_preconditioner(self, r):
        """The multigrid cycle on mesh dofs (3 nn,) (a K-cycle with split levels: not a fixed linear map)."""
        return self._from_grid(self.precondition(self._to_grid(r)))

    def solve(self, b, x0=None):
        """CG to ``rtol`` (true residual checked); raises ConvergenceError otherwise.

        CG runs on full-grid vectors: the nodes outside the mesh carry the identity and a
        zero right-hand side, so they stay zero and leave every norm unchanged, and the two
        copies between mesh and grid happen once per solve instead of twice per iteration.
        On the GPU those are the only transfers of vectors: CG, the V-cycle, the local and
        coarsest solves and the true-residual check run on the device.
        """
        bg = self._to_grid(b)
        x_start = None if x0 is None else self._to_grid(x0)

        def run(maxiter=None):
            xg = x_start
            if self._deflation is not None:  # a start whose residual has no rigid-mode part (A-DEF2 needs it)
                xg = self.xp.zeros_like(bg) if xg is None else xg.copy()
                xg += self._deflation.correct(bg - self.apply(xg), self.xp)
            x = _pcg(self.stats, self.apply, self.precondition, bg, xg, self.rtol, maxiter or self.maxiter,
                     flexible=self.split, xp=self.xp)
            if self.split and self._split_its is None:
                self._split_its = self.stats.iterations[-1]
            return x

        if self.split and self._open is not None and not np.array_equal(self._open, self._split_open):
            # Voxels opened or closed since the split levels were built. Rebuilding them at every change
            # cost 3 s a solve at 48^3 (contact flips a few voxels back and forth), so the old levels, still
            # a valid preconditioner, are tried first, up to twice the iterations they took when new.
            # (Levels that never solved anything have no count to go by: rebuilt at once.)
            if self._split_its is not None and self.split_patience > 0:
                cap = min(max(int(self.split_patience * self._split_its), self._split_its + 10), self.maxiter)
                try:
                    return self._from_grid(run(cap))
                except ConvergenceError:
                    log.info("split coarse levels: CG passed %d iterations with the levels of an older band "
                             "state; rebuilding them", cap)
                    self.band_updates["stale_iterations"] = self.band_updates.get("stale_iterations", 0) + cap
            self._build_split()
            self.band_updates["split_rebuilds"] = self.band_updates.get("split_rebuilds", 0) + 1

        if not self._adaptive_local:
            return self._from_grid(run())
        try:
            x = run()
        except ConvergenceError:  # soft features the local solves do not cover yet: find them, try once more
            self.deflate_rigid_modes()  # particles floating all round
            log.info("band multigrid: CG did not converge; rigid-body deflation %s, new local solves, solving "
                     "again", "on" if self._deflation is not None else "not available")
            self._redetect_local()
            try:
                x = run()
            except ConvergenceError as err:
                raise ConvergenceError(f"{err}. The cohesive band's multigrid had exact local solves and "
                                       "rigid-body deflation; raise [solver] maxiter, or run the interface on "
                                       "backend = 'assembled'") from None
        return self._from_grid(x)


def _pcg(stats, matvec, pmatvec, b, x0, rtol, maxiter, flexible=False, xp=np):
    """CG (:func:`solvers.linalg.pcg`, flexible CG for a preconditioner that is not a fixed linear map,
    a K-cycle) on vectors where ``xp`` keeps them, with the true residual checked there. One BLAS
    thread: OpenBLAS threads left spinning after each CG dot product took the cores from the numba
    kernels (a diffusion solve ran 3x slower, an elastic one 1.2x)."""
    cg = flexible_cg if flexible else pcg

    def run():
        return cg(matvec, b, pmatvec, x0=x0, rtol=rtol, maxiter=maxiter, xp=xp)

    with threadpool_limits(limits=1, user_api="blas"):
        return checked_solve(stats, matvec, b, rtol, run, "raise [solver] maxiter or use backend = 'assembled'",
                             xp=xp)


def _split_level_one(mat, ke, P1, cid, mixed, chunk=20_000):
    """The level-1 operator ``P1^T A P1`` of split coarse levels, (3 n1, 3 n1) csr.

    A fine voxel that is not ``mixed`` takes, for each corner of its coarse voxel, the copy its own piece
    is in, and so do all its corners: the voxels of one coarse voxel with the same 8 copies form a coarse
    cell, whose matrix is ``sum_s P_s^T K_s P_s`` over its children as on the grid levels. A mixed
    voxel's corners take copies of different pieces (an open band voxel's corner on a particle goes with
    the particle), so those voxels go through the sparse product ``P^T A_mixed P``.

    Parameters
    ----------
    mat : (Z, Y, X) int, index into ``ke`` (-1 void); ke : (n, 8, 3, 8, 3) masked element matrices
    P1 : (n_nodes, n1) csr; cid, mixed : (Z, Y, X, 8), (Z, Y, X) from :func:`solvers.topology.coarse_levels`
    """
    n1 = P1.shape[1]
    cells = (mat >= 0) & ~mixed
    zyx = np.argwhere(cells)
    sub = (zyx % 2) @ np.array([4, 2, 1])
    sub_index = np.empty(8, np.int64)  # bit code of a sub-position -> its index in CORNERS (HEX8 order)
    sub_index[(CORNERS @ np.array([4, 2, 1]))] = np.arange(8)
    copies = cid[tuple(zyx.T)]
    groups, g = _unique_rows(copies)
    child = np.full((len(groups), 8), len(ke), np.int64)  # len(ke): the zero matrix
    child[g, sub_index[sub]] = mat[tuple(zyx.T)]
    kinds, kind = _unique_rows(child)
    ke_z = np.concatenate([ke, np.zeros((1,) + ke.shape[1:])])
    kc = np.empty((len(kinds), 24, 24))
    ones = np.ones((1, 8, 3))
    for i in range(0, len(kinds), chunk // 8):
        part = kinds[i:i + chunk // 8]
        kc[i:i + len(part)] = _galerkin(ke_z[part], np.broadcast_to(ones, (len(part), 8, 3))).reshape(-1, 24, 24)
    A1 = sp.csr_matrix((3 * n1, 3 * n1))
    for i in range(0, len(groups), chunk):
        dof = (3 * groups[i:i + chunk, :, None] + np.arange(3)).reshape(-1, 24)
        rows = np.broadcast_to(dof[:, :, None], (len(dof), 24, 24)).ravel()
        cols = np.broadcast_to(dof[:, None, :], (len(dof), 24, 24)).ravel()
        A1 = A1 + sp.csr_matrix((kc[kind[i:i + chunk]].ravel(), (rows, cols)), shape=A1.shape)
    if mixed.any():
        Ag, nodes = _assemble_cells(mixed & (mat >= 0), mat, ke)
        Pg = sp.kron(P1[nodes], sp.identity(3), format="csr")
        A1 = A1 + (Pg.T @ Ag @ Pg)
    return A1.tocsr()


def _assemble_cells(cells, mat, ke):
    """Assembled operator of the voxels ``cells`` (Z, Y, X) bool of one level.

    Returns the sparse matrix over the nodes of those voxels and their
    full-grid node indices (row ``3 i + c`` is dof ``c`` of grid node ``nodes[i]``).
    """
    class _Grid:  # the selected voxels as a mesh for the assembled path
        pass

    g = _Grid()
    g.shape = mat.shape
    g.element = HEX8
    g.cell_voxel = np.flatnonzero(cells.ravel())
    g.node_grid = np.flatnonzero(nodes_of(cells))
    g.n_nodes = g.node_grid.size
    return assemble_voxel_stiffness(g, mat.ravel()[g.cell_voxel], list(ke)), g.node_grid


def _cells_of(nodes):
    """(Z, Y, X) bool: the voxels with a corner among ``nodes`` (Z+1, Y+1, X+1) bool."""
    Z, Y, X = (n - 1 for n in nodes.shape)
    cells = np.zeros((Z, Y, X), bool)
    for dz, dy, dx in CORNERS:
        cells |= nodes[dz:dz + Z, dy:dy + Y, dx:dx + X]
    return cells


def _box_blocks(shape):
    """Box of every node of a node grid ``shape`` (3 ints), boxes of at most ``LOCAL_BOX`` nodes a side.

    The boxes split each axis evenly: with plain multiples of LOCAL_BOX the last box of a 241-node
    axis held one node layer, and the free top face's soft features, cut off from the layer beneath,
    stayed unsolved (240^3 MATBOX: 74 CG iterations against 21 at 192^3).
    """
    shape = np.array(shape)
    nbox = -(-shape // LOCAL_BOX)
    coords = np.indices(tuple(shape), sparse=True)
    return np.ravel_multi_index(tuple((c * nb) // sh for c, nb, sh in zip(coords, nbox, shape)), tuple(nbox))


def _merge_blocks(weak, block, left):
    """Add the nodes ``left`` to the local solves and merge every block they touch into one per group.

    Parameters
    ----------
    weak : (Z+1, Y+1, X+1) bool
        Nodes of the local solves.
    block : (Z+1, Y+1, X+1) int
        Block of every node (read where ``weak``).
    left : (Z+1, Y+1, X+1) bool
        Nodes the blocks leave unsolved; its 26-connected groups are merged with the blocks they touch.

    Returns
    -------
    weak, block : the same arrays with ``left`` added (block -1 outside ``weak``)
    """
    lab, n = ndimage.label(left, structure=np.ones((3, 3, 3)))
    ids, old = np.unique(block[weak], return_inverse=True)
    touch = weak & left
    # graph: nodes 0..n-1 the groups of ``left``, n.. the old blocks; an edge where a node has both
    rows = lab[touch] - 1
    cols = n + np.searchsorted(ids, block[touch])
    g = sp.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n + ids.size,) * 2)
    _, comp = connected_components(g, directed=False)
    new = np.full(weak.shape, -1, np.int64)
    new[weak] = comp[n + old.ravel()]
    new[left] = comp[lab[left] - 1]
    return weak | left, new


def _host_view(lv: Level) -> Level:
    """The level with its host float64 table and material grid (for updates, diagonals and assembly)."""
    mat = lv.mat if isinstance(lv.mat, np.ndarray) else lv.mat.get()
    if lv.ke_host is None and mat is lv.mat:
        return lv
    return dataclasses.replace(lv, ke=lv.ke if lv.ke_host is None else lv.ke_host, mat=mat)


def _diagonal(lv) -> np.ndarray:
    """Diagonal of the unconstrained level operator, (Z+1, Y+1, X+1, 3)."""
    Z, Y, X = lv.mat.shape
    d = np.zeros(lv.node_shape)
    solid = lv.mat >= 0
    idx = np.where(solid, lv.mat, 0)
    for a, (dz, dy, dx) in enumerate(CORNERS):
        diag_a = np.einsum("mii->mi", lv.ke[:, a, :, a, :])  # (n_mat, 3)
        d[dz:dz + Z, dy:dy + Y, dx:dx + X] += diag_a[idx] * solid[..., None]
    if lv.band is not None:
        b = lv.band
        de = (b.volume * np.einsum("kj,bkl,lj->bj", b.B, b.C, b.B) + b.hg[:, None] * np.diag(b.Khg)).reshape(-1, 8, 3)
        flat = d.reshape(-1, 3)
        nodes = np.ravel_multi_index(tuple((b.zyx[:, None, :] + CORNERS[None]).transpose(2, 0, 1)), lv.node_shape[:3])
        for c in range(3):
            np.add.at(flat[:, c], nodes.ravel(), de[..., c].ravel())
    return d


def _mean_diag(lv) -> float:
    d = _diagonal(lv)
    return float(d[~lv.fixed].mean()) if (~lv.fixed).any() else 1.0


def _cupy():
    """CuPy, once a small computation on the device has given the right answer.

    Counting devices is not enough: a missing NVRTC (elementwise kernels), cuBLAS (dot products)
    or cuSPARSE (the local solves) would otherwise show up as a raw error deep in the set-up.
    """
    try:
        import cupy
        import cupyx.scipy.sparse as csp

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
        a = cupy.arange(8, dtype=cupy.float64)
        eye = csp.csr_matrix(sp.identity(8, format="csr"))
        checks = (float(cupy.vdot(a, a)), float((2.0 * a + 1.0).sum()), float((eye @ a).sum()))
        if checks != (140.0, 64.0, 28.0):
            raise RuntimeError(f"a test computation on the device gave {checks}, not (140, 64, 28)")
        return cupy
    except Exception as exc:  # ImportError, CUDA runtime/compiler errors
        raise ConfigError(f"solver.device = 'gpu' needs CuPy and a working CUDA device ({type(exc).__name__}: "
                          f"{exc}); use device = 'cpu'") from None
