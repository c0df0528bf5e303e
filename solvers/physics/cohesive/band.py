"""The cohesive AP|SE interface inside the voxel operator: the electrolyte skin as a cohesive band.

No node is duplicated. Every electrolyte voxel that touches a particle (by a
face, an edge or a corner) is a *band voxel*: a two-layer laminate of the
electrolyte and an interface of area ``A`` and normal ``n`` (the particle's
smoothed normal), with the jump across the interface eliminated inside the
voxel. With ``rho = A / V``, the electrolyte's acoustic moduli
``a_n = lambda + 2 mu`` (normal) and ``a_t = mu`` (tangential), the
electrolyte's trial traction ``tau_c = (C eps) : sym(e_c (x) n)`` and the
interface's secant stiffness ``k_c`` per direction ``c`` of the frame
``(n, t1, t2)``, the jump is ``w_c = tau_c / (k_c + rho a_c)`` and the voxel's
stress

    sigma = s_ip C_free eps + sum_c k_c / (a_c (k_c + rho a_c)) v_c (v_c . eps),   v_c = C : sym(e_c (x) n)

where ``C_free = C - sum_c v_c v_c^T / a_c`` is the part of ``C`` that a
traction-free plane leaves (in-plane stiffness). Undamaged, ``k = K0`` (the
law's penalty): the voxel is the electrolyte in series with a ``1/100`` voxel
compliance, so bonded results are those of the bonded model to well under
1 %. The voxel's hourglass (non-constant strain) stiffness is the
electrolyte's, scaled by ``s_ip`` as well.

The skin is one to three voxels thick along the normal (``T = sum_k h_k |n_k|``
for a plane: ``h`` at 0 degrees, ``sqrt(2) h`` at 45, ``sqrt(3) h`` at 54.7),
and its voxels lie in series between the particle and the bulk electrolyte.
Each carries the share ``A = V / T`` of the interface (scaled per particle to
its projected face area), so that along any line through the skin the area
density integrates to one: the voxels' jumps add up to the separation, and
their fracture energies to ``G_c`` per unit of true area. Every band voxel
has its own damage from its own opening; none is inherited. (The first band
gave the voxels that touch a particle only by an edge or a corner no area
and the largest damage of their neighbours; on a 45-degree staircase half of
the separation went into them without driving any damage, so tilted
interfaces debonded late: ``docs/performance.md``.)

Why the in-plane part degrades with the damage (``s_ip = max(1 - d, residual)``
on an open voxel): on a voxel staircase the band's node pattern makes a
tangential slip ``s`` strain a band voxel by ``sym(s (x) g)`` with ``g`` not
parallel to ``n``, so a laminate that kept its in-plane stiffness would hold
50-72 % of the bonded shear traction of a fully debonded tilted interface
(measured with a prototype; 0.0 % here). The energy released that way is
small: ``1 - d`` falls to 1 % within about 100 ``delta_0`` of opening, long
before ``delta_f``.

Contact: a band voxel whose normal strain ``n . eps . n`` is below
``-CLOSE_STRAIN`` (a fraction of the strain at the strength) is closed:
``k_n`` is infinite (compression stays bonded, no penalty) and the in-plane
and hourglass parts come back (``s_ip = 1``); it opens again above
``+CLOSE_STRAIN`` (hysteresis). The tangential stiffness stays the law's
``(1 - d) beta^2 K0``: debonded faces in contact slide, up to the staircase.

Damage ``d = max over history of g(lambda)`` with the law of
:class:`~solvers.physics.cohesive.CohesiveLaw` (bilinear, ``G_c`` per area in
every mode mix). What drives it is the voxel's jump corrected towards the
interface traction: on a staircase the band voxels carry a noisy share of it
(the face voxels too little, the particle voxels behind the faces too much:
at a 45-degree plane 0.77 and 1.23 of the exact traction), while the mean of
the two sides of a face is within 1.6 % at 0, 26.6, 45 and 54.7 degrees. So
the interface traction ``t^ = (t_AP + t) / 2`` is estimated on the face
voxels, carried to the skin voxels without faces by the averaging, and the
opening is ``w* = w + (t^ - t) / K0`` (``t^ / K0`` while the interface is
intact, the jump once it is open, where both tractions vanish), averaged over
the particle's interface over ``averaging_length``
(:func:`~solvers.physics.cohesive.opening_averaging`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import ndimage as ndi

from solvers.fem.mandel import isotropic, sym_outer, tangent_frame, to_mandel
from tomomech.errors import MeshError

ACTIVE, ELECTROLYTE = 2, 1
#: a band voxel closes when its normal strain falls below -CLOSE_FRACTION * sigma_c / (lambda + 2 mu)
CLOSE_FRACTION = 0.01


@dataclass(frozen=True)
class BandGeometry:
    """The electrolyte skin of the particles on a voxel grid.

    Attributes
    ----------
    shape : (Z, Y, X)
    spacing : (3,) voxel size, m
    voxel : (nb,) int64
        Flat voxel index of every band voxel (electrolyte, 26-neighbour of a particle voxel), sorted.
    normal : (nb, 3)
        Unit normal from the particle into the electrolyte.
    area : (nb,) float
        Interface area the voxel carries, m^2: the AP|SE faces it owns, each
        projected on its smoothed normal (``h^2 |n . e|``: exact for a plane,
        where the staircase faces together are the plane's area). 0: a voxel
        that touches the particle by an edge or a corner only.
    particle : (nb,) int
        Particle of the voxel's interface (the one it shares most face area with; nearest for the others).
    face_band : (nf,) int
        Band voxel of every AP|SE face (its electrolyte voxel).
    face_weight : (nf,) float
        The face's projected area, m^2.
    share : (nb,) float
        Interface area the voxel's laminate carries, m^2: ``V / T`` with ``T = sum_k h_k |n_k|`` the
        skin's thickness along the normal, scaled per particle so that the shares add up to the
        particle's projected face area. On a plane every line along the normal then crosses an
        area density that integrates to one, so the jumps of the voxels it crosses add up to the
        separation (module docstring).
    """

    shape: tuple
    spacing: np.ndarray
    voxel: np.ndarray
    normal: np.ndarray
    area: np.ndarray
    particle: np.ndarray
    face_band: np.ndarray
    face_weight: np.ndarray
    share: np.ndarray

    @property
    def n(self) -> int:
        return int(self.voxel.size)

    @property
    def has_area(self) -> np.ndarray:
        return self.area > 0

    def centres(self) -> np.ndarray:
        """(nb, 3) voxel centres, m."""
        return (np.stack(np.unravel_index(self.voxel, self.shape), axis=1) + 0.5) * self.spacing


def band_geometry(phases: np.ndarray, particles: np.ndarray, spacing, faces: dict,
                  sigma_voxels: float = 1.5, periodic: bool = False) -> BandGeometry:
    """The band of a label image and its AP|SE faces (:func:`solvers.fields.interface_faces`).

    Parameters
    ----------
    phases, particles : (Z, Y, X) label images
    spacing : (3,) voxel size, m
    faces : AP|SE faces with smoothed normals
    sigma_voxels : float
        Gaussian width of the normals of band voxels without faces of their own.
    periodic : bool
        Neighbourhoods wrap around the box (validation on periodic cells).
    """

    shape = phases.shape
    spacing = np.asarray(spacing, float)
    ap = phases == ACTIVE
    se = phases == ELECTROLYTE
    mode = "wrap" if periodic else "constant"
    near = se & ndi.maximum_filter(ap, size=3, mode=mode)
    voxel = np.flatnonzero(near.ravel())
    index = np.full(phases.size, -1, np.int64)
    index[voxel] = np.arange(voxel.size)
    face_band = index[faces["se_voxel"]]
    if (face_band < 0).any():
        raise MeshError("AP|SE faces outside the electrolyte skin: the faces do not belong to these labels")
    axis = np.eye(3)[faces["axis"]]
    weight = faces["area"] * np.abs(np.einsum("fi,fi->f", faces["normal"], axis))
    nb = voxel.size
    area = np.bincount(face_band, weights=weight, minlength=nb)
    nsum = np.stack([np.bincount(face_band, weights=weight * faces["normal"][:, k], minlength=nb)
                     for k in range(3)], axis=1)
    smooth = ndi.gaussian_filter(ap.astype(float), sigma_voxels, mode="wrap" if periodic else "nearest")
    g = -np.stack([ndi.correlate1d(smooth, [-0.5, 0.0, 0.5], axis=k, mode="wrap" if periodic else "nearest")
                   / spacing[k] for k in range(3)], axis=-1).reshape(-1, 3)[voxel]
    normal = np.where((area > 0)[:, None], nsum, g)
    norm = np.linalg.norm(normal, axis=1)
    if (norm <= 0).any():  # no gradient and no face: a voxel between particles; any unit vector
        normal[norm <= 0] = (1.0, 0.0, 0.0)
        norm[norm <= 0] = 1.0
    normal = normal / norm[:, None]
    # particle of each band voxel: the largest face share, else the nearest particle voxel
    _, nearest = ndi.distance_transform_edt(~ap, return_indices=True)
    particle = particles[tuple(nearest)].ravel()[voxel].astype(np.int64)
    if faces["se_voxel"].size:
        key = face_band * (int(particles.max()) + 1) + faces["particle"]
        uk, inv = np.unique(key, return_inverse=True)
        face_area = np.bincount(inv, weights=weight)
        order = np.lexsort((face_area, uk // (int(particles.max()) + 1)))
        best = uk[order] // (int(particles.max()) + 1)
        last = np.r_[best[1:] != best[:-1], True]
        particle[best[last]] = uk[order][last] % (int(particles.max()) + 1)
    share = skin_shares(normal, particle, area, spacing)
    return BandGeometry(tuple(shape), spacing, voxel, normal, area, particle, face_band, weight, share)


def skin_shares(normal: np.ndarray, particle: np.ndarray, area: np.ndarray, spacing) -> np.ndarray:
    """(nb,) interface area of every band voxel's laminate, m^2 (:class:`BandGeometry` ``share``).

    Parameters
    ----------
    normal : (nb, 3) unit normals
    particle : (nb,) particle of every band voxel
    area : (nb,) projected face area of every band voxel, m^2 (its sum per particle is kept)
    spacing : (3,) voxel size, m
    """
    share = np.prod(spacing) / (np.abs(normal) @ np.asarray(spacing, float))
    total = np.bincount(particle, weights=area)
    have = np.bincount(particle, weights=share, minlength=total.size)
    return share * np.divide(total, have, out=np.zeros_like(total), where=have > 0)[particle]


class BandLaw:
    """The secant law of the band voxels (module docstring).

    Parameters
    ----------
    geometry : BandGeometry
    lam, mu : float
        Lame constants of the electrolyte, Pa.
    law : CohesiveLaw
        Strength, fracture energy, penalty ``K0``, mode mixity ``beta`` and residual stiffness.
    averaging_length_m : float
        Gaussian length over which the driving opening is averaged along each particle's
        interface (0: the voxel's own).
    """

    def __init__(self, geometry: BandGeometry, lam: float, mu: float, law, averaging_length_m: float = 0.0):
        self.geometry = geometry
        self.law = law
        self.averaging = None
        if averaging_length_m > 0:
            from solvers.physics.cohesive.averaging import opening_averaging

            has = geometry.share > 0
            self.averaging = opening_averaging(geometry.centres()[has], geometry.normal[has], geometry.share[has],
                                               geometry.particle[has], averaging_length_m)
        self.lam, self.mu = float(lam), float(mu)
        self.a = np.array([lam + 2 * mu, mu, mu])  # acoustic moduli: normal, tangential
        n = geometry.normal
        t1, t2 = tangent_frame(n)
        self.frame = np.stack([n, t1, t2], axis=1)  # (nb, 3 directions, 3)
        eye = np.broadcast_to(np.eye(3), n.shape[:-1] + (3, 3))
        # v_c = C : sym(e_c (x) n): the traction direction c of a strain, (nb, 3, 6)
        v = np.stack([to_mandel(lam * eye) + 2 * mu * sym_outer(n, n), 2 * mu * sym_outer(t1, n),
                      2 * mu * sym_outer(t2, n)], axis=1)
        self.v = v
        self.C = isotropic(lam, mu)
        self.rho = geometry.share / np.prod(geometry.spacing)
        self.close_strain = CLOSE_FRACTION * law.strength_Pa / self.a[0]
        self.nn = to_mandel(n[:, :, None] * n[:, None, :])

    def stiffness(self, damage: np.ndarray, closed: np.ndarray, which=None) -> tuple[np.ndarray, np.ndarray]:
        """Secant stiffness of the band voxels (all, or the indices ``which``) for a damage and contact state.

        Parameters
        ----------
        damage, closed : (nb,) state of every band voxel

        Returns
        -------
        C : (m, 6, 6) Mandel stiffness, Pa
        hourglass : (m,) scale of the electrolyte's hourglass stiffness
        """
        sel = slice(None) if which is None else np.asarray(which)
        damage, closed, rho, v = damage[sel], closed[sel], self.rho[sel], self.v[sel]
        k = self._k(damage, closed)
        s_ip = np.where(closed, 1.0, np.maximum(1.0 - damage, self.law.residual))
        a = self.a[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            coef = np.where(np.isinf(k), 1.0 / a, k / (a * (k + rho * a)))
        vv = np.einsum("bci,bcj->bcij", v, v)
        C_free = self.C[None] - np.einsum("c,bcij->bij", 1.0 / self.a, vv)
        C = s_ip[:, None, None] * C_free + np.einsum("cb,bcij->bij", coef, vv)
        return C, s_ip

    def _k(self, damage, closed) -> np.ndarray:
        """(3, nb) interface secant stiffness per direction (normal: inf when closed)."""
        law = self.law
        s = np.maximum(1.0 - damage, law.residual) * law.penalty_Pa_m
        kn = np.where(closed, np.inf, s)
        return np.stack([kn, law.mode_mixity**2 * s, law.mode_mixity**2 * s])

    def jump(self, strain: np.ndarray, damage: np.ndarray, closed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Interface jump and traction of band voxels with area, in the (n, t1, t2) frame.

        Parameters
        ----------
        strain : (nb, 6) Mandel strain of every band voxel

        Returns
        -------
        w : (nb, 3) jump, m (zero where the voxel has no share)
        t : (nb, 3) interface traction, Pa
        """
        tau = np.einsum("bci,bi->cb", self.v, strain)  # (3, nb)
        k = self._k(damage, closed)
        rho = self.rho
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(np.isinf(k) | (rho <= 0), 0.0, tau / (np.where(np.isinf(k), 1.0, k) + rho * self.a[:, None]))
            t = np.where(np.isinf(k), tau, k * w)
        return w.T, t.T

    def normal_strain(self, strain: np.ndarray) -> np.ndarray:
        """(nb,) ``n . eps . n``."""
        return np.einsum("bi,bi->b", self.nn, strain)

    def contact(self, strain: np.ndarray, closed: np.ndarray) -> np.ndarray:
        """Contact state after a solve: close below ``-close_strain``, open above ``+close_strain``."""
        e = self.normal_strain(strain)
        return np.where(closed, e < self.close_strain, e < -self.close_strain)

    def effective(self, w: np.ndarray) -> np.ndarray:
        """Effective opening ``sqrt(<w_n>^2 + beta^2 |w_t|^2)`` of (nb, 3) jumps in the (n, t1, t2) frame."""
        return np.sqrt(np.maximum(w[:, 0], 0.0) ** 2 + self.law.mode_mixity**2 * (w[:, 1] ** 2 + w[:, 2] ** 2))


def driving_opening(law: BandLaw, strain: np.ndarray, traction_ap: np.ndarray, damage: np.ndarray,
                    closed: np.ndarray, averaging: sp.csr_matrix | None) -> np.ndarray:
    """Effective opening that drives the damage of every band voxel with a share (0 elsewhere), m.

    The voxel's jump corrected towards the estimated interface traction, ``w* = w + (t^ - t) / K0``
    with ``t^ = (t_AP + t) / 2`` on voxels with faces and carried to the others by ``averaging``
    (over the voxels with a share; None: local, and no correction without faces), averaged, in the
    voxel's own frame (module docstring).

    Parameters
    ----------
    strain : (nb, 6) Mandel strain of every band voxel, solved with ``damage`` and ``closed``
    traction_ap : (nb, 3) particle-side traction on every band voxel with faces, (n, t1, t2) frame, Pa
    """
    w, t = law.jump(strain, damage, closed)
    geo = law.geometry
    face, has = geo.has_area, geo.share > 0
    frame = law.frame[has]
    t_hat = np.where(face[:, None], 0.5 * (traction_ap + t), t)[has]  # the interface traction, local frame
    if averaging is not None:  # skin voxels without faces take their face neighbours' estimate
        m = face[has].astype(float)
        num = averaging @ (np.einsum("bci,bc->bi", frame, t_hat) * m[:, None])
        den = averaging @ m
        ext = np.einsum("bci,bi->bc", frame, num / np.where(den > 0, den, 1.0)[:, None])
        t_hat = np.where(((den > 0) & (m == 0))[:, None], ext, t_hat)
    w_star = w[has] + (t_hat - t[has]) / law.law.penalty_Pa_m
    w_global = np.einsum("bci,bc->bi", frame, w_star)
    if averaging is not None:
        w_global = averaging @ w_global
    out = np.zeros(w.shape[0])
    out[has] = law.effective(np.einsum("bci,bi->bc", frame, w_global))
    return out


@dataclass
class BandState:
    """History of the band: committed opening history (and the one before), damage and contact."""

    kappa: np.ndarray
    kappa_prev: np.ndarray
    damage: np.ndarray
    closed: np.ndarray

    @classmethod
    def bonded(cls, n: int) -> BandState:
        z = np.zeros(n)
        return cls(z, z.copy(), z.copy(), np.zeros(n, bool))


#: an increment is accepted when the damage it was solved with gives the interface traction of the damage it
#: produces to within this fraction of the strength (the IMPL-EX error, Oliver, Huespe & Cante 2008)
TRACTION_TOL = 0.05


def solve_increment(law: BandLaw, state: BandState, solve, ratio: float, *, max_corrections: int = 4,
                    tol: float = TRACTION_TOL, accept: bool = False):
    """One load increment of the band: IMPL-EX (Oliver, Huespe & Cante 2008), contact settled by re-solving.

    The damage is extrapolated from the last two committed opening histories
    (``kappa + ratio (kappa - kappa_prev)``, ``ratio``: this increment over the
    last one) and the equilibrium solved with it; the opening history is then
    updated from the solution. A contact state that the solution changes is
    solved again (at most ``max_corrections`` times). The increment is refused
    when the damage it was solved with gives an interface traction further than
    ``tol`` of the strength from the traction of the damage it produced: solving
    again with that damage does not converge on stiff interfaces (the secant
    fixed point amplifies the change by ``1 / (1 - d)``), a smaller increment does.

    Parameters
    ----------
    solve : callable (damage, closed) -> (strain (nb, 6), traction_ap (nb, 3))
    ratio : float >= 0

    Returns
    -------
    (BandState, solves, error): the new state (None when the increment is refused: ``error`` above
    ``tol`` and ``accept`` False), the linear solves it took, and its traction error over the strength.
    """
    kappa_pred = np.maximum(state.kappa + ratio * (state.kappa - state.kappa_prev), state.kappa)
    damage = np.maximum(law.law.damage(kappa_pred), state.damage)
    closed = state.closed
    sc, k0 = law.law.strength_Pa, law.law.penalty_Pa_m
    for k in range(1, max_corrections + 2):
        strain, traction_ap = solve(damage, closed)
        closed_new = law.contact(strain, closed)
        if not np.array_equal(closed_new, closed) and k <= max_corrections:
            closed = closed_new
            continue
        lam = driving_opening(law, strain, traction_ap, damage, closed, law.averaging)
        kappa = np.maximum(state.kappa, lam)
        damage_new = np.maximum(law.law.damage(kappa), state.damage)
        err = float(np.max(np.abs(damage_new - damage) * k0 * lam, initial=0.0)) / sc
        if err > tol and not accept:
            return None, k, err
        return BandState(kappa, state.kappa, damage_new, closed_new), k, err
    return None, max_corrections + 1, np.inf  # pragma: no cover - the loop returns


def advance(law: BandLaw, state: BandState, solve_at, *, last: float = 1.0, max_cuts: int = 4,
            max_corrections: int = 4, tol: float = TRACTION_TOL):
    """Take the band from the committed state to the end of a load step, halving increments whose error is large.

    An increment whose traction error (:func:`solve_increment`) is above ``tol``
    is halved, down to ``1 / 2^max_cuts`` of the step; an increment of that size
    is accepted whatever its error. Where the interface snaps (a debonding patch
    larger than the cohesive length opens at a fixed load) the damage jumps
    within any increment, so no increment is small enough: the step crosses the
    jump with the error it has, and the record keeps the largest.

    Parameters
    ----------
    solve_at : callable alpha -> solve callback of :func:`solve_increment` for the load at fraction
        ``alpha`` in (0, 1] of the way from the last committed load to the step's load
    last : float
        Size of the last committed increment, in units of this step (the extrapolation's scale).

    Returns
    -------
    state : BandState at the end of the step
    record : dict with ``increments``, ``solves``, ``cuts``, ``error`` (largest accepted traction
        error over the strength) and ``last`` (the last increment's size)
    """
    alpha, size = 0.0, 1.0
    record = {"increments": 0, "solves": 0, "cuts": 0, "error": 0.0}
    smallest = 0.5**max_cuts
    while alpha < 1.0 - 1e-12:
        size = min(size, 1.0 - alpha)
        new, k, err = solve_increment(law, state, solve_at(alpha + size), size / last if last > 0 else 0.0,
                                      max_corrections=max_corrections, tol=tol, accept=size <= smallest * 1.000001)
        record["solves"] += k
        if new is None:
            size /= 2
            record["cuts"] += 1
            continue
        record["error"] = max(record["error"], err)
        state, alpha, last = new, alpha + size, size
        record["increments"] += 1
        size = min(2 * size, 1.0)  # an increment that settled lets the next one grow again
    record["last"] = last
    return state, record
