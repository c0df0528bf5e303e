"""J2 (von Mises) plasticity with linear isotropic hardening and Perzyna rate dependence.

The law of a point (small strain, PHYSICS.md section 1 and 3(e)):

- yield function ``f = q - sigma_y(p)``, ``q = sqrt(3/2 s : s)`` (von Mises), ``s`` the deviatoric
  stress, ``p`` the equivalent plastic strain and ``sigma_y(p) = sigma_y0 + H p``;
- associated flow: ``eps_p' = p' N``, ``N = 3 s / (2 q)`` (plastic flow keeps volume);
- rate-independent: ``f <= 0``, ``p' >= 0``, ``p' f = 0``;
- Perzyna (``viscosity_s = eta > 0``): ``p' = <f / sigma_y0>^m / eta``, so the stress exceeds the
  yield surface by an overstress that relaxes with time ``eta``; ``eta -> 0`` is the
  rate-independent law.

:func:`return_map` integrates one time step by backward Euler (the radial return of
Simo and Hughes, *Computational Inelasticity*, 1998, section 3.3): the trial stress
``sigma_tr = C : (eps - eps_swell - eps_p_n)`` goes back along ``N_tr`` by
``2 G dp``, with ``dp`` from the scalar equation

    q_tr - (3 G + H) dp - sigma_y(p_n) = sigma_y0 (eta dp / dt)^(1/m)      (0 without viscosity)

solved in closed form for ``m = 1`` and by a monotone Newton iteration otherwise.
Tensors are Mandel 6-vectors (:mod:`solvers.fem.mandel`): ``a : b`` is the dot product.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from solvers.fem.mandel import IDENTITY
from tomomech.errors import ConfigError

#: the deviatoric projector in Mandel notation, (6, 6)
DEVIATORIC = np.eye(6) - np.outer(IDENTITY, IDENTITY) / 3.0


@dataclass(frozen=True)
class J2Plasticity:
    """Von Mises plasticity of one phase (config table ``plasticity`` of a material).

    Attributes
    ----------
    yield_MPa : float
        Initial yield stress ``sigma_y0`` in uniaxial tension, MPa.
    hardening_MPa : float
        Linear isotropic hardening modulus ``H = d sigma_y / d p``, MPa (0: perfectly plastic).
    viscosity_s : float
        Perzyna relaxation time ``eta``, s (0: rate-independent).
    rate_exponent : float
        Perzyna exponent ``m >= 1`` of the overstress.
    source : str
        Where the numbers come from.
    """

    yield_MPa: float
    hardening_MPa: float = 0.0
    viscosity_s: float = 0.0
    rate_exponent: float = 1.0
    source: str = ""

    def __post_init__(self):
        for k in ("yield_MPa", "hardening_MPa", "viscosity_s", "rate_exponent"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise ConfigError(f"plasticity.{k} must be a finite number, got {v!r}")
        if self.yield_MPa <= 0:
            raise ConfigError(f"plasticity.yield_MPa must be positive, got {self.yield_MPa} (leave the plasticity "
                              "table out for an elastic phase)")
        if self.hardening_MPa < 0 or self.viscosity_s < 0:
            raise ConfigError("plasticity.hardening_MPa and plasticity.viscosity_s must not be negative, got "
                              f"{self.hardening_MPa} and {self.viscosity_s}")
        if self.rate_exponent < 1:
            raise ConfigError(f"plasticity.rate_exponent must be at least 1, got {self.rate_exponent}")

    @property
    def yield_Pa(self) -> float:
        return self.yield_MPa * 1e6

    @property
    def hardening_Pa(self) -> float:
        return self.hardening_MPa * 1e6

    @property
    def viscous(self) -> bool:
        return self.viscosity_s > 0


@dataclass(frozen=True)
class MapResult:
    """One step of :func:`return_map` at ``n`` points.

    Attributes
    ----------
    stress : (n, 6) Mandel stress, Pa
    plastic_strain : (n, 6) Mandel plastic strain at the end of the step
    equivalent : (n,) equivalent plastic strain ``p`` at the end of the step
    dp : (n,) its increment over the step
    direction : (n, 6) unit deviatoric direction of the trial stress (``N = sqrt(3/2) direction``)
    q_trial : (n,) von Mises stress of the trial state, Pa
    slope : (n,) ``d(sigma_y + overstress) / d dp`` at the solution, Pa (``H`` without viscosity)
    """

    stress: np.ndarray
    plastic_strain: np.ndarray
    equivalent: np.ndarray
    dp: np.ndarray
    direction: np.ndarray
    q_trial: np.ndarray
    slope: np.ndarray

    @property
    def yielding(self) -> np.ndarray:
        return self.dp > 0

    def take(self, which) -> MapResult:
        """The result at the points ``which`` (indices or a mask)."""
        return MapResult(*(getattr(self, f.name)[which] for f in fields(self)))


def return_map(law: J2Plasticity, trial: np.ndarray, plastic_strain: np.ndarray, equivalent: np.ndarray,
               G: float | np.ndarray, dt: float = np.inf, *, rtol: float = 1e-12, maxiter: int = 60) -> MapResult:
    """Backward-Euler radial return of one time step at ``n`` points (module docstring).

    Parameters
    ----------
    law : J2Plasticity
    trial : (n, 6) trial stress ``C : (eps - eps_swell - eps_p_n)``, Pa
    plastic_strain : (n, 6) plastic strain at the start of the step
    equivalent : (n,) equivalent plastic strain at the start of the step
    G : float or (n,) shear modulus, Pa
    dt : float
        Time step, s. ``inf`` (a static step) gives the rate-independent limit of a viscous law.
    rtol, maxiter : the Newton iteration of ``m != 1``, relative to the rate-independent ``dp``

    Returns
    -------
    MapResult
    """
    trial = np.asarray(trial, float)
    s = trial @ DEVIATORIC
    norm = np.sqrt(np.einsum("ni,ni->n", s, s))
    q = np.sqrt(1.5) * norm
    direction = s / np.where(norm > 0, norm, 1.0)[:, None]
    H, sy0 = law.hardening_Pa, law.yield_Pa
    G = np.broadcast_to(np.asarray(G, float), q.shape)
    f = q - (sy0 + H * np.asarray(equivalent, float))
    yielding = f > 0
    stiff = 3.0 * G + H
    dp = np.where(yielding, f, 0.0) / stiff  # rate-independent
    slope = np.full(q.shape, H)
    if law.viscous and np.isfinite(dt) and yielding.any():
        c = law.viscosity_s / dt  # dp = (dt / eta) y^m with y the overstress over sigma_y0
        m = law.rate_exponent
        if m == 1.0:
            dp = np.where(yielding, f, 0.0) / (stiff + sy0 * c)
        else:  # g(y) = f - stiff y^m / c - sy0 y = 0: concave, decreasing; Newton from the right is monotone
            fy, st = f[yielding], stiff[yielding]
            y = fy / sy0
            for _ in range(maxiter):
                g = fy - st * y**m / c - sy0 * y
                step = g / (st * m * y ** (m - 1) / c + sy0)
                y = y + step
                if np.all(np.abs(step) <= rtol * np.maximum(y, 1e-300)):
                    break
            else:  # pragma: no cover - monotone Newton converges quadratically
                raise ArithmeticError("the Perzyna return map did not converge")
            dp = np.zeros(q.shape)
            dp[yielding] = y**m / c
        with np.errstate(divide="ignore", invalid="ignore"):
            visc = sy0 * (c * dp) ** (1.0 / m) / (m * dp)  # d overstress / d dp
        slope = np.where(yielding, H + visc, H)
    flow = np.sqrt(1.5) * direction  # N, with N : N = 3/2
    stress = trial - (2.0 * G * dp)[:, None] * flow
    return MapResult(stress, np.asarray(plastic_strain, float) + dp[:, None] * flow,
                     np.asarray(equivalent, float) + dp, dp, direction, q, slope)


def softening(result: MapResult, G: float | np.ndarray) -> np.ndarray:
    """(n, 6, 6) ``C - C_ep``: how much the plastic flow of a step takes off the elastic stiffness.

    ``2 G (3 G dp / q_tr) P_dev + 6 G^2 (1 / (3 G + slope) - dp / q_tr) n (x) n`` with ``n`` the unit
    trial direction (Simo and Hughes 1998, Box 3.2; ``slope`` includes the viscous term); zero where
    the point does not yield. The bulk part is elastic and drops out.
    """
    G = np.broadcast_to(np.asarray(G, float), result.dp.shape)
    dp, q = result.dp, result.q_trial
    with np.errstate(divide="ignore", invalid="ignore"):
        dev = np.where(dp > 0, 3.0 * G * dp / q, 0.0)
        bar = np.where(dp > 0, 1.0 / (3.0 * G + result.slope) - dp / q, 0.0)
    nn = np.einsum("ni,nj->nij", result.direction, result.direction)
    return (2.0 * G * dev)[:, None, None] * DEVIATORIC + (6.0 * G**2 * bar)[:, None, None] * nn


def consistent_tangent(result: MapResult, K: float | np.ndarray, G: float | np.ndarray) -> np.ndarray:
    """(n, 6, 6) algorithmic tangent ``d stress / d eps`` of :func:`return_map` at its solution:
    the elastic ``3 K P_vol + 2 G P_dev`` less :func:`softening`."""
    n = result.dp.size
    K = np.broadcast_to(np.asarray(K, float), (n,))
    G = np.broadcast_to(np.asarray(G, float), (n,))
    elastic = 3.0 * K[:, None, None] * np.outer(IDENTITY, IDENTITY) / 3.0 + 2.0 * G[:, None, None] * DEVIATORIC
    return elastic - softening(result, G)
