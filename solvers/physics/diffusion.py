"""Li diffusion inside active particles (PHYSICS.md section 1), on any mesh kind.

``dc/dt = div(D grad c - (D Omega c / (R T)) grad sigma_h)`` in each particle,
backward Euler in time, lumped mass. Every particle is its own diffusion
domain: nodes shared by two touching particles are duplicated, so Li moves
between particles only through the electrolyte (the galvanostatic flux).
The flux enters through bonded AP|SE faces (voxel faces or triangles);
AP|void faces and debonded faces carry none. The element is data: voxel
hexes share one table of gradients, tetrahedra have one per cell.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from solvers.fem.assembly import scalar_laplacian
from solvers.linalg import LinearSolver, resolve_backend
from solvers.mesh.voxel import ACTIVE, VoxelMesh

log = logging.getLogger(__name__)

#: above this many diffusion nodes ``backend="auto"`` goes matrix-free: a 40-step 1C charge of MATBOX
#: crops took 5.8 / 15.1 s assembled (AMG setup + steps) vs 6.0 / 10.2 s matrix-free at 64 k / 161 k nodes
MATRIX_FREE_NODES = 100_000
FARADAY = 96485.33212  # C/mol
GAS_CONSTANT = 8.314462618  # J/(mol K)


class DiffusionProblem:
    """Backward-Euler diffusion in the active cells of a mesh (voxel hexes or tetrahedra).

    Parameters
    ----------
    mesh : VoxelMesh or TetMesh
        The mechanics mesh; its active cells are used (quadratic tets: as linear tets on their
        corners, since row-sum lumping of quadratic tets gives negative corner masses).
    D : float
        Diffusivity, m^2/s.
    dt : float
        Time step, s (the matrix ``M/dt + K`` is built and preconditioned once).
    faces : dict
        AP|SE faces: voxel faces of :func:`solvers.fields.interface_faces`
        (``ap_voxel``, ``se_voxel``, ``axis``, ``area``) or triangles of
        :func:`solvers.fields.tet_interface_faces` (``nodes``, ``area``).
    solver : {"auto", "direct", "amg"}
        Assembled backend: direct below 20 k nodes, else CG with AMG.
    rtol : float
    backend : {"assembled", "matrix-free", "auto"}
        ``matrix-free`` (voxel meshes): no matrix, a compiled element kernel
        and Jacobi-preconditioned CG (:class:`solvers.matfree.JacobiCG`);
        ``auto`` picks it above :data:`MATRIX_FREE_NODES` diffusion nodes or
        when ``device`` or ``precision`` ask for it.
    device : {"cpu", "gpu"}
        Matrix-free backend only.
    precision : {"float64", "mixed"}
        Matrix-free backend only; the diagonal preconditioner has nothing
        to gain from float32, so diffusion stays float64 either way.

    Attributes
    ----------
    n_nodes : int
        Diffusion nodes (mesh nodes duplicated per particle).
    cells : (na, n) int
        Diffusion node indices of each active cell.
    cell_index : (na,) int
        Index of each active cell in the mechanics mesh.
    node_particle : (n_nodes,) int
    mass : (n_nodes,) lumped nodal volumes, m^3
    face_nodes : (nf, 4 or 3) int
        Diffusion nodes of each AP|SE face.
    """

    def __init__(self, mesh, *, D: float, dt: float, faces: dict, solver: str = "auto", rtol: float = 1e-10,
                 backend: str = "assembled", device: str = "cpu", precision: str = "float64"):
        self._given = (mesh, dict(D=D, faces=faces, solver=solver, rtol=rtol, backend=backend, device=device,
                                  precision=precision))
        if hasattr(mesh, "linear"):  # quadratic tets: Li diffuses on their corners (linear tets, lumped mass)
            mesh = mesh.linear()
        self.mesh = mesh
        self.D = float(D)
        self.dt = float(dt)
        self.cell_index = np.flatnonzero(mesh.cell_phase == ACTIVE)
        part = mesh.cell_particle[self.cell_index].astype(np.int64)
        self._n_part = int(part.max(initial=0)) + 1
        # a node is keyed by (position, particle): voxel meshes key positions by their grid index, so
        # a cohesive mesh (AP|SE nodes duplicated) gives the same diffusion nodes as the bonded one
        key = self._node_key(mesh.cells[self.cell_index]) * self._n_part + part[:, None]
        self._keys, inv = np.unique(key, return_inverse=True)
        self.cells = inv.reshape(key.shape)
        self.n_nodes = int(self._keys.size)
        self.node_particle = (self._keys % self._n_part).astype(np.int64)
        n_per = self.cells.shape[1]
        self._dn, self._w = mesh.gradient_tables(self.cell_index)  # (1 or na, q, n, 3), (1 or na, q)
        pts, _ = mesh.element.quadrature
        self._q_shape = mesh.element.shape(pts)  # (q, n)
        self.cell_volume = np.broadcast_to(self._w.sum(axis=1), (self.cell_index.size,))
        lap = np.einsum("eq,eqai,eqbi->eab", self._w, self._dn, self._dn)  # (1 or na, n, n)
        m = np.einsum("eq,qa->ea", self._w, self._q_shape)
        na = self.cell_index.size
        self.mass = np.bincount(self.cells.ravel(), weights=np.broadcast_to(m, (na, n_per)).ravel(),
                                minlength=self.n_nodes)
        self.backend = resolve_backend(backend, self.n_nodes, MATRIX_FREE_NODES, voxels=isinstance(mesh, VoxelMesh),
                                       device=device, precision=precision)
        if self.backend == "matrix-free":
            from solvers.matfree import CellOperator, JacobiCG

            self.K = self.A = None
            ke = self.D * lap[0] + np.diag(m[0]) / self.dt  # one voxel: stiffness and its lumped mass
            voxel = np.stack(np.unravel_index(mesh.cell_voxel[self.cell_index], mesh.shape), axis=1)
            op = CellOperator(self.cells, voxel, ke, self.n_nodes, device=device)
            self.solver = JacobiCG(op, rtol=rtol, name=f"matrix-free-jacobi-{device}")
        else:
            n = self.n_nodes
            self.K = scalar_laplacian(mesh, self.cell_index, self.cells, n, self.D)
            self.A = (self.K + sp.diags(self.mass / self.dt)).tocsr()
            self.solver = LinearSolver(self.A, method=solver, near_nullspace=np.ones((n, 1)), rtol=rtol)
        self.face_nodes = self._face_nodes(faces)
        self.face_area = np.asarray(faces["area"], float)

    def with_dt(self, dt: float) -> DiffusionProblem:
        """The same problem with another time step (its own matrix and preconditioner)."""
        mesh, kwargs = self._given
        return DiffusionProblem(mesh, dt=dt, **kwargs)

    def _node_key(self, nodes: np.ndarray) -> np.ndarray:
        """Position key of mesh nodes: the grid index (voxel meshes) or the original node (tet meshes)."""
        if isinstance(self.mesh, VoxelMesh):
            return self.mesh.node_grid[nodes]
        return nodes if self.mesh.node_origin is None else self.mesh.node_origin[nodes]

    def _face_nodes(self, faces) -> np.ndarray:
        """The diffusion nodes on the AP side of each AP|SE face, (nf, 4) or (nf, 3)."""
        if "nodes" in faces:  # triangles: look their (node, particle) keys up
            key = self._node_key(np.asarray(faces["nodes"])) * self._n_part + np.asarray(faces["particle"])[:, None]
            pos = np.clip(np.searchsorted(self._keys, key), 0, self._keys.size - 1)
            if not np.array_equal(self._keys[pos], key):
                raise ValueError("an AP|SE triangle has a node outside its particle: the faces are not of this mesh")
            return pos
        mesh = self.mesh
        cell_of = np.full(mesh.phases.size, -1, np.int64)
        cell_of[mesh.cell_voxel[self.cell_index]] = np.arange(self.cell_index.size)
        acell = cell_of[faces["ap_voxel"]]
        side = (np.asarray(faces["se_voxel"]) > np.asarray(faces["ap_voxel"])).astype(int)  # 1: SE on + side
        axis = np.asarray(faces["axis"])
        corners = mesh.element.nodes.astype(int)
        out = np.empty((acell.size, 4), np.int64)
        for ax in range(3):
            for s in (0, 1):
                sel = (axis == ax) & (side == s)
                local = np.flatnonzero(corners[:, ax] == s)
                out[sel] = self.cells[acell[sel]][:, local]
        return out

    def face_load(self, flux: np.ndarray) -> np.ndarray:
        """Nodal molar inflow (mol/s) of a molar flux density (mol/m^2/s, inward positive).

        ``flux`` is per face (nf,), each corner taking a k-th of the face's area, or per face
        corner (nf * k,), in the order of ``face_nodes.ravel()``.
        """
        nf, k = self.face_nodes.shape
        w = np.asarray(flux, float).reshape(nf, -1) * (self.face_area / k)[:, None]
        return np.bincount(self.face_nodes.ravel(), weights=np.broadcast_to(w, (nf, k)).ravel(),
                           minlength=self.n_nodes)

    def stress_assisted_load(self, c: np.ndarray, sigma_h_nodes: np.ndarray, coeff: float) -> np.ndarray:
        """Nodal rate ``int coeff * c grad(sigma_h) . grad N_a dV`` (mol/s) of the stress-assisted flux.

        ``coeff = D Omega / (R T)``; ``sigma_h_nodes`` on diffusion nodes (Pa).
        """
        na = self.cell_index.size
        dn = np.broadcast_to(self._dn, (na,) + self._dn.shape[1:])  # (na, q, n, 3)
        w = np.broadcast_to(self._w, (na, self._w.shape[1]))
        cq = c[self.cells] @ self._q_shape.T  # (na, q)
        gs = np.einsum("eb,eqbi->eqi", sigma_h_nodes[self.cells], dn)  # (na, q, 3)
        contrib = np.einsum("eq,eq,eqi,eqai->ea", w, cq, gs, dn) * coeff
        return np.bincount(self.cells.ravel(), weights=contrib.ravel(), minlength=self.n_nodes)

    def step(self, c: np.ndarray, inflow: np.ndarray) -> np.ndarray:
        """One backward-Euler step: ``(M/dt + K) c_new = M c / dt + inflow``."""
        return self.solver.solve(self.mass * c / self.dt + inflow, x0=c)

    def cell_mean(self, c: np.ndarray) -> np.ndarray:
        """Cell-mean value of a nodal field, (na,)."""
        return c[self.cells].mean(axis=1)

    def to_nodes(self, cell_values: np.ndarray) -> np.ndarray:
        """Volume-averaged projection of active-cell values to diffusion nodes."""
        k = self.cells.shape[1]
        v = self.cell_volume
        s = np.bincount(self.cells.ravel(), weights=np.repeat(cell_values * v, k), minlength=self.n_nodes)
        return s / np.bincount(self.cells.ravel(), weights=np.repeat(v, k), minlength=self.n_nodes)

    def total(self, c: np.ndarray) -> float:
        """Amount of Li, ``sum M c`` (mol)."""
        return float(self.mass @ c)

