"""Small-strain elasticity with an isotropic swelling eigenstrain on voxel meshes.

``div sigma = 0``, ``sigma = C : (eps(u) - eps* I)`` with ``eps*`` per cell
(zero outside the active phase). Box conditions of shared/PHYSICS.md section 1:
``u_z = 0`` at z = 0, rollers on the four side faces, and the top free, fixed
(``u_z = 0``) or under a uniform compressive stack pressure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np

from solvers.fem.assembly import (
    apply_dirichlet,
    assemble_elasticity,
    assemble_voxel_stiffness,
    elasticity_matrix,
    lame,
)
from solvers.linalg import LinearSolver, resolve_backend, rigid_body_modes
from solvers.mesh.tet import box_boundary, box_face_nodes
from solvers.mesh.voxel import VoxelMesh
from solvers.physics.materials import Material
from tomomech.errors import ConfigError, MeshError

log = logging.getLogger(__name__)

TOP_CONDITIONS = ("free", "fixed", "stack_pressure")
#: above this many unknowns ``backend="auto"`` uses the matrix-free multigrid solver: one elastic step on
#: MATBOX crops (benchmarks/elastic_step.py, setup + solve, 2026-11-26) took 3.5 / 13.7 / 35.0 s assembled
#: (smoothed AMG) against 5.7 / 4.8 / 9.9 s matrix-free at 106 k / 347 k / 802 k dof (the 106 k run
#: includes loading the compiled kernels, about 2 s once per process)
MATRIX_FREE_DOF = 150_000


def box_faces(mesh) -> tuple[np.ndarray, np.ndarray]:
    """Nodes on the low and high box faces, two (nn, 3) bool arrays (axes z, y, x).

    Voxel meshes use their integer node grid; tet meshes their boundary triangles
    (:func:`solvers.mesh.tet.box_face_nodes`: CGAL rounds the box edges).
    """
    if isinstance(mesh, VoxelMesh):
        idx = mesh.node_index.T
        return idx == 0, idx == np.asarray(mesh.shape)[None, :]
    return box_face_nodes(mesh)


#: the six box faces, and the conditions a face can have (``pressure``: the top only, ``top = "stack_pressure"``)
FACES = ("z_min", "z_max", "y_min", "y_max", "x_min", "x_max")
FACE_CONDITIONS = ("roller", "fixed", "free")
_MOTIONS = ("translation along z", "translation along y", "translation along x",
            "rotation about z", "rotation about y", "rotation about x")


def face_conditions(top: str = "free", faces: Mapping[str, str] | None = None) -> dict[str, str]:
    """The condition of every box face: rollers everywhere, the top from ``top``, then ``faces``.

    ``roller`` holds the displacement normal to the face, ``fixed`` all of it, ``free`` none.
    ``top = "fixed"`` is a roller on the top; ``"stack_pressure"`` leaves it free (the pressure
    is a load).
    """
    if top not in TOP_CONDITIONS:
        raise ConfigError(f"mechanics.top = {top!r}: use one of {TOP_CONDITIONS}")
    cond = dict.fromkeys(FACES, "roller")
    cond["z_max"] = "roller" if top == "fixed" else "free"
    for face, c in (faces or {}).items():
        if face not in FACES:
            raise ConfigError(f"mechanics.faces has {face!r}: the faces are {FACES}")
        if c == "pressure":
            raise ConfigError(f"mechanics.faces.{face} = 'pressure': a pressure is applied on the top only, "
                              "with mechanics.top = 'stack_pressure'")
        if c not in FACE_CONDITIONS:
            raise ConfigError(f"mechanics.faces.{face} = {c!r}: use one of {FACE_CONDITIONS}")
        if face == "z_max" and top != "free":
            raise ConfigError(f"mechanics.faces.z_max and mechanics.top = {top!r} both set the top face: "
                              "keep one")
        cond[face] = c
    return cond


def box_constraints(mesh, top: str = "free", faces: Mapping[str, str] | None = None) -> np.ndarray:
    """Fixed displacement components of the box conditions, checked to hold the body.

    Parameters
    ----------
    mesh : VoxelMesh or TetMesh
    top : {"free", "fixed", "stack_pressure"}
    faces : mapping of face name (:data:`FACES`) to condition (:data:`FACE_CONDITIONS`), optional

    Returns
    -------
    (nn, 3) bool, components (z, y, x); True where ``u`` is held at zero.

    Raises
    ------
    MeshError
        The conditions leave a rigid-body motion of the meshed body free (named in the message).
    """
    cond = face_conditions(top, faces)
    lo, hi = box_faces(mesh)
    fixed = np.zeros((mesh.n_nodes, 3), bool)
    for axis, name in enumerate("zyx"):
        for side, on in (("min", lo[:, axis]), ("max", hi[:, axis])):
            c = cond[f"{name}_{side}"]
            if c == "roller":
                fixed[on, axis] = True
            elif c == "fixed":
                fixed[on] = True
    free = free_rigid_motions(mesh.points, fixed)
    if free:
        touched = [f"{name}_{side}" for axis, name in enumerate("zyx")
                   for side, on in (("min", lo), ("max", hi)) if on[:, axis].any()]
        held = ", ".join(f"{f} {c}" for f, c in cond.items())
        raise MeshError(f"the box conditions ({held}) leave the solid body free: {'; '.join(free)}. It touches "
                        f"the faces {', '.join(touched)} only. Crop to a region whose solid reaches the held faces, "
                        "or hold more of the faces it touches with mechanics.faces")
    return fixed


def free_rigid_motions(points: np.ndarray, fixed: np.ndarray, tol: float = 1e-8) -> list[str]:
    """The rigid-body motions that the held dofs leave free, in words (empty when the body is held).

    A rank test: the six rigid modes (about the centroid) restricted to the held dofs, ``R``
    (n_held, 6), built on the held nodes only; singular values below ``tol`` times the largest
    span the free motions. Each single mode in that space is named; what is left is named as a
    combination.
    """
    points, fixed = np.asarray(points, float), np.asarray(fixed, bool)
    held = fixed.any(axis=1)
    if not held.any():
        return list(_MOTIONS)
    R = rigid_body_modes(points[held], centre=points.mean(axis=0))[fixed[held].ravel()]
    _, sv, vt = np.linalg.svd(R, full_matrices=False)
    cut = tol * max(sv[0], 1e-300)
    null = vt[sv <= cut]
    if len(null) == 0:
        return []
    pure = [k for k in range(6) if np.linalg.norm(R[:, k]) <= cut]
    out = [_MOTIONS[k] for k in pure]
    rest = null.copy()
    rest[:, pure] = 0.0  # the null space less its single modes
    if len(null) > len(pure):
        for v in np.linalg.svd(rest, full_matrices=False)[2][:len(null) - len(pure)]:
            v = v / v[np.argmax(np.abs(v))]
            out.append(" + ".join(f"{c:.2g} x {m}" for c, m in zip(v, _MOTIONS) if abs(c) > 1e-6))
    return out


class ElasticProblem:
    """Elasticity on one mesh: matrix and preconditioner built once, many solves.

    Parameters
    ----------
    mesh : VoxelMesh
    materials : mapping phase code -> Material
        Every solid phase present in the mesh needs a material.
    top : {"free", "fixed", "stack_pressure"}
    boundary : mapping of box face to "roller", "fixed" or "free", optional
        Overrides of the default box conditions (:func:`face_conditions`); the body must stay held.
    stack_pressure_Pa : float
        Compressive traction on the top face when ``top="stack_pressure"``.
    solver : {"auto", "direct", "amg"}
    rtol : float
        Relative residual of every linear solve.
    maxiter : int
    aggregation : {"auto", "smoothed", "plain"}
        AMG variant (:class:`solvers.linalg.LinearSolver`).
    backend : {"assembled", "matrix-free", "auto"}
        ``matrix-free``: no global matrix, CG with geometric multigrid
        (:mod:`solvers.matfree`); ``auto`` picks it above
        :data:`MATRIX_FREE_DOF` unknowns.
    device : {"cpu", "gpu"}
        Matrix-free backend only.
    precision : {"float64", "mixed"}
        Matrix-free backend only: multigrid in float32.
    coarse : {"trilinear", "split"}
        Matrix-free backend only: the multigrid's coarse spaces (:class:`solvers.matfree.MatrixFreeSolver`).
    """

    #: AMG smoother (:class:`solvers.linalg.LinearSolver`). The bonded tables of docs/performance.md were measured with
    #: symmetric sweeps; forward-backward solved a 347 k dof step in 8.4 s against 9.7 s once (not adopted
    #: here until those tables are rerun)
    SMOOTHER = "symmetric"
    #: the answer depends on the load path (damage, plastic strain): transient drivers solve every step
    path_dependent = False
    #: time of the next load step, s (transient drivers set it; rate-dependent problems use it)
    time_step_s = np.inf

    def __init__(self, mesh: VoxelMesh, materials: Mapping[int, Material], *, top: str = "free",
                 boundary: Mapping[str, str] | None = None, stack_pressure_Pa: float = 0.0,
                 solver: str = "auto", rtol: float = 1e-8, maxiter: int = 500, aggregation: str = "auto",
                 backend: str = "assembled", device: str = "cpu", precision: str = "float64",
                 coarse: str = "trilinear"):
        self.mesh = mesh
        self.top = top
        self.stack_pressure_Pa = float(stack_pressure_Pa)
        phases_present = np.unique(mesh.cell_phase)
        missing = [int(p) for p in phases_present if int(p) not in materials]
        if missing:
            raise ConfigError(f"no material for phase codes {missing}")
        self.phase_codes = [int(p) for p in phases_present]
        self.materials = {p: materials[p] for p in self.phase_codes}
        lut = np.full(256, -1, np.int64)
        lut[self.phase_codes] = np.arange(len(self.phase_codes))
        self.cell_material = lut[mesh.cell_phase]
        self._K = np.array([self.materials[p].K for p in self.phase_codes])
        self._lame = np.array([lame(self.materials[p].E, self.materials[p].nu) for p in self.phase_codes])
        self.structured = isinstance(mesh, VoxelMesh)
        # voxels share one table (leading axis 1), tetrahedra have one per cell
        dn, w = mesh.gradient_tables()
        self._g = np.einsum("eq,eqai->eai", w, dn)  # int grad N dV
        self._gc = self._g / w.sum(axis=1)[:, None, None]  # cell-mean gradients (= centroid ones on voxels)
        self.fixed = box_constraints(mesh, top, boundary)
        self.timings: dict[str, float] = {}
        self.history: list[dict] = []  # one record per solve in the cohesive problems (step_record)
        backend = resolve_backend(backend, 3 * mesh.n_nodes, MATRIX_FREE_DOF, voxels=self.structured,
                                  device=device, precision=precision)
        self.backend = backend
        self.A = None
        if backend == "matrix-free":
            self.timings["assembly_s"] = 0.0
            self.solver = self._matrix_free_solver(rtol=rtol, maxiter=maxiter, device=device, precision=precision,
                                                   coarse=coarse)
        else:
            t0 = time.perf_counter()
            self.A = self._finish_matrix(self._assemble())
            self.timings["assembly_s"] = time.perf_counter() - t0
            B = rigid_body_modes(mesh.points)
            B[self.fixed.ravel()] = 0.0
            self.solver = LinearSolver(self.A, method=solver, near_nullspace=B, rtol=rtol, maxiter=maxiter,
                                       aggregation=aggregation, smoother=self.SMOOTHER,
                                       basis=self._preconditioner_basis(self.A))
        self.timings["setup_s"] = self.solver.stats.setup_s

    def _matrix_free_solver(self, **options):
        """The matrix-free operator and its multigrid (:class:`solvers.matfree.MatrixFreeSolver`)."""
        from solvers.matfree import MatrixFreeSolver

        return MatrixFreeSolver(self.mesh, self._lame[self.cell_material], self.fixed, **options)

    def _assemble(self):
        """Global stiffness without boundary conditions (BSR, 3x3 blocks)."""
        mesh = self.mesh
        if self.structured:
            kes = [elasticity_matrix(mesh.element, mesh.spacing, m.E, m.nu) for m in self.materials.values()]
            return assemble_voxel_stiffness(mesh, self.cell_material, kes)
        lam, mu = self._lame[self.cell_material].T
        A = assemble_elasticity(mesh.element, mesh.points, mesh.cells, lam, mu).tobsr(blocksize=(3, 3))
        A.sort_indices()
        return A

    def _preconditioner_basis(self, A):
        """Coordinates the AMG works in (:meth:`LinearSolver.rebuild`); None: the dofs themselves."""
        return None

    def _finish_matrix(self, A):
        """The matrix that is solved: ``A`` with the box conditions applied."""
        return apply_dirichlet(A, self.fixed)

    @property
    def n_dof(self) -> int:
        return 3 * self.mesh.n_nodes

    def load(self, eigenstrain: np.ndarray) -> np.ndarray:
        """Right-hand side for cell eigenstrains and the stack pressure.

        Parameters
        ----------
        eigenstrain : (ne,) float
            Isotropic eigenstrain ``eps*`` of every cell (dimensionless).

        Returns
        -------
        (3 nn,) nodal forces, N
        """
        mesh = self.mesh
        s = 3.0 * self._K[self.cell_material] * np.asarray(eigenstrain, float)  # eigenstress, Pa
        f = np.zeros((mesh.n_nodes, 3))
        g = np.broadcast_to(self._g, (mesh.n_cells,) + self._g.shape[1:])
        for a in range(mesh.element.n_nodes):
            for i in range(3):
                f[:, i] += np.bincount(mesh.cells[:, a], weights=s * g[:, a, i], minlength=mesh.n_nodes)
        if self.top == "stack_pressure" and self.stack_pressure_Pa != 0.0:
            nodes, weights = self._top_face_nodes()
            if nodes.size == 0:
                raise MeshError("stack_pressure needs solid on the top face of the box")
            f[:, 0] -= np.bincount(nodes, weights=weights, minlength=mesh.n_nodes) * self.stack_pressure_Pa
        f[self.fixed] = 0.0
        return f.ravel()

    def stress_load(self, cells: np.ndarray, stress: np.ndarray) -> np.ndarray:
        """Nodal forces ``int B^T sigma dV`` of a stress that is constant on each of some cells.

        The load of an eigenstrain tensor ``eps_p`` is that of its stress ``C : eps_p``
        (a plastic strain, :class:`solvers.physics.inelastic.PlasticProblem`).

        Parameters
        ----------
        cells : (m,) int, cell indices
        stress : (m, 3, 3) Pa

        Returns
        -------
        (3 nn,) nodal forces, N (zero on held dofs)
        """
        mesh = self.mesh
        cells = np.asarray(cells)
        if self._g.shape[0] == 1:  # voxels: one table, int grad N dV (a, 3)
            fa = np.einsum("aj,mij->mai", self._g[0], stress)
        else:
            fa = np.einsum("maj,mij->mai", self._g[cells], stress)  # (m, a, 3)
        conn = mesh.cells[cells]
        f = np.stack([np.bincount(conn.ravel(), weights=fa[:, :, i].ravel(), minlength=mesh.n_nodes)
                      for i in range(3)], axis=1)
        f[self.fixed] = 0.0
        return f.ravel()

    def _top_face_nodes(self) -> tuple[np.ndarray, np.ndarray]:
        """Nodes of the cell faces on the top of the box and their tributary areas (m^2)."""
        mesh = self.mesh
        if self.structured:
            vz = np.unravel_index(mesh.cell_voxel, mesh.shape)[0]
            top_local = np.flatnonzero(mesh.element.nodes[:, 0] == 1)
            nodes = mesh.cells[vz == mesh.shape[0] - 1][:, top_local].ravel()
            return nodes, np.full(nodes.size, mesh.spacing[1] * mesh.spacing[2] / 4)
        if mesh.kind == "voxel-tet":  # flat box faces
            tris, area, _ = box_boundary(mesh)[0, 1]
        else:
            # a flat platen on the solid part of the top voxel layer. CGAL rounds the box edges over 1-1.5
            # voxels, so that part of the surface lies below the plane and tilts: the force goes to every
            # upward-facing boundary triangle within 1.5 voxels of the top in proportion to its area
            # projected on the plane, scaled so the total is the pressure times the solid top area
            tris, area, normal = box_boundary(mesh, min_cos=1e-9, tol_voxels=1.5)[0, 1]
            area = area * normal[:, 0]
            ext = np.asarray(mesh.extent)
            solid_top = float(np.mean(mesh.phases[-1] != 0)) * ext[1] * ext[2]
            area = area * (solid_top / area.sum()) if area.sum() > 0 else area
        # linear triangle: a third of the area on each corner; quadratic triangle under uniform traction:
        # nothing on the corners, a third on each mid-edge node (listed after the corners)
        return tris[:, -3:].ravel(), np.repeat(area / 3, 3)

    def solve(self, eigenstrain: np.ndarray, x0: np.ndarray | None = None) -> np.ndarray:
        """Displacement for the given cell eigenstrains, (nn, 3) in metres."""
        u = self.solver.solve(self.load(eigenstrain), x0=None if x0 is None else np.ravel(x0))
        return u.reshape(-1, 3)

    def cell_strain(self, u: np.ndarray, cells: np.ndarray | None = None) -> np.ndarray:
        """Cell-mean total strain, (ne, 3, 3) or (m, 3, 3) for the cell indices ``cells``.

        Voxels: the centroid strain, which is the cell mean; tets: the mean over the cell.
        """
        conn = self.mesh.cells if cells is None else self.mesh.cells[cells]
        gc = self._gc if self._gc.shape[0] == 1 or cells is None else self._gc[cells]
        gu = np.einsum("eai,eaj->eij", np.asarray(u).reshape(-1, 3)[conn],
                       np.broadcast_to(gc, (conn.shape[0],) + gc.shape[1:]))
        return 0.5 * (gu + gu.transpose(0, 2, 1))

    def cell_stress(self, u: np.ndarray, eigenstrain: np.ndarray) -> np.ndarray:
        """Cell-mean Cauchy stress, (ne, 3, 3) in Pa, components (z, y, x)."""
        eps = self.cell_strain(u)
        idx = np.arange(3)
        eps[:, idx, idx] -= np.asarray(eigenstrain, float)[:, None]
        lam, mu = self._lame[self.cell_material].T
        tr = np.trace(eps, axis1=1, axis2=2)
        sig = 2.0 * mu[:, None, None] * eps
        sig[:, idx, idx] += (lam * tr)[:, None]
        return sig


    @property
    def last_iterations(self) -> int:
        """CG iterations of the last :meth:`solve` (a step's worth)."""
        return self.solver.stats.iterations[-1]

    # --- what a results folder records (the cohesive problems have the same methods) --------------
    def summary(self) -> dict:
        """The interface model and its stepping, for summary.json."""
        return {"model": "bonded"}

    def step_record(self, since: int) -> dict:
        """Counts of the solves after history entry ``since`` for the step summary (none when bonded)."""
        return {}
