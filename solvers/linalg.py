"""Linear solvers behind one interface: set up once, solve many times.

A solver is built from a matrix once (factorisation or AMG hierarchy) and then
called for each right-hand side, as the stiffness of a bonded problem does not
change between load or time steps. Every solve checks the true residual and
raises :class:`~tomomech.errors.ConvergenceError` instead of returning a
non-converged result.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from tomomech.errors import ConfigError, ConvergenceError

log = logging.getLogger(__name__)

#: below this many unknowns ``method="auto"`` factorises directly
DIRECT_LIMIT = 20_000
#: above this many unknowns ``aggregation="auto"`` uses plain (unsmoothed) aggregation:
#: smoothed aggregation needs about 2.2 kB per unknown in all (5.8 GB at 2.65 M dof, 13.5 GB at 6.2 M),
#: plain aggregation about half (7.6 GB at 6.2 M), at about 2x the CG iterations (benchmarks/elastic_step.py)
SMOOTHED_LIMIT = 3_000_000


@dataclass
class SolveStats:
    """Bookkeeping of one solver: setup time, and per solve iterations/time."""

    method: str
    setup_s: float = 0.0
    iterations: list[int] = field(default_factory=list)
    solve_s: list[float] = field(default_factory=list)
    residuals: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "setup_s": round(self.setup_s, 4),
            "solves": len(self.iterations),
            "iterations": self.iterations,
            "solve_s": [round(t, 4) for t in self.solve_s],
            "max_relative_residual": max(self.residuals) if self.residuals else None,
        }


def rigid_body_modes(points: np.ndarray, centre=None) -> np.ndarray:
    """The six rigid-body modes of a 3D node set, node-major (3 nn, 6).

    Translations along the three axes, then rotations about them, centred on
    ``centre`` (default: the mean point) and scaled to unit maximum so that AMG
    sees comparable columns.
    """
    x = points - (points.mean(axis=0) if centre is None else np.asarray(centre, float))
    x = x / max(np.abs(x).max(), 1e-300)
    n = x.shape[0]
    B = np.zeros((n, 3, 6))
    for d in range(3):
        B[:, d, d] = 1.0
    for k, w in enumerate(np.eye(3)):
        B[:, :, 3 + k] = np.cross(w, x)
    return B.reshape(3 * n, 6)


def resolve_backend(backend: str, unknowns: int, limit: int, *, voxels: bool, device: str = "cpu",
                    precision: str = "float64") -> str:
    """The ``[solver] backend`` a problem uses: "assembled" or "matrix-free".

    ``auto`` goes matrix-free on voxel meshes above ``limit`` unknowns (a
    crossover measured per problem kind) or when ``device`` / ``precision``
    ask for it. Raises ConfigError for a choice the mesh or options rule out.
    """
    if backend == "auto":
        wants = unknowns > limit or device != "cpu" or precision != "float64"
        backend = "matrix-free" if wants and voxels else "assembled"
    if backend not in ("assembled", "matrix-free"):
        raise ConfigError(f"solver.backend = {backend!r}: use 'assembled', 'matrix-free' or 'auto'")
    if backend == "matrix-free" and not voxels:
        raise ConfigError("solver.backend = 'matrix-free' works on voxel-hex meshes only")
    if backend == "assembled" and (device != "cpu" or precision != "float64"):
        raise ConfigError("solver.device = 'gpu' and precision = 'mixed' need backend = 'matrix-free'")
    return backend


#: block Gauss-Seidel sweeps (before, after the coarse correction) of each AMG smoother
SWEEPS = {"symmetric": ("symmetric", "symmetric"), "forward-backward": ("forward", "backward")}


class LinearSolver:
    """SPD solver: direct (SuperLU) or CG with smoothed-aggregation AMG.

    Parameters
    ----------
    A : sparse SPD matrix (n, n)
    method : {"auto", "direct", "amg"}
        ``auto`` picks direct below :data:`DIRECT_LIMIT` unknowns.
    near_nullspace : (n, k) ndarray, optional
        For elasticity the six rigid-body modes (:func:`rigid_body_modes`):
        AMG then needs about 10 CG iterations where plain AMG needs 90.
    rtol : float
        Relative residual ``||b - A x|| / ||b||`` every solve must reach.
    maxiter : int
    aggregation : {"auto", "smoothed", "plain"}
        AMG prolongation: smoothed aggregation (fewer iterations, more memory
        and setup) or plain aggregation; ``auto`` switches to plain above
        :data:`SMOOTHED_LIMIT` unknowns.
    smoother : {"symmetric", "forward-backward"}
        AMG block Gauss-Seidel: a symmetric sweep before and after the coarse
        correction (4 sweeps per level), or one forward sweep before and one
        backward sweep after (2 sweeps; the V-cycle stays symmetric, so CG
        still applies). Measured: 20 -> 26 CG iterations but 9.7 -> 8.4 s for
        a 347 k dof elastic solve; a 14 k dof cohesive charge 89.8 -> 75.7 s
        (15.9 -> 11.7 ms of wall time per CG iteration, 14 % more of them).
    """

    def __init__(self, A, *, method: str = "auto", near_nullspace=None,
                 rtol: float = 1e-8, maxiter: int = 500, aggregation: str = "auto", smoother: str = "symmetric",
                 basis=None):
        if method == "auto":
            method = "direct" if A.shape[0] <= DIRECT_LIMIT else "amg"
        if method not in ("direct", "amg"):
            raise ValueError(f"unknown linear solver method {method!r}: use 'auto', 'direct' or 'amg'")
        if aggregation == "auto":
            aggregation = "smoothed" if A.shape[0] <= SMOOTHED_LIMIT else "plain"
        if aggregation not in ("smoothed", "plain"):
            raise ValueError(f"unknown aggregation {aggregation!r}: use 'auto', 'smoothed' or 'plain'")
        if smoother not in SWEEPS:
            raise ValueError(f"unknown AMG smoother {smoother!r}: use one of {sorted(SWEEPS)}")
        self.rtol = float(rtol)
        self.maxiter = int(maxiter)
        self.method, self.aggregation, self.smoother = method, aggregation, smoother
        self.near_nullspace = None if near_nullspace is None else np.asarray(near_nullspace, float)
        self.stats = SolveStats(method if method == "direct" else f"amg-{aggregation}")
        self.rebuild(A, basis=basis)

    def rebuild(self, A, basis=None) -> None:
        """(Re)build the factorisation or AMG hierarchy for ``A``; the setup time adds up in ``stats``.

        ``basis`` (AMG only), an object with ``galerkin(A)`` (``T^T A T``),
        ``apply(y)`` (``T y``), ``apply_t(r)`` (``T^T r``) and ``inverse(v)``
        (``T^-1 v``, on (n, k) arrays): the hierarchy is built for
        ``T^T A T`` with near-nullspace ``T^-1 B`` and applied as
        ``T M T^T`` (symmetric positive definite when ``M`` is, so CG still
        applies). :class:`solvers.physics.cohesive.amg.PairBasis` is one.
        """
        self.A = A
        self._basis = basis
        t0 = time.perf_counter()
        if self.method == "direct":
            self._lu = spla.splu(sp.csc_matrix(A))
        else:
            import pyamg

            Ab = A if sp.isspmatrix_bsr(A) else sp.csr_matrix(A)
            B = self.near_nullspace
            if basis is not None:
                Ab = basis.galerkin(Ab)
                B = None if B is None else basis.inverse(B)
            pre, post = SWEEPS[self.smoother]
            self._ml = pyamg.smoothed_aggregation_solver(
                Ab, B=B, strength=("symmetric", {"theta": 0.0}), max_coarse=300,
                coarse_solver="splu",
                smooth=("jacobi", {"omega": 4.0 / 3.0, "degree": 1}) if self.aggregation == "smoothed" else None,
                presmoother=("block_gauss_seidel", {"sweep": pre}),
                postsmoother=("block_gauss_seidel", {"sweep": post}),
                improve_candidates=None,  # halves setup time, same iterations (measured, 340 k dof)
            )
            self._M = self._ml.aspreconditioner(cycle="V")
            if basis is not None:
                cycle = self._M
                self._M = spla.LinearOperator(A.shape, dtype=float,
                                              matvec=lambda r: basis.apply(cycle @ basis.apply_t(r)))
            log.debug("AMG hierarchy: %s", self._ml)
        dt = time.perf_counter() - t0
        self.stats.setup_s += dt
        log.info("linear solver %s set up in %.2f s (%d unknowns)", self.method, dt, A.shape[0])

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """The matrix this solver was set up for, times ``v``."""
        return self.A @ v

    def apply_preconditioner(self, r: np.ndarray) -> np.ndarray:
        """The preconditioner applied to a residual: the LU solve or one AMG V-cycle."""
        return self._lu.solve(r) if self.method == "direct" else self._M @ r

    def refresh_fine(self, A) -> None:
        """AMG only: make ``A`` the finest level's matrix (and its smoother's), keeping the coarse levels.

        For a matrix that changed locally since :meth:`rebuild` (damage at an
        interface): the smoother sees the change, the coarse grids need not.
        Costs the basis product and the block-diagonal inverse, not a setup.
        """
        from pyamg.relaxation.smoothing import setup_block_gauss_seidel

        t0 = time.perf_counter()
        basis = self._basis
        lvl = self._ml.levels[0]
        # its own matrix: a finest level changed under the smoother's block inverses is no preconditioner
        lvl.A = sp.bsr_matrix(A, blocksize=(3, 3), copy=True) if basis is None else basis.galerkin(A)
        pre, post = SWEEPS[self.smoother]
        lvl.presmoother = setup_block_gauss_seidel(lvl, sweep=pre)
        lvl.postsmoother = setup_block_gauss_seidel(lvl, sweep=post)
        self.stats.setup_s += time.perf_counter() - t0

    def solve(self, b: np.ndarray, x0: np.ndarray | None = None, A=None, rtol: float | None = None,
              maxiter: int | None = None) -> np.ndarray:
        """Solve ``A x = b`` to ``rtol``; raise ConvergenceError otherwise.

        With ``A`` given (a matrix near the one this solver was set up for,
        e.g. the secant stiffness of a damaged interface), CG solves that
        matrix preconditioned by this solver's factorisation or AMG cycle,
        to ``rtol`` in at most ``maxiter`` iterations (default the solver's).
        """
        if A is not None:
            rtol = self.rtol if rtol is None else float(rtol)
            maxiter = self.maxiter if maxiter is None else int(maxiter)
            M = self._M if self.method != "direct" else spla.LinearOperator(
                self.A.shape, matvec=self._lu.solve, dtype=float)
            return checked_solve(self.stats, lambda v: A @ v, b, rtol,
                                 lambda: counted_cg(A, b, M=M, x0=x0, rtol=rtol, maxiter=maxiter),
                                 MECHANISM_HINT)
        if self.method == "direct":
            return checked_solve(self.stats, lambda v: self.A @ v, b, self.rtol,
                                 lambda: (self._lu.solve(b), 1), MECHANISM_HINT)
        return checked_solve(self.stats, lambda v: self.A @ v, b, self.rtol,
                             lambda: counted_cg(self.A, b, M=self._M, x0=x0, rtol=self.rtol, maxiter=self.maxiter),
                             MECHANISM_HINT)


def anderson(hist: list) -> tuple:
    """The next iterate of a fixed point ``x = T(x)``: Anderson mixing (type II, Walker and Ni 2011).

    Parameters
    ----------
    hist : list of tuples ``(x_j, T(x_j), *extra_j)``
        The last iterates, oldest first; arrays of one shape each. ``extra_j`` are
        quantities that go with ``T(x_j)`` (e.g. the current that produced it).

    Returns
    -------
    tuple ``(x_next, *extra_next)``: the combination of the ``T(x_j)`` that minimises the
    linearised residual ``T(x) - x`` in the least-squares sense, and the same combination
    of every extra (plain substitution with one entry).
    """
    last = hist[-1]
    if len(hist) == 1:
        return tuple(last[1:])
    flat = lambda j: np.array([np.ravel(h[j]) for h in hist]).T  # noqa: E731  (size, m + 1)
    g = flat(1) - flat(0)
    gamma = np.linalg.lstsq(np.diff(g, axis=1), g[:, -1], rcond=None)[0]
    return tuple(np.asarray(last[j]) - (np.diff(flat(j), axis=1) @ gamma).reshape(np.shape(last[j]))
                 for j in range(1, len(last)))


MECHANISM_HINT = ("the mesh may contain a mechanism (free rigid motion) or the materials are extreme: "
                  "check [mechanics] and [materials], or raise [solver] maxiter")


def counted_cg(A, b, *, M, x0=None, rtol: float, maxiter: int) -> tuple[np.ndarray, int]:
    """Preconditioned CG (scipy) returning the solution and the iterations it took."""
    count = [0]

    def cb(_xk):
        count[0] += 1

    x, _ = spla.cg(A, b, x0=x0, rtol=rtol, atol=0.0, maxiter=maxiter, M=M, callback=cb)
    return x, count[0]


def pcg(matvec, b, psolve, *, x0=None, rtol: float, maxiter: int, xp=np) -> tuple:
    """Preconditioned CG where the vectors are: numpy, or device arrays (``xp`` = cupy).

    The iterates of scipy's ``cg`` (same recurrences, same stop ``||r|| < rtol ||b||`` on the
    recursive residual), written in the ``xp`` namespace so that a GPU solve keeps every vector
    on the device: only scalars (dot products, the residual norm) reach the host. ``b`` may have
    any shape (full-grid vectors); dot products run over all its entries.
    Returns the solution and the iterations it took.
    """
    dot = xp.vdot
    stop = rtol * float(xp.linalg.norm(b.reshape(-1)))
    x = xp.zeros_like(b) if x0 is None else x0.astype(b.dtype, copy=True)
    r = b - matvec(x) if x0 is not None else b.copy()
    p, rho_prev = None, None
    for k in range(maxiter):
        if float(xp.linalg.norm(r.reshape(-1))) < stop:
            return x, k
        z = psolve(r)
        rho = float(dot(r, z))
        if p is None:
            p = z.copy()
        else:
            p *= rho / rho_prev
            p += z
        q = matvec(p)
        alpha = rho / float(dot(p, q))
        x += alpha * p
        r -= alpha * q
        rho_prev = rho
    return x, maxiter


def flexible_cg(matvec, b, pmatvec, *, x0=None, rtol: float, maxiter: int, xp=np) -> tuple:
    """Flexible preconditioned CG (Polak-Ribiere beta; Notay, SIAM J Sci Comput 22, 2000).

    CG whose preconditioner may change from one iteration to the next (a K-cycle, an inner solve);
    with a fixed symmetric preconditioner it makes the same iterates as CG. Stops at
    ``||b - A x|| <= rtol ||b||`` (the recursive residual) or after ``maxiter`` iterations.
    Vectors as in :func:`pcg`. Returns the solution and the iterations it took.
    """
    dot, norm = xp.vdot, (lambda v: float(xp.linalg.norm(v.reshape(-1))))
    x = xp.zeros_like(b) if x0 is None else x0.astype(b.dtype, copy=True)
    r = b - matvec(x) if x0 is not None else b.copy()
    stop = rtol * norm(b)
    if norm(r) <= stop:
        return x, 0
    z = pmatvec(r)
    p, rz, r_old = z.copy(), float(dot(r, z)), r.copy()
    for k in range(1, maxiter + 1):
        q = matvec(p)
        alpha = rz / float(dot(p, q))
        x += alpha * p
        r -= alpha * q
        if norm(r) <= stop:
            return x, k
        z = pmatvec(r)
        beta = float(dot(z, r - r_old)) / rz
        rz, r_old = float(dot(r, z)), r.copy()
        p = z + beta * p
    return x, maxiter


def checked_solve(stats: SolveStats, matvec, b, rtol: float, solve, hint: str, xp=np):
    """Run ``solve() -> (x, iterations)``, check the true residual, record it in ``stats``.

    Raises ConvergenceError (with ``hint`` on what to do) when ``||b - A x|| / ||b||``
    exceeds ``rtol`` beyond round-off: CG's own test uses the preconditioned recurrence.
    ``xp``: the namespace of ``b`` and of what ``matvec`` returns (cupy: the check runs on the device).
    """
    t0 = time.perf_counter()
    bnorm = float(xp.linalg.norm(b.reshape(-1)))
    if bnorm == 0.0:
        x, it, res = xp.zeros_like(b), 0, 0.0
    else:
        x, it = solve()
        res = float(xp.linalg.norm((b - matvec(x)).reshape(-1))) / bnorm
        if not np.isfinite(res) or res > max(10 * rtol, 1e-12):
            raise ConvergenceError(f"{stats.method} solve reached relative residual {res:.2e} after {it} "
                                   f"iterations, above rtol={rtol:.1e}; {hint}", iterations=it, residual=res)
    stats.iterations.append(int(it))
    stats.residuals.append(float(res))
    stats.solve_s.append(time.perf_counter() - t0)
    return x
