"""Where the node-pair interface lives: duplicated AP|SE nodes, the faces' integration points, debonded patches."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from solvers.mesh.voxel import ACTIVE, ELECTROLYTE, VoxelMesh
from tomomech.errors import MeshError

#: floor of |n . e_axis| in the projected area of a staircase face (faces almost along the normal)
MIN_COS = 0.05


@dataclass(frozen=True)
class CohesiveInterface:
    """Cohesive interface of a mesh whose AP|SE nodes were duplicated.

    One integration point on every corner of every AP|SE face (face-major
    order): four on a voxel face, three on a triangle.

    Attributes
    ----------
    pair_se, pair_ap : (npair,) int
        The electrolyte-side and active-side node of each duplicated node.
    face_pairs : (nf, k) int
        Node pair of each face corner (= of each integration point), k = 4 or 3.
    point_area : (npt,) float, m^2
        1/k of the face area projected normal to the smoothed normal.
    point_normal : (npt, 3) unit normals from the particle into the electrolyte
    """

    pair_se: np.ndarray
    pair_ap: np.ndarray
    face_pairs: np.ndarray
    point_area: np.ndarray
    point_normal: np.ndarray

    @property
    def n_points(self) -> int:
        return int(self.face_pairs.size)

    @property
    def point_pair(self) -> np.ndarray:
        return self.face_pairs.ravel()

    @property
    def pair_selection(self) -> sp.csr_matrix:
        """(npt, npair) 0/1 matrix taking pair values to their integration points."""
        npt, npair = self.n_points, self.pair_se.size
        return sp.csr_matrix((np.ones(npt), (np.arange(npt), self.point_pair)), shape=(npt, npair))

    @property
    def points_per_face(self) -> int:
        return int(self.face_pairs.shape[1])

    def face_mean(self, point_values: np.ndarray) -> np.ndarray:
        """Mean over the integration points of every face, (nf,)."""
        return np.asarray(point_values, float).reshape(self.n_faces, self.points_per_face).mean(axis=1)

    @property
    def n_faces(self) -> int:
        return int(self.face_pairs.shape[0])

    @property
    def face_area(self) -> np.ndarray:
        """Projected area of every face (the sum of its points), (nf,) in m^2."""
        return self.point_area.reshape(self.n_faces, self.points_per_face).sum(axis=1)


#: the earlier name, when only voxel faces existed


#: the earlier name, when only voxel faces existed
VoxelInterface = CohesiveInterface


class AreaFractions:
    """Mixin of both cohesive problems: shares of the AP|SE area damaged and debonded.

    Needs ``face_damage()`` (nf,) and ``interface.face_area`` (nf,) on the problem.
    """

    def area_fractions(self, face_damage: np.ndarray | None = None) -> tuple[float, float]:
        """Shares of the AP|SE area on damaged faces (d > 0) and on debonded faces (d = 1).

        ``face_damage`` (nf,) defaults to ``face_damage()`` of the committed history.
        """
        fd = self.face_damage() if face_damage is None else face_damage
        area = self.interface.face_area
        return float(area[fd > 0].sum() / area.sum()), float(area[fd >= 1].sum() / area.sum())


def split_interface(mesh, faces: Mapping) -> tuple:
    """Duplicate the nodes shared by active and electrolyte cells.

    Parameters
    ----------
    mesh : VoxelMesh or TetMesh (bonded: nodes shared by all cells)
    faces : AP|SE faces of :func:`solvers.fields.interface_faces` (voxel meshes: ``ap_voxel``,
        ``se_voxel``, ``axis``, ``area``, ``normal``) or :func:`solvers.fields.tet_interface_faces`
        (tetrahedra: ``nodes``, ``area``, ``normal``)

    Returns
    -------
    split : VoxelMesh or TetMesh
        Same cells; active cells use the copies. A voxel mesh's ``node_grid``
        (a tet mesh's ``node_origin``) repeats the original of a duplicated
        node, so ``points``, box faces and diffusion nodes still work.
    ap_node : (nn,) int
        Node of ``split`` that the active cells use for every node of ``mesh``.
    interface : CohesiveInterface
    """
    phase = mesh.cell_phase
    on_ap = np.zeros(mesh.n_nodes, bool)
    on_se = np.zeros(mesh.n_nodes, bool)
    on_ap[mesh.cells[phase == ACTIVE].ravel()] = True
    on_se[mesh.cells[phase == ELECTROLYTE].ravel()] = True
    dup = np.flatnonzero(on_ap & on_se)
    ap_node = np.arange(mesh.n_nodes)
    ap_node[dup] = mesh.n_nodes + np.arange(dup.size)
    cells = np.where((phase == ACTIVE)[:, None], ap_node[mesh.cells], mesh.cells)
    pair_of = np.full(mesh.n_nodes, -1, np.int64)
    pair_of[dup] = np.arange(dup.size)
    normal = np.asarray(faces["normal"], float)
    nf = normal.shape[0]
    if isinstance(mesh, VoxelMesh):
        split = dataclasses.replace(mesh, cells=cells,
                                    node_grid=np.concatenate([mesh.node_grid, mesh.node_grid[dup]]))
        face_nodes = _voxel_face_nodes(mesh, faces)
        axis = np.asarray(faces["axis"])
        cos = np.abs(normal[np.arange(nf), axis])
    else:
        origin = np.arange(mesh.n_nodes) if mesh.node_origin is None else mesh.node_origin
        split = dataclasses.replace(mesh, cells=cells, points=np.concatenate([mesh.points, mesh.points[dup]]),
                                    node_origin=np.concatenate([origin, origin[dup]]))
        face_nodes = np.asarray(faces["nodes"], np.int64)
        p = mesh.points[face_nodes]
        geo = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
        cos = np.abs(np.einsum("fi,fi->f", geo, normal)) / np.linalg.norm(geo, axis=1)
    face_pairs = pair_of[face_nodes]
    if (face_pairs < 0).any():
        raise MeshError("an AP|SE face has a corner that is not shared by both phases; the faces do not "
                        "belong to this mesh")
    # a staircase face stands in for the part of the smooth surface it projects onto: its area
    # normal to the smoothed normal is area * |n . n_face| (the sum over a voxelised sphere is its
    # true surface, where the face areas overcount it by about 1.5x and would spread the traction);
    # conforming triangles keep their own normals, so cos = 1 there
    k = face_nodes.shape[1]
    area = np.repeat(np.asarray(faces["area"], float) * np.maximum(cos, MIN_COS) / k, k)
    iface = CohesiveInterface(pair_se=dup, pair_ap=ap_node[dup], face_pairs=face_pairs, point_area=area,
                              point_normal=np.repeat(normal, k, axis=0))
    return split, ap_node, iface


def _voxel_face_nodes(mesh: VoxelMesh, faces: Mapping) -> np.ndarray:
    """The four mesh nodes of every AP|SE voxel face: corners of the AP voxel on the SE side, (nf, 4)."""
    node_id = np.full(np.prod([s + 1 for s in mesh.shape]), -1, np.int64)
    node_id[mesh.node_grid] = np.arange(mesh.n_nodes)
    ap_vox = np.asarray(faces["ap_voxel"])
    se_vox = np.asarray(faces["se_voxel"])
    axis = np.asarray(faces["axis"])
    ijk = np.stack(np.unravel_index(ap_vox, mesh.shape), axis=1)
    side = (se_vox > ap_vox).astype(int)
    corners = mesh.element.nodes.astype(int)
    gshape = tuple(s + 1 for s in mesh.shape)
    face_nodes = np.empty((ap_vox.size, 4), np.int64)
    for ax in range(3):
        for s in (0, 1):
            sel = np.flatnonzero((axis == ax) & (side == s))
            local = corners[corners[:, ax] == s]  # (4, 3)
            g = ijk[sel][:, None, :] + local[None]
            face_nodes[sel] = node_id[np.ravel_multi_index(tuple(g.transpose(2, 0, 1)), gshape)]
    return face_nodes


def debonded_patches(face_pairs: np.ndarray, debonded: np.ndarray, particle: np.ndarray, area: np.ndarray,
                     n_particles: int) -> np.ndarray:
    """Area of the largest connected debonded patch of every particle, (n_particles,).

    Faces are connected when they share a corner node pair.

    Parameters
    ----------
    face_pairs : (nf, 4) or (nf, 3) int, node pair of every face corner
    debonded : (nf,) bool
    particle : (nf,) int
    area : (nf,) float
    """
    out = np.zeros(n_particles)
    f = np.flatnonzero(debonded)
    if f.size == 0:
        return out
    nodes = face_pairs[f]
    _, nidx = np.unique(nodes.ravel(), return_inverse=True)
    nidx = nidx.reshape(nodes.shape)
    nn = int(nidx.max()) + 1
    m = f.size
    k = nodes.shape[1]
    rows = np.repeat(np.arange(m), k)
    g = sp.csr_matrix((np.ones(k * m), (rows, m + nidx.ravel())), shape=(m + nn, m + nn))
    _, comp = csgraph.connected_components(g, directed=False)
    comp_f = comp[:m]
    # a patch belongs to one particle: split components by particle
    key = comp_f.astype(np.int64) * (n_particles + 1) + particle[f]
    uk, inv = np.unique(key, return_inverse=True)
    patch_area = np.bincount(inv, weights=area[f])
    np.maximum.at(out, uk % (n_particles + 1), patch_area)
    return out
