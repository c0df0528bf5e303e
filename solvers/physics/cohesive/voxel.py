"""The cohesive band run on the matrix-free voxel operator: loads, stepping, stresses and interface outputs.

:class:`VoxelCohesiveProblem` is an :class:`~solvers.physics.elasticity.ElasticProblem`
whose matrix-free operator carries the band voxels of :mod:`.band` with
their own secant stiffness. Every :meth:`~VoxelCohesiveProblem.solve` takes
the band from the committed state to the new eigenstrain by
:func:`~solvers.physics.cohesive.band.advance` (IMPL-EX increments, halved
where the interface traction they imply moves too far); between linear
solves only the band voxels whose damage or contact changed are written into
the operator, and only the coarse voxels above them are recomputed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from solvers.fem.assembly import elasticity_parts, lame
from solvers.fem.elements import HEX8
from solvers.fem.mandel import from_mandel, hex_strain_matrix, isotropic
from solvers.mesh.voxel import ACTIVE, ELECTROLYTE, VoxelMesh
from solvers.physics.cohesive.band import TRACTION_TOL, BandLaw, BandState, advance, band_geometry
from solvers.physics.cohesive.geometry import AreaFractions
from solvers.physics.cohesive.law import CohesiveLaw
from solvers.physics.elasticity import ElasticProblem
from solvers.physics.materials import Material
from tomomech.errors import ConfigError, MeshError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceInterface:
    """The AP|SE faces as the pipeline's interface statistics see them.

    Attributes
    ----------
    face_area : (nf,) projected face areas (``h^2 |n . e|``), m^2
    face_pairs : (nf, 4) int, the face's corner nodes (faces sharing one are connected in patches)
    """

    face_area: np.ndarray
    face_pairs: np.ndarray


def face_corner_nodes(faces: Mapping, shape) -> np.ndarray:
    """(nf, 4) flat node-grid indices of the corners of voxel faces (grid of ``shape`` voxels)."""
    Z, Y, X = shape
    a = np.stack(np.unravel_index(np.minimum(faces["ap_voxel"], faces["se_voxel"]), shape), axis=1)
    axis = np.asarray(faces["axis"])
    base = a.copy()
    base[np.arange(axis.size), axis] += 1  # the face on the far side of the lower voxel
    others = np.array([[1, 2], [0, 2], [0, 1]])[axis]  # the two in-plane axes
    out = np.empty((axis.size, 4), np.int64)
    for k, (i, j) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        c = base.copy()
        c[np.arange(axis.size), others[:, 0]] += i
        c[np.arange(axis.size), others[:, 1]] += j
        out[:, k] = np.ravel_multi_index(tuple(c.T), (Z + 1, Y + 1, X + 1))
    return out


class VoxelCohesiveProblem(AreaFractions, ElasticProblem):
    """Elasticity with the cohesive AP|SE band on the matrix-free voxel multigrid (no duplicated nodes).

    Same loads, box conditions and bulk stress recovery as
    :class:`~solvers.physics.elasticity.ElasticProblem` on the voxel mesh;
    band voxels report the stress of their secant law. :meth:`solve` advances
    and commits the damage.

    Parameters
    ----------
    mesh : VoxelMesh
    materials : mapping phase code -> Material
    faces : AP|SE faces (:func:`solvers.fields.interface_faces`)
    law : CohesiveLaw
    averaging_length_m : float
        Length over which the opening that drives the damage is averaged along each
        particle's interface (:class:`~solvers.physics.cohesive.band.BandLaw`).
    traction_tol : float
        IMPL-EX error above which an increment is halved, as a fraction of the strength.
    max_cuts : int
        Smallest increment ``1 / 2^max_cuts`` of a step (accepted whatever its error).
    contact_corrections : int
        Solves again, at most this many times, an increment whose solution changed the contact state
        (0: the new contact state enters the next increment, as IMPL-EX extrapolates it).
    deflation : bool
        Let a solve that does not converge fall back to the rigid-body modes of every particle as a coarse
        space of the multigrid (:mod:`solvers.deflation`), besides new local solves.
    **kwargs : top, stack_pressure_Pa, rtol, maxiter, device, precision (ElasticProblem)

    Attributes
    ----------
    state : BandState (committed opening history, damage, contact)
    history : list of dict per solve (increments, solves, cuts, error, CG iterations, updated voxels, seconds)
    """

    def __init__(self, mesh: VoxelMesh, materials: Mapping[int, Material], faces: Mapping, law: CohesiveLaw, *,
                 averaging_length_m: float = 0.0, traction_tol: float = TRACTION_TOL, max_cuts: int = 4,
                 contact_corrections: int = 4, deflation: bool = True, **kwargs):
        if not isinstance(mesh, VoxelMesh):
            raise ConfigError("the cohesive band runs on voxel-hex meshes: use backend = 'assembled' for tets")
        if kwargs.get("backend", "matrix-free") != "matrix-free":
            raise ConfigError("VoxelCohesiveProblem is the matrix-free cohesive model: backend must be 'matrix-free'")
        if np.asarray(faces["area"]).size == 0:
            raise MeshError("interface.model = 'cohesive' but the mesh has no AP|SE face")
        if not 0 < traction_tol < 1:
            raise ConfigError(f"cohesive traction tolerance {traction_tol!r} must lie in (0, 1) (a fraction of the "
                              "strength)")
        kwargs["backend"] = "matrix-free"
        kwargs.pop("solver", None)
        kwargs.pop("aggregation", None)
        self.law = law
        self.averaging_length_m = float(averaging_length_m)
        self.traction_tol = float(traction_tol)
        self.max_cuts = int(max_cuts)
        self.contact_corrections = int(contact_corrections)
        self.deflation = bool(deflation)
        self.faces = faces
        geo = band_geometry(mesh.phases, mesh.particles, mesh.spacing, faces)
        self.band_geometry = geo
        se, ap = materials[ELECTROLYTE], materials[ACTIVE]
        self._lame_se, self._lame_ap = lame(se.E, se.nu), lame(ap.E, ap.nu)
        self.band = BandLaw(geo, *self._lame_se, law, averaging_length_m=self.averaging_length_m)
        self.state = BandState.bonded(geo.n)
        self.interface = FaceInterface(geo.face_weight, face_corner_nodes(faces, mesh.shape))
        self.interface_particle = np.asarray(faces["particle"], np.int64)
        self._B = hex_strain_matrix(mesh.spacing, (0.5, 0.5, 0.5))
        cell_of = mesh.voxel_cell
        self._band_cell = cell_of[geo.voxel]
        self._face_ap_cell = cell_of[faces["ap_voxel"]]
        if (self._band_cell < 0).any() or (self._face_ap_cell < 0).any():
            raise MeshError("band voxels or AP|SE faces on voxels the mesh left out (floating solid)")
        self._op = (self.state.damage.copy(), self.state.closed.copy())  # the state the operator holds
        self._last = 1.0  # size of the last committed increment, in steps
        self._f_last = None
        self._eps_last = np.zeros(mesh.n_cells)
        self._u = None
        super().__init__(mesh, materials, **kwargs)

    # ElasticProblem builds the matrix-free solver through this hook
    def _matrix_free_solver(self, **options):
        from solvers.matfree import MatrixFreeSolver

        V = float(np.prod(self.mesh.spacing))
        k_lam, k_mu = (k.reshape(24, 24) for k in elasticity_parts(HEX8, self.mesh.spacing))
        lam, mu = self._lame_se
        Khg = lam * k_lam + mu * k_mu - V * self._B.T @ isotropic(lam, mu) @ self._B  # the electrolyte's hourglass
        C, hg = self.band.stiffness(*self._op)
        band = {"voxel": self.band_geometry.voxel, "C": C, "hourglass": hg, "Khg": Khg, "open": self._opened(*self._op)}
        particles = np.zeros(self.mesh.shape, np.int64)
        ap = self.mesh.cell_voxel[self.mesh.cell_phase == ACTIVE]
        particles.ravel()[ap] = np.asarray(self.mesh.particles).ravel()[ap]
        return MatrixFreeSolver(self.mesh, self._lame[self.cell_material], self.fixed, band=band,
                                deflate=particles if self.deflation else None, **options)

    # --- one load step ----------------------------------------------------------------------
    def solve(self, eigenstrain: np.ndarray, x0: np.ndarray | None = None) -> np.ndarray:
        """Displacement (nn, 3) for the cell eigenstrains; advances and commits the band state."""
        t0 = time.perf_counter()
        eps_new = np.asarray(eigenstrain, float)
        f_new = self.load(eps_new)
        f_old = np.zeros_like(f_new) if self._f_last is None else self._f_last
        eps_old = self._eps_last
        u = [self._u if x0 is None else np.ravel(x0)]
        cg = []
        updated = [0]

        def solve_at(alpha):
            f = f_old + alpha * (f_new - f_old)
            eps = eps_old + alpha * (eps_new - eps_old)

            def solve(damage, closed):
                updated[0] += self._set_operator(damage, closed)
                u[0] = self.solver.solve(f, x0=u[0])
                cg.append(self.solver.stats.iterations[-1])
                return self._band_strain(u[0]), self._ap_traction(u[0], eps)
            return solve

        self.state, record = advance(self.band, self.state, solve_at, last=self._last, max_cuts=self.max_cuts,
                                     tol=self.traction_tol, max_corrections=self.contact_corrections)
        self._last = record["last"] if record["last"] < 1 else 1.0
        self._f_last, self._eps_last, self._u = f_new, eps_new, u[0]
        record.update(cg_iterations=int(sum(cg)), updated_voxels=updated[0], seconds=time.perf_counter() - t0)
        self.history.append(record)
        damaged, debonded = self.area_fractions()
        log.info("cohesive band: %d increments (%d cuts), %d solves, %d CG its, %d band voxels updated, IMPL-EX "
                 "error %.3f of the strength, %.1f s; interface area damaged %.3f, debonded %.3f",
                 record["increments"], record["cuts"], record["solves"], record["cg_iterations"],
                 record["updated_voxels"], record["error"], record["seconds"], damaged, debonded)
        return u[0].reshape(-1, 3)

    def _set_operator(self, damage, closed) -> int:
        """Write the band voxels whose state differs from the operator's into it; how many changed."""
        which = np.flatnonzero((damage != self._op[0]) | (closed != self._op[1]))
        C, hg = self.band.stiffness(damage, closed, which)
        if which.size:
            self.solver.update_band(C, hg, which, open=self._opened(damage, closed))
        self._op = (damage.copy(), closed.copy())
        return int(which.size)

    @staticmethod
    def _opened(damage, closed):
        """(nb,) bool: band voxels fully debonded and not in contact (a gap for split coarse levels)."""
        return (np.asarray(damage) >= 1.0) & ~np.asarray(closed, bool)

    def _cell_strain(self, u, cells):
        """(m, 6) Mandel mean strain of the cells ``cells``."""
        ue = np.asarray(u).reshape(-1, 3)[self.mesh.cells[cells]].reshape(-1, 24)
        return ue @ self._B.T

    def _band_strain(self, u):
        return self._cell_strain(u, self._band_cell)

    def _ap_traction(self, u, eigenstrain):
        """(nb, 3) particle-side traction on every band voxel with area, in its (n, t1, t2) frame, Pa."""
        geo, fb = self.band_geometry, self.band_geometry.face_band
        cells = self._face_ap_cell
        eps = self._cell_strain(u, cells)
        eps[:, :3] -= np.asarray(eigenstrain)[cells][:, None]
        sig = eps @ isotropic(*self._lame_ap).T  # (nf, 6)
        t = np.einsum("fij,fj->fi", from_mandel(sig), geo.normal[fb])
        tf = np.einsum("fci,fi->fc", self.band.frame[fb], t) * geo.face_weight[:, None]
        out = np.stack([np.bincount(fb, weights=tf[:, c], minlength=geo.n) for c in range(3)], axis=1)
        return out / np.where(geo.area > 0, geo.area, 1.0)[:, None]

    # --- outputs ----------------------------------------------------------------------------
    def cell_stress(self, u: np.ndarray, eigenstrain: np.ndarray) -> np.ndarray:
        """Cell-mean stress (ne, 3, 3), Pa; band voxels from the secant stiffness of the last solve."""
        sig = super().cell_stress(u, eigenstrain)
        eps = self._band_strain(u)
        blocks = self.solver.levels[0].band  # the secant stiffness the operator holds, in kernel order
        sig[self._band_cell] = from_mandel(np.einsum("bij,bj->bi", blocks.C[blocks.order], eps))
        return sig

    @property
    def damage(self) -> np.ndarray:
        """Committed damage of every band voxel, (nb,)."""
        return self.state.damage

    def face_damage(self, damage: np.ndarray | None = None) -> np.ndarray:
        """Damage of every AP|SE face: that of its electrolyte band voxel, (nf,)."""
        d = self.state.damage if damage is None else damage
        return d[self.band_geometry.face_band]

    def cell_damage(self) -> np.ndarray:
        """(ne,) damage on the voxel grid: band voxels their own, particle voxels their faces' largest."""
        out = np.zeros(self.mesh.n_cells)
        out[self._band_cell] = self.state.damage
        np.maximum.at(out, self._face_ap_cell, self.face_damage())
        return out

    def summary(self) -> dict:
        """What a results folder records about the interface model and its stepping."""
        h = self.history
        return {"model": "cohesive", "formulation": "band (matrix-free)", "penalty_Pa_m": self.law.penalty_Pa_m,
                "delta_0_m": self.law.delta_0, "delta_f_m": self.law.delta_f,
                "averaging_length_m": self.averaging_length_m, "traction_tol": self.traction_tol,
                "max_cuts": self.max_cuts, "contact_corrections": self.contact_corrections,
                "band_voxels": self.band_geometry.n,
                "increments": int(sum(r["increments"] for r in h)), "step_cuts": int(sum(r["cuts"] for r in h)),
                "linear_solves": int(sum(r["solves"] for r in h)),
                "largest_implex_error": float(max((r["error"] for r in h), default=0.0)),
                "operator_updates": dict(self.solver.band_updates)}

    def step_record(self, since: int) -> dict:
        """Counts of the solves after history entry ``since`` (one step's worth), for the step summary."""
        h = self.history[since:]
        return {"nonlinear_iterations": int(sum(r["solves"] for r in h)),
                "increments": int(sum(r["increments"] for r in h)),
                "implex_error": float(max((r["error"] for r in h), default=0.0))}

