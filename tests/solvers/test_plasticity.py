"""J2 return map at material points: against closed forms, one-dimensional ODEs and finite differences."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from solvers.fem.mandel import SQRT2, from_mandel, isotropic
from solvers.fields import von_mises as von_mises_tensor
from solvers.physics.plasticity import J2Plasticity, consistent_tangent, return_map
from tomomech.errors import ConfigError

E, NU = 22e9, 0.3
LAM, MU = E * NU / ((1 + NU) * (1 - 2 * NU)), E / (2 * (1 + NU))
K = E / (3 * (1 - 2 * NU))
C = isotropic(LAM, MU)


def shear_history(law, gammas, dt=np.inf):
    """Engineering shear strain gamma_zy applied in steps at one point: shear stress and plastic shear strain."""
    ep, p = np.zeros((1, 6)), np.zeros(1)
    tau, gp = [], []
    for g in gammas:
        eps = np.zeros((1, 6))
        eps[0, 3] = g / SQRT2  # Mandel: sqrt2 * eps_12, eps_12 = gamma / 2
        r = return_map(law, (eps - ep) @ C, ep, p, MU, dt)
        ep, p = r.plastic_strain, r.equivalent
        tau.append(r.stress[0, 3] / SQRT2)
        gp.append(ep[0, 3] * SQRT2)
    return np.array(tau), np.array(gp)


def test_pure_shear_hardening_slope_and_elastic_unloading():
    """Pure shear: yield at tau = sigma_y / sqrt3, then d tau / d gamma = G H / (H + 3 G) (the closed form of
    linear isotropic hardening); unloading is elastic (slope G) and the plastic strain stays put."""
    law = J2Plasticity(yield_MPa=300.0, hardening_MPa=2000.0)
    ty = law.yield_Pa / np.sqrt(3)
    gy = ty / MU
    up = np.linspace(0, 4 * gy, 41)[1:]
    down = up[-1] - np.linspace(0, 1.5 * gy, 16)[1:]
    tau, gp = shear_history(law, np.r_[up, down])
    n = up.size
    plastic = up > gy * 1.0001
    slope = np.diff(tau[:n][plastic]) / np.diff(up[plastic])
    assert slope == pytest.approx(np.full(slope.size, MU * law.hardening_Pa / (law.hardening_Pa + 3 * MU)),
                                  rel=1e-10)
    assert np.diff(tau[n - 1:]) / np.diff(np.r_[up[-1], down]) == pytest.approx(np.full(down.size, MU), rel=1e-12)
    assert np.all(gp[n:] == gp[n - 1])  # no reverse flow while |tau| < current yield
    assert tau[:n][~plastic] == pytest.approx(MU * up[~plastic], rel=1e-12)


def test_plastic_strain_never_reverses_without_reverse_loading():
    """Loading, partial unloading, reloading to a higher strain: the equivalent plastic strain only grows, and the
    plastic shear strain keeps the sign of the load until the stress reverses past the (hardened) yield."""
    law = J2Plasticity(yield_MPa=300.0, hardening_MPa=500.0)
    gy = law.yield_Pa / np.sqrt(3) / MU
    path = np.r_[np.linspace(0, 3 * gy, 30), np.linspace(3 * gy, 1 * gy, 20), np.linspace(gy, 5 * gy, 40),
                 np.linspace(5 * gy, -5 * gy, 100)]
    tau, gp = shear_history(law, path)
    assert np.all(np.diff(gp[:90]) >= 0)
    reversing = np.flatnonzero(np.diff(gp) < 0)
    assert reversing.size and np.all(tau[reversing + 1] < 0)  # plastic flow reverses only under reversed stress


def test_consistent_tangent_matches_finite_differences():
    """The algorithmic tangent against central differences of the return map, rate-independent and Perzyna (m = 1
    and 3), on random plastic states (relative error 1e-6 of the tangent's norm)."""
    rng = np.random.default_rng(0)
    n = 20
    for law, dt in ((J2Plasticity(300.0, 1500.0), np.inf), (J2Plasticity(300.0, 0.0, 50.0, 1.0), 10.0),
                    (J2Plasticity(300.0, 200.0, 50.0, 3.0), 5.0)):
        ep = rng.normal(0, 2e-3, (n, 6))
        ep[:, :3] -= ep[:, :3].mean(axis=1, keepdims=True)
        p = np.abs(rng.normal(0, 1e-3, n))
        eps = ep + rng.normal(0, 3e-2, (n, 6))
        r = return_map(law, (eps - ep) @ C, ep, p, MU, dt)
        assert r.yielding.all()
        T = consistent_tangent(r, K, MU)
        h = 1e-8
        fd = np.empty((n, 6, 6))
        for j in range(6):
            d = np.zeros(6)
            d[j] = h
            sp = return_map(law, (eps + d - ep) @ C, ep, p, MU, dt).stress
            sm = return_map(law, (eps - d - ep) @ C, ep, p, MU, dt).stress
            fd[:, :, j] = (sp - sm) / (2 * h)
        err = np.abs(T - fd).max(axis=(1, 2)) / np.abs(T).max(axis=(1, 2))
        assert err.max() < 1e-6, (law, err.max())


def _shear_ode(law, rate, t_load, t_hold):
    """Exact solution of pure shear under a constant engineering rate to ``t_load``, then held to ``t_hold``:
    the 1D Perzyna ODE ``tau' = G (gamma' - sqrt3 p')``, ``p' = <(sqrt3 tau - sy(p)) / sy0>^m / eta``,
    integrated in its three smooth pieces (elastic, loading, hold) to 1e-13."""
    sy0, H, eta, m = law.yield_Pa, law.hardening_Pa, law.viscosity_s, law.rate_exponent

    def piece(t0, t1, y0, r):
        def rhs(t, y):
            pdot = max(np.sqrt(3) * y[0] - (sy0 + H * y[1]), 0.0) ** m / sy0**m / eta
            return [MU * (r - np.sqrt(3) * pdot), pdot]
        return solve_ivp(rhs, (t0, t1), y0, method="DOP853", rtol=1e-13, atol=1e-6, dense_output=True).sol

    ty = sy0 / np.sqrt(3) / MU / rate
    a = piece(ty, t_load, [sy0 / np.sqrt(3), 0.0], rate)
    b = piece(t_load, t_hold, a(t_load), 0.0)
    return lambda t: np.where(t < ty, MU * rate * t, np.where(t <= t_load, a(np.clip(t, ty, t_load))[0],
                                                              b(np.clip(t, t_load, t_hold))[0]))


def _shear_recurrence(law, gammas, dt):
    """Backward Euler of the same ODE as a scalar recurrence (root of the step's equation by brentq)."""
    from scipy.optimize import brentq

    sy0, H, eta, m = law.yield_Pa, law.hardening_Pa, law.viscosity_s, law.rate_exponent
    gp, p, out = 0.0, 0.0, []
    for g in gammas:
        def h(dp, g=g, gp=gp, p=p):
            tau = MU * (g - gp - np.sqrt(3) * dp)
            return dp - dt / eta * (max(np.sqrt(3) * tau - sy0 - H * (p + dp), 0.0) / sy0) ** m
        dp = 0.0 if h(0.0) >= 0 else brentq(h, 0.0, g, xtol=1e-300, rtol=1e-15)
        gp, p = gp + np.sqrt(3) * dp, p + dp
        out.append(MU * (g - gp))
    return np.array(out)


@pytest.mark.parametrize("m", [1.0, 2.0])
def test_perzyna_constant_rate_and_relaxation_match_the_ode(m):
    """Constant shear rate, then a hold (relaxation at fixed strain). The return map equals backward Euler of the
    one-dimensional ODE written as a scalar recurrence to 1e-10 of the peak stress, and converges to the ODE's exact
    solution at first order (error halves with the step; 1.6e-4 of the peak at 8000 steps)."""
    law = J2Plasticity(yield_MPa=300.0, hardening_MPa=800.0, viscosity_s=20.0, rate_exponent=m)
    t_load, t_hold = 100.0, 200.0
    rate = 4 * law.yield_Pa / np.sqrt(3) / MU / t_load
    exact = _shear_ode(law, rate, t_load, t_hold)
    errors = []
    for N in (1000, 2000, 4000, 8000):
        t = np.linspace(0, t_hold, N + 1)[1:]
        gammas = rate * np.minimum(t, t_load)
        tau, _ = shear_history(law, gammas, dt=t_hold / N)
        ref = exact(t)
        peak = np.abs(ref).max()
        errors.append(np.abs(tau - ref).max() / peak)
        if N == 1000:
            assert np.abs(tau - _shear_recurrence(law, gammas, t_hold / N)).max() / peak < 1e-10
            hold = t > t_load
            assert np.all(np.diff(tau[hold]) <= 0)  # the hold relaxes
            assert tau[-1] >= (law.yield_Pa + 0) / np.sqrt(3)  # towards the (hardened) yield, never below it
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all((ratios > 1.7) & (ratios < 2.3)), ratios
    assert errors[-1] < 2e-4, errors


def von_mises(mandel):
    return von_mises_tensor(from_mandel(mandel))


def test_rate_dependence_limits():
    """A viscous law at dt = inf is the rate-independent one; a huge yield stress leaves the trial stress."""
    rng = np.random.default_rng(1)
    trial = rng.normal(0, 800e6, (50, 6))
    ep, p = np.zeros((50, 6)), np.zeros(50)
    a = return_map(J2Plasticity(300.0, 100.0, 30.0, 2.0), trial, ep, p, MU, np.inf)
    b = return_map(J2Plasticity(300.0, 100.0), trial, ep, p, MU)
    assert np.array_equal(a.stress, b.stress)
    assert von_mises(b.stress) == pytest.approx(np.maximum(np.minimum(von_mises(trial), 300e6 + 100e6 * b.dp),
                                                           300e6), rel=1e-12)
    big = return_map(J2Plasticity(1e12), trial, ep, p, MU)
    assert np.array_equal(big.stress, trial) and not big.dp.any()


def test_bad_laws_are_refused():
    for bad in ({"yield_MPa": 0}, {"yield_MPa": 100, "hardening_MPa": -1}, {"yield_MPa": 100, "rate_exponent": 0.5},
                {"yield_MPa": float("nan")}):
        with pytest.raises(ConfigError, match="plasticity"):
            J2Plasticity(**bad)
