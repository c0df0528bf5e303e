"""Coarse spaces that follow the solid's topology: a split multigrid hierarchy below a voxel grid.

A trilinear coarse function spans everything inside its support, so it ties together pieces of
solid that are not joined there: two particles across a void gap, or a particle and the
electrolyte across an open (debonded) band. On those the V-cycle's coarse correction is wrong,
and CG slows down (raw-CT segmentations, a debonded band: docs/performance.md, "Coarse spaces
that follow the topology"). Here every coarse node of level L (spacing 2^L h) is split into one
copy per connected piece of solid inside its support (the (2^(L+1))^3 fine voxels its trilinear
function covers), and an entity of the level above takes the copy of the piece it belongs to
(McAdams et al., SIGGRAPH 2011; Zhu et al., SCA 2010).

With a band, the particles and the electrolyte are labelled apart and joined only where a bonded
(not open) band voxel touches a particle, so an open band is a gap. Open band voxels whose
corners take different copies are carried into the coarse levels exactly, by sparse products.

The components are found without a loop over nodes or voxels: the supports of the nodes of one
parity class tile the grid, so one ``ndimage.label`` per class on the grid with the tiles pulled
apart labels all of them.

Functions here are pure over arrays; :class:`SplitHierarchy` holds the assembled coarse levels
and runs the K-cycle (Notay and Vassilevski 2008) that :class:`solvers.matfree.MatrixFreeSolver`
calls for its coarse correction.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy import ndimage as ndi
from scipy.sparse.csgraph import connected_components

log = logging.getLogger(__name__)

#: the 13 half-space offsets of the 26-neighbourhood
HALF = [o for o in itertools.product((-1, 0, 1), repeat=3) if o > (0, 0, 0)]
#: corner offsets in the (dz, dy, dx) bit order the hierarchy uses (a = 4 dz + 2 dy + dx)
BITS = np.array([[(a >> 2) & 1, (a >> 1) & 1, a & 1] for a in range(8)])


def tile_labels(mask, size, start):
    """26-connected components of ``mask`` inside the tiles ``[start + size m, start + size (m + 1))``.

    Parameters
    ----------
    mask : (Z, Y, X) bool
    size : int
        Tile edge, voxels.
    start : (3,) int
        Offset of the tiling, in (-size, 0].

    Returns
    -------
    labels : (Z, Y, X) int64
        Component of every voxel of ``mask`` (-1 elsewhere); components never cross a tile face.
    count : int
    """
    shape, lo = np.array(mask.shape), -np.asarray(start)
    nb = -(-(shape + lo) // size)
    a = np.pad(mask, [(int(lo[i]), int(nb[i] * size - shape[i] - lo[i])) for i in range(3)])
    a = a.reshape(nb[0], size, nb[1], size, nb[2], size)
    a = np.pad(a, [(0, 0), (0, 1)] * 3)  # a void layer between the tiles
    lab, count = ndi.label(a.reshape(*(nb * (size + 1))), np.ones((3, 3, 3)))
    lab = lab.reshape(nb[0], size + 1, nb[1], size + 1, nb[2], size + 1)[:, :size, :, :size, :, :size]
    lab = lab.reshape(*(nb * size))[lo[0]:lo[0] + shape[0], lo[1]:lo[1] + shape[1], lo[2]:lo[2] + shape[2]]
    return lab.astype(np.int64) - 1, int(count)


def joined_labels(pieces, glue, size, start):
    """Components of two pieces inside the tiles, the second joined to the first only through ``glue``.

    Parameters
    ----------
    pieces : (first, second), each (Z, Y, X) bool
        Labelled apart (electrolyte and particles); the second may be all False.
    glue : (Z, Y, X) bool
        Voxels of the first piece that join a 26-neighbour of the second in the same tile.
    size, start : as :func:`tile_labels`

    Returns
    -------
    labels : (Z, Y, X) int64, -1 off both pieces
    count : int
    """
    la, na = tile_labels(pieces[0], size, start)
    if not pieces[1].any():
        return la, na
    lb, nb_ = tile_labels(pieces[1], size, start)
    shape = np.array(glue.shape)
    tile = [(np.arange(s) - st) // size for s, st in zip(shape, start)]
    rows, cols = [], []
    for off in HALF:
        for d in (np.array(off), -np.array(off)):
            sa = tuple(slice(max(0, -k), s - max(0, k)) for k, s in zip(d, shape))
            sb = tuple(slice(max(0, k), s - max(0, -k)) for k, s in zip(d, shape))
            m = (la[sa] >= 0) & glue[sa] & (lb[sb] >= 0)
            for ax in range(3):  # the two voxels in one tile
                shp = [1, 1, 1]
                shp[ax] = -1
                m &= (tile[ax][sa[ax]] == tile[ax][sb[ax]]).reshape(shp)
            rows.append(la[sa][m])
            cols.append(lb[sb][m] + na)
    r, c = np.concatenate(rows), np.concatenate(cols)
    g = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(na + nb_,) * 2)
    count, comp = connected_components(g, directed=False)
    lab = np.full(glue.shape, -1, np.int64)
    lab[la >= 0] = comp[la[la >= 0]]
    lab[lb >= 0] = comp[lb[lb >= 0] + na]
    return lab, int(count)


def level_copies(pieces, glue, level):
    """The copies of the level-``level`` nodes (spacing ``2**level`` voxels).

    Returns
    -------
    labels : list of 8 (Z, Y, X) int64
        Per node parity class (``4 (iz % 2) + 2 (iy % 2) + ix % 2``), the copy whose support holds
        each fine voxel (-1: none); copies are numbered over all classes.
    copy_node : (n_copies, 3) int
        Level grid node of every copy.
    """
    h = 2 ** level
    labels, node, total = [], [], 0
    for parity in BITS:
        start = np.where(parity == 0, -h, 0)  # even nodes' supports start at -h + 2h m, odd ones' at 2h m
        lab, count = joined_labels(pieces, glue, 2 * h, start)
        flat = lab.ravel()
        inside = np.flatnonzero(flat >= 0)
        first = np.empty(count, np.int64)
        first[flat[inside][::-1]] = inside[::-1]
        voxel = np.array(np.unravel_index(first, lab.shape)).T.reshape(-1, 3)
        node.append(2 * ((voxel - start) // (2 * h)) + parity)
        labels.append(np.where(lab >= 0, lab + total, -1))
        total += count
    return labels, np.concatenate(node)


def representative_voxels(nodes, masks, shape):
    """A voxel next to every grid node, from the first of ``masks`` that has one.

    Parameters
    ----------
    nodes : (n, 3) int
        Fine grid nodes.
    masks : sequence of (Z, Y, X) bool
    shape : (3,) int

    Returns
    -------
    (n, 3) int: the voxel (z, y, x); -1 rows where no mask has a voxel at the node.
    """
    rep = np.full((len(nodes), 3), -1)
    for mask in masks:
        for d in BITS:
            v = nodes - d
            take = (v >= 0).all(1) & (v < shape).all(1) & (rep[:, 0] < 0)
            take[take] = mask[tuple(v[take].T)]
            rep[take] = v[take]
    return rep


def prolongation(position, voxel, labels, n_copies, level):
    """Trilinear weights from the level-``level`` copies to entities of the level below.

    Parameters
    ----------
    position : (n, 3) int
        The entities' positions, fine voxel units.
    voxel : (n, 3) int
        A voxel of every entity's piece (-1 rows: the entity gets no coarse function).
    labels : from :func:`level_copies`
    n_copies : int
    level : int

    Returns
    -------
    P : (n, m) csr, over the ``m`` copies some entity uses
    used : (m,) int, those copies' numbers
    """
    h = 2 ** level
    rows, cols, vals = [], [], []
    has = voxel[:, 0] >= 0
    base = position // h
    t = (position - base * h) / h
    for off in BITS:
        w = np.prod(np.where(off == 1, t, 1 - t), axis=1)
        cls = ((base + off) % 2) @ np.array([4, 2, 1])
        col = np.full(len(position), -1)
        for c in range(8):
            m = has & (cls == c)
            col[m] = labels[c][tuple(voxel[m].T)]
        ok = (w > 0) & (col >= 0)
        rows.append(np.flatnonzero(ok))
        cols.append(col[ok])
        vals.append(w[ok])
    P = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(len(position), n_copies))
    used = np.flatnonzero(np.diff(P.tocsc().indptr) > 0)
    return P[:, used].tocsr(), used


def copy_voxels(labels, n_copies):
    """A voxel of every copy (n_copies, 3), from the label images of :func:`level_copies`."""
    rep = np.zeros((n_copies, 3), np.int64)
    for lab in labels:
        flat = lab.ravel()
        inside = np.flatnonzero(flat >= 0)
        rep[flat[inside]] = np.array(np.unravel_index(inside, lab.shape)).T
    return rep


def gap_only_nodes(solid, gap):
    """(Z+1, Y+1, X+1) bool: grid nodes all of whose solid voxels are ``gap`` voxels (and that have one)."""
    s, g = np.pad(solid & ~gap, 1), np.pad(gap, 1)
    Z, Y, X = solid.shape
    other = np.zeros((Z + 1, Y + 1, X + 1), bool)
    touch = np.zeros_like(other)
    for dz, dy, dx in BITS:
        sl = (slice(1 - dz, Z + 2 - dz), slice(1 - dy, Y + 2 - dy), slice(1 - dx, X + 2 - dx))
        other |= s[sl]
        touch |= g[sl]
    return touch & ~other


def chebyshev(A, degree=2, ratio=30.0):
    """Chebyshev smoothing on Jacobi over ``[lmax / ratio, lmax]`` for a sparse SPD ``A``.

    ``lmax``: 16 Lanczos steps on ``D^-1/2 A D^-1/2`` (times 1.1), as the grid levels have it.
    Returns ``smooth(x, b) -> x`` (``x`` None: from zero).
    """
    d = A.diagonal()
    dinv = 1.0 / np.where(d > 0, d, 1.0)
    dh = np.sqrt(dinv)
    v = np.random.default_rng(0).standard_normal(A.shape[0])
    v /= np.linalg.norm(v)
    v_old, alpha, beta = np.zeros_like(v), [], [0.0]
    for _ in range(min(16, A.shape[0])):
        w = dh * (A @ (dh * v)) - beta[-1] * v_old
        alpha.append(float(w @ v))
        w -= alpha[-1] * v
        beta.append(float(np.linalg.norm(w)))
        if beta[-1] <= 1e-12 * abs(alpha[-1]):
            break
        v_old, v = v, w / beta[-1]
    k = len(alpha)
    lmax = 1.1 * float(np.linalg.eigvalsh(np.diag(alpha) + np.diag(beta[1:k], 1) + np.diag(beta[1:k], -1))[-1])
    lmin = lmax / ratio
    theta, delta = (lmax + lmin) / 2, (lmax - lmin) / 2

    def smooth(x, b):
        sigma = theta / delta
        rho = 1 / sigma
        res = b if x is None else b - A @ x
        x = np.zeros_like(b) if x is None else x
        dx = dinv * res / theta
        for k in range(degree):
            x = x + dx
            if k < degree - 1:
                rho_new = 1 / (2 * sigma - rho)
                dx = rho_new * rho * dx + 2 * rho_new / delta * dinv * (b - A @ x)
                rho = rho_new
        return x

    return smooth


class KCycle:
    """The K-cycle (Notay and Vassilevski 2008) over assembled levels: Chebyshev smoothing on every
    level but the last, an exact factor on the last, and ``inner`` flexible-CG iterations of the
    coarse correction on every level but the last two.

    Parameters
    ----------
    ops : list of (n_k, n_k) csr, SPD
        The levels, finest first.
    Ps : list of (n_k, n_k+1) csr
        Prolongation from level k + 1 to level k.
    inner : int
    shift : float
        Relative diagonal shift of the last level's factor (its copies may float).
    """

    def __init__(self, ops, Ps, *, inner=3, shift=1e-10):
        self.ops = ops
        self.Ps = Ps
        self.PTs = [P.T.tocsr() for P in Ps]
        self.smooth = [chebyshev(op) for op in ops[:-1]]
        last = ops[-1].tocsc()
        self._lu = spla.splu(last + sp.identity(last.shape[0], format="csc") * shift * last.diagonal().mean())
        self.inner = int(inner)

    def solve(self, b):
        """Approximate ``ops[0]^-1 b`` by ``inner`` flexible-CG steps of cycles (exact on one level)."""
        return self._coarse(0, np.asarray(b, np.float64))

    def cycle(self, r):
        """One cycle from the finest level: a preconditioner for the outer flexible CG."""
        if len(self.ops) == 1:
            return self._lu.solve(np.asarray(r, np.float64))
        return self._cycle(0, np.asarray(r, np.float64))

    def _coarse(self, k, r):
        if k == len(self.ops) - 1:
            return self._lu.solve(r)
        if k >= len(self.ops) - 2 or self.inner < 2:
            return self._cycle(k, r)
        A = self.ops[k]  # flexible CG, ``inner`` iterations, each preconditioned by a cycle of this level
        x, res = np.zeros_like(r), r.copy()
        z = self._cycle(k, res)
        p, rz = z.copy(), float(res @ z)
        for it in range(self.inner):
            q = A @ p
            pq = float(p @ q)
            if pq <= 0.0 or rz <= 0.0:  # nothing left to correct (a zero right-hand side)
                break
            alpha = rz / pq
            x += alpha * p
            if it == self.inner - 1:
                break
            res_old = res.copy()
            res -= alpha * q
            z = self._cycle(k, res)
            beta = float(z @ (res - res_old)) / rz
            rz = float(res @ z)
            p = z + beta * p
        return x

    def _cycle(self, k, r):
        x = self.smooth[k](None, r)
        x = x + self.Ps[k] @ self._coarse(k + 1, self.PTs[k] @ (r - self.ops[k] @ x))
        return self.smooth[k](x, r)


class SplitHierarchy:
    """Assembled split coarse levels 1..L below a matrix-free fine grid, and their K-cycle.

    Parameters
    ----------
    P1 : (n_nodes, n1) csr
        Fine grid node -> level-1 copy weights (rows of every node of the (Z+1, Y+1, X+1) grid).
    A1 : (3 n1, 3 n1) csr
        Level-1 operator ``P1^T A P1`` (dofs ``3 copy + c``).
    more : list of (n_k, n_k+1) csr
        Copy-to-copy prolongations of the levels below level 1.
    inner : int
        Flexible-CG iterations of the coarse correction on every level but the last two (all debonded
        MATBOX 48^3 band: 54, 45, 33, 29 outer CG iterations for 1, 2, 3, 4; 3 is the fastest).
    """

    def __init__(self, P1, A1, more, *, inner=3, shift=1e-10):
        self.P1 = P1.tocsr()
        self.R1 = self.P1.T.tocsr()
        Ps = [sp.kron(P, sp.identity(3), format="csr") for P in more]
        ops = [_fix_empty(A1)]
        for P in Ps:
            ops.append(_fix_empty((P.T @ ops[-1] @ P).tocsr()))
        self.kcycle = KCycle(ops, Ps, inner=inner, shift=shift)

    @property
    def sizes(self):
        """Dof of every coarse level."""
        return [op.shape[0] for op in self.kcycle.ops]

    def restrict(self, r):
        """(n_nodes, 3) fine residual -> (3 n1,) level-1 right-hand side."""
        return (self.R1 @ r).ravel()

    def prolong(self, x):
        """(3 n1,) level-1 correction -> (n_nodes, 3) fine correction."""
        return self.P1 @ x.reshape(-1, 3)

    def solve(self, b):
        """Approximate ``A1^-1 b``: the K-cycle from level 1 (exact on a one-level hierarchy)."""
        return self.kcycle.solve(b)


def _fix_empty(A):
    """Unit diagonal on dofs with an empty row (copies that only fixed fine dofs use)."""
    return (A + sp.diags((A.diagonal() == 0).astype(float))).tocsr()


def coarse_levels(pieces, glue, gap, *, coarsest_dof):
    """The split levels' prolongations, down to about ``coarsest_dof``.

    Parameters
    ----------
    pieces : (first, second) of (Z, Y, X) bool
        See :func:`joined_labels`; open band voxels ``gap`` belong to the first (the electrolyte).
    glue : (Z, Y, X) bool
    gap : (Z, Y, X) bool
        Solid voxels that join nothing (open band voxels): a node takes them as its piece only where
        it has no other solid voxel.
    coarsest_dof : int

    Returns
    -------
    P1 : (n_nodes, n1) csr from every fine grid node (row-major, (Z+1)(Y+1)(X+1) rows)
    more : list of copy-to-copy csr prolongations of the levels below
    cid : (Z, Y, X, 8) int64
        Column of ``P1`` of the copy of each corner (HEX8 order) of the level-1 voxel above every fine
        voxel that holds the fine voxel (-1 off the solid).
    mixed : (Z, Y, X) bool
        Solid voxels with a corner whose own copy (from its representative voxel) differs from the
        voxel's: a corner shared with a piece the voxel is not joined to (open band voxels, and voxels
        touching the other piece across an edge or a corner).
    """
    shape = np.array(pieces[0].shape)
    solid = (pieces[0] | pieces[1]) & ~gap
    nodes = np.indices(tuple(shape + 1)).reshape(3, -1).T
    position, voxel = nodes, representative_voxels(nodes, (solid, gap), shape)
    P1, more, level = None, [], 1
    while True:
        labels, copy_node = level_copies(pieces, glue, level)
        P, used = prolongation(position, voxel, labels, len(copy_node), level)
        if P1 is None:
            P1 = P
            col = np.full(len(copy_node), -1)
            col[used] = np.arange(len(used))
            cid, mixed = level_one_columns(labels, col, solid | gap, voxel.reshape(*(shape + 1), 3))
        else:
            more.append(P)
        position, voxel = copy_node[used] * 2 ** level, copy_voxels(labels, len(copy_node))[used]
        level += 1
        if 3 * len(used) <= coarsest_dof or 2 ** level >= shape.min():
            return P1, more, cid, mixed


def level_one_columns(labels, col, solid, rep):
    """Level-1 copies above every fine voxel, and the voxels whose corners disagree with them.

    Parameters
    ----------
    labels, col : level-1 label images (:func:`level_copies`) and the ``P1`` column of every copy (-1: unused)
    solid : (Z, Y, X) bool
    rep : (Z+1, Y+1, X+1, 3) int, the representative voxel of every fine node (``P1``'s rows)

    Returns
    -------
    cid : (Z, Y, X, 8) int64, the ``P1`` column of each corner's copy (HEX8 order) holding the voxel
    mixed : (Z, Y, X) bool, solid voxels with a corner node that takes another copy of a coarse corner
        weighing on it
    """
    from solvers.fem.elements import HEX8

    Z, Y, X = solid.shape
    idx = np.indices((Z, Y, X))
    sub = idx % 2
    corners = HEX8.nodes.astype(np.int64)
    cid = np.full((Z, Y, X, 8), -1, np.int64)
    mixed = np.zeros((Z, Y, X), bool)
    for b, off in enumerate(corners):  # corner b of voxel v // 2 is level-1 node v // 2 + off
        cls = sum(((idx[i] // 2 + off[i]) % 2) * (4, 2, 1)[i] for i in range(3))
        lab = np.choose(cls, labels)
        cid[..., b] = np.where(solid & (lab >= 0), col[np.maximum(lab, 0)], -1)
        for a in corners:  # fine corner a of the voxel: node v + a, weighted by coarse corner b unless |2b - s - a| = 2
            weighs = np.ones((Z, Y, X), bool)
            for i in range(3):
                weighs &= np.abs(2 * off[i] - sub[i] - a[i]) < 2
            r = rep[a[0]:a[0] + Z, a[1]:a[1] + Y, a[2]:a[2] + X]
            node_lab = np.choose(cls, [lb[r[..., 0], r[..., 1], r[..., 2]] for lb in labels])
            mixed |= solid & weighs & (node_lab != lab)
    return cid, mixed
