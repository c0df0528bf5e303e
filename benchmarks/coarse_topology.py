"""Which coarse space the slow solves on raw-CT segmentations need: a measured two-grid comparison.

Usage: python benchmarks/coarse_topology.py [nmc1cal|matbox] [SIZE]   (default: nmc1cal 48)

``nmc1cal``: the raw bundled nmc1cal stack segmented with the CLI defaults (multi-Otsu), centred
SIZE^3 crop. ``matbox``: the centred SIZE^3 crop of the clean MATBOX sample (the reference).

One random right-hand side on the free dofs, CG to 1e-8 with five preconditioners:

- the production multigrid (``MatrixFreeSolver``, all levels, local solves as at set-up);
- two-grid, trilinear coarse space (the one the production multigrid uses on every level);
- two-grid, topology-aware coarse space: every coarse node is split into one copy per
  26-connected solid component of its support (the 4^3 fine voxels its trilinear function
  covers), and a fine node takes the copy of the component its voxels belong to, so that no
  coarse function couples solid pieces that only meet outside its support (McAdams et al.,
  SIGGRAPH 2011; Zhu et al., SCA 2010).

- the same two 2h spaces with a third level below, the trilinear 4h space (every copy of a 2h
  node takes the value at its position): does splitting the first coarse level suffice?

All use the same smoother on every level (Chebyshev degree 2 on Jacobi, [lmax/30, lmax]) and an
exact solve on the last level (sparse LU of its Galerkin matrix), so the difference is the coarse
spaces alone. This is a
measurement prototype (assembled matrices, a Python loop over coarse nodes for the labels); the
solver is ``solvers/matfree.py``. Prints dof, iterations and times. Run it alone.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from solvers.mesh import voxel_hex_mesh  # noqa: E402
from solvers.physics import ElasticProblem, get_material  # noqa: E402

MATS = {1: get_material("Li6PS5Cl"), 2: get_material("NMC811")}


def phases_of(sample: str, n: int) -> np.ndarray:
    from pipeline.config import SegmentationConfig
    from pipeline.io import read_volume
    from pipeline.run import segment_stage

    if sample == "nmc1cal":
        image = read_volume(ROOT / "samples/nmc1cal/nmc1cal.tif").data
        ph, _ = segment_stage(image, SegmentationConfig(), (0.4, 0.4, 0.4))
    elif sample == "matbox":
        raw = read_volume(ROOT / "samples/matbox_nmc/nmc-1-cal_generatedCBD_bridge.tif").data
        ph = np.array([1, 2, 0], np.uint8)[raw]  # pore -> SE, NMC -> AP, binder -> void
    else:
        raise SystemExit(f"sample {sample!r}: use nmc1cal or matbox")
    z0, y0, x0 = ((np.array(ph.shape) - n) // 2).tolist()
    return ph[z0:z0 + n, y0:y0 + n, x0:x0 + n]


def component_table(solid: np.ndarray, coarse_nodes) -> tuple[np.ndarray, np.ndarray]:
    """(cz, cy, cx, 4, 4, 4) copy index of every solid voxel of every coarse node's support (-1: void),
    and the flat coarse grid node of every copy."""
    cz, cy, cx = coarse_nodes
    padded = np.pad(solid, [(2, 2 + 2 * c - s) for c, s in zip(coarse_nodes, solid.shape)])
    table = np.full((cz, cy, cx, 4, 4, 4), -1, np.int64)
    grid_node = []
    for i in range(cz):
        for j in range(cy):
            for k in range(cx):
                lab, n = ndi.label(padded[2 * i:2 * i + 4, 2 * j:2 * j + 4, 2 * k:2 * k + 4], np.ones((3, 3, 3)))
                table[i, j, k] = np.where(lab > 0, lab - 1 + len(grid_node), -1)
                grid_node += [(i * cy + j) * cx + k] * n
    return table, np.array(grid_node, np.int64)


def prolongation(mesh, fixed, topology: bool) -> tuple[sp.csr_matrix, np.ndarray]:
    """Trilinear prolongation from the 2h node grid to the mesh dofs, or its topology-aware split
    (the columns no free fine dof uses left out), and the flat 2h grid node and component of every column."""
    solid = mesh.phases != 0
    shape = np.array(solid.shape)
    coarse = tuple(int(s) for s in (shape + 1) // 2 + 1)
    nodes = np.array(np.unravel_index(mesh.node_grid, tuple(shape + 1))).T
    if topology:
        table, grid_node = component_table(solid, coarse)
    else:
        grid_node = np.arange(int(np.prod(coarse)))
    n_cols = len(grid_node)
    rows, cols, vals = [], [], []
    for a in range(8):  # the 8 coarse neighbours (coincident ones carry weight 0)
        off = np.array([(a >> 2) & 1, (a >> 1) & 1, a & 1])
        c = np.where(off == 0, nodes // 2, (nodes + 1) // 2)
        w = np.prod(np.where(nodes % 2 == 0, 1.0 - off, 0.5), axis=1)
        if topology:  # the copy of the component of any solid voxel at the fine node, inside the support
            col = np.full(len(nodes), -1)
            for d in range(8):
                v = nodes - np.array([(d >> 2) & 1, (d >> 1) & 1, d & 1])
                inside = (v >= 0).all(1) & (v < shape).all(1)
                v = np.where(inside[:, None], v, 0)
                loc = v - 2 * c + 2
                take = inside & solid[tuple(v.T)] & (loc >= 0).all(1) & (loc < 4).all(1) & (col < 0)
                col[take] = table[(*c[take].T, *loc[take].T)]
        else:
            col = np.ravel_multi_index(tuple(c.T), coarse)
        ok = (w > 0) & (col >= 0)
        for comp in range(3):
            rows.append(3 * np.flatnonzero(ok) + comp)
            cols.append(3 * col[ok] + comp)
            vals.append(w[ok])
    P = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(3 * len(nodes), 3 * n_cols))
    P = (sp.diags((~fixed.ravel()).astype(float)) @ P).tocsr()
    used = np.flatnonzero(np.asarray(abs(P).sum(axis=0)).ravel() > 0)
    return P[:, used].tocsr(), (grid_node[used // 3], used % 3)


def smoother(A, degree=2, ratio=30.0):
    """Chebyshev on Jacobi over [lmax / ratio, lmax] (lmax: 30 power steps, times 1.1), as the solver's."""
    d = A.diagonal()
    dinv = 1.0 / np.where(d > 0, d, 1.0)
    v = np.random.default_rng(0).standard_normal(A.shape[0])
    for _ in range(30):
        v = dinv * (A @ v)
        lmax = np.linalg.norm(v)
        v /= lmax
    lmax *= 1.1
    lmin = lmax / ratio
    theta, delta = (lmax + lmin) / 2, (lmax - lmin) / 2

    def smooth(x, b):
        sigma = theta / delta
        rho = 1 / sigma
        dx = dinv * (b - A @ x) / theta
        for k in range(degree):
            x = x + dx
            if k < degree - 1:
                rho_new = 1 / (2 * sigma - rho)
                dx = rho_new * rho * dx + 2 * rho_new / delta * dinv * (b - A @ x)
                rho = rho_new
        return x

    return smooth


