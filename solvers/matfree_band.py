"""Voxels with their own stiffness in the matrix-free operator: the cohesive band.

A band voxel's element matrix is ``V B^T C_e B + h_e K_hg``: ``B`` (6 x 24) the
voxel's mean (centre) strain in Mandel notation, ``C_e`` its own 6x6 secant
stiffness, and ``K_hg`` one hourglass matrix (the full-integration matrix of
an isotropic material minus its centre part) scaled by ``h_e``. No 24 x 24
matrix is stored per voxel: the kernel gathers the voxel's 24 dofs, forms
the strain, multiplies by ``C_e`` and scatters ``B^T sigma`` back (numba on
the CPU, voxels of one (z, y, x) parity at a time so that no two threads add
to one node; array expressions with a scatter-add on the GPU).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from solvers.fem.elements import HEX8

CORNERS = HEX8.nodes.astype(np.int64)


@functools.cache
def _numba_band_kernel():
    import numba

    cz, cy, cx = (np.ascontiguousarray(CORNERS[:, i]) for i in range(3))

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def apply(x, free, zyx, starts, C, hg, B, Khg, vol, y):
        for k in range(8):
            for e in numba.prange(starts[k], starts[k + 1]):
                z, yy, xx = zyx[e, 0], zyx[e, 1], zyx[e, 2]
                xe = np.empty(24, x.dtype)
                for a in range(8):
                    for c in range(3):
                        if free[z + cz[a], yy + cy[a], xx + cx[a], c]:
                            xe[3 * a + c] = x[z + cz[a], yy + cy[a], xx + cx[a], c]
                        else:
                            xe[3 * a + c] = 0.0
                eps = np.zeros(6, x.dtype)
                for i in range(6):
                    acc = 0.0
                    for j in range(24):
                        acc += B[i, j] * xe[j]
                    eps[i] = acc
                sig = np.zeros(6, x.dtype)
                for i in range(6):
                    acc = 0.0
                    for j in range(6):
                        acc += C[e, i, j] * eps[j]
                    sig[i] = vol * acc
                h = hg[e]
                for a in range(8):
                    for c in range(3):
                        if not free[z + cz[a], yy + cy[a], xx + cx[a], c]:
                            continue
                        i = 3 * a + c
                        acc = 0.0
                        for j in range(6):
                            acc += B[j, i] * sig[j]
                        acc2 = 0.0
                        for j in range(24):
                            acc2 += Khg[i, j] * xe[j]
                        y[z + cz[a], yy + cy[a], xx + cx[a], c] += acc + h * acc2

    return apply


@dataclass
class BandBlocks:
    """The band voxels of a fine grid and their stiffness.

    Attributes
    ----------
    zyx : (nb, 3) int64
        Voxel coordinates, in kernel order (sorted by parity class).
    starts : (9,) int64
        First voxel of every parity class in kernel order.
    order : (nb,) int64
        Kernel position of every band voxel (given in the caller's order).
    C : (nb, 6, 6) float64
        Secant stiffness (Mandel), Pa, kernel order.
    hg : (nb,) float64
        Scale of ``Khg``, kernel order.
    B : (6, 24) centre strain matrix, 1/m
    Khg : (24, 24) hourglass matrix, N/m
    volume : float, m^3
    """

    zyx: np.ndarray
    starts: np.ndarray
    order: np.ndarray
    C: np.ndarray
    hg: np.ndarray
    B: np.ndarray
    Khg: np.ndarray
    volume: float

    @classmethod
    def build(cls, voxel_zyx, C, hg, B, Khg, volume):
        """From band voxels in any order, with their stiffness in that order."""
        zyx = np.asarray(voxel_zyx, np.int64)
        parity = (zyx % 2) @ np.array([4, 2, 1])
        sort = np.argsort(parity, kind="stable")
        order = np.empty_like(sort)
        order[sort] = np.arange(sort.size)
        starts = np.searchsorted(parity[sort], np.arange(9)).astype(np.int64)
        blocks = cls(np.ascontiguousarray(zyx[sort]), starts, order, np.zeros((sort.size, 6, 6)), np.zeros(sort.size),
                     np.ascontiguousarray(B, np.float64), np.ascontiguousarray(Khg, np.float64), float(volume))
        blocks.set(C, hg)
        return blocks

    def set(self, C, hg, which=None):
        """New stiffness of all band voxels (caller's order), or of the band voxels ``which`` (values in that order)."""
        pos = self.order if which is None else self.order[which]
        self.C[pos] = C
        self.hg[pos] = hg
        self._cast = {}

    @property
    def n(self) -> int:
        return int(self.zyx.shape[0])

    def _tables(self, dtype):
        if dtype not in self._cast:
            self._cast[dtype] = tuple(np.ascontiguousarray(a, dtype) for a in (self.C, self.hg, self.B, self.Khg))
        return self._cast[dtype]

    def add_apply(self, x, free, y):
        """``y += K_band x`` on free dofs (x, y (Z+1, Y+1, X+1, 3) numpy; free bool of that shape)."""
        dt = np.dtype(x.dtype)
        C, hg, B, Khg = self._tables(dt)
        _numba_band_kernel()(np.ascontiguousarray(x), free, self.zyx, self.starts, C, hg, B, Khg,
                             dt.type(self.volume), y)
        return y

    def add_apply_arrays(self, x, free, y, xp=np):
        """The same as array expressions (CuPy on the GPU; numpy in tests). The tables go to the
        device once per stiffness update, not per product."""
        C, hg, B, Khg, idx, flat = self._device_tables(np.dtype(x.dtype), x.shape[:3], xp)
        fr = free[idx]  # (nb, 8, 3)
        xe = (x[idx] * fr).reshape(-1, 24)
        sig = self.volume * xp.einsum("bij,bj->bi", C, xe @ B.T)
        ye = (sig @ B + hg[:, None] * (xe @ Khg.T)).reshape(-1, 8, 3) * fr
        out = y.reshape(-1, 3)
        for c in range(3):
            if xp is np:
                np.add.at(out[:, c], flat, ye[..., c].ravel())
            else:
                import cupyx

                cupyx.scatter_add(out[:, c], flat, ye[..., c].ravel())
        return y

    def _device_tables(self, dtype, grid, xp):
        """Stiffness tables in ``dtype``, corner node indices and flat node numbers, where ``xp`` keeps them."""
        key = ("arrays", dtype, tuple(grid), xp.__name__)
        if key not in self._cast:
            nodes = self.zyx[:, None, :] + CORNERS[None]  # (nb, 8, 3)
            flat = np.ravel_multi_index((nodes[..., 0], nodes[..., 1], nodes[..., 2]), grid).ravel()
            idx = tuple(xp.asarray(nodes[..., i]) for i in range(3))
            self._cast[key] = tuple(xp.asarray(a) for a in self._tables(dtype)) + (idx, xp.asarray(flat))
        return self._cast[key]

    def products(self, which, X) -> np.ndarray:
        """Element matrices (unmasked) of the band voxels ``which`` (kernel order) times ``X`` (m, 24, k)."""
        BX = np.einsum("ij,mjk->mik", self.B, X)
        out = np.einsum("ji,mjk->mik", self.B, self.volume * (self.C[which] @ BX))
        return out + self.hg[which][:, None, None] * np.einsum("ij,mjk->mik", self.Khg, X)

    def element_matrices(self, which=None) -> np.ndarray:
        """(m, 24, 24) element matrices, unmasked, of band voxels in kernel order (all, or ``which``)."""
        sel = slice(None) if which is None else which
        C, hg = self.C[sel], self.hg[sel]
        return self.volume * np.einsum("ki,bkl,lj->bij", self.B, C, self.B) + hg[:, None, None] * self.Khg
