"""Ionic conduction in the solid electrolyte (PHYSICS.md section 5), on any mesh kind.

``div(kappa grad phi_e) = 0`` on the electrolyte cells (trilinear hexes or
linear tets), with ``phi_e = 0`` on the separator face (z = top), insulating
void faces, box sides and current collector, and the interface current of
each AP|SE face entering at the face's corners (nodal quadrature). Electrolyte that does
not reach the separator carries no steady current: its nodes are left out,
and its faces are reported as having no ionic path.

The conduction matrix is assembled once; the kinetics add a face
conductance ``B diag(g) B^T`` that changes every Newton iteration. CG solves
it, preconditioned by a factorisation (small problems) or an AMG hierarchy
(pyamg smoothed aggregation) of an earlier such matrix, renewed when the
iterations grow past three times their first count.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse.csgraph import connected_components

from solvers.aggregation import BlockAggregation
from solvers.fem.assembly import scalar_laplacian
from solvers.linalg import DIRECT_LIMIT, SolveStats, checked_solve, flexible_cg
from solvers.mesh.voxel import ELECTROLYTE, VoxelMesh
from tomomech.errors import ConfigError

log = logging.getLogger(__name__)


class ElectrolyteProblem:
    """The electrolyte potential's conduction problem and its coupling to the AP|SE faces.

    Parameters
    ----------
    mesh : VoxelMesh or TetMesh
    faces : dict
        AP|SE faces (:func:`solvers.fields.interface_faces` or :func:`~solvers.fields.tet_interface_faces`).
    kappa_S_m : float
        Ionic conductivity, S/m.
    rtol : float
        Relative residual of every linear solve.

    Attributes
    ----------
    n_free : int
        Electrolyte nodes with an unknown potential (connected to the separator, not on it).
    free_nodes : (n_free,) int
        Their mesh node indices.
    separator_nodes : (ns,) int
        Mesh nodes of the electrolyte on the separator face (potential 0).
    face_connected : (nf,) bool
        Faces whose electrolyte nodes reach the separator.
    point_area, point_connected : (nf * k,)
        The interface points (face corners, ``k`` per face, point ``f * k + a`` is corner ``a``
        of face ``f``): a ``k``-th of the face's area each, and whether its node reaches the separator.
    stats : SolveStats
    """

    def __init__(self, mesh, faces: dict, *, kappa_S_m: float, rtol: float = 1e-10, maxiter: int = 500):
        if hasattr(mesh, "linear"):  # quadratic tets: the potential is linear on their corners
            mesh = mesh.linear()
        self.kappa = float(kappa_S_m)
        self.rtol, self.maxiter = float(rtol), int(maxiter)
        cell_index = np.flatnonzero(mesh.cell_phase == ELECTROLYTE)
        if cell_index.size == 0:
            raise ConfigError("the sample has no solid electrolyte: Butler-Volmer kinetics need an ionic path")
        nodes, local = np.unique(mesh.cells[cell_index], return_inverse=True)
        local = local.reshape(cell_index.size, -1)
        K = scalar_laplacian(mesh, cell_index, local, nodes.size, self.kappa)
        top = _top(mesh, nodes)
        if not top.any():
            raise ConfigError("no electrolyte touches the separator face (z = top): no ionic path, so no "
                              "Butler-Volmer current; check the crop's orientation (z is the through-thickness "
                              "axis, the current collector at z = 0)")
        _, comp = connected_components(K, directed=False)
        reach = np.isin(comp, np.unique(comp[top]))
        free = reach & ~top
        self.free_nodes = nodes[free]
        self.separator_nodes = nodes[top]
        self.n_free = int(free.sum())
        self.K = K[free][:, free].tocsr()
        fn = _face_nodes(mesh, faces)  # (nf, k) mesh nodes
        pos = np.searchsorted(nodes, fn)
        ok = (pos < nodes.size) & (nodes[np.minimum(pos, nodes.size - 1)] == fn)
        if not ok.all():
            raise ValueError("an AP|SE face has a node outside the electrolyte: the faces are not of this mesh")
        # interface points: the corners of every face, each with its share of the face's area (nodal
        # quadrature of the kinetics, as the lumped mass of the diffusion); point f * k + a is corner a of face f
        nf, k = fn.shape
        self.point_connected = reach[pos].ravel()
        self.face_connected = self.point_connected.reshape(nf, k).all(axis=1)
        col = np.full(nodes.size, -1, np.int64)
        col[free] = np.arange(self.n_free)
        c = col[pos].ravel()
        keep = c >= 0  # B: point -> its free node (one entry per column; none on the separator or cut off)
        self.B = sp.csr_matrix((np.ones(int(keep.sum())), (c[keep], np.flatnonzero(keep))), shape=(self.n_free, nf * k))
        self.point_area = np.repeat(np.asarray(faces["area"], float) / k, k)
        self.corners = k
        # voxel meshes: grid positions of the free nodes, for the block-aggregation multigrid
        self.node_grid = (np.stack([ix[self.free_nodes] for ix in mesh.node_index], axis=1)
                          if isinstance(mesh, VoxelMesh) else None)
        method = ("cg-lu" if self.n_free <= DIRECT_LIMIT else
                  "fcg-block-aggregation" if self.node_grid is not None else "cg-amg-smoothed")
        self.stats = SolveStats(method)
        self._M = None
        self._first_its, self._renew = None, False
        log.info("electrolyte: %d free nodes, %d nodes without a path to the separator, %d of %d faces connected",
                 self.n_free, int((~reach).sum()), int(self.face_connected.sum()), nf)

    def summary(self) -> dict:
        """What summary.json reports: the solver statistics, nodes and faces without an ionic path."""
        return {**self.stats.as_dict(), "nodes": self.n_free,
                "faces_without_ionic_path": int((~self.face_connected).sum())}

    def point_potential(self, phi: np.ndarray) -> np.ndarray:
        """Electrolyte potential at every interface point, (nf * k,) V (separator nodes are at 0)."""
        return self.B.T @ phi

    def points_to_nodes(self, v: np.ndarray) -> np.ndarray:
        """Per-point values (A) summed on their free nodes, (n_free,)."""
        return self.B @ v

    def conduction(self, phi: np.ndarray) -> np.ndarray:
        """Net current leaving each free node by conduction, (n_free,) A."""
        return self.K @ phi

    def matrix(self, g: np.ndarray) -> sp.csr_matrix:
        """``K + B diag(g) B^T``: conduction plus the points' linearised kinetic conductance ``g`` (S).

        Each point sits on one node, so ``B diag(g) B^T`` is the diagonal of the nodes' summed ``g``.
        """
        return (self.K + sp.diags(self.B @ g)).tocsr()

    def solve(self, b: np.ndarray, g: np.ndarray, rtol: float | None = None,
              x0: np.ndarray | None = None) -> np.ndarray:
        """Solve ``(K + B diag(g) B^T) x = b`` for one right-hand side (n_free,) or several (n_free, m).

        Flexible CG preconditioned by a factorisation (small problems), the block-aggregation
        K-cycle (voxel meshes) or a smoothed-aggregation cycle (tets) of an earlier matrix, renewed
        when CG needs three times the iterations it first took.
        """
        A = self.matrix(g)
        rtol = self.rtol if rtol is None else float(rtol)
        if self._M is None or self._renew:
            self._setup(A)
        cols = []
        rhs = b.reshape(b.shape[0], -1)
        starts = [None] * rhs.shape[1] if x0 is None else list(x0.reshape(rhs.shape).T)
        for col, start in zip(rhs.T, starts):
            cols.append(checked_solve(self.stats, lambda v: A @ v, col, rtol,
                                      lambda c=col, s=start: flexible_cg(lambda v: A @ v, c, self._M, x0=s, rtol=rtol,
                                                                         maxiter=self.maxiter), _HINT))
            if start is not None:  # a warm start says nothing about the preconditioner
                continue
            its = self.stats.iterations[-1]
            if self._first_its is None:
                self._first_its = max(its, 2)
            elif its > 3 * self._first_its:
                self._renew = True  # the face conductances moved far from the preconditioner's
        return np.stack(cols, axis=1) if b.ndim == 2 else cols[0]

    def _setup(self, A) -> None:
        t0 = time.perf_counter()
        if self.n_free <= DIRECT_LIMIT:
            self._M = spla.splu(A.tocsc()).solve
        elif self.node_grid is not None:  # a K-cycle is not a fixed linear map: hence flexible CG for all
            self._M = BlockAggregation(A, self.node_grid).cycle
        else:
            import pyamg

            ml = pyamg.smoothed_aggregation_solver(A, max_coarse=300, coarse_solver="splu")
            self._M = ml.aspreconditioner(cycle="V").matvec
        self._first_its, self._renew = None, False
        self.stats.setup_s += time.perf_counter() - t0


_HINT = "the electrolyte conduction problem is ill-posed: check kappa_S_m and the electrolyte's connectivity"


def _top(mesh, nodes: np.ndarray) -> np.ndarray:
    """Which of ``nodes`` lie on the separator face (z = top of the box)."""
    if isinstance(mesh, VoxelMesh):
        return mesh.node_index[0][nodes] == mesh.shape[0]
    z = mesh.points[:, 0]
    return np.isclose(z[nodes], z.max(), rtol=0.0, atol=1e-6 * float(np.min(mesh.spacing)))


def _face_nodes(mesh, faces: dict) -> np.ndarray:
    """Mesh nodes of each AP|SE face, on the electrolyte side, (nf, 4) or (nf, 3)."""
    if "nodes" in faces:
        return np.asarray(faces["nodes"])
    se = mesh.voxel_cell[np.asarray(faces["se_voxel"])]
    axis = np.asarray(faces["axis"])
    side = (np.asarray(faces["se_voxel"]) > np.asarray(faces["ap_voxel"])).astype(int)  # 1: SE on the + side
    corners = mesh.element.nodes.astype(int)
    out = np.empty((se.size, 4), np.int64)
    for ax in range(3):
        for s in (0, 1):
            sel = (axis == ax) & (side == s)
            out[sel] = mesh.cells[se[sel]][:, np.flatnonzero(corners[:, ax] == 1 - s)]
    return out
