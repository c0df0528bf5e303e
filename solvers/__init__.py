"""Meshes, finite elements, physics and linear algebra over numpy arrays.

Never imports ``segmentation`` or ``pipeline``. Lengths inside are SI (m),
moduli Pa, stresses Pa; arrays of phases and particle labels come in with an
explicit voxel spacing.
"""
