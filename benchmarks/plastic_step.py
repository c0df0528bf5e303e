"""A plastic swelling step on a MATBOX crop against the elastic one with the same load steps.

Usage::

    python benchmarks/plastic_step.py [--size 96] [--steps 10] [--yield-mpa 300] [--hardening-mpa 0]
        [--backend matrix-free|assembled] [--method newton|initial-stiffness] [--forcing 1e-2] [--depth 5]
        [--only plastic|elastic]

NMC811 in Li6PS5Cl (J2, the ``Li6PS5Cl`` plastic law unless ``--yield-mpa`` is given), theta 1.0 -> 0.22 in
``--steps`` load steps (the issue's "one plastic swelling step"), top free. Runs the elastic problem, then
the plastic one, each in its own process so that each peak resident memory is its own. Prints per run: dof,
set-up and loop time, linear solves, CG iterations, plastic iterations per step, peak memory, and the ratio.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one(args) -> dict:
    from benchmarks.transient_charge import matbox_crop
    from solvers.mesh import voxel_hex_mesh
    from solvers.physics import ElasticProblem, get_material
    from solvers.physics.inelastic import PlasticProblem
    from solvers.physics.materials import PLASTICITY_PRESETS
    from solvers.physics.plasticity import J2Plasticity

    phases, particles, _ = matbox_crop(args.size)
    mesh = voxel_hex_mesh(phases, particles, [0.4e-6] * 3)
    nmc, se = get_material("NMC811"), get_material("Li6PS5Cl")
    t0 = time.perf_counter()
    prob = ElasticProblem(mesh, {1: se, 2: nmc}, backend=args.backend, rtol=1e-8)
    setup = time.perf_counter() - t0
    law = PLASTICITY_PRESETS["Li6PS5Cl"] if args.yield_mpa is None else J2Plasticity(args.yield_mpa,
                                                                                       args.hardening_mpa)
    if args.run == "plastic":
        prob = PlasticProblem(prob, {1: law}, depth=args.depth, method=args.method, forcing=args.forcing)
    active = mesh.cell_phase == 2
    u, cg, per_step = None, 0, []
    t0 = time.perf_counter()
    for k in range(1, args.steps + 1):
        theta = 1.0 + (0.22 - 1.0) * k / args.steps
        eps = np.where(active, nmc.swelling_strain(theta, 1.0), 0.0)
        u = prob.solve(eps, x0=u)
        cg += prob.last_iterations
        per_step.append(prob.history[-1]["iterations"] if args.run == "plastic" else 1)
    loop = time.perf_counter() - t0
    sig = prob.cell_stress(u, eps)
    from solvers import fields

    vm = fields.von_mises(sig)
    out = {"run": args.run, "dof": prob.n_dof, "setup_s": setup, "loop_s": loop, "solves": int(sum(per_step)),
           "cg": cg, "per_step": per_step, "peak_GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
           "active_vm_mean_MPa": float(vm[active].mean() / 1e6), "active_vm_max_MPa": float(vm[active].max() / 1e6),
           "se_vm_max_MPa": float(vm[mesh.cell_phase == 1].max() / 1e6)}
    if args.run == "plastic":
        out["se_yielded"] = float(np.mean(prob.cell_equivalent_plastic_strain()[mesh.cell_phase == 1] > 0))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--yield-mpa", type=float, default=None)
    p.add_argument("--hardening-mpa", type=float, default=0.0)
    p.add_argument("--backend", default="matrix-free")
    p.add_argument("--depth", type=int, default=5, help="Anderson depth (initial-stiffness)")
    p.add_argument("--method", default="newton", choices=("newton", "initial-stiffness"))
    p.add_argument("--forcing", type=float, default=1e-2, help="Newton: CG tolerance of a correction")
    p.add_argument("--only", choices=("plastic", "elastic"), default=None)
    p.add_argument("--run", default=None, help=argparse.SUPPRESS)  # the child process
    args = p.parse_args()
    if args.run:
        print(json.dumps(one(args)))
        return
    rows = {}
    for run in ("elastic", "plastic"):
        if args.only and run != args.only:
            continue
        cmd = [sys.executable, __file__, "--run", run, "--size", str(args.size), "--steps", str(args.steps),
               "--hardening-mpa", str(args.hardening_mpa), "--backend", args.backend, "--depth", str(args.depth),
               "--method", args.method, "--forcing", str(args.forcing)]
        cmd += [] if args.yield_mpa is None else ["--yield-mpa", str(args.yield_mpa)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[run] = json.loads(res.stdout.strip().splitlines()[-1])
        r = rows[run]
        print(f"{args.size}^3 {run}: {r['dof']} dof, set-up {r['setup_s']:.1f} s, loop {r['loop_s']:.1f} s, "
              f"{r['solves']} solves, {r['cg']} CG its, per step {r['per_step']}, peak {r['peak_GB']:.2f} GB, "
              f"active von Mises mean {r['active_vm_mean_MPa']:.0f} max {r['active_vm_max_MPa']:.0f} MPa, "
              f"SE max {r['se_vm_max_MPa']:.0f} MPa" + (f", SE yielded {r['se_yielded']:.3f}" if run == "plastic"
                                                         else ""), flush=True)
    if len(rows) == 2:
        e, q = rows["elastic"], rows["plastic"]
        print(f"ratio plastic / elastic: loop {q['loop_s'] / e['loop_s']:.2f}x, memory "
              f"{q['peak_GB'] / e['peak_GB']:.2f}x")


if __name__ == "__main__":
    main()
