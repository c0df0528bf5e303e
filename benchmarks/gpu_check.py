"""The GPU path on a real device: one prepared script for a session that is lent a GPU.

Run alone: ``python benchmarks/gpu_check.py [--sizes 32 128 256 512] [--budget-s 480]``.
Prints one JSON line per measurement and stops starting new sizes once ``--budget-s`` is spent:

1. 32^3 MATBOX crop, CPU against GPU in float64: operator, solution, CG iterations, one diffusion step
   (target: equal to 1e-8; the CuPy double gives 1e-12 in CI);
2. per-iteration split at 128^3 (operator, V-cycle, its local and coarsest solves, host transfers);
3. one elastic step (mixed precision) at each larger size: set-up, solve, iterations, device memory
   held by CuPy's pool after the solve (its high-water mark) and bytes per dof
   (targets: 512^3 in at most 3 s of solve and 80 bytes per dof).

Crops larger than the MATBOX volume are its mirror images (numpy ``reflect`` padding).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "samples/matbox_nmc/nmc-1-cal_generatedCBD_bridge.tif"


def crop(n: int) -> np.ndarray:
    from pipeline.io import read_volume

    raw = read_volume(SAMPLE).data
    if min(raw.shape) < n:
        raw = np.pad(raw, [(0, max(0, n - s)) for s in raw.shape], mode="reflect")
    z0, y0, x0 = ((np.array(raw.shape) - n) // 2).tolist()
    return np.array([1, 2, 0], np.uint8)[raw[z0:z0 + n, y0:y0 + n, x0:x0 + n]]  # pore->SE, NMC->AP, binder->void


def problem(n, **kw):
    from solvers.mesh import voxel_hex_mesh
    from solvers.physics import ElasticProblem, get_material

    phases = crop(n)
    mesh = voxel_hex_mesh(phases, (phases == 2).astype(np.int32), [0.4e-6] * 3)
    nmc = get_material("NMC811")
    eps = np.where(mesh.cell_phase == 2, nmc.swelling_strain(0.22, 1.0), 0.0)
    t = time.perf_counter()
    prob = ElasticProblem(mesh, {1: get_material("Li6PS5Cl"), 2: nmc}, backend="matrix-free", **kw)
    return mesh, prob, eps, time.perf_counter() - t


def emit(**rec):
    print(json.dumps(rec), flush=True)


def compare(n=32):
    import cupy

    from solvers import fields
    from solvers.physics import get_material
    from solvers.physics.diffusion import DiffusionProblem

    mesh, cpu, eps, _ = problem(n)
    _, gpu, _, _ = problem(n, device="gpu")
    x = np.random.default_rng(0).normal(size=cpu.n_dof)
    y = cpu.solver.matvec(x)
    op = float(np.abs(gpu.solver.matvec(x) - y).max() / np.abs(y).max())
    u_cpu, u_gpu = cpu.solve(eps), gpu.solve(eps)
    faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    kw = dict(D=get_material("NMC811").D_m2_s, dt=90.0, faces=faces, backend="matrix-free")
    dc, dg = DiffusionProblem(mesh, **kw), DiffusionProblem(mesh, device="gpu", **kw)
    c0, flux = np.full(dc.n_nodes, 5e4), np.full(dc.face_area.size, -2e-4)
    a, b = dc.step(c0, dc.face_load(flux)), dg.step(c0, dg.face_load(flux))
    cupy.cuda.Device().synchronize()
    emit(check="cpu-gpu", n=n, dof=cpu.n_dof, operator_rel=op,
         solution_rel=float(np.abs(u_gpu - u_cpu).max() / np.abs(u_cpu).max()),
         iterations=[cpu.solver.stats.iterations[-1], gpu.solver.stats.iterations[-1]],
         diffusion_rel=float(np.abs(a - b).max() / np.abs(a).max()))


def split(n=128, repeats=5):
    import cupy

    _, prob, eps, setup = problem(n, device="gpu", precision="mixed")
    mf = prob.solver
    sync = cupy.cuda.Device().synchronize
    r = cupy.asarray(np.random.default_rng(1).normal(size=mf.levels[0].node_shape) * ~mf.levels[0].fixed)

    def timed(f):
        f()
        sync()
        t = time.perf_counter()
        for _ in range(repeats):
            f()
        sync()
        return (time.perf_counter() - t) / repeats

    lv = mf.levels[0]
    r32 = r.astype(np.float32)
    parts = {"operator_float64_s": timed(lambda: mf.apply(r)),
             "operator_float32_s": timed(lambda: mf._apply_level(lv, r32, cupy)),
             "vcycle_s": timed(lambda: mf.precondition(r)),
             "to_grid_s": timed(lambda: mf._to_grid(np.zeros(prob.n_dof))),
             "from_grid_s": timed(lambda: mf._from_grid(r))}
    if mf._local:
        x = cupy.zeros_like(r32)
        parts["local_solves_s"] = timed(lambda: [mf._local_correct(x, r32.copy(), s) for s in mf._local])
    parts["coarsest_s"] = timed(lambda: mf._vcycle(len(mf.levels) - 1, cupy.zeros(mf.levels[-1].node_shape,
                                                                                  np.float32)))
    t = time.perf_counter()
    prob.solve(eps)
    emit(check="split", n=n, dof=prob.n_dof, setup_s=setup, solve_s=time.perf_counter() - t,
         iterations=mf.stats.iterations[-1], levels=len(mf.levels), **parts)


def step(n):
    import cupy

    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    _, prob, eps, setup = problem(n, device="gpu", precision="mixed")
    t = time.perf_counter()
    prob.solve(eps)
    cupy.cuda.Device().synchronize()
    solve = time.perf_counter() - t
    emit(check="step", n=n, dof=prob.n_dof, setup_s=setup, solve_s=solve, iterations=prob.solver.stats.iterations[-1],
         pool_GB=pool.total_bytes() / 1e9, bytes_per_dof=pool.total_bytes() / prob.n_dof)
    del prob


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[256, 512])
    ap.add_argument("--budget-s", type=float, default=480.0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    for name, job in [("compare", compare), ("split", split)] + [(f"step {n}", lambda n=n: step(n))
                                                                  for n in args.sizes]:
        if time.perf_counter() - t0 > args.budget_s:
            emit(check=name, skipped="time budget spent")
            continue
        try:
            job()
        except Exception as exc:  # report and go on: one failing part must not hide the others
            emit(check=name, error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
