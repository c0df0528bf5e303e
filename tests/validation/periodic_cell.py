"""Periodic cells with a tilted planar AP|SE interface, for validating the cohesive band.

A cube of ``n^3`` voxels, periodic in all three directions, split into a slab
of active material (AP) and one of electrolyte (SE) by planes with an integer
normal (0, 0, 1), (0, 1, 2), (0, 1, 1) or (1, 1, 1): 0, 26.6, 45 and 54.7
degrees to the grid. It is loaded by a macroscopic strain E (the displacement
is ``E x`` plus a periodic fluctuation); the mean stress of the cell is then
the stress on the plane (``Sigma . n`` is the plane's traction). Solved
directly (SuperLU) on the assembled periodic operator, with the band voxels'
secant stiffness of :class:`solvers.physics.cohesive.band.BandLaw`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from solvers.fem.assembly import elasticity_parts, lame
from solvers.fem.elements import HEX8
from solvers.fem.mandel import from_mandel, hex_strain_matrix, isotropic, to_mandel
from solvers.physics.cohesive.band import BandLaw, BandState, advance, band_geometry

CORNERS = HEX8.nodes.astype(int)


def slab(n, normal_int, fraction=0.5, offset=0.3):
    """(n, n, n) phases: AP (2) where ``frac(normal . centre / n + offset) < fraction``, else SE (1)."""
    c = np.indices((n, n, n)).transpose(1, 2, 3, 0) + 0.5
    s = (c @ np.asarray(normal_int, float)) / n + offset
    return np.where((s % 1.0) < fraction, 2, 1).astype(np.uint8)


def periodic_faces(phases, normal, h):
    """AP|SE faces of a periodic image, each with the exact plane normal pointing out of the particle."""
    idx = np.arange(phases.size).reshape(phases.shape)
    ap = phases == 2
    out = {k: [] for k in ("ap_voxel", "se_voxel", "axis", "area", "normal")}
    for ax in range(3):
        for s in (1, -1):
            sel = ~ap & np.roll(ap, s, axis=ax)  # an AP voxel at v - s e_ax
            se = idx[sel]
            out["ap_voxel"].append(np.roll(idx, s, axis=ax)[sel])
            out["se_voxel"].append(se)
            out["axis"].append(np.full(se.size, ax))
            out["area"].append(np.full(se.size, h * h))
            e = np.zeros(3)
            e[ax] = s  # the face's axis from the AP voxel into the SE voxel
            out["normal"].append(np.tile(np.sign(normal @ e) * normal, (se.size, 1)))
    faces = {k: np.concatenate(v) for k, v in out.items()}
    faces["particle"] = np.ones(faces["se_voxel"].size, np.int64)
    return faces


class PeriodicCell:
    """The assembled periodic cell of a slab under macroscopic strains, and its band.

    Parameters
    ----------
    phases : (n, n, n) slab image
    normal : (3,) unit plane normal (z, y, x)
    h : voxel size, m
    law : CohesiveLaw
    one_interface : bool
        Only the interface whose outward normal is ``+normal`` can fail (the other one's band voxels
        carry no area), so that a pulled cell separates along one plane.
    averaging : float
        Averaging length of the driving opening, voxels.
    """

    def __init__(self, phases, normal, h, law, *, E_ap=140e9, E_se=22e9, nu=0.3, one_interface=False,
                 averaging=1.5):
        n = phases.shape[0]
        self.n, self.h, self.phases = n, h, phases
        spacing = np.full(3, h)
        self.volume = h**3
        self.faces = periodic_faces(phases, normal, h)
        geo = band_geometry(phases, (phases == 2).astype(np.int32), spacing, self.faces, periodic=True)
        if one_interface:
            other = geo.normal @ normal < 0
            geo = dataclasses.replace(geo, area=np.where(other, 0.0, geo.area), share=np.where(other, 0.0, geo.share))
        self.geo = geo
        (la, ma), (ls, ms) = lame(E_ap, nu), lame(E_se, nu)
        self.band = BandLaw(geo, ls, ms, law, averaging_length_m=averaging * h)
        self.C_ap, self.C_se = isotropic(la, ma), isotropic(ls, ms)
        self.B = hex_strain_matrix(spacing, (0.5, 0.5, 0.5))
        kl, km = (k.reshape(24, 24) for k in elasticity_parts(HEX8, spacing))
        self.K_ap, self.K_se = la * kl + ma * km, ls * kl + ms * km
        self.Khg = self.K_se - self.volume * self.B.T @ self.C_se @ self.B
        vox = np.stack(np.unravel_index(np.arange(n**3), (n, n, n)), 1)
        cells = np.ravel_multi_index(((vox[:, None, :] + CORNERS[None]) % n).T, (n, n, n)).T
        self.dofs = (3 * cells[:, :, None] + np.arange(3)).reshape(-1, 24)
        self.is_ap = phases.ravel() == 2
        self.state = BandState.bonded(geo.n)
        self.E_last = np.zeros((3, 3))
        self._lu = {}

    def solve_with(self, E, C_band, hg):
        """Strain and stress (ne, 6) of every voxel at macroscopic strain E for given band stiffness."""
        C = np.where(self.is_ap[:, None, None], self.C_ap, self.C_se)
        C[self.geo.voxel] = C_band
        key = C_band.tobytes() + hg.tobytes()
        if key not in self._lu:
            Ke = np.where(self.is_ap[:, None, None], self.K_ap, self.K_se)
            Ke[self.geo.voxel] = (self.volume * np.einsum("ki,bkl,lj->bij", self.B, C_band, self.B)
                                  + hg[:, None, None] * self.Khg)
            nd = 3 * self.n**3
            rows, cols = np.repeat(self.dofs, 24, axis=1).ravel(), np.tile(self.dofs, (1, 24)).ravel()
            A = sp.csr_matrix((Ke.ravel(), (rows, cols)), shape=(nd, nd))
            self._lu = {key: spla.splu(A[3:, 3:].tocsc(), permc_spec="MMD_AT_PLUS_A")}  # node 0 holds the cell
        Em = to_mandel(E)
        fe = -self.volume * (C @ Em) @ self.B
        f = np.bincount(self.dofs.ravel(), weights=fe.ravel(), minlength=3 * self.n**3)
        u = np.zeros_like(f)
        u[3:] = self._lu[key].solve(f[3:])
        eps = Em[None] + u[self.dofs] @ self.B.T
        return eps, np.einsum("eij,ej->ei", C, eps)

    def ap_traction(self, sig):
        """(nb, 3) particle-side traction on the band voxels with area, in their (n, t1, t2) frames."""
        geo, fb = self.geo, self.geo.face_band
        t = np.einsum("fij,fj->fi", from_mandel(sig[self.faces["ap_voxel"]]), geo.normal[fb])
        tf = np.einsum("fci,fi->fc", self.band.frame[fb], t) * geo.face_weight[:, None]
        out = np.stack([np.bincount(fb, weights=tf[:, c], minlength=geo.n) for c in range(3)], 1)
        return out / np.where(geo.area > 0, geo.area, 1.0)[:, None]

    def load(self, E, *, last=1.0):
        """Take the band to macroscopic strain E (from the last one); mean stress (3, 3) and the step record."""
        E0, out = self.E_last, {}

        def solve_at(alpha):
            Ea = E0 + alpha * (E - E0)

            def solve(damage, closed):
                eps, out["sig"] = self.solve_with(Ea, *self.band.stiffness(damage, closed))
                return eps[self.geo.voxel], self.ap_traction(out["sig"])
            return solve

        self.state, record = advance(self.band, self.state, solve_at, last=last)
        self.E_last = E
        return from_mandel(out["sig"].mean(0)), record

    def stress_at(self, E, *, debonded):
        """Mean stress (3, 3) at strain E from a bonded or a fully debonded state (contact settled)."""
        kappa = np.where(self.geo.share > 0, 2 * self.band.law.delta_f if debonded else 0.0, 0.0)
        self.state = BandState(kappa, kappa.copy(), self.band.law.damage(kappa), np.zeros(self.geo.n, bool))
        self.E_last = np.zeros((3, 3))
        return self.load(E, last=0.0)[0]
