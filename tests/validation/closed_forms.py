"""Closed-form solutions of shared/PHYSICS.md section 3, SI units."""



def bulk(E, nu):
    return E / (3 * (1 - 2 * nu))


def shear(E, nu):
    return E / (2 * (1 + nu))


def eshelby_pressure(eps, Ep, nup, Em, num):
    """(a) interface pressure of a misfit sphere in an infinite matrix, Pa."""
    Kp, Gm = bulk(Ep, nup), shear(Em, num)
    return 12 * Kp * Gm * eps / (3 * Kp + 4 * Gm)


def shell_pressure(eps, phi, Ep, nup, Em, num, outer):
    """(b) interface pressure of a concentric sphere in a shell (outer 'free' or 'fixed'), Pa."""
    Kp, Km, Gm = bulk(Ep, nup), bulk(Em, num), shear(Em, num)
    if outer == "free":
        Cs = (1 / (4 * Gm) + phi / (3 * Km)) / (1 - phi)
    else:
        Cs = (1 - phi) / (4 * Gm + 3 * Km * phi)
    return eps / (1 / (3 * Kp) + Cs)



def plastic_misfit_sphere(eps, Ep, nup, Em, num, sigma_y):
    """(e) misfit sphere in an elastic-perfectly-plastic infinite matrix: interface pressure (Pa, positive in
    compression for a swelling particle, the sign of ``eps``) and plastic radius over particle radius ``c / a``
    (1 below the yield onset)."""
    import numpy as np
    from scipy.optimize import brentq

    Kp, Km, Gm = bulk(Ep, nup), bulk(Em, num), shear(Em, num)
    e = abs(eps)
    onset = sigma_y / (6 * Gm) + 2 * sigma_y / (9 * Kp)
    if e <= onset:
        return eshelby_pressure(eps, Ep, nup, Em, num), 1.0

    def gap(x):
        p = 2 / 3 * sigma_y + 2 * sigma_y * np.log(x)
        return e - p / (3 * Kp) - (sigma_y * x**3 / (6 * Gm) + 2 * sigma_y / Km * (x**3 / 9 - 1 / 9 - np.log(x) / 3))

    x = brentq(gap, 1.0, 100.0, xtol=1e-14)
    return float(np.sign(eps)) * (2 / 3 * sigma_y + 2 * sigma_y * np.log(x)), x
