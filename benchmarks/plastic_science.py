"""Elastic against plastic electrolytes during a galvanostatic charge of a MATBOX crop (issue 33's science runs).

Usage::

    python benchmarks/plastic_science.py [--size 48] [--steps 20]

NMC811 charged theta 1.0 -> 0.22 (uniform flux rule, bonded interface, top free), matrix-free mechanics.
Cases: Li6PS5Cl elastic and with its plastic law (300 MPa) at 1C; PEO elastic at 1C; PEO with its
viscoplastic law (0.3 MPa, eta 10 s) at 0.1C, 1C and 5C, and with eta = 1000 s at 0.1C and 5C (a
relaxation time near the step). Prints, at the end of charge: the particles' von Mises p50 / p95 (volume
statistics over active cells), the AP|SE normal traction (mean, p5 = most compressive, p95 = most
tensile, face-area weighted), the electrolyte's von Mises p95, its yielded share and largest equivalent
plastic strain. Accuracy runs, not timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.transient_charge import matbox_crop  # noqa: E402
from solvers import fields  # noqa: E402
from solvers.mesh import voxel_hex_mesh  # noqa: E402
from solvers.physics import ElasticProblem, get_material  # noqa: E402
from solvers.physics.inelastic import PlasticProblem  # noqa: E402
from solvers.physics.materials import PLASTICITY_PRESETS  # noqa: E402
from solvers.physics.transient import Galvanostatic, galvanostatic_states  # noqa: E402


def case(mesh, faces, electrolyte, law, c_rate, steps):
    nmc = get_material("NMC811")
    prob = ElasticProblem(mesh, {1: electrolyte, 2: nmc}, backend="matrix-free", rtol=1e-8)
    if law is not None:
        prob = PlasticProblem(prob, {1: law})
    proto = Galvanostatic(c_rate=c_rate, soc_start=1.0, soc_end=0.22, steps=steps)
    for st in galvanostatic_states(prob, nmc, faces, proto, output_every=steps, backend="matrix-free"):
        last = st
    sig = last.sigma
    ap, se = mesh.cell_phase == 2, mesh.cell_phase == 1
    vm = fields.von_mises(sig)
    cell_of = mesh.voxel_cell
    tn = fields.normal_traction(sig[cell_of[faces["ap_voxel"]]], sig[cell_of[faces["se_voxel"]]], faces["normal"])
    t = fields.group_stats(np.zeros(tn.size, np.int64), tn, 1, weights=faces["area"], percentiles=(5, 95))
    out = {"vm_p50": np.percentile(vm[ap], 50), "vm_p95": np.percentile(vm[ap], 95),
           "tn_mean": t["mean"][0], "tn_p5": t["p5"][0], "tn_p95": t["p95"][0], "se_vm_p95": np.percentile(vm[se], 95)}
    out = {k: v / 1e6 for k, v in out.items()}
    if law is not None:
        e = prob.cell_equivalent_plastic_strain()[se]
        out.update(yielded=float(np.mean(e > 0)), peeq_max=float(e.max()))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    phases, particles, _ = matbox_crop(args.size)
    mesh = voxel_hex_mesh(phases, particles, [0.4e-6] * 3)
    faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    lps, peo = get_material("Li6PS5Cl"), get_material("PEO")
    peo_law = PLASTICITY_PRESETS["PEO"]
    slow_peo = dataclasses.replace(peo_law, viscosity_s=1000.0)
    cases = [("Li6PS5Cl elastic", lps, None, 1.0),
             ("Li6PS5Cl plastic 300 MPa", lps, PLASTICITY_PRESETS["Li6PS5Cl"], 1.0),
             ("PEO elastic", peo, None, 1.0)]
    cases += [(f"PEO viscoplastic eta 10 s, {c:g}C", peo, peo_law, c) for c in (0.1, 1.0, 5.0)]
    cases += [(f"PEO viscoplastic eta 1000 s, {c:g}C", peo, slow_peo, c) for c in (0.1, 5.0)]
    print(f"MATBOX {args.size}^3, {3 * mesh.n_nodes} dof, {args.steps} steps, theta 1.0 -> 0.22, end of charge (MPa)")
    print("| case | particle von Mises p50 / p95 | AP\\|SE normal traction mean / p5 / p95 | SE von Mises p95 | "
          "SE yielded | largest plastic strain |")
    print("|---|---|---|---|---|---|")
    for name, se, law, c in cases:
        r = case(mesh, faces, se, law, c, args.steps)
        print(f"| {name} | {r['vm_p50']:.0f} / {r['vm_p95']:.0f} | {r['tn_mean']:.2f} / {r['tn_p5']:.2f} / "
              f"{r['tn_p95']:.2f} | {r['se_vm_p95']:.2f} | {r.get('yielded', float('nan')):.3f} | "
              f"{r.get('peeq_max', float('nan')):.3g} |", flush=True)


if __name__ == "__main__":
    main()