def trilinear_below(columns, coarse_nodes):
    """Trilinear prolongation from the 4h node grid to the 2h dofs ``columns`` ((grid node, component)
    of each, as :func:`prolongation` gives them): every copy of a node takes the value at its position."""
    def one_axis(nf):
        nc = nf // 2 + 1  # coarse nodes over the nf - 1 fine voxels (odd counts padded)
        i = np.arange(nf)
        rows = np.concatenate([i, i[i % 2 == 1]])
        cols = np.minimum(np.concatenate([i // 2, i[i % 2 == 1] // 2 + 1]), nc - 1)
        vals = np.where(np.concatenate([i % 2 == 0, np.zeros((i % 2 == 1).sum(), bool)]), 1.0, 0.5)
        return sp.csr_matrix((vals, (rows, cols)), shape=(nf, nc))

    axes = [one_axis(n) for n in coarse_nodes]
    T = sp.kron(sp.kron(axes[0], axes[1]), axes[2]).tocsr()  # (2h grid nodes, 4h grid nodes)
    node, comp = columns
    T = T[node].tocoo()
    return sp.csr_matrix((T.data, (T.row, 3 * T.col + comp[T.row])), shape=(len(node), 3 * T.shape[1]))


def multigrid(A, prolongations):
    """Symmetric V-cycle over ``A`` and the levels ``P^T A P`` below it (exact solve on the last)."""
    ops, smooth = [A], [smoother(A)]
    for P in prolongations:
        ops.append((P.T @ ops[-1] @ P).tocsr())
        if P is not prolongations[-1]:
            smooth.append(smoother(ops[-1]))
    last = ops[-1].tocsc()
    lu = spla.splu(last + sp.identity(last.shape[0], format="csc") * 1e-10 * A.diagonal().mean())

    def cycle(k, r):
        if k == len(prolongations):
            return lu.solve(r)
        A_k, P = ops[k], prolongations[k]
        x = smooth[k](np.zeros_like(r), r)
        x = x + P @ cycle(k + 1, P.T @ (r - A_k @ x))
        return smooth[k](x, r)

    return spla.LinearOperator(A.shape, matvec=lambda r: cycle(0, r)), [op.shape[0] for op in ops[1:]]


def main(sample="nmc1cal", n=48):
    ph = phases_of(sample, int(n))
    mesh = voxel_hex_mesh(ph, (ph == 2).astype(np.int32), [0.4e-6] * 3)
    prob = ElasticProblem(mesh, MATS, backend="matrix-free")
    b = np.random.default_rng(1).standard_normal(prob.n_dof) * ~prob.fixed.ravel()
    t0 = time.perf_counter()
    prob.solver.solve(b)
    print(f"{sample} {n}^3, {prob.n_dof:,} dof, void {np.mean(ph == 0):.1%}: production multigrid "
          f"{prob.solver.stats.iterations[-1]} CG its ({time.perf_counter() - t0:.1f} s)", flush=True)
    A = prob._finish_matrix(prob._assemble()).tocsr()
    coarse = tuple(int(c) for c in (np.array(ph.shape) + 1) // 2 + 1)
    for levels in (2, 3):
        for topology in (False, True):
            t0 = time.perf_counter()
            P, columns = prolongation(mesh, prob.fixed, topology)
            Ps = [P] if levels == 2 else [P, trilinear_below(columns, coarse)]
            M, sizes = multigrid(A, Ps)
            t1 = time.perf_counter()
            its = []
            _, info = spla.cg(A, b, M=M, rtol=1e-8, maxiter=500, callback=lambda x, its=its: its.append(1))
            name = "topology-aware" if topology else "trilinear"
            failed = "" if info == 0 else " (no convergence)"
            print(f"{levels}-level, {name} 2h space{', trilinear 4h' if levels == 3 else ''}: coarse dof "
                  f"{' / '.join(f'{n:,}' for n in sizes)}, {len(its)} CG its{failed}; "
                  f"setup {t1 - t0:.1f} s, solve {time.perf_counter() - t1:.1f} s", flush=True)

if __name__ == "__main__":
    main(*sys.argv[1:])
