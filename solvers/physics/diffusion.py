"""Li diffusion inside active particles on the voxel mesh (PHYSICS.md section 1).

``dc/dt = div(D grad c - (D Omega c / (R T)) grad sigma_h)`` in each particle,
backward Euler in time, lumped mass. Every particle is its own diffusion
domain: nodes shared by two touching particles are duplicated, so Li moves
between particles only through the electrolyte (the galvanostatic flux).
The flux enters through bonded AP|SE voxel faces; AP|void faces and debonded
faces carry none.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from solvers.fem.assembly import centroid_gradients, physical_gradients
from solvers.linalg import LinearSolver
from solvers.mesh.voxel import ACTIVE, VoxelMesh

log = logging.getLogger(__name__)

FARADAY = 96485.33212  # C/mol
GAS_CONSTANT = 8.314462618  # J/(mol K)


def scalar_matrices(element, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Element Laplacian ``int grad N_a . grad N_b dV`` (n, n) and lumped mass (n,) of one voxel."""
    pts, wts = element.quadrature
    dn = physical_gradients(element, pts, spacing)
    w = wts * float(np.prod(spacing))
    lap = np.einsum("q,qai,qbi->ab", w, dn, dn)
    mass = np.einsum("q,qa->a", w, element.shape(pts))
    return lap, mass


class DiffusionProblem:
    """Backward-Euler diffusion in the active cells of a voxel mesh.

    Parameters
    ----------
    mesh : VoxelMesh
        The mechanics mesh; its active cells are used.
    D : float
        Diffusivity, m^2/s.
    dt : float
        Time step, s (the matrix ``M/dt + K`` is built and preconditioned once).
    faces : dict
        AP|SE faces from :func:`solvers.fields.interface_faces` (``ap_voxel``,
        ``se_voxel``, ``axis``, ``area``).
    solver : {"auto", "direct", "amg"}
    rtol : float

    Attributes
    ----------
    n_nodes : int
        Diffusion nodes (grid nodes duplicated per particle).
    cells : (na, 8) int
        Diffusion node indices of each active cell.
    cell_index : (na,) int
        Index of each active cell in the mechanics mesh.
    node_particle : (n_nodes,) int
    mass : (n_nodes,) lumped nodal volumes, m^3
    face_nodes : (nf, 4) int
        Diffusion nodes of each AP|SE face.
    """

    def __init__(self, mesh: VoxelMesh, *, D: float, dt: float, faces: dict, solver: str = "auto",
                 rtol: float = 1e-10):
        self.mesh = mesh
        self.D = float(D)
        self.dt = float(dt)
        self.cell_index = np.flatnonzero(mesh.cell_phase == ACTIVE)
        part = mesh.cell_particle[self.cell_index].astype(np.int64)
        grid_nodes = mesh.node_grid[mesh.cells[self.cell_index]]  # (na, 8)
        key = grid_nodes * (int(part.max(initial=0)) + 1) + part[:, None]
        uniq, inv = np.unique(key, return_inverse=True)
        self.cells = inv.reshape(grid_nodes.shape)
        self.n_nodes = int(uniq.size)
        self.node_particle = (uniq % (int(part.max(initial=0)) + 1)).astype(np.int64)
        lap, m = scalar_matrices(mesh.element, mesh.spacing)
        self.mass = np.bincount(self.cells.ravel(), weights=np.tile(m, self.cells.shape[0]),
                                minlength=self.n_nodes)
        n = self.n_nodes
        rows = np.repeat(self.cells, 8, axis=1).ravel()
        cols = np.tile(self.cells, (1, 8)).ravel()
        vals = np.tile(lap.ravel(), self.cells.shape[0])
        self.K = sp.csr_matrix((vals * self.D, (rows, cols)), shape=(n, n))
        self.A = (self.K + sp.diags(self.mass / self.dt)).tocsr()
        self.solver = LinearSolver(self.A, method=solver, near_nullspace=np.ones((n, 1)), rtol=rtol)
        self._grad_c = centroid_gradients(mesh.element, mesh.spacing)
        self._sa_setup(mesh.element, mesh.spacing)
        self.face_nodes = self._face_nodes(faces)
        self.face_area = np.asarray(faces["area"], float)

    def _face_nodes(self, faces) -> np.ndarray:
        """The 4 diffusion nodes on the AP side of each AP|SE face."""
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

    def _sa_setup(self, element, spacing):
        pts, wts = element.quadrature
        self._q_shape = element.shape(pts)  # (q, 8)
        self._q_grad = physical_gradients(element, pts, spacing)  # (q, 8, 3)
        self._q_w = wts * float(np.prod(spacing))

    def face_load(self, flux: np.ndarray) -> np.ndarray:
        """Nodal molar inflow (mol/s) of a per-face molar flux density (mol/m^2/s, inward positive)."""
        w = np.repeat(np.asarray(flux, float) * self.face_area / 4.0, 4)
        return np.bincount(self.face_nodes.ravel(), weights=w, minlength=self.n_nodes)

    def stress_assisted_load(self, c: np.ndarray, sigma_h_nodes: np.ndarray, coeff: float) -> np.ndarray:
        """Nodal rate ``int coeff * c grad(sigma_h) . grad N_a dV`` (mol/s) of the stress-assisted flux.

        ``coeff = D Omega / (R T)``; ``sigma_h_nodes`` on diffusion nodes (Pa).
        """
        cc = c[self.cells]  # (na, 8)
        sh = sigma_h_nodes[self.cells]
        cq = cc @ self._q_shape.T  # (na, q)
        gs = np.einsum("eb,qbi->eqi", sh, self._q_grad)  # (na, q, 3)
        contrib = np.einsum("q,eq,eqi,qai->ea", self._q_w, cq, gs, self._q_grad) * coeff
        return np.bincount(self.cells.ravel(), weights=contrib.ravel(), minlength=self.n_nodes)

    def step(self, c: np.ndarray, inflow: np.ndarray) -> np.ndarray:
        """One backward-Euler step: ``(M/dt + K) c_new = M c / dt + inflow``."""
        return self.solver.solve(self.mass * c / self.dt + inflow, x0=c)

    def cell_mean(self, c: np.ndarray) -> np.ndarray:
        """Cell-mean value of a nodal field, (na,)."""
        return c[self.cells].mean(axis=1)

    def to_nodes(self, cell_values: np.ndarray) -> np.ndarray:
        """Volume-averaged projection of active-cell values to diffusion nodes."""
        s = np.bincount(self.cells.ravel(), weights=np.repeat(cell_values, 8), minlength=self.n_nodes)
        return s / np.bincount(self.cells.ravel(), minlength=self.n_nodes)

    def total(self, c: np.ndarray) -> float:
        """Amount of Li, ``sum M c`` (mol)."""
        return float(self.mass @ c)
