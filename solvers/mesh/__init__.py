"""Meshes of segmented volumes."""

from solvers.mesh.tet import TetMesh, quadratic_tet_mesh, voxel_tet_mesh
from solvers.mesh.voxel import VoxelMesh, coarsen_labels, voxel_hex_mesh

__all__ = ["TetMesh", "VoxelMesh", "coarsen_labels", "quadratic_tet_mesh", "voxel_hex_mesh", "voxel_tet_mesh"]
