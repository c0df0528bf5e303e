"""Elasto-(visco)plastic phases on top of a bonded elastic problem.

:class:`PlasticProblem` adds J2 plasticity (:mod:`solvers.physics.plasticity`)
to the phases that have a law, on any mesh and backend that
:class:`~solvers.physics.elasticity.ElasticProblem` solves (voxel hexes
assembled or matrix-free, voxel and conforming tets).

Discretisation: the plastic strain is constant on each cell (P0). Its
conjugate force is then the cell-mean stress, so the return map runs on the
cell-mean strain (exact on linear tets, where the strain is constant, and the
variationally consistent pairing on hexes and quadratic tets).

Solution: Newton on the displacement with the consistent tangent, which is
the elastic operator less ``int B^T (C - C_ep) B`` over the yielding cells.
Each correction is solved by CG preconditioned by the elastic problem's
multigrid or AMG, set up once and never changed (no tangent to assemble or to
coarsen), and halved while it does not lower the equilibrium residual. The
initial-stiffness iteration (the plastic strain as an eigenstrain of the
elastic problem, Anderson-mixed) is kept as ``method="initial-stiffness"``;
docs/plasticity.md compares the two.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict

import numpy as np

from solvers.fem.mandel import IDENTITY, from_mandel, to_mandel
from solvers.linalg import anderson, flexible_cg
from solvers.physics.plasticity import J2Plasticity, return_map, softening
from tomomech.errors import ConfigError, ConvergenceError

log = logging.getLogger(__name__)

#: halvings of a Newton correction that does not lower the equilibrium residual
LINE_SEARCH = 6


class PlasticProblem:
    """Mechanics with J2 (visco)plastic phases: ``solve`` advances and commits the plastic state.

    Everything not defined here (``mesh``, ``solver``, ``load``, ``fixed``, ...) is the elastic
    problem's: a PlasticProblem is used wherever an ElasticProblem is.

    Parameters
    ----------
    base : ElasticProblem
        The bonded elastic problem, set up (any mesh, any backend).
    laws : mapping phase code -> J2Plasticity
        Phases that yield; the others stay elastic.
    rtol : float
        Equilibrium residual of a step, relative to the norm of its swelling load.
    maxiter : int
        Newton (or initial-stiffness) iterations per step before ConvergenceError.
    depth : int
        Anderson mixing depth of the initial-stiffness iteration (0: plain substitution).
    method : {"newton", "initial-stiffness"}
    forcing : float
        Newton: CG tolerance of a correction, relative to the residual.

    Attributes
    ----------
    cells : (m,) int, the cells of plastic phases
    plastic_strain : (m, 6) committed Mandel plastic strain
    equivalent : (m,) committed equivalent plastic strain
    time_step_s : float
        Time of the next step, s (``inf``: static, the rate-independent limit of a viscous law).
        Transient drivers set it.
    history : list of dict, one per step (iterations, CG iterations, residual, seconds)
    """

    path_dependent = True

    def __init__(self, base, laws: Mapping[int, J2Plasticity], *, rtol: float = 1e-6, maxiter: int = 200,
                 depth: int = 5, method: str = "newton", forcing: float = 1e-2):
        if method not in ("newton", "initial-stiffness"):
            raise ConfigError(f"plasticity method {method!r}: use 'newton' or 'initial-stiffness'")
        self.method, self.forcing = method, float(forcing)
        if not 0 < rtol < 1:
            raise ConfigError(f"plasticity rtol {rtol!r} must lie in (0, 1)")
        self.base = base
        mesh = base.mesh
        groups = [(law, np.flatnonzero(mesh.cell_phase == code)) for code, law in laws.items() if law is not None]
        groups = [(law, c) for law, c in groups if c.size]
        self.laws = [law for law, _ in groups]
        self.cells = np.concatenate([c for _, c in groups]) if groups else np.zeros(0, np.int64)
        # each law's positions in ``cells``: the return map runs once per plastic phase
        ends = np.cumsum([0] + [c.size for _, c in groups])
        self._phase_slices = [slice(a, b) for a, b in zip(ends[:-1], ends[1:])]
        lam, mu = base._lame[base.cell_material[self.cells]].T
        self._lam, self._mu = lam, mu
        m = self.cells.size
        self.plastic_strain = np.zeros((m, 6))
        self.equivalent = np.zeros(m)
        self._increment = np.zeros((m, 6))
        self.time_step_s = np.inf
        self.rtol, self.maxiter, self.depth = float(rtol), int(maxiter), int(depth)
        self.history: list[dict] = []
        self._cg_last = 0

    def __getattr__(self, name):
        base = self.__dict__.get("base")
        if base is None:
            raise AttributeError(name)
        return getattr(base, name)

    # --- the parts of a step ---------------------------------------------------------------
    def _elastic_stress(self, strain: np.ndarray) -> np.ndarray:
        """(m, 6) ``C : strain`` of the plastic cells' materials."""
        tr = strain[:, :3].sum(axis=1)
        return 2.0 * self._mu[:, None] * strain + (self._lam * tr)[:, None] * IDENTITY

    def plastic_load(self, plastic_strain: np.ndarray) -> np.ndarray:
        """(3 nn,) nodal forces of a plastic strain (m, 6) of the plastic cells, N."""
        return self.base.stress_load(self.cells, from_mandel(self._elastic_stress(plastic_strain)))

    def _map(self, u: np.ndarray, swell: np.ndarray, tangent: bool = False):
        """Return map of the plastic cells from the committed state for the displacement ``u``.

        Returns stress, plastic strain and equivalent plastic strain (m, 6), (m, 6), (m,); with
        ``tangent`` also the yielding cells (indices into ``cells``) and their ``C - C_ep`` (k, 6, 6).
        """
        strain = to_mandel(self.base.cell_strain(u, self.cells)) - swell[:, None] * IDENTITY - self.plastic_strain
        trial = self._elastic_stress(strain)
        stress, ep, p = np.empty_like(trial), np.empty_like(trial), np.empty(trial.shape[0])
        soft, drop = [np.zeros(0, np.int64)], [np.zeros((0, 6, 6))]
        for law, sel in zip(self.laws, self._phase_slices):
            r = return_map(law, trial[sel], self.plastic_strain[sel], self.equivalent[sel], self._mu[sel],
                           self.time_step_s)
            stress[sel], ep[sel], p[sel] = r.stress, r.plastic_strain, r.equivalent
            if tangent:
                y = np.flatnonzero(r.yielding)
                soft.append(sel.start + y)
                drop.append(softening(r.take(y), self._mu[sel][y]))
        if not tangent:
            return stress, ep, p
        return stress, ep, p, np.concatenate(soft), np.concatenate(drop)

    def _tangent_matvec(self, soft: np.ndarray, drop: np.ndarray):
        """``v -> K_t v``: the elastic operator less ``int B^T (C - C_ep) B`` over the yielding cells."""
        matvec, cells = self.base.solver.matvec, self.cells[soft]

        def apply(v):
            if not cells.size:
                return matvec(v)
            e = to_mandel(self.base.cell_strain(v, cells))
            return matvec(v) - self.base.stress_load(cells, from_mandel(np.einsum("cij,cj->ci", drop, e)))
        return apply

    # --- one load step ----------------------------------------------------------------------
    def solve(self, eigenstrain: np.ndarray, x0: np.ndarray | None = None) -> np.ndarray:
        """Displacement (nn, 3), m, for the cell swelling strains; commits the plastic state.

        Raises
        ------
        ConvergenceError
            The step did not reach ``rtol`` in ``maxiter`` iterations (names the options to change).
        """
        t0 = time.perf_counter()
        eps = np.asarray(eigenstrain, float)
        f0 = self.base.load(eps)
        scale = max(float(np.linalg.norm(f0)), 1e-300)
        swell = eps[self.cells]
        step = self._newton if self.method == "newton" else self._initial_stiffness
        u, k, cg, residual, (_, ep_new, p_new) = step(f0, scale, swell, x0)
        if residual > self.rtol:
            raise ConvergenceError(
                f"the plastic step did not converge in {k} iterations (equilibrium residual "
                f"{residual:.1e} of the load, target {self.rtol:.0e}): take smaller load steps ([cycling] steps), "
                "or raise [solver] plastic_maxiter", iterations=k, residual=residual)
        yielding = int(np.count_nonzero(p_new > self.equivalent))
        self._increment = ep_new - self.plastic_strain
        self.plastic_strain, self.equivalent = ep_new, p_new
        self._cg_last = cg
        self.history.append({"iterations": k, "cg_iterations": cg, "residual": residual, "yielding_cells": yielding,
                             "seconds": time.perf_counter() - t0})
        log.info("plastic step: %d iterations (%d CG), residual %.1e, %d cells yielding, %.1f s", k, cg, residual,
                 yielding, self.history[-1]["seconds"])
        return u.reshape(-1, 3)

    def _initial_stiffness(self, f0, scale, swell, x0):
        """Fixed point on the plastic strain: solve with the elastic operator, return-map, Anderson-mix."""
        solver = self.base.solver
        ep = self.plastic_strain + self._increment  # predictor: the last step's plastic increment again
        u = None if x0 is None else np.ravel(x0)
        hist, cg, residual = [], 0, np.inf
        for k in range(1, self.maxiter + 1):
            u = solver.solve(f0 + self.plastic_load(ep), x0=u)
            cg += solver.stats.iterations[-1]
            state = self._map(u, swell)
            residual = float(np.linalg.norm(self.plastic_load(state[1] - ep))) / scale
            log.debug("plastic iteration %d: equilibrium residual %.2e", k, residual)
            if residual <= self.rtol:
                break
            hist = (hist + [(ep, state[1])])[-(self.depth + 1):]
            (ep,) = anderson(hist)
        return u, k, cg, residual, state

    def _newton(self, f0, scale, swell, x0):
        """Newton on the displacement with the consistent tangent, each correction by CG preconditioned
        by the elastic problem's multigrid or AMG (set up once), to ``forcing`` of the residual; a
        correction that does not lower the residual is halved (backtracking, at most ``LINE_SEARCH`` times:
        the tangent is symmetric, so the Newton direction descends on the residual's norm)."""
        solver = self.base.solver
        u = np.zeros_like(f0) if x0 is None else np.array(np.ravel(x0), float)

        def evaluate(u):
            state = self._map(u, swell, tangent=True)
            R = f0 + self.plastic_load(state[1]) - solver.matvec(u)
            return state, R, float(np.linalg.norm(R)) / scale

        state, R, residual = evaluate(u)
        cg, k = 0, 0
        while residual > self.rtol and k < self.maxiter:
            k += 1
            du, its = flexible_cg(self._tangent_matvec(*state[3:]), R, solver.apply_preconditioner,
                                  rtol=max(self.forcing, 0.5 * self.rtol / residual), maxiter=solver.maxiter)
            cg += its
            alpha = 1.0
            for _ in range(LINE_SEARCH + 1):
                trial = evaluate(u + alpha * du)
                if trial[2] < residual:
                    break
                alpha *= 0.5
            else:  # no decrease along the direction: give up with the residual reached
                break
            u = u + alpha * du
            state, R, residual = trial
            log.debug("plastic Newton %d: residual %.2e (step %.3g), %d cells yielding", k, residual, alpha,
                      state[3].size)
        return u, max(k, 1), cg, residual, state[:3]

    @property
    def last_iterations(self) -> int:
        """CG iterations of the last step, over all its iterations."""
        return self._cg_last

    # --- outputs ----------------------------------------------------------------------------
    def cell_stress(self, u: np.ndarray, eigenstrain: np.ndarray) -> np.ndarray:
        """Cell-mean stress (ne, 3, 3), Pa: the elastic problem's less ``C : eps_p`` on plastic cells."""
        sig = self.base.cell_stress(u, eigenstrain)
        sig[self.cells] -= from_mandel(self._elastic_stress(self.plastic_strain))
        return sig

    def cell_equivalent_plastic_strain(self) -> np.ndarray:
        """(ne,) committed equivalent plastic strain (0 on elastic phases)."""
        out = np.zeros(self.mesh.n_cells)
        out[self.cells] = self.equivalent
        return out

    def summary(self) -> dict:
        """The elastic problem's record with the plasticity's (laws, iterations)."""
        h = self.history
        return {**self.base.summary(),
                "plasticity": {"laws": [asdict(law) for law in self.laws], "rtol": self.rtol,
                               "steps": len(h), "iterations": int(sum(r["iterations"] for r in h)),
                               "largest_step_iterations": int(max((r["iterations"] for r in h), default=0))}}

    def step_record(self, since: int) -> dict:
        """Iterations of the steps after history entry ``since``, for the step summary."""
        h = self.history[since:]
        return {**self.base.step_record(since), "plastic_iterations": int(sum(r["iterations"] for r in h))}
