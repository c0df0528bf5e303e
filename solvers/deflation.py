"""Rigid-body modes of every particle as a coarse space of the voxel multigrid.

Why: a particle that the cohesive band has debonded all round hangs on the
band's residual stiffness alone (``1e-6`` of the penalty). Its six rigid
motions are then near-kernel modes that geometric multigrid cannot see: two
grid levels up, a particle of a few voxels radius is no longer a region of
its own. A 48^3 crop with every band voxel debonded did not converge in 500
CG iterations (docs/performance.md). Jönsthövel et al. (2009, 2012) cure the
same stagnation in composites by deflating the rigid-body modes of every
material region; here the regions are the particles.

The coarse space ``Z`` (n_dof x 6 p) holds the six rigid motions of each of
the ``p`` particles (segmented labels, not connected components: touching
particles hinge on their necks), on the nodes of their voxels and zero
elsewhere and on fixed dofs, orthonormalised per particle. With
``E = Z^T A Z`` (sparse, 6 p x 6 p) and ``Q = Z E^-1 Z^T`` the
preconditioner is A-DEF2 (Tang, Nabben, Vuik, Erlangga 2009),

    M^-1 r = B r + Q (r - A B r)

with ``B`` the V-cycle, started from an ``x0`` whose residual is orthogonal
to ``Z``; on the rigid modes ``Q A z = z``. ``A Z`` is nonzero only on the
voxels a rigid particle motion strains: the band voxels around the
particle, particle voxels with a fixed dof and the voxels of necks between
touching particles, so ``E`` is summed over those and renewed only where
the band changes.

Measured on 1C charges it gains little over the exact local solves the band
multigrid finds as damage grows (48^3: 24-27 CG iterations at the end against
26-28, 8 % slower for the extra operator product), so the solver adds it
only when a solve fails to converge without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from solvers.fem.elements import HEX8
from solvers.linalg import rigid_body_modes

CORNERS = HEX8.nodes.astype(np.int64)
#: a cluster's mode is dropped where its Gram eigenvalue is below this fraction of the largest (fixed dofs)
RANK_TOL = 1e-10


def node_clusters(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Cluster of every grid node: the particle it is a corner of.

    Parameters
    ----------
    labels : (Z, Y, X) int
        Particle label of every voxel, 0 elsewhere.

    Returns
    -------
    (Z+1, Y+1, X+1) int64, cluster 0 .. p-1 (labels in increasing order), -1 on nodes of no particle;
    and ``p``. A node shared by touching particles goes to the one with the largest label.
    """
    labels = np.asarray(labels)
    used, dense = np.unique(labels, return_inverse=True)
    dense = dense.reshape(labels.shape) - (1 if used[0] == 0 else 0)  # 0 .. p-1, -1 outside
    p = int(used.size - (1 if used[0] == 0 else 0))
    Z, Y, X = labels.shape
    out = np.full((Z + 1, Y + 1, X + 1), -1, np.int64)
    for dz, dy, dx in CORNERS:
        view = out[dz:dz + Z, dy:dy + Y, dx:dx + X]
        np.maximum(view, dense, out=view)
    return out, p


