"""Interface kinetics of the active particles (PHYSICS.md section 5).

Butler-Volmer current density on bonded AP|SE faces, the open-circuit
potential ``U(theta)`` of each active-material preset, and the Newton solve
that finds the electrolyte potential and the one solid potential ``phi_s``
(the cell voltage against Li/Li+) that carry a given total current.

Sign convention: current density ``i`` is positive for delithiation (charge):
Li+ leaves the particle into the electrolyte, and the molar Li flux into the
particle is ``-i / F``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from solvers.physics.diffusion import FARADAY, GAS_CONSTANT
from tomomech.errors import ConfigError, ConvergenceError

log = logging.getLogger(__name__)

#: relative residual of the linear solves of a Newton correction: Newton's own residual test sets the
#: final accuracy, so a correction need not be exact (inexact Newton)
CORRECTION_RTOL = 1e-6


def _chen2020_nmc811(theta):
    """NMC811 against Li/Li+ (V), the fit of Chen et al., J. Electrochem. Soc. 167 (2020) 080534.

    The same expression as PyBaMM's ``Chen2020`` parameter set; fitted over theta 0.27-0.91
    (the cell's 0-100 % state of charge), smooth and finite outside it. Takes arrays, or
    PyBaMM symbols (the validation tests hand PyBaMM this very function).
    """
    x = np.asarray(theta, float) if isinstance(theta, (list, tuple, int, float)) else theta
    return (-0.8090 * x + 4.4875 - 0.0428 * np.tanh(18.5138 * (x - 0.5542))
            - 17.7326 * np.tanh(15.7890 * (x - 0.3117)) + 17.5842 * np.tanh(15.9308 * (x - 0.3120)))


#: Published open-circuit-potential fits by name (a material's ``ocp`` may name one).
OCP_FITS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"Chen2020-NMC811": _chen2020_nmc811}


def open_circuit(spec, name: str = "material") -> Callable[[np.ndarray], np.ndarray]:
    """The function ``U(theta)`` (V against Li/Li+) of a fit name or a ``[[theta, U], ...]`` table.

    A table is interpolated linearly and held constant outside its range.
    """
    if isinstance(spec, str):
        if spec not in OCP_FITS:
            raise ConfigError(f"material {name!r}: ocp = {spec!r} is not a known fit; known: "
                              f"{', '.join(OCP_FITS)}, or give a table [[theta, U_V], ...]")
        return OCP_FITS[spec]
    try:
        t = np.asarray(spec, float)
    except (TypeError, ValueError):
        t = np.empty(0)
    if t.ndim != 2 or t.shape[1] != 2 or t.shape[0] < 2 or not np.all(np.isfinite(t)):
        raise ConfigError(f"material {name!r}: ocp must be a fit name or a table of at least two "
                          "[theta, U_V] pairs")
    if np.any(np.diff(t[:, 0]) <= 0):
        raise ConfigError(f"material {name!r}: ocp theta values must increase")
    th, u = t[:, 0].copy(), t[:, 1].copy()
    return lambda theta: np.interp(theta, th, u)


@dataclass(frozen=True)
class ButlerVolmer:
    """Butler-Volmer kinetics, ``i = i0 (exp(alpha_a f eta) - exp(-alpha_c f eta))``, ``f = F / (R T)``.

    Attributes
    ----------
    k0_m_s : float
        Rate constant, m/s: ``i0 = F k0 c_max sqrt(theta (1 - theta))`` (A/m^2).
    c_max_mol_m3 : float
    alpha_a, alpha_c : float
    temperature_K : float
    """

    k0_m_s: float
    c_max_mol_m3: float
    alpha_a: float = 0.5
    alpha_c: float = 0.5
    temperature_K: float = 298.15

    @property
    def f(self) -> float:
        """F / (R T), 1/V."""
        return FARADAY / (GAS_CONSTANT * self.temperature_K)

    def exchange_current(self, theta: np.ndarray) -> np.ndarray:
        """``i0`` (A/m^2) at surface state of charge ``theta``: zero at and beyond theta = 0 and 1, so a
        face whose surface is empty (or full) carries no current."""
        th = np.clip(theta, 0.0, 1.0)
        return FARADAY * self.k0_m_s * self.c_max_mol_m3 * np.sqrt(th * (1.0 - th))

    def current(self, eta: np.ndarray, i0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Current density (A/m^2) and its derivative d i / d eta (A/m^2/V)."""
        a = np.exp(np.minimum(self.alpha_a * self.f * eta, 300.0))
        c = np.exp(np.minimum(-self.alpha_c * self.f * eta, 300.0))
        return i0 * (a - c), i0 * self.f * (self.alpha_a * a + self.alpha_c * c)

    def overpotential(self, i: np.ndarray, i0: np.ndarray) -> np.ndarray:
        """The ``eta`` (V) that carries ``i``; closed form for ``alpha_a = alpha_c``, Newton otherwise."""
        if self.alpha_a == self.alpha_c:
            return np.arcsinh(np.asarray(i) / (2.0 * i0)) / (self.alpha_a * self.f)
        eta = np.arcsinh(np.asarray(i) / (2.0 * i0)) * 2.0 / ((self.alpha_a + self.alpha_c) * self.f)
        for _ in range(50):
            val, d = self.current(eta, i0)
            step = (val - i) / d
            eta = eta - step
            if np.all(np.abs(step) < 1e-14):
                break
        return eta


@dataclass(frozen=True)
class Kinetics:
    """What a Butler-Volmer run needs besides the meshes: the law, ``U(theta)`` and the tolerances.

    Attributes
    ----------
    law : ButlerVolmer
    ocp : callable
        ``U(theta)`` in V against Li/Li+.
    newton_rtol : float
        The Newton solve stops when the current balance and every node's
        charge balance are below this fraction of the applied current.
    newton_maxiter : int
    """

    law: ButlerVolmer
    ocp: Callable[[np.ndarray], np.ndarray]
    newton_rtol: float = 1e-10
    newton_maxiter: int = 40


def balance_current(elec, kin: Kinetics, theta: np.ndarray, carries: np.ndarray, current_A: float, *,
                    phi0: np.ndarray | None = None, phi_s0: float | None = None,
                    surface: tuple[np.ndarray, np.ndarray] | None = None, max_updates: int | None = None,
                    x2_0: np.ndarray | None = None, ocp_shift: np.ndarray | float = 0.0) -> dict:
    """The electrolyte potential and the solid potential that carry ``current_A`` through the faces.

    Newton on the charge balance of every free electrolyte node and on the
    total current (PHYSICS.md section 5). Each iteration solves the linearised
    conduction problem twice (a Schur complement on ``phi_s``) with
    :meth:`~solvers.physics.electrolyte.ElectrolyteProblem.solve`.

    Parameters
    ----------
    elec : ElectrolyteProblem
    kin : Kinetics
    theta : (np,) surface state of charge at each interface point (face corner,
        :class:`~solvers.physics.electrolyte.ElectrolyteProblem`)
    carries : (np,) bool
        Points that may carry current (bonded and with an ionic path); the
        others carry none.
    current_A : float
        Total current, A (positive = charge).
    phi0, phi_s0 : optional warm start (the last step's solution).
    surface : (s, i_ref), optional
        The particles' surface response, linearised: the open-circuit potential
        at a current ``i`` is ``U(theta) + s (i - i_ref)``, with ``s >= 0`` in
        V m^2/A and ``theta`` the state that ``i_ref`` (A/m^2) gave. ``s`` acts
        as a resistance in series with the kinetics, solved for point by point.

    max_updates : int, optional
        Stop after this many Newton updates even if not converged (``converged`` says so):
        inside the diffusion-kinetics fixed point, where the surface theta moves anyway.
    x2_0 : (n_free,), optional
        The last call's ``x2`` (returned): the start of CG for the Schur complement's solve.
    ocp_shift : (np,) or float, V
        Added to ``U(theta)`` at every point (the stress-coupled open-circuit potential
        ``Omega sigma_h / F``; 0: none).

    Returns
    -------
    dict with ``phi`` (free electrolyte nodes, V), ``phi_s`` (V), ``i`` (A/m^2 at
    every point, 0 where it carries none), ``eta`` (V), ``newton_iterations``, ``converged``.

    Raises
    ------
    ConvergenceError
        No balance in ``newton_maxiter`` iterations (the caller cuts the step).
    """
    law = kin.law
    w = np.where(carries & elec.point_connected, elec.point_area, 0.0)  # m^2 of each point that carries
    if not np.any(w > 0):
        raise ConfigError("no AP|SE face has both a bonded interface and an ionic path to the separator: "
                          "no current can flow")
    u = kin.ocp(theta) + ocp_shift
    i0 = law.exchange_current(theta)
    scale = max(abs(current_A), 1e-12 * float(np.sum(w * i0)))
    phi = np.zeros(elec.n_free) if phi0 is None else phi0.copy()
    if phi_s0 is None:  # uniform current density, no ohmic drop
        phi_s = float(np.average(u, weights=w) + law.overpotential(current_A / w.sum(), np.average(i0, weights=w)))
    else:
        phi_s = float(phi_s0)
    max_step = 4.0 / law.f  # about 0.1 V: Newton on exponentials, damped far from the solution
    max_updates = kin.newton_maxiter if max_updates is None else int(max_updates)
    x2 = x2_0  # (K + B G B^T)^-1 B g: moves little between iterations, so the last one starts CG
    s_face, i_ref = (np.zeros_like(u), np.zeros_like(u)) if surface is None else surface
    eta = np.zeros_like(u)
    for it in range(1, kin.newton_maxiter + 1):
        eta = _series_overpotential(law, phi_s - elec.point_potential(phi) - u + s_face * i_ref, s_face, i0, eta)
        i, di = law.current(eta, i0)
        wi, g = w * i, w * di / (1.0 + s_face * di)
        r = elec.conduction(phi) - elec.points_to_nodes(wi)
        rs = float(wi.sum()) - current_A
        res = max(abs(rs), float(np.abs(r).max(initial=0.0))) / scale
        if res < kin.newton_rtol or it > max_updates:
            return {"phi": phi, "phi_s": phi_s, "i": np.where(w > 0, i, 0.0), "eta": eta,
                    "newton_iterations": it - 1, "converged": res < kin.newton_rtol, "x2": x2}
        c = elec.points_to_nodes(g)
        x1, x2 = elec.solve(np.stack([-r, c], axis=1), g, rtol=CORRECTION_RTOL,
                            x0=None if x2 is None else np.stack([np.zeros_like(r), x2], axis=1)).T
        dps = (-rs + c @ x1) / (float(g.sum()) - c @ x2)
        dphi = x1 + x2 * dps
        big = max(abs(dps), float(np.abs(dphi).max(initial=0.0)))
        s = min(1.0, max_step / big) if big > 0 else 1.0
        phi += s * dphi
        phi_s += s * dps
    raise ConvergenceError(f"Butler-Volmer current balance not reached in {kin.newton_maxiter} Newton "
                           f"iterations (residual {res:.1e} of the applied current)",
                           iterations=kin.newton_maxiter, residual=res)


def _series_overpotential(law: ButlerVolmer, psi: np.ndarray, s: np.ndarray, i0: np.ndarray,
                          eta: np.ndarray) -> np.ndarray:
    """The ``eta`` of ``eta + s i(eta) = psi`` at every point (kinetics in series with a resistance ``s``).

    Newton from ``eta``, damped to steps of about 0.1 V; the left side increases with ``eta``.
    """
    if not np.any(s):
        return psi
    cap = 4.0 / law.f
    for _ in range(100):
        i, di = law.current(eta, i0)
        step = np.clip((eta + s * i - psi) / (1.0 + s * di), -cap, cap)
        eta = eta - step
        if np.all(np.abs(step) < 1e-13):
            return eta
    raise ConvergenceError("face overpotential with surface resistance did not converge", iterations=100)
