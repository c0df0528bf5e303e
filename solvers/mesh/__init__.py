"""Meshes of segmented volumes."""

from solvers.mesh.voxel import VoxelMesh, coarsen_labels, voxel_hex_mesh

__all__ = ["VoxelMesh", "coarsen_labels", "voxel_hex_mesh"]