@dataclass
class RigidModes:
    """The orthonormalised rigid modes of every cluster on its nodes.

    Attributes
    ----------
    node_shape : (Z+1, Y+1, X+1)
    nodes : (n,) int64
        Flat grid index of the nodes that carry a mode.
    cluster : (n,) int64
        Cluster of each of them.
    basis : (n, 3, 6) float64
        Displacement of the node's dofs in its cluster's six modes (zero on fixed dofs).
    position : (Z+1, Y+1, X+1) int64
        Row in ``nodes`` of every grid node, -1 where none.
    n_clusters : int
    dead : (6 p,) bool
        Modes with no support left (clusters held by fixed dofs in that direction).
    """

    node_shape: tuple
    nodes: np.ndarray
    cluster: np.ndarray
    basis: np.ndarray
    position: np.ndarray
    n_clusters: int
    dead: np.ndarray
    _on_dev: tuple | None = field(default=None, repr=False)  # nodes, cluster, basis on the GPU

    @classmethod
    def build(cls, clusters: np.ndarray, n_clusters: int, free: np.ndarray) -> RigidModes:
        """From the node clusters (:func:`node_clusters`) and the free dofs ``free`` (Z+1, Y+1, X+1, 3) bool."""
        shape = clusters.shape
        nodes = np.flatnonzero(clusters.ravel() >= 0)
        cl = clusters.ravel()[nodes]
        zyx = np.stack(np.unravel_index(nodes, shape), axis=1).astype(float)
        count = np.bincount(cl, minlength=n_clusters)
        centre = np.stack([np.bincount(cl, zyx[:, i], minlength=n_clusters) for i in range(3)], 1) / count[:, None]
        # positions from each cluster's centre (their overall mean is then zero, so the modes turn about it)
        raw = rigid_body_modes(zyx - centre[cl]).reshape(-1, 3, 6) * free.reshape(-1, 3)[nodes][:, :, None]
        gram = np.stack([np.bincount(cl, (raw[:, :, i] * raw[:, :, j]).sum(1), minlength=n_clusters)
                         for i in range(6) for j in range(6)], 1).reshape(n_clusters, 6, 6)
        w, v = np.linalg.eigh(gram)
        live = w > RANK_TOL * w.max(axis=1, keepdims=True)
        T = v * np.where(live, 1.0 / np.sqrt(np.where(live, w, 1.0)), 0.0)[:, None, :]  # (p, 6, 6)
        basis = np.einsum("nik,nkj->nij", raw, T[cl])
        position = np.full(shape, -1, np.int64)
        position.ravel()[nodes] = np.arange(nodes.size)
        return cls(shape, nodes, cl, basis, position, n_clusters, ~live.ravel())

    @property
    def size(self) -> int:
        return 6 * self.n_clusters

    def restrict(self, r, xp=np):
        """``Z^T r`` (6 p,) of a grid vector ``r`` (Z+1, Y+1, X+1, 3)."""
        nodes, cl, basis = self._dev(xp)
        w = xp.einsum("nik,ni->nk", basis, r.reshape(-1, 3)[nodes])
        return xp.stack([xp.bincount(cl, weights=w[:, k], minlength=self.n_clusters) for k in range(6)], 1).ravel()

    def prolong_add(self, c, out, xp=np):
        """``out += Z c`` for mode coefficients ``c`` (6 p,), on a grid vector ``out``."""
        nodes, cl, basis = self._dev(xp)
        flat = out.reshape(-1, 3)
        flat[nodes] += xp.einsum("nik,nk->ni", basis, c.reshape(-1, 6)[cl]).astype(out.dtype)
        return out

    def _dev(self, xp):
        if xp is np:
            return self.nodes, self.cluster, self.basis
        if self._on_dev is None:  # pragma: no cover - needs a GPU
            self._on_dev = tuple(xp.asarray(a) for a in (self.nodes, self.cluster, self.basis))
        return self._on_dev  # pragma: no cover

    def element_bases(self, zyx: np.ndarray):
        """The modes on the corners of voxels ``zyx`` (m, 3), one cluster ("slot") at a time.

        Yields ``(rows, cluster, G)``: the voxels (indices into ``zyx``) that have a corner in a
        cluster of this slot, that cluster (m_s,), and the modes on their 24 dofs (m_s, 24, 6)
        (zero on corners of other clusters). Most voxels touch one cluster; a voxel between two
        particles closer than a voxel touches two.
        """
        corner = np.asarray(zyx, np.int64)[:, None, :] + CORNERS[None]  # (m, 8, 3)
        pos = self.position[tuple(corner.transpose(2, 0, 1))]  # (m, 8)
        cl = np.where(pos >= 0, self.cluster[np.maximum(pos, 0)], -1)
        distinct = np.sort(cl, axis=1)
        distinct[:, 1:][distinct[:, 1:] == distinct[:, :-1]] = -1
        distinct = -np.sort(-distinct, axis=1)  # each voxel's clusters first, then -1
        for s in range(int((distinct >= 0).sum(1).max(initial=0))):
            rows = np.flatnonzero(distinct[:, s] >= 0)
            c = distinct[rows, s]
            on = (cl[rows] == c[:, None])  # (m_s, 8)
            G = self.basis[np.maximum(pos[rows], 0)] * on[:, :, None, None]  # (m_s, 8, 3, 6)
            yield rows, c, G.reshape(-1, 24, 6)


