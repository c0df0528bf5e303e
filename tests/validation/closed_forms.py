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

