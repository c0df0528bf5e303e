"""Voxel hexahedral meshes: one trilinear hex per solid voxel."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from solvers.fem.assembly import physical_gradients
from solvers.fem.elements import HEX8, Element
from tomomech.errors import MeshError

log = logging.getLogger(__name__)

VOID, ELECTROLYTE, ACTIVE = 0, 1, 2  # phase codes (segmentation.Phase), repeated: no import


@dataclass(frozen=True)
class VoxelMesh:
    """A hexahedral mesh on a regular voxel grid.

    Attributes
    ----------
    phases : (Z, Y, X) uint8
        Phase of every voxel of the meshed grid; voxels removed as floating
        solid are void here.
    particles : (Z, Y, X) int32
        Particle label of every voxel (0 outside particles).
    spacing : (3,) float
        Voxel size (z, y, x) in metres.
    cells : (ne, 8) int64
        Node indices of each hex in :data:`HEX8` order.
    cell_voxel : (ne,) int64
        Flat index of each cell's voxel in ``phases``.
    node_grid : (nn,) int64
        Flat index of each node in the (Z+1, Y+1, X+1) node grid.
    removed_voxels : int
        Solid voxels not face-connected to the main solid body (they cannot
        be held by the box constraints and are left out of the solve).
    """

    phases: np.ndarray
    particles: np.ndarray
    spacing: np.ndarray
    cells: np.ndarray
    cell_voxel: np.ndarray
    node_grid: np.ndarray
    removed_voxels: int = 0
    element: Element = field(default=HEX8)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.phases.shape)

    @property
    def voxel_cell(self) -> np.ndarray:
        """(Z * Y * X,) int64: the cell of every voxel of ``phases`` (flat), -1 where there is none."""
        out = np.full(self.phases.size, -1, np.int64)
        out[self.cell_voxel] = np.arange(self.cell_voxel.size)
        return out

    @property
    def n_nodes(self) -> int:
        return int(self.node_grid.size)

    @property
    def n_cells(self) -> int:
        return int(self.cells.shape[0])

    @property
    def cell_phase(self) -> np.ndarray:
        return self.phases.ravel()[self.cell_voxel]

    @property
    def cell_particle(self) -> np.ndarray:
        return self.particles.ravel()[self.cell_voxel]

    @property
    def node_index(self) -> np.ndarray:
        """(3, nn) integer grid coordinates (z, y, x) of each node."""
        gz, gy, gx = (s + 1 for s in self.shape)
        return np.stack(np.unravel_index(self.node_grid, (gz, gy, gx)))

    @property
    def points(self) -> np.ndarray:
        """(nn, 3) node coordinates (z, y, x) in metres."""
        return self.node_index.T * self.spacing[None, :]

    @property
    def cell_volume(self) -> float:
        return float(np.prod(self.spacing))

    def cell_volumes(self) -> np.ndarray:
        """Volume of every cell, (ne,) in m^3 (all alike on a voxel grid)."""
        return np.full(self.n_cells, self.cell_volume)

    def gradient_tables(self, cells: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Shape-function gradients and quadrature weights, one table shared by every voxel.

        Returns
        -------
        dn : (1, q, 8, 3) gradients, 1/m
        w : (1, q) quadrature weights times the voxel volume, m^3
        """
        pts, wts = self.element.quadrature
        return physical_gradients(self.element, pts, self.spacing)[None], (wts * self.cell_volume)[None]


def nodes_of(cells: np.ndarray) -> np.ndarray:
    """(Z+1, Y+1, X+1) bool: the grid nodes that are a corner of at least one True voxel."""
    Z, Y, X = cells.shape
    on = np.zeros((Z + 1, Y + 1, X + 1), bool)
    for dz, dy, dx in HEX8.nodes.astype(int):
        on[dz:dz + Z, dy:dy + Y, dx:dx + X] |= cells
    return on