class RigidDeflation:
    """The additive coarse correction ``Z E^-1 Z^T`` of the rigid particle modes.

    Parameters
    ----------
    modes : RigidModes
    products : callable(kind, which, X) -> (m, 24, k)
        Element matrices times ``X`` (m, 24, k) for the voxels ``which`` of ``kind``
        (the caller's indexing); the element matrices carry the box masks or not, ``Z`` is
        zero on fixed dofs either way.
    elements : mapping kind -> (m, 3) int voxel coordinates
        Every voxel whose matrix strains a rigid particle motion.

    Attributes
    ----------
    E : sparse (6 p, 6 p), ``Z^T A Z``
    dead : (6 p,) bool, modes left out of the correction (no support, or no stiffness)
    """

    def __init__(self, modes: RigidModes, products, elements):
        self.modes = modes
        self._products = products
        self._zyx = {k: np.asarray(v, np.int64) for k, v in elements.items()}
        n = modes.size
        self.E = sp.csr_matrix((n, n))
        for kind in self._zyx:
            self.E = self.E + self._sum(kind, np.arange(len(self._zyx[kind])))
        self._factor()

    def _sum(self, kind, which):
        """``Z^T A Z`` over the voxels ``which`` of ``kind``, sparse (6 p, 6 p)."""
        n = self.modes.size
        if len(which) == 0:
            return sp.csr_matrix((n, n))
        slots = list(self.modes.element_bases(self._zyx[kind][which]))
        rows, cols, vals = [], [], []
        for ra, ca, Ga in slots:
            KG = np.zeros((len(which), 24, 6))
            KG[ra] = self._products(kind, np.asarray(which)[ra], Ga)
            for rb, cb, Gb in slots:
                both, ia, ib = np.intersect1d(ra, rb, assume_unique=True, return_indices=True)
                if both.size == 0:
                    continue
                blk = np.einsum("mai,maj->mij", Gb[ib], KG[both])  # (m, 6, 6): modes of b against a
                i6 = np.arange(6)
                rows.append(np.broadcast_to((6 * cb[ib])[:, None, None] + i6[None, :, None], blk.shape))
                cols.append(np.broadcast_to((6 * ca[ia])[:, None, None] + i6[None, None, :], blk.shape))
                vals.append(blk)
        r, c, v = (np.concatenate([a.ravel() for a in x]) for x in (rows, cols, vals))
        return sp.csr_matrix((v, (r, c)), shape=(n, n))

    def _factor(self):
        E = self.E.tocsr()
        d = E.diagonal()
        dead = self.modes.dead | (d <= 0)
        scale = float(d[~dead].mean()) if (~dead).any() else 1.0
        E = 0.5 * (E + E.T) + sp.diags(np.where(dead, scale, 0.0))  # modes with no support: identity
        self._lu = spla.splu(E.tocsc())
        self.dead = dead

    def update(self, kind, which, before: bool):
        """Remove (``before``) or add the contribution of the voxels ``which`` of ``kind``; the factor is renewed
        after an add."""
        delta = self._sum(kind, np.asarray(which))
        self.E = self.E - delta if before else self.E + delta
        if not before:
            self._factor()

    def correct(self, r, xp=np):
        """``Z E^-1 Z^T r`` on a grid vector ``r`` (Z+1, Y+1, X+1, 3), as a new array."""
        zr = self.modes.restrict(r, xp)
        c = self._lu.solve(np.asarray(zr.get() if xp is not np else zr, np.float64))
        c[self.dead] = 0.0
        return self.modes.prolong_add(xp.asarray(c), xp.zeros_like(r), xp)
