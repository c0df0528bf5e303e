"""The Butler-Volmer flux rule of a transient run (PHYSICS.md section 5).

The uniform rule of section 1 sets the face flux before the diffusion step.
Here the flux depends on the particles' surface state of charge at the end of
the step (backward Euler), through ``U(theta_s)`` and ``i0(theta_s)``, so a
step is a fixed point: kinetics -> face flux -> diffusion -> surface theta ->
kinetics. The surface response of a face to its own flux is strong (the
kinetic resistance is small next to ``dU/dtheta`` times the surface nodes'
capacity), so plain substitution can diverge; Anderson mixing (Walker and Ni,
SIAM J. Numer. Anal. 49, 2011) over the surface theta of every face makes it
converge in a handful of iterations.
"""

from __future__ import annotations

import logging

import numpy as np

from solvers.linalg import anderson
from solvers.physics.diffusion import FARADAY
from solvers.physics.kinetics import Kinetics, balance_current
from tomomech.errors import ConvergenceError

log = logging.getLogger(__name__)


class KineticFlux:
    """Implicit Butler-Volmer steps of a diffusion problem.

    Parameters
    ----------
    electrolyte : ElectrolyteProblem
    kinetics : Kinetics
    rtol : float
        A step has converged when the surface theta of no face changes by more than this.
    maxiter : int
        Fixed-point iterations per step before ConvergenceError.
    depth : int
        Anderson mixing depth (0 = plain substitution).
    max_cuts : int
        A step that does not converge is halved, at most this many times.
    voltage_limits : (low, high), V
        A half-cycle ends at the step where a charge passes ``high`` or a discharge ``low``.
    omega : callable, optional
        ``Omega(theta)``, the partial molar volume of Li in m^3/mol
        (:meth:`~solvers.physics.materials.Material.partial_molar_volume`): the open-circuit
        potential is then stress-coupled, ``U(theta) + Omega sigma_h / F``, with ``sigma_h`` the
        particle's hydrostatic stress at each interface point from the last mechanics solve
        (:meth:`set_surface_stress`; explicit in time). None: uncoupled.

    Attributes
    ----------
    last : dict or None
        The last converged step (see :class:`~solvers.physics.transient.State` ``electro``).
    """

    def __init__(self, electrolyte, kinetics: Kinetics, *, rtol: float = 1e-6, maxiter: int = 60, depth: int = 5,
                 max_cuts: int = 3, voltage_limits: tuple[float, float] = (0.0, np.inf), omega=None):
        self.elec = electrolyte
        self.kin = kinetics
        self.rtol, self.maxiter, self.depth, self.max_cuts = float(rtol), int(maxiter), int(depth), int(max_cuts)
        self.voltage_limits = tuple(float(v) for v in voltage_limits)
        self.last = None
        self.omega = omega
        self._sigma_h = None  # hydrostatic stress at the diffusion nodes, Pa (stress-coupled OCP)
        self._nodes = None
        self._response, self._halves = {}, {}

    @property
    def stress_coupled(self) -> bool:
        return self.omega is not None

    def set_surface_stress(self, sigma_h_nodes: np.ndarray) -> None:
        """The particles' hydrostatic stress (Pa) at the diffusion nodes, for the next steps' open-circuit potential."""
        self._sigma_h = np.asarray(sigma_h_nodes, float)

    def ocp_shift(self, theta: np.ndarray) -> np.ndarray | float:
        """``Omega(theta) sigma_h / F`` at every interface point (V), 0 when uncoupled or before any stress."""
        if self.omega is None or self._sigma_h is None:
            return 0.0
        return self.omega(theta) * self._sigma_h[self._nodes] / FARADAY

    def _slope(self, theta: np.ndarray, d: float = 1e-6) -> np.ndarray:
        """dU/dtheta (V), central difference."""
        return (self.kin.ocp(theta + d) - self.kin.ocp(theta - d)) / (2 * d)

    def cut_off(self, current_A: float) -> bool:
        """Whether the last step passed the voltage limit of its direction (charge: high, discharge: low)."""
        v = self.last["phi_s"]
        return v >= self.voltage_limits[1] if current_A > 0 else v <= self.voltage_limits[0]

    def _points(self, c: np.ndarray) -> np.ndarray:
        """Surface theta at every interface point (the diffusion node of each face corner)."""
        return c[self._nodes] / self.kin.law.c_max_mol_m3

    @staticmethod
    def _load(diff, i: np.ndarray) -> np.ndarray:
        """Nodal Li inflow (mol/s) of a current density (A/m^2, positive = out) at every point."""
        return diff.face_load(-i / FARADAY)

    def carries(self, mask: np.ndarray) -> np.ndarray:
        """Faces that carry current: bonded (``mask``) and with an ionic path to the separator."""
        return mask & self.elec.face_connected

    def step(self, diff, c: np.ndarray, extra: np.ndarray | float, mask: np.ndarray, current_A: float,
             cuts: int = 0) -> np.ndarray:
        """One backward-Euler step under Butler-Volmer flux; returns the new concentration (mol/m^3).

        A step that does not converge is cut in two halves, down to ``dt / 2**max_cuts``.

        Parameters
        ----------
        diff : DiffusionProblem
        c : (nd,) concentration at the start of the step, mol/m^3
        extra : (nd,) or 0
            Further nodal inflow, mol/s (stress-assisted flux).
        mask : (nf,) bool, bonded faces
        current_A : float, positive = charge
        """
        try:
            return self._step(diff, c, extra, mask, current_A)
        except ConvergenceError as err:
            if cuts >= self.max_cuts:
                raise ConvergenceError(
                    f"{err} at dt = {diff.dt:.3g} s, after {cuts} cuts of the time step: the particles' surfaces "
                    "cannot take the current (the cell is at its limit); lower [cycling] c_rate, narrow the SOC "
                    "window, or give more [cycling] steps", iterations=err.iterations, residual=err.residual) from err
            if diff.dt not in self._halves:  # built once per step size, reused by every later cut
                self._halves[diff.dt] = diff.with_dt(diff.dt / 2)
            half = self._halves[diff.dt]
            log.info("Butler-Volmer step at dt = %.3g s cut in two (%s)", diff.dt, err)
            c_half = self.step(half, c, extra, mask, current_A, cuts + 1)
            return self.step(half, c_half, extra, mask, current_A, cuts + 1)

    def _step(self, diff, c, extra, mask, current_A) -> np.ndarray:
        if self._nodes is None:
            if diff.face_nodes.shape[1] != self.elec.corners:
                raise ValueError("the diffusion and electrolyte problems were built on different faces")
            self._nodes = diff.face_nodes.ravel()
        if diff.dt not in self._response:
            # drop of each point's theta per A/m^2 of charge current at every point, over one step (> 0):
            # one diffusion solve from zero, the smoothest current pattern, whose response is the largest
            ones = np.ones(self._nodes.size)
            self._response[diff.dt] = -self._points(diff.step(np.zeros(diff.n_nodes), self._load(diff, ones)))
        response = self._response[diff.dt]
        carries = np.repeat(self.carries(mask), self.elec.corners)
        warm = self.last or {}
        if "i" in warm:  # predictor: the last step's current, diffused
            i_ref = warm["i"] * (current_A / warm["current_A"] if warm["current_A"] else 0.0)
            x = self._points(diff.step(c, self._load(diff, i_ref) + extra))
        else:
            x, i_ref = self._points(c), np.zeros(self._nodes.size)
        change = np.inf
        hist = []  # (x, theta it gave, current that gave it)
        full = False  # one Newton update per iteration while the surface theta still moves, then a full solve
        for k in range(1, self.maxiter + 1):
            s = np.maximum(-self._slope(x) * response, 0.0)  # dU/dtheta < 0, response > 0
            shift = self.ocp_shift(x)
            sol = balance_current(self.elec, self.kin, x, carries, current_A, phi0=warm.get("phi"),
                                  phi_s0=warm.get("phi_s"), surface=(s, i_ref), max_updates=None if full else 1,
                                  x2_0=warm.get("x2"), ocp_shift=shift)
            warm = sol
            c_new = diff.step(c, self._load(diff, sol["i"]) + extra)
            x_new = self._points(c_new)
            change = float(np.abs(x_new - x).max(initial=0.0))
            log.debug("kinetic iteration %d: surface theta changes by %.2e, phi_s %.5f V, %d Newton",
                      k, change, sol["phi_s"], sol["newton_iterations"])
            if change < self.rtol and sol["converged"]:
                self.last = self._record(sol, x_new, carries, current_A, k, shift)
                return c_new
            full = change < self.rtol
            hist = (hist + [(x, x_new, sol["i"])])[-(self.depth + 1):]
            x, i_ref = anderson(hist)  # the current follows the same combination
        raise ConvergenceError(f"the Butler-Volmer step did not converge in {self.maxiter} diffusion-kinetics "
                               f"iterations (surface theta still changing by {change:.1e}); reduce the time step "
                               "([cycling] steps or dt_s)", iterations=self.maxiter, residual=change)

    def _record(self, sol: dict, theta: np.ndarray, carries: np.ndarray, current_A: float, k: int,
                shift: np.ndarray | float) -> dict:
        """The step's record: point values and their face means (``*_face``, equal corner weights);
        ``ocp_shift`` (V per point) where the open-circuit potential is stress-coupled."""
        face = lambda v: v.reshape(-1, self.elec.corners).mean(axis=1)  # noqa: E731
        on = face(carries.astype(float))  # fraction of each face's corners that carry
        with np.errstate(invalid="ignore", divide="ignore"):
            eta_face = np.where(on > 0, face(carries * sol["eta"]) / on, np.nan)
        return {**sol, "current_A": float(current_A), "theta": theta, "kinetic_iterations": k,
                "i_face": face(sol["i"]), "eta_face": eta_face, "theta_face": face(theta), "carries": on > 0,
                "connected": self.elec.face_connected,
                **({"ocp_shift": np.broadcast_to(shift, theta.shape).copy()} if self.stress_coupled else {})}