def coarsen_labels(phases: np.ndarray, particles: np.ndarray, block: int):
    """Merge ``block``^3 voxels into one, by phase majority.

    The trailing voxels that do not fill a block are cropped. A coarse voxel
    takes the most frequent phase of its block (ties go to the higher code,
    active over electrolyte over void) and, if active, the largest particle
    label present in the block.

    Returns
    -------
    phases : (Z//b, Y//b, X//b) uint8
    particles : (Z//b, Y//b, X//b) int32
    """
    b = int(block)
    if b <= 1:
        return np.asarray(phases, np.uint8), np.asarray(particles, np.int32)
    z, y, x = (s // b for s in phases.shape)
    if min(z, y, x) < 2:
        raise MeshError(f"mesh.coarsen = {b} leaves fewer than 2 voxels along an axis; lower it")

    def blocks(a):
        a = a[: z * b, : y * b, : x * b]
        return a.reshape(z, b, y, b, x, b).transpose(0, 2, 4, 1, 3, 5).reshape(z, y, x, -1)

    pb = blocks(np.asarray(phases))
    counts = np.stack([(pb == k).sum(-1) for k in (VOID, ELECTROLYTE, ACTIVE)], axis=-1)
    ph = (2 - np.argmax(counts[..., ::-1], axis=-1)).astype(np.uint8)
    lab = blocks(np.where(np.asarray(phases) == ACTIVE, particles, 0)).max(-1).astype(np.int32)
    lab[ph != ACTIVE] = 0
    ph[(ph == ACTIVE) & (lab == 0)] = ELECTROLYTE  # cannot happen, kept for safety of labels
    return ph, lab


def solid_body(phases: np.ndarray, particles: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The largest face-connected solid body of a phase image; the rest becomes void.

    Solid voxels that touch the main body by an edge or a corner only, or
    float in void, would be mechanisms (free rigid motions) in any mesh.

    Parameters
    ----------
    phases : (Z, Y, X) uint8, codes 0 void, 1 electrolyte, 2 active
    particles : (Z, Y, X) int32

    Returns
    -------
    phases, particles : the labels with the removed solid set to void / 0
    removed : int, solid voxels removed

    Raises
    ------
    MeshError
        Too small a volume, or no solid. (Whether the box conditions hold the
        body is checked where they are set: :func:`solvers.physics.elasticity.box_constraints`.)
    """
    phases = np.asarray(phases, np.uint8)
    particles = np.asarray(particles, np.int32)
    if phases.ndim != 3 or min(phases.shape) < 2:
        raise MeshError(f"volume of shape {phases.shape} is too small to mesh: need at least 2 voxels per axis")
    if phases.shape != particles.shape:
        raise MeshError(f"phases {phases.shape} and particles {particles.shape} differ in shape")
    solid = phases != VOID
    comps, n = ndi.label(solid)
    if n == 0:
        raise MeshError("the volume is all void: nothing to mesh")
    sizes = np.bincount(comps.ravel())
    sizes[0] = 0
    main = comps == int(np.argmax(sizes))
    removed = int(solid.sum() - main.sum())
    if removed:
        log.warning("%d solid voxels are not face-connected to the main body; left out of the solve",
                    removed)
    kept_ph = np.where(main, phases, VOID).astype(np.uint8)
    kept_pa = np.where(main & (phases == ACTIVE), particles, 0).astype(np.int32)

    return kept_ph, kept_pa, removed


def voxel_hex_mesh(phases: np.ndarray, particles: np.ndarray, spacing_m) -> VoxelMesh:
    """Mesh the solid voxels of a phase image with trilinear hexahedra.

    Only the largest face-connected solid body is meshed: solid voxels that
    touch it by an edge or a corner only, or float in void, would be
    mechanisms (free rigid motions) and are reported in ``removed_voxels``.

    Parameters
    ----------
    phases : (Z, Y, X) uint8, codes 0 void, 1 electrolyte, 2 active
    particles : (Z, Y, X) int32
    spacing_m : 3 floats, voxel size (z, y, x) in metres

    Returns
    -------
    VoxelMesh

    Raises
    ------
    MeshError
        Too small a volume, or no solid.
    """
    kept_ph, kept_pa, removed = solid_body(phases, particles)
    main = kept_ph != VOID

    Z, Y, X = kept_ph.shape
    node_on = nodes_of(main)
    corners = HEX8.nodes.astype(int)
    node_id = np.full(node_on.shape, -1, np.int64)
    node_id[node_on] = np.arange(int(node_on.sum()))
    cz, cy, cx = np.nonzero(main)
    cells = np.stack([node_id[cz + dz, cy + dy, cx + dx] for dz, dy, dx in corners], axis=1)
    return VoxelMesh(
        phases=kept_ph,
        particles=kept_pa,
        spacing=np.asarray(spacing_m, float),
        cells=cells,
        cell_voxel=np.ravel_multi_index((cz, cy, cx), (Z, Y, X)),
        node_grid=np.flatnonzero(node_on),
        removed_voxels=removed,
    )
