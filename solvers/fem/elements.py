"""Reference elements: node coordinates, shape functions, gradients, quadrature.

An :class:`Element` is data. Node order follows VTK (and meshio) so meshes
export without reordering. Reference coordinates are in [0, 1] and given as
(z, y, x) to match the (z, y, x) array convention of the project.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Element:
    """A reference finite element.

    Attributes
    ----------
    name : str
        meshio cell type name.
    nodes : (n, 3) ndarray
        Reference node coordinates (z, y, x) in [0, 1]^3.
    shape : callable
        ``shape(xi)`` with ``xi`` (q, 3) returns N (q, n).
    grad : callable
        ``grad(xi)`` returns dN/dxi (q, n, 3).
    quadrature : tuple of ((q, 3), (q,)) ndarrays
        Points and weights on the reference cell (weights sum to its volume).
    """

    name: str
    nodes: np.ndarray
    shape: Callable[[np.ndarray], np.ndarray]
    grad: Callable[[np.ndarray], np.ndarray]
    quadrature: tuple[np.ndarray, np.ndarray]

    @property
    def n_nodes(self) -> int:
        return int(self.nodes.shape[0])


# VTK hexahedron in (x, y, z): (0,0,0) (1,0,0) (1,1,0) (0,1,0) (0,0,1) (1,0,1) (1,1,1) (0,1,1)
_HEX_XYZ = np.array(
    [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]],
    dtype=float,
)
_HEX_ZYX = _HEX_XYZ[:, ::-1].copy()


def _hex_shape(xi: np.ndarray) -> np.ndarray:
    xi = np.atleast_2d(xi)
    n = _HEX_ZYX[None, :, :]
    f = np.where(n == 1, xi[:, None, :], 1.0 - xi[:, None, :])
    return f.prod(axis=2)


def _hex_grad(xi: np.ndarray) -> np.ndarray:
    xi = np.atleast_2d(xi)
    n = _HEX_ZYX[None, :, :]
    f = np.where(n == 1, xi[:, None, :], 1.0 - xi[:, None, :])  # (q, 8, 3)
    df = np.where(n == 1, 1.0, -1.0) * np.ones_like(f)
    g = np.empty_like(f)
    for d in range(3):
        others = [k for k in range(3) if k != d]
        g[:, :, d] = df[:, :, d] * f[:, :, others[0]] * f[:, :, others[1]]
    return g


def _gauss_hex(order: int = 2) -> tuple[np.ndarray, np.ndarray]:
    p, w = np.polynomial.legendre.leggauss(order)
    p = 0.5 * (p + 1.0)
    w = 0.5 * w
    pts = np.stack(np.meshgrid(p, p, p, indexing="ij"), axis=-1).reshape(-1, 3)
    wts = np.einsum("i,j,k->ijk", w, w, w).ravel()
    return pts, wts


HEX8 = Element("hexahedron", _HEX_ZYX, _hex_shape, _hex_grad, _gauss_hex(2))


# VTK tetra, reference nodes in (x, y, z): (0,0,0) (1,0,0) (0,1,0) (0,0,1)
_TET_XYZ = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
_TET_ZYX = _TET_XYZ[:, ::-1].copy()


def _tet_shape(xi: np.ndarray) -> np.ndarray:
    xi = np.atleast_2d(xi)  # (z, y, x) reference coordinates
    return np.column_stack([1.0 - xi.sum(axis=1), xi[:, 2], xi[:, 1], xi[:, 0]])


def _tet_grad(xi: np.ndarray) -> np.ndarray:
    xi = np.atleast_2d(xi)
    g = np.array([[-1.0, -1.0, -1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # d/d(z, y, x)
    return np.broadcast_to(g, (xi.shape[0], 4, 3)).copy()


#: linear tetrahedron; one-point rule (exact for its constant-strain stiffness)
TET4 = Element("tetra", _TET_ZYX, _tet_shape, _tet_grad, (np.full((1, 3), 0.25), np.array([1.0 / 6.0])))


# VTK quadratic tetra: corners 0-3 as TET4, then the edge midpoints (0,1) (1,2) (0,2) (0,3) (1,3) (2,3)
TET10_EDGES = np.array([[0, 1], [1, 2], [0, 2], [0, 3], [1, 3], [2, 3]])
# gradients of the barycentric coordinates L0..L3 with respect to the (z, y, x) reference coordinates
_DL = np.array([[-1.0, -1.0, -1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def _tet10_shape(xi: np.ndarray) -> np.ndarray:
    L = _tet_shape(xi)  # (q, 4) barycentric coordinates
    corner = L * (2.0 * L - 1.0)
    edge = 4.0 * L[:, TET10_EDGES[:, 0]] * L[:, TET10_EDGES[:, 1]]
    return np.concatenate([corner, edge], axis=1)


def _tet10_grad(xi: np.ndarray) -> np.ndarray:
    L = _tet_shape(xi)  # (q, 4)
    corner = (4.0 * L - 1.0)[:, :, None] * _DL[None]  # (q, 4, 3)
    i, j = TET10_EDGES.T
    edge = 4.0 * (L[:, i, None] * _DL[None, j] + L[:, j, None] * _DL[None, i])  # (q, 6, 3)
    return np.concatenate([corner, edge], axis=1)


def _tet_quadrature_4() -> tuple[np.ndarray, np.ndarray]:
    """4-point rule on the reference tetrahedron, exact for quadratics (the TET10 stiffness)."""
    a, b = 0.5854101966249685, 0.1381966011250105
    bary = np.full((4, 4), b) + np.eye(4) * (a - b)  # rows: (L0, L1, L2, L3)
    pts = bary[:, [3, 2, 1]]  # (z, y, x) = (L3, L2, L1)
    return pts, np.full(4, 1.0 / 24.0)


#: quadratic tetrahedron (straight edges); 4-point rule
_TET10_ZYX = np.concatenate([_TET_ZYX, 0.5 * (_TET_ZYX[TET10_EDGES[:, 0]] + _TET_ZYX[TET10_EDGES[:, 1]])])
TET10 = Element("tetra10", _TET10_ZYX, _tet10_shape, _tet10_grad, _tet_quadrature_4())
