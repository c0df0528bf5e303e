"""Voxel-tet meshes: every solid voxel split into 6 tetrahedra (Kuhn subdivision).

All voxels use the same split along their (0,0,0)-(1,1,1) diagonal, so the two
triangles on a shared face match between neighbours and the mesh is conforming.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from solvers.fem.assembly import element_gradients
from solvers.fem.elements import TET4, TET10, TET10_EDGES, Element
from solvers.mesh.voxel import voxel_hex_mesh

# the 6 monotone paths from corner 0 to corner 6 of the HEX8 numbering (z, y, x offsets)
_HEX_INDEX = {tuple(c): i for i, c in enumerate(np.array(
    [[0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 0, 0], [1, 0, 1], [1, 1, 1], [1, 1, 0]]))}
_KUHN = []
for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
    p = [0, 0, 0]
    path = [_HEX_INDEX[tuple(p)]]
    for ax in perm:
        p[ax] = 1
        path.append(_HEX_INDEX[tuple(p)])
    _KUHN.append(path)
KUHN = np.array(_KUHN)  # (6, 4) local hex corners of each tetrahedron


@dataclass(frozen=True)
class TetMesh:
    """Linear tetrahedra with phase and particle per cell.

    Attributes
    ----------
    points : (nn, 3) node coordinates (z, y, x), metres
    cells : (ne, 4) node indices, positively oriented
    cell_phase : (ne,) uint8
    cell_particle : (ne,) int32
    cell_voxel : (ne,) int64, the voxel each tet came from (voxel-tet meshes)
    shape : (Z, Y, X) of the voxel grid
    spacing : (3,) voxel size, metres
    extent : (3,) box size, metres; the box is [0, extent] (voxel-tet: shape * spacing;
        conforming CGAL meshes run between the outer voxel centres: (shape - 1) * spacing, or
        (shape - 1/f) * spacing on an image upsampled f times)
    phases, particles : (Z, Y, X) the label image that was meshed (floating solid removed), so
        per-particle geometry and phase fractions read the same labels as on voxel meshes
    removed_voxels : int, solid voxels not face-connected to the main body (left out)
    kind : "voxel-tet" or "conforming-tet"
    node_origin : (nn,) int or None
        On a mesh whose AP|SE nodes were duplicated (cohesive interface), the
        original node of every node; None on a bonded mesh.
    quality : dict or None
        The quality report of :func:`solvers.mesh.conforming.mesh_quality` when the mesher made one.
    """

    points: np.ndarray
    cells: np.ndarray
    cell_phase: np.ndarray
    cell_particle: np.ndarray
    cell_voxel: np.ndarray
    shape: tuple
    spacing: np.ndarray
    extent: np.ndarray
    phases: np.ndarray
    particles: np.ndarray
    removed_voxels: int = 0
    kind: str = "voxel-tet"
    node_origin: np.ndarray | None = None
    quality: dict | None = None
    element: Element = TET4

    @property
    def n_nodes(self) -> int:
        return int(self.points.shape[0])

    @property
    def n_cells(self) -> int:
        return int(self.cells.shape[0])

    def cell_volumes(self) -> np.ndarray:
        """Signed volumes in (x, y, z) orientation (VTK: positive for valid cells), m^3 (straight edges)."""
        return _volumes(self.points[self.corners][..., ::-1])

    @property
    def corners(self) -> np.ndarray:
        """The 4 corner nodes of every cell, (ne, 4) (the cells themselves on linear meshes)."""
        return self.cells[:, :4]

    def gradient_tables(self, cells: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Shape-function gradients and quadrature weights of the cells (all, or those indexed).

        Returns
        -------
        dn : (m, q, n, 3) gradients, 1/m
        w : (m, q) quadrature weights times |det J|, m^3
        """
        return element_gradients(self.element, self.points, self.cells if cells is None else self.cells[cells])

    def linear(self) -> TetMesh:
        """The same cells as linear tetrahedra on the corner nodes (nodes keep their numbers)."""
        if self.element is TET4:
            return self
        return dataclasses.replace(self, cells=np.ascontiguousarray(self.corners), element=TET4)


def _volumes(x: np.ndarray) -> np.ndarray:
    d = x[:, 1:] - x[:, :1]
    return np.linalg.det(d) / 6.0


