"""Mandel notation for symmetric tensors, and the strain of a voxel hex in it.

A symmetric 3x3 tensor ``t`` is the 6-vector
``(t00, t11, t22, sqrt2 t12, sqrt2 t02, sqrt2 t01)`` (axes z, y, x). The basis
is orthonormal, so ``a : b`` is the dot product of the vectors and a 4th-order
stiffness with both symmetries is a symmetric 6x6 matrix.
"""

from __future__ import annotations

import numpy as np

from solvers.fem.assembly import physical_gradients
from solvers.fem.elements import HEX8

SQRT2 = np.sqrt(2.0)
#: (i, j) of each Mandel component
PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
_WEIGHT = np.array([1.0, 1.0, 1.0, SQRT2, SQRT2, SQRT2])
IDENTITY = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])


def to_mandel(t: np.ndarray) -> np.ndarray:
    """(..., 3, 3) symmetric tensors -> (..., 6) Mandel vectors."""
    return np.stack([t[..., i, j] for i, j in PAIRS], axis=-1) * _WEIGHT


def from_mandel(v: np.ndarray) -> np.ndarray:
    """(..., 6) Mandel vectors -> (..., 3, 3) symmetric tensors."""
    v = np.asarray(v) / _WEIGHT
    t = np.empty(v.shape[:-1] + (3, 3))
    for k, (i, j) in enumerate(PAIRS):
        t[..., i, j] = v[..., k]
        t[..., j, i] = v[..., k]
    return t


def sym_outer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mandel vector of ``sym(a (x) b)`` for (..., 3) vectors."""
    t = 0.5 * (a[..., :, None] * b[..., None, :] + b[..., :, None] * a[..., None, :])
    return to_mandel(t)


def isotropic(lam: float, mu: float) -> np.ndarray:
    """(6, 6) isotropic stiffness ``lam I (x) I + 2 mu I_sym`` in Mandel notation (units of lam, mu)."""
    C = 2.0 * mu * np.eye(6)
    C[:3, :3] += lam
    return C


def hex_strain_matrix(spacing, xi) -> np.ndarray:
    """(6, 24) Mandel strain of a voxel hex at reference point ``xi`` (3,), dofs node-major (8 x 3).

    At ``xi = (0.5, 0.5, 0.5)`` it is the voxel's mean strain (trilinear
    gradients average to their centre value), 1/m.
    """
    dn = physical_gradients(HEX8, np.asarray(xi, float)[None], spacing)[0]  # (8, 3)
    B = np.zeros((6, 8, 3))
    for k, (i, j) in enumerate(PAIRS):
        if i == j:
            B[k, :, i] = dn[:, i]
        else:
            B[k, :, i] = dn[:, j] / SQRT2
            B[k, :, j] = dn[:, i] / SQRT2
    return B.reshape(6, 24)


def tangent_frame(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors completing unit normals ``n`` (..., 3) to right-handed orthonormal frames."""
    n = np.asarray(n, float)
    helper = np.where(np.abs(n[..., :1]) < 0.9, np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))
    t1 = np.cross(n, helper)
    t1 /= np.linalg.norm(t1, axis=-1, keepdims=True)
    return t1, np.cross(n, t1)
