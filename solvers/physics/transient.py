"""The time loop of the chemo-mechanical model (PHYSICS.md section 1, "Coupling").

Staggered in each backward-Euler step: diffusion with the current flux mask,
then mechanics with the new eigenstrain. With ``stress_assisted`` the step
iterates diffusion and mechanics until the concentration stops changing.
The mechanics matrix and preconditioner are built once for the whole run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from solvers import fields
from solvers.mesh.voxel import ACTIVE
from solvers.physics.diffusion import FARADAY, GAS_CONSTANT, DiffusionProblem
from solvers.physics.elasticity import ElasticProblem
from solvers.physics.electrochem import KineticFlux
from solvers.physics.materials import Material
from tomomech.errors import ConfigError, ConvergenceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class State:
    """The solution after one step.

    Attributes
    ----------
    step : int
        1-based step number over the whole protocol.
    time_s : float
    cycle : int
        1-based half-cycle index (1 = first charge or discharge).
    theta_cell : (ne,) float
        Cell-mean theta on every mechanics cell (soc_start outside particles).
    theta_nodes : (nd,) float or None
        Nodal theta on the diffusion nodes (transient runs).
    u : (nn, 3) displacement, m
    sigma : (ne, 3, 3) cell stress, Pa
    iterations : int
        Mechanics CG iterations of this step (summed over stress-assisted iterations).
    coupling_iterations : int
    electro : dict or None
        Butler-Volmer runs: ``phi_s`` (cell voltage, V against Li/Li+), ``current_A``,
        ``i_face`` (A/m^2, positive = delithiation), ``eta_face`` (V), ``theta_face``
        (surface state of charge), ``phi`` (electrolyte potential on the free nodes, V),
        ``kinetic_iterations`` (diffusion-kinetics fixed-point iterations of the step).
    """

    step: int
    time_s: float
    cycle: int
    theta_cell: np.ndarray
    theta_nodes: np.ndarray | None
    u: np.ndarray
    sigma: np.ndarray
    iterations: int
    coupling_iterations: int = 1
    electro: dict | None = None


def swell_states(mech: ElasticProblem, active: Material, *, soc_start: float, soc_end: float,
                 steps: int) -> Iterator[State]:
    """Static swelling: the active phase goes uniformly from soc_start to soc_end."""
    is_active = mech.mesh.cell_phase == ACTIVE
    u = None
    for k in range(1, steps + 1):
        theta = soc_start + (soc_end - soc_start) * k / steps
        eps = np.where(is_active, active.swelling_strain(theta, soc_start), 0.0)
        u = mech.solve(eps, x0=u)
        yield State(k, 0.0, 1, np.where(is_active, theta, soc_start), None, u,
                    mech.cell_stress(u, eps), mech.last_iterations)


@dataclass(frozen=True)
class Galvanostatic:
    """A constant-current protocol.

    Attributes
    ----------
    c_rate : float
        The window ``soc_start -> soc_end`` is passed in ``1 / c_rate`` hours.
    soc_start, soc_end : float
        theta window; ``soc_end < soc_start`` is a charge (delithiation).
    cycles : int
        Half-cycles: 1 = one charge (or discharge), 2 = charge then discharge, ...
    steps : int
        Time steps per half-cycle.
    stress_assisted : bool
    temperature_K : float
    coupling_rtol : float
        Stress-assisted iteration stops when the concentration changes by less
        than this, relative to c_max.
    coupling_maxiter : int
    """

    c_rate: float = 1.0
    soc_start: float = 1.0
    soc_end: float = 0.22
    cycles: int = 1
    steps: int = 40
    stress_assisted: bool = False
    temperature_K: float = 298.15
    coupling_rtol: float = 1e-7
    coupling_maxiter: int = 60

    @property
    def half_cycle_s(self) -> float:
        return 3600.0 / self.c_rate

    @property
    def dt(self) -> float:
        return self.half_cycle_s / self.steps


def galvanostatic_flux(active: Material, protocol: Galvanostatic, accessible_volume: float,
                       bonded_area: float) -> float:
    """Molar flux density (mol/m^2/s, inward positive) of the first half-cycle.

    The window's capacity ``c_max |dtheta| V`` of the accessible particles
    (those with bonded electrolyte contact) passes through the bonded AP|SE
    area in ``1 / c_rate`` hours.
    """
    if bonded_area <= 0:
        raise ConfigError("no bonded AP|SE interface: no particle can be charged or discharged")
    dtheta = protocol.soc_end - protocol.soc_start
    return active.c_max_mol_m3 * dtheta * accessible_volume / (protocol.half_cycle_s * bonded_area)


def galvanostatic_states(mech: ElasticProblem, active: Material, faces: dict, protocol: Galvanostatic, *,
                         solver: str = "auto", backend: str = "assembled", device: str = "cpu",
                         precision: str = "float64", output_every: int = 1, feedback_every: int = 1,
                         flux_mask: Callable[[State | None], np.ndarray] | None = None,
                         stats: dict | None = None, kinetics: KineticFlux | None = None) -> Iterator[State]:
    """Transient charge/discharge: yields a :class:`State` every ``output_every`` steps.

    Diffusion runs every step. Mechanics runs at every yielded step, and at
    every ``feedback_every``-th step when it feeds back (stress-assisted flux
    feeds back at every step; a flux mask that depends on the state keeps the
    last solved state's mask in between); when it does not, skipping it
    between outputs is exact. The last step of every half-cycle is always
    yielded.

    Parameters
    ----------
    mech : ElasticProblem (its preconditioner is reused for every step)
    active : Material with ``D_m2_s``, ``c_max_mol_m3`` and a volume-change law
    faces : AP|SE faces (:func:`solvers.fields.interface_faces`)
    protocol : Galvanostatic
    solver : {"auto", "direct", "amg"}
        Linear solver of the assembled diffusion system.
    backend, device, precision
        Of the diffusion system (:class:`~solvers.physics.diffusion.DiffusionProblem`).
    output_every : int
    feedback_every : int
        With a state-dependent ``flux_mask``: mechanics (and the mask) every
        n-th step, and at written steps. 1 = every step.
    flux_mask : callable, optional
        Returns the (nf,) bool mask of faces that carry flux given the last
        state (all faces when omitted).
    stats : dict, optional
        Filled with ``"diffusion"``: the diffusion solver's
        :class:`~solvers.linalg.SolveStats` (setup once, time per solve).
    kinetics : KineticFlux, optional
        Butler-Volmer flux (PHYSICS.md section 5) instead of the uniform rule:
        the same total current, shared among the faces by the kinetics and the
        electrolyte's resistance; only faces with an ionic path carry it. With a
        stress-coupled open-circuit potential (``kinetics.stress_coupled``) the mechanics
        runs at every step and a step's potential uses the stress of the step before.
    """
    for name in ("D_m2_s", "c_max_mol_m3"):
        if getattr(active, name) is None:
            raise ConfigError(f"materials.active ({active.name}) needs {name} for a galvanostatic run")
    mesh = mech.mesh
    diff = DiffusionProblem(mesh, D=active.D_m2_s, dt=protocol.dt, faces=faces, solver=solver, backend=backend,
                            device=device, precision=precision)
    if stats is not None:
        stats["diffusion"] = diff.solver.stats
        stats["diffusion_nodes"] = diff.n_nodes
    if feedback_every < 1 or (protocol.stress_assisted and feedback_every != 1):
        raise ConfigError(f"feedback_every = {feedback_every}: use 1 (every step) or more, and 1 with "
                          "stress_assisted (its flux needs the stress of every step)")
    c_max = active.c_max_mol_m3
    theta0 = protocol.soc_start
    c = np.full(diff.n_nodes, theta0 * c_max)
    cell_theta = np.full(mesh.n_cells, theta0)
    u = None
    sa_coeff = 0.0
    if protocol.stress_assisted:
        if active.omega_m3_mol is None:
            raise ConfigError("stress_assisted needs a linear volume-change law (omega_m3_mol) for the "
                              "partial molar volume Omega of PHYSICS.md section 1")
        sa_coeff = active.D_m2_s * active.omega_m3_mol / (GAS_CONSTANT * protocol.temperature_K)
    face_particle = np.asarray(faces["particle"])
    n_part = int(mesh.particles.max()) + 1
    mech.time_step_s = protocol.dt  # rate-dependent mechanics (Perzyna plasticity)
    state = None
    step = 0
    for half in range(1, protocol.cycles + 1):
        sign = 1.0 if half % 2 == 1 else -1.0
        mask = np.ones(face_particle.size, bool) if flux_mask is None else flux_mask(state)
        carries = mask if kinetics is None else kinetics.carries(mask)
        reach = np.bincount(face_particle[carries], minlength=n_part) > 0
        vol = float(np.sum(diff.mass[reach[diff.node_particle]]))
        j = sign * galvanostatic_flux(active, protocol, vol, float(diff.face_area[carries].sum()))
        current = -FARADAY * j * float(diff.face_area[carries].sum())  # A, positive = charge
        feedback = sa_coeff != 0.0 or flux_mask is not None or (kinetics is not None and kinetics.stress_coupled)
        for k_half in range(1, protocol.steps + 1):
            step += 1
            if flux_mask is not None and state is not None:
                mask = flux_mask(state)
            if kinetics is None:
                inflow = diff.face_load(np.where(mask, j, 0.0))
                diffuse = lambda extra, c=c, inflow=inflow: diff.step(c, inflow + extra)  # noqa: E731
            else:
                diffuse = lambda extra, c=c, mask=mask, cur=current: kinetics.step(diff, c, extra, mask, cur)  # noqa: E731
            out = step % output_every == 0 or k_half == protocol.steps
            # stress-assisted: every = 1; path-dependent mechanics (plasticity) at every step
            if not (out or (feedback and step % feedback_every == 0) or mech.path_dependent):
                c = diffuse(0.0)
                if kinetics is None or not kinetics.cut_off(current):
                    continue
                diffuse = lambda extra, c=c: c  # noqa: E731  (at the cut-off: write this step)
            c, u, sigma, its, k = _coupled_step(diff, mech, active, diffuse, u, theta0, sa_coeff, protocol)
            if kinetics is not None and kinetics.stress_coupled:  # the next steps' open-circuit potential
                kinetics.set_surface_stress(diff.to_nodes(fields.hydrostatic(sigma[diff.cell_index])))
            cell_theta[diff.cell_index] = diff.cell_mean(c) / c_max
            state = State(step, step * protocol.dt, half, cell_theta.copy(), c / c_max, u, sigma, its, k,
                          None if kinetics is None else dict(kinetics.last))
            stop = kinetics is not None and kinetics.cut_off(current)
            if out or stop:
                yield state
            if stop:
                log.info("half-cycle %d reached its voltage cut-off (%.4f V) at step %d", half,
                         kinetics.last["phi_s"], k_half)
                break


def _coupled_step(diff, mech, active, diffuse, u, theta0, sa_coeff, protocol):
    """Diffusion (``diffuse(extra_inflow) -> c_new``) then mechanics; with stress-assisted flux,
    iterate to ``coupling_rtol``."""
    c_max = active.c_max_mol_m3
    is_active = mech.mesh.cell_phase == ACTIVE
    its = 0
    c_new = diffuse(0.0)
    for k in range(1, protocol.coupling_maxiter + 1):
        theta_cell = np.full(mech.mesh.n_cells, theta0)
        theta_cell[diff.cell_index] = diff.cell_mean(c_new) / c_max
        eps = np.where(is_active, active.swelling_strain(theta_cell, theta0), 0.0)
        u = mech.solve(eps, x0=u)
        its += mech.last_iterations
        sigma = mech.cell_stress(u, eps)
        if sa_coeff == 0.0:
            return c_new, u, sigma, its, k
        sh_nodes = diff.to_nodes(fields.hydrostatic(sigma[diff.cell_index]))
        c_next = diffuse(diff.stress_assisted_load(c_new, sh_nodes, sa_coeff))
        change = float(np.abs(c_next - c_new).max()) / c_max
        c_new = c_next
        if change < protocol.coupling_rtol:
            return c_new, u, sigma, its, k
    raise ConvergenceError(
        f"stress-assisted coupling did not converge in {protocol.coupling_maxiter} iterations "
        f"(last change {change:.1e} of c_max); reduce the time step (more [cycling] steps)",
        iterations=protocol.coupling_maxiter, residual=change)