#: the corners of the face opposite each corner of a tetrahedron, and (quadratic) its mid-edge nodes
FACE_CORNERS = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
FACE_MIDS = np.array([[5, 9, 8], [6, 9, 7], [4, 8, 7], [4, 5, 6]])


def radius_ratio(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """3 r_in / r_circ of every tetrahedron (1 for a regular one)."""
    x = points[cells]
    vol = np.abs(_volumes(x))
    area = sum(0.5 * np.linalg.norm(np.cross(x[:, b] - x[:, a], x[:, c] - x[:, a]), axis=1)
               for a, b, c in FACE_CORNERS)
    r_in = 3 * vol / area
    a = x[:, 1] - x[:, 0]
    b = x[:, 2] - x[:, 0]
    c = x[:, 3] - x[:, 0]
    num = (np.einsum("ei,ei->e", a, a)[:, None] * np.cross(b, c) + np.einsum("ei,ei->e", b, b)[:, None]
           * np.cross(c, a) + np.einsum("ei,ei->e", c, c)[:, None] * np.cross(a, b))
    r_circ = np.linalg.norm(num, axis=1) / (12 * vol)
    return 3 * r_in / r_circ


def voxel_tet_mesh(phases, particles, spacing_m) -> TetMesh:
    """Split the meshed solid voxels of :func:`voxel_hex_mesh` into 6 tetrahedra each.

    Returns
    -------
    TetMesh with 6 cells per voxel, every cell of positive volume.
    """
    hexm = voxel_hex_mesh(phases, particles, spacing_m)
    tets = hexm.cells[:, KUHN].reshape(-1, 4)
    pts = hexm.points
    vol = _volumes(pts[tets][..., ::-1])  # orientation in (x, y, z), as VTK and meshio expect
    flip = vol < 0
    tets[flip] = tets[flip][:, [0, 2, 1, 3]]
    rep = np.repeat
    return TetMesh(points=pts, cells=tets, cell_phase=rep(hexm.cell_phase, 6),
                   cell_particle=rep(hexm.cell_particle, 6), cell_voxel=rep(hexm.cell_voxel, 6),
                   shape=hexm.shape, spacing=hexm.spacing, extent=np.asarray(hexm.shape) * hexm.spacing,
                   phases=hexm.phases, particles=hexm.particles, removed_voxels=hexm.removed_voxels)


def quadratic_tet_mesh(mesh: TetMesh) -> TetMesh:
    """The same tetrahedra with a node at the middle of every edge (:data:`TET10`, straight edges).

    Mid-edge nodes are numbered after the corner nodes, so node ``i < mesh.n_nodes`` is the same
    point in both meshes.
    """
    if mesh.element is TET10:
        return mesh
    edges = np.sort(mesh.cells[:, TET10_EDGES], axis=2).reshape(-1, 2)  # (6 ne, 2)
    uniq, inv = np.unique(edges, axis=0, return_inverse=True)
    mid = 0.5 * (mesh.points[uniq[:, 0]] + mesh.points[uniq[:, 1]])
    cells = np.concatenate([mesh.cells, mesh.n_nodes + inv.reshape(-1, 6)], axis=1)
    origin = mesh.node_origin
    if origin is not None:
        origin = np.concatenate([origin, mesh.n_nodes + np.arange(len(uniq))])
    return dataclasses.replace(mesh, points=np.concatenate([mesh.points, mid]), cells=cells, element=TET10,
                               node_origin=origin)


def cell_triangles(corners: np.ndarray):
    """The 4 faces of every tetrahedron, matched between cells.

    Parameters
    ----------
    corners : (ne, 4) int, corner nodes

    Returns
    -------
    tri : (4 ne, 3) sorted corner nodes of each face (cell-major)
    owner : (4 ne,) the cell of each face
    inverse : (4 ne,) index of each face among the distinct faces
    counts : (n_distinct,) cells sharing each distinct face (1: boundary, 2: interior)
    """
    tri = np.sort(corners[:, FACE_CORNERS].reshape(-1, 3), axis=1)
    _, inv, counts = np.unique(tri, axis=0, return_inverse=True, return_counts=True)
    return tri, np.repeat(np.arange(corners.shape[0]), 4), inv.ravel(), counts


def triangle_cells(corners: np.ndarray):
    """Every distinct face of a tet mesh and the one or two cells that share it.

    Parameters
    ----------
    corners : (ne, 4) int, corner nodes

    Returns
    -------
    tri : (nd, 3) sorted corner nodes of each distinct face
    cells : (nd, 2) int, the cells on either side (the second is -1 on the boundary)
    """
    tri, owner, inv, counts = cell_triangles(corners)
    order = np.argsort(inv, kind="stable")  # the entries of each distinct face, next to each other
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    two = counts == 2
    cells = np.full((counts.size, 2), -1, np.int64)
    cells[:, 0] = owner[order[starts]]
    cells[two, 1] = owner[order[starts[two] + 1]]
    return tri[order[starts]], cells


#: a boundary triangle belongs to a box face when its outward normal is within 60 degrees of the face's
#: and its corners lie within this many voxels of the face's plane (CGAL rounds the box edges by ~0.5 voxel)
BOX_FACE_MIN_COS = 0.5
BOX_FACE_TOL_VOXELS = 0.75


def box_boundary(mesh: TetMesh, min_cos: float = BOX_FACE_MIN_COS,
                 tol_voxels: float = BOX_FACE_TOL_VOXELS) -> dict[tuple[int, int], tuple]:
    """The boundary triangles of a tet mesh that make up each face of its box.

    Conforming (CGAL) meshes do not keep the box's edges and corners sharp: near them the outer
    surface is rounded over about half a voxel, so a test on coordinates alone misses those
    nodes. A boundary triangle (a face of one cell only; AP|SE faces of a split mesh pair up
    through ``node_origin``) belongs to box face (axis, side) when its outward normal points
    within 60 degrees (``min_cos``) of that face's outward normal and its corners lie within
    ``tol_voxels`` of its plane.

    Returns
    -------
    dict (axis, side) -> (nodes (m, 3) or (m, 6): corner nodes, then on quadratic tets the mid-edge
    nodes; area (m,) m^2; normal (m, 3) outward unit normals); axis 0, 1, 2 = z, y, x; side 0 = low
    (coordinate 0), 1 = high (coordinate ``extent``).
    """
    corners = mesh.cells[:, :4]
    key = corners if mesh.node_origin is None else mesh.node_origin[corners]
    _, owner, inv, counts = cell_triangles(key)
    on_boundary = counts[inv] == 1
    owner = owner[on_boundary]
    local = FACE_CORNERS if mesh.element.n_nodes == 4 else np.concatenate([FACE_CORNERS, FACE_MIDS], axis=1)
    tris = mesh.cells[:, local].reshape(-1, local.shape[1])[on_boundary]
    p = mesh.points[tris[:, :3]]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    area = 0.5 * np.linalg.norm(n, axis=1)
    n /= np.maximum(2 * area, 1e-300)[:, None]
    outward = p.mean(axis=1) - mesh.points[corners[owner]].mean(axis=1)
    n *= np.sign(np.einsum("fi,fi->f", n, outward))[:, None]
    tol = tol_voxels * np.asarray(mesh.spacing, float)
    extent = np.asarray(mesh.extent, float)
    out = {}
    for ax in range(3):
        for side, (plane, sign) in enumerate(((0.0, -1.0), (extent[ax], 1.0))):
            sel = (sign * n[:, ax] >= min_cos) & np.all(np.abs(p[:, :, ax] - plane) <= tol[ax], axis=1)
            out[ax, side] = (tris[sel], area[sel], n[sel])
    return out


def box_face_nodes(mesh: TetMesh) -> tuple[np.ndarray, np.ndarray]:
    """Nodes on the low and high box faces of a tet mesh, two (nn, 3) bool arrays (axes z, y, x).

    Voxel-tets: coordinates on the planes (exact). Conforming meshes: the nodes (corners and, on
    quadratic tets, mid-edge nodes) of the :func:`box_boundary` triangles.
    """
    lo = np.zeros((mesh.n_nodes, 3), bool)
    hi = np.zeros((mesh.n_nodes, 3), bool)
    if mesh.kind == "voxel-tet":
        tol = 1e-6 * np.asarray(mesh.spacing)
        lo[:] = mesh.points <= tol
        hi[:] = mesh.points >= np.asarray(mesh.extent) - tol
        return lo, hi
    for (ax, side), (nodes, _, _) in box_boundary(mesh).items():
        (hi if side else lo)[nodes.ravel(), ax] = True
    return lo, hi
