"""Which coarse spaces the slow solves on raw-CT segmentations and on a debonded band need: a measured
multigrid comparison.

Usage: python benchmarks/coarse_topology.py [nmc1cal|matbox|band] [SIZE] [LEVELS]
(default: nmc1cal 48 2,3,4,5; LEVELS "" runs the inner-CG variants alone)

``nmc1cal``: the raw bundled nmc1cal stack segmented with the CLI defaults (multi-Otsu), centred
SIZE^3 crop. ``matbox``: the centred SIZE^3 crop of the clean MATBOX sample (the reference).
``band``: the MATBOX crop of ``benchmarks/cohesive_charge.py`` with a cohesive band whose voxels are
all debonded and open (``benchmarks/band_cg.py``'s 100 % case: 500 CG iterations in production).

One random right-hand side on the free dofs, CG to 1e-8, preconditioned by V-cycles that differ only
in their coarse spaces (the same smoother on every level: Chebyshev degree 2 on Jacobi over
[lmax/30, lmax]; an exact solve, sparse LU, on the last level):

- ``trilinear``: the space the production multigrid uses on every level;
- ``topology``: every node of level L (spacing 2^L h) is split into one copy per connected solid
  component of its support (the (2^(L+1))^3 fine voxels its trilinear function covers); an entity of
  the level above takes the copy of the component its solid voxels are in (McAdams et al., SIGGRAPH
  2011; Zhu et al., SCA 2010). On ``band``, the particles and the electrolyte are labelled apart and
  joined only through bonded band voxels, so an open band is a gap; a fine node on both sides goes
  with the particle.
- ``topology+SA``: the topology-aware 2h level, then pyamg smoothed aggregation (rigid modes of the
  copies, symmetric strength threshold 0 and 0.05) in place of the levels below.
- ``+ local solves`` (``band``): an exact solve on the dofs of the fine nodes whose only solid
  voxels are open band voxels, before and after the coarse correction (multiplicative, so the
  preconditioner stays symmetric), with either coarse space.
- ``two-level, inner CG``: the topology-aware 2h level solved by an inner CG to a relative
  residual of 0.1 or 0.3, preconditioned by the topology-aware V-cycle of the 2h, 4h and 8h
  levels; the outer iteration is flexible CG (its preconditioner is not a fixed linear map).

The components are found without a loop over nodes: the supports of the nodes of one parity class
tile the grid, so one ``ndimage.label`` per class on the grid with the tiles pulled apart labels all
of them. Assembled matrices throughout (a measurement, not the solver, which is
``solvers/matfree.py``). Prints dof per level, iterations and times. Run it alone.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from solvers.linalg import flexible_cg as _flexible_cg  # noqa: E402
from solvers.mesh import voxel_hex_mesh  # noqa: E402
from solvers.physics import ElasticProblem, get_material  # noqa: E402
from solvers.topology import copy_voxels, gap_only_nodes, level_copies, prolongation, representative_voxels  # noqa: E402

MATS = {1: get_material("Li6PS5Cl"), 2: get_material("NMC811")}
H = 0.4e-6


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
        raise SystemExit(f"sample {sample!r}: use nmc1cal, matbox or band")
    z0, y0, x0 = ((np.array(ph.shape) - n) // 2).tolist()
    return ph[z0:z0 + n, y0:y0 + n, x0:x0 + n]


def problem(sample: str, n: int):
    """(mesh, assembled operator with the box conditions, fixed (nn, 3), pieces, glue, gap) of a sample.

    ``pieces``: masks labelled apart; ``glue``: voxels of the second piece through which it joins the
    first (26-neighbours); ``gap``: solid voxels that join nothing (debonded band)."""
    if sample != "band":
        ph = phases_of(sample, n)
        mesh = voxel_hex_mesh(ph, (ph == 2).astype(np.int32), [H] * 3)
        prob = ElasticProblem(mesh, MATS, backend="matrix-free")
        A = prob._finish_matrix(prob._assemble()).tocsr()
        solid = ph != 0
        return mesh, A, prob.fixed, (solid, np.zeros_like(solid)), solid, np.zeros_like(solid)
    from cohesive_charge import build, crop

    from solvers import fields
    from solvers.fem.assembly import apply_dirichlet, assemble_voxel_stiffness, elasticity_matrix, elasticity_parts
    from solvers.fem.elements import HEX8
    from solvers.fem.mandel import isotropic

    mesh = crop(n)
    faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    band = build("band", mesh, faces, "mixed")
    geo = band.band_geometry
    damage, closed = np.ones(geo.n), np.zeros(geo.n, bool)
    C, hg = band.band.stiffness(damage, closed)
    cell_of = np.full(mesh.phases.size, -1)
    cell_of[mesh.cell_voxel] = np.arange(mesh.n_cells)
    kmat = [elasticity_matrix(HEX8, mesh.spacing, band.materials[p].E, band.materials[p].nu)
            for p in band.phase_codes]
    cm = band.cell_material.copy()
    cm[cell_of[geo.voxel]] = len(kmat) + np.arange(geo.n)
    B, (lam, mu) = band._B, band._lame_se
    k_lam, k_mu = (k.reshape(24, 24) for k in elasticity_parts(HEX8, mesh.spacing))
    Khg = lam * k_lam + mu * k_mu - H**3 * B.T @ isotropic(lam, mu) @ B  # as the band's solver has it
    Ke = H**3 * np.einsum("ki,bkl,lj->bij", B, C, B) + hg[:, None, None] * Khg
    A = assemble_voxel_stiffness(mesh, cm, kmat + list(Ke.reshape(-1, 8, 3, 8, 3)))
    A = apply_dirichlet(A, band.fixed, scale=A.diagonal().mean()).tocsr()
    gap = np.zeros(mesh.phases.shape, bool)
    gap.ravel()[geo.voxel[damage >= 1]] = True
    se, ap = mesh.phases == 1, mesh.phases == 2
    return mesh, A, band.fixed, (se, ap), np.zeros_like(gap), gap  # every band voxel open: nothing glues


def hierarchy(mesh, fixed, pieces, glue, gap, levels, topology):
    """Prolongations (dof x dof) of ``levels - 1`` coarse levels, and the copies' positions and components
    on the last."""
    shape = np.array(mesh.phases.shape)
    nodes = np.array(np.unravel_index(mesh.node_grid, tuple(shape + 1))).T
    solid = (pieces[0] | pieces[1]) & ~gap
    masks = (solid, gap) if topology else (np.ones(tuple(shape), bool),)
    position, voxel = nodes, representative_voxels(nodes, masks, shape)
    Ps = []
    for level in range(1, levels):
        whole = (np.ones(tuple(shape), bool), np.zeros(tuple(shape), bool))
        labels, copy_node = level_copies(pieces if topology else whole, glue, level)
        P, used = prolongation(position, voxel, labels, len(copy_node), level)
        # the next level's entities: these copies, at their nodes, with a voxel of their component
        position, voxel = copy_node[used] * 2 ** level, copy_voxels(labels, len(copy_node))[used]
        Pd = sp.kron(P, sp.identity(3), format="csr")
        if level == 1:
            Pd = (sp.diags((~fixed.ravel()).astype(float)) @ Pd).tocsr()
        Ps.append(Pd)
    return Ps, position


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


def smoothed_aggregation(A, position, theta):
    """A pyamg smoothed-aggregation V-cycle for ``A`` whose dofs are the copies at ``position`` x 3."""
    import pyamg

    xyz = np.repeat(position.astype(float), 3, axis=0)
    comp = np.tile(np.arange(3), len(position))
    B = np.zeros((A.shape[0], 6))
    B[np.arange(A.shape[0]), comp] = 1.0
    for k, (i, j) in enumerate([(0, 1), (1, 2), (2, 0)]):  # rotations in the (i, j) planes
        B[comp == i, 3 + k] = -xyz[comp == i, j]
        B[comp == j, 3 + k] = xyz[comp == j, i]
    ml = pyamg.smoothed_aggregation_solver(A, B=B, strength=("symmetric", {"theta": theta}),
                                           max_coarse=2000)
    return ml.aspreconditioner(cycle="V"), [lv.A.shape[0] for lv in ml.levels[1:]]


def vcycle(A, Ps, below=None):
    """Symmetric V-cycle over ``A`` and the Galerkin levels ``P^T A P``; the last level solved exactly,
    or by ``below(A_last)`` -> (preconditioner, sizes of its levels)."""
    ops = [A]
    for P in Ps:
        Ac = (P.T @ ops[-1] @ P).tocsr()
        ops.append((Ac + sp.diags((Ac.diagonal() == 0).astype(float))).tocsr())  # copies only fixed dofs use
    smooth = [smoother(op) for op in ops[:-1]]  # the last level is solved, not smoothed
    sizes = [op.shape[0] for op in ops]
    if below is None:
        last = ops[-1].tocsc()
        lu = spla.splu(last + sp.identity(last.shape[0], format="csc") * 1e-10 * A.diagonal().mean())
        solve_last = lu.solve
    else:
        solve_last, more = below(ops[-1])
        solve_last = solve_last.matvec
        sizes += more

    def cycle(k, r):
        if k == len(Ps):
            return solve_last(r)
        x = smooth[k](np.zeros_like(r), r)
        x = x + Ps[k] @ cycle(k + 1, Ps[k].T @ (r - ops[k] @ x))
        return smooth[k](x, r)

    return spla.LinearOperator(A.shape, matvec=lambda r: cycle(0, r)), sizes


def kcycle(A, Ps, inner=2):
    """K-cycle (Notay and Vassilevski 2008): the V-cycle's coarse correction at every level but the last
    two is ``inner`` flexible-CG iterations on ``P^T A P``, each preconditioned by the K-cycle of the
    level below; the last coarse level is solved exactly. Not a fixed linear map: use flexible CG."""
    ops = [A]
    for P in Ps:
        Ac = (P.T @ ops[-1] @ P).tocsr()
        ops.append((Ac + sp.diags((Ac.diagonal() == 0).astype(float))).tocsr())
    smooth = [smoother(op) for op in ops[:-1]]
    last = ops[-1].tocsc()
    lu = spla.splu(last + sp.identity(last.shape[0], format="csc") * 1e-10 * A.diagonal().mean())

    def coarse(k, r):  # approximate solve with ops[k], k >= 1
        if k == len(Ps):
            return lu.solve(r)
        if k == len(Ps) - 1:
            return cycle(k, r)
        Ak = ops[k]
        x = np.zeros_like(r)
        res = r.copy()
        z = cycle(k, res)
        p = z.copy()
        rz = res @ z
        for it in range(inner):
            q = Ak @ p
            alpha = rz / (p @ q)
            x += alpha * p
            if it == inner - 1:
                break
            res_old = res.copy()
            res -= alpha * q
            z = cycle(k, res)
            beta = z @ (res - res_old) / rz
            rz = res @ z
            p = z + beta * p
        return x

    def cycle(k, r):
        x = smooth[k](np.zeros_like(r), r)
        x = x + Ps[k] @ coarse(k + 1, Ps[k].T @ (r - ops[k] @ x))
        return smooth[k](x, r)

    return spla.LinearOperator(A.shape, matvec=lambda r: cycle(0, r)), [op.shape[0] for op in ops]


def inner_cg(Ps, tol):
    """``below`` for :func:`vcycle`: the first coarse level solved by CG to ``tol``, preconditioned by the
    V-cycle over the levels of ``Ps[1:]``; counts the inner iterations."""
    count = [0]

    def below(A1):
        M1, sizes = vcycle(A1, Ps[1:])

        def solve(r):
            its = []
            x, _ = spla.cg(A1, r, M=M1, rtol=tol, maxiter=50, callback=lambda x, its=its: its.append(1))
            count[0] += len(its)
            return x

        return spla.LinearOperator(A1.shape, matvec=solve), sizes[1:]

    return below, count


def flexible_cg(A, b, M, rtol, maxiter):
    """Flexible CG (solvers.linalg) on a matrix: the iterations it took (maxiter + 1: no convergence)."""
    x, its = _flexible_cg(A.__matmul__, b, M.matvec, rtol=rtol, maxiter=maxiter)
    return its if np.linalg.norm(b - A @ x) <= rtol * np.linalg.norm(b) * (1 + 1e-9) else maxiter + 1


def gap_only_dofs(mesh, fixed, gap):
    """Free dofs of the fine nodes whose solid voxels are all open band voxels (``gap``)."""
    only = gap_only_nodes(mesh.phases != 0, gap).ravel()[mesh.node_grid]
    return np.flatnonzero(np.repeat(only, 3) & ~fixed.ravel())


def with_local_solve(A, M, dofs):
    """``M`` with an exact solve on ``dofs`` before and after it (a symmetric multiplicative step)."""
    lu = spla.splu(A[dofs][:, dofs].tocsc())

    def local(x, r):
        x = x.copy()
        x[dofs] += lu.solve((r - A @ x)[dofs])
        return x

    def apply(r):
        r = np.asarray(r, float)
        x = local(np.zeros_like(r), r)
        return local(x + M.matvec(r - A @ x), r)

    return spla.LinearOperator(A.shape, matvec=apply)


def main(sample="nmc1cal", n=48, levels="2,3,4,5"):
    mesh, A, fixed, pieces, glue, gap = problem(sample, int(n))
    b = np.random.default_rng(1).standard_normal(A.shape[0]) * ~fixed.ravel()
    void = 1 - np.mean(pieces[0] | pieces[1])
    print(f"{sample} {n}^3, {A.shape[0]:,} dof, void {void:.1%}, gap {np.mean(gap):.1%}", flush=True)
    runs = [(name, int(k), None) for k in levels.split(",") if k for name in ("trilinear", "topology")]
    runs += [("topology+SA", 2, theta) for theta in (0.0, 0.05) if levels]
    for name, k, theta in runs:
        t0 = time.perf_counter()
        Ps, position = hierarchy(mesh, fixed, pieces, glue, gap, k, name != "trilinear")
        below = None if theta is None else (lambda A1, p=position, t=theta: smoothed_aggregation(A1, p, t))
        M, sizes = vcycle(A, Ps, below)
        t1 = time.perf_counter()
        its = []
        _, info = spla.cg(A, b, M=M, rtol=1e-8, maxiter=500, callback=lambda x, its=its: its.append(1))
        label = name if theta is None else f"{name} (theta {theta})"
        print(f"{label}, {k} levels: dof {' / '.join(f'{s:,}' for s in sizes)}; {len(its)} CG its"
              f"{'' if info == 0 else ' (no convergence)'}; setup {t1 - t0:.1f} s, solve "
              f"{time.perf_counter() - t1:.1f} s", flush=True)
    if sample == "band":
        dofs = gap_only_dofs(mesh, fixed, gap)
        for k in (2, 3):
            for topology in (True, False):
                t0 = time.perf_counter()
                Ps, _ = hierarchy(mesh, fixed, pieces, glue, gap, k, topology)
                M, sizes = vcycle(A, Ps)
                M = with_local_solve(A, M, dofs)
                t1 = time.perf_counter()
                its = []
                _, info = spla.cg(A, b, M=M, rtol=1e-8, maxiter=500, callback=lambda x, its=its: its.append(1))
                print(f"{'topology' if topology else 'trilinear'} + local solves on the {len(dofs):,} dofs of "
                      f"nodes with open band voxels only, {k} levels: {len(its)} CG its"
                      f"{'' if info == 0 else ' (no convergence)'}; setup {t1 - t0:.1f} s, solve "
                      f"{time.perf_counter() - t1:.1f} s", flush=True)
    for k in [int(k) for k in levels.split(",") if k and int(k) >= 3]:
        for topology in (True, False):
            t0 = time.perf_counter()
            Ps, _ = hierarchy(mesh, fixed, pieces, glue, gap, k, topology)
            M, sizes = kcycle(A, Ps)
            if sample == "band":
                M = with_local_solve(A, M, gap_only_dofs(mesh, fixed, gap))
            t1 = time.perf_counter()
            its = flexible_cg(A, b, M, 1e-8, 500)
            name = ("topology" if topology else "trilinear") + (" + local solves" if sample == "band" else "")
            print(f"K-cycle ({name}), "
                  f"{k} levels: dof {' / '.join(f'{s:,}' for s in sizes)}; {its} flexible CG its; setup "
                  f"{t1 - t0:.1f} s, solve {time.perf_counter() - t1:.1f} s", flush=True)
    for tol in (0.1, 0.3):
        t0 = time.perf_counter()
        Ps, _ = hierarchy(mesh, fixed, pieces, glue, gap, 4, True)
        below, inner = inner_cg(Ps, tol)
        M, sizes = vcycle(A, Ps[:1], below)
        t1 = time.perf_counter()
        its = flexible_cg(A, b, M, 1e-8, 500)
        print(f"two-level, 2h solved by inner CG to {tol} (topology V-cycle of 3 levels): dof "
              f"{' / '.join(f'{s:,}' for s in sizes)}; {its} flexible CG its, {inner[0]} inner CG its; setup "
              f"{t1 - t0:.1f} s, solve {time.perf_counter() - t1:.1f} s", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
