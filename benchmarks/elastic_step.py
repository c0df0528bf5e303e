"""Elastic step on cubic crops of the MATBOX sample: DOF, stage times, peak memory.

Each size runs in its own process so that its peak resident memory is its own.
Usage: python benchmarks/elastic_step.py [SIZES...] [--aggregation auto|smoothed|plain]
       [--backend assembled|matrix-free] [--precision float64|mixed]
(default 64 96 128, auto)
Prints a Markdown table (the elastic-step table of docs/performance.md).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples/matbox_nmc/nmc-1-cal_generatedCBD_bridge.tif"
AGGREGATION = "auto"  # smoothed below 1.5 M dof, plain above (memory); --aggregation X to force
BACKEND = "assembled"  # --backend matrix-free for the geometric multigrid solver
PRECISION = "float64"  # --precision mixed: matrix-free multigrid in float32


def one(n: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from pipeline.io import read_volume
    from solvers.mesh import voxel_hex_mesh
    from solvers.physics import ElasticProblem, get_material

    raw = read_volume(SAMPLE).data
    z0, y0, x0 = ((np.array(raw.shape) - n) // 2).tolist()
    crop = raw[z0:z0 + n, y0:y0 + n, x0:x0 + n]
    phases = np.array([1, 2, 0], np.uint8)[crop]  # pore -> SE, NMC -> AP, binder -> void
    t = time.perf_counter()
    mesh = voxel_hex_mesh(phases, (phases == 2).astype(np.int32), [0.4e-6] * 3)
    t_mesh = time.perf_counter() - t
    prob = ElasticProblem(mesh, {1: get_material("Li6PS5Cl"), 2: get_material("NMC811")}, solver="amg",
                          aggregation=AGGREGATION, backend=BACKEND,
                          **({"precision": PRECISION} if BACKEND != "assembled" else {}))
    eps = np.where(mesh.cell_phase == 2, get_material("NMC811").swelling_strain(0.22, 1.0), 0.0)
    t = time.perf_counter()
    u = prob.solve(eps)
    t_solve = time.perf_counter() - t
    t = time.perf_counter()
    prob.cell_stress(u, eps)
    t_stress = time.perf_counter() - t
    return {"voxels": n, "dof": prob.n_dof, "mesh_s": t_mesh, "assembly_s": prob.timings["assembly_s"],
            "amg_setup_s": prob.timings["setup_s"], "solve_s": t_solve, "iterations": prob.solver.stats.iterations[0],
            "method": prob.solver.stats.method,
            "stress_s": t_stress, "peak_rss_GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def main(argv: list[str]) -> None:
    global AGGREGATION, BACKEND, PRECISION
    if "--aggregation" in argv:
        i = argv.index("--aggregation")
        AGGREGATION = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    if "--backend" in argv:
        i = argv.index("--backend")
        BACKEND = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    if "--precision" in argv:
        i = argv.index("--precision")
        PRECISION = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    if argv and argv[0] == "--one":
        print(json.dumps(one(int(argv[1]))))
        return
    sizes = [int(a) for a in argv] or [64, 96, 128]
    print("| crop | DOF | solver | mesh s | assembly s | AMG setup s | solve s | CG its | stress s | peak memory GB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        r = subprocess.run([sys.executable, __file__, "--one", str(n), "--aggregation", AGGREGATION,
                            "--backend", BACKEND, "--precision", PRECISION],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"| {n}^3 | failed: {r.stderr.strip().splitlines()[-1] if r.stderr else r.returncode} |")
            continue
        d = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"| {n}^3 | {d['dof']:,} | {d['method']} | {d['mesh_s']:.1f} | {d['assembly_s']:.1f} | "
              f"{d['amg_setup_s']:.1f} | {d['solve_s']:.1f} | {d['iterations']} | {d['stress_s']:.1f} | "
              f"{d['peak_rss_GB']:.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
