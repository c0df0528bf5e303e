"""A 1C charge of a MATBOX crop under the uniform rule and under Butler-Volmer kinetics.

Usage: python benchmarks/kinetics_charge.py [SIZE] [STEPS] [OUTPUT_EVERY] [C_RATE]   (default 96 40 10 1)

NMC811 in Li6PS5Cl (voxel 0.4 um), theta 0.95 -> 0.22 (Butler-Volmer cannot start at 1), the
pipeline's matrix-free defaults (mechanics in mixed precision at written steps, diffusion by
Jacobi-CG); voltage limits 2.5 / 4.4 V. Prints per run the wall time of the time loop, the
electrolyte solver's statistics, the cell voltage and the particles' theta range at written
steps, and the peak memory (ru_maxrss, the process so far); then the Butler-Volmer / uniform
wall-time ratio. Run it alone on the machine.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from transient_charge import matbox_crop  # noqa: E402

from solvers import fields  # noqa: E402
from solvers.mesh import voxel_hex_mesh  # noqa: E402
from solvers.physics import ElasticProblem, get_material  # noqa: E402
from solvers.physics.electrochem import KineticFlux  # noqa: E402
from solvers.physics.electrolyte import ElectrolyteProblem  # noqa: E402
from solvers.physics.kinetics import ButlerVolmer, Kinetics, open_circuit  # noqa: E402
from solvers.physics.transient import Galvanostatic, galvanostatic_states  # noqa: E402


def main(n=96, steps=40, output_every=10, c_rate=1.0):
    phases, particles, _ = matbox_crop(n)
    mesh = voxel_hex_mesh(phases, particles, [0.4e-6] * 3)
    nmc, se = get_material("NMC811"), get_material("Li6PS5Cl")
    faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    proto = Galvanostatic(c_rate=c_rate, soc_start=0.95, soc_end=0.22, steps=steps)
    walls = {}
    for rule in ("uniform", "butler-volmer"):
        t0 = time.perf_counter()
        mech = ElasticProblem(mesh, {1: se, 2: nmc}, rtol=1e-8, backend="matrix-free", precision="mixed")
        kin = None
        if rule == "butler-volmer":
            kin = KineticFlux(ElectrolyteProblem(mesh, faces, kappa_S_m=se.kappa_S_m),
                              Kinetics(ButlerVolmer(nmc.k0_m_s, nmc.c_max_mol_m3), open_circuit(nmc.ocp)),
                              voltage_limits=(2.5, 4.4))
        volts, lo, hi, its, last = [], [], [], [], 0
        for st in galvanostatic_states(mech, nmc, faces, proto, backend="matrix-free", output_every=output_every,
                                       kinetics=kin):
            th, last = st.theta_nodes, st.step
            lo.append(float(th.min()))
            hi.append(float(th.max()))
            if kin is not None:
                volts.append(st.electro["phi_s"])
                its.append(st.electro["kinetic_iterations"])
        wall = walls[rule] = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"== {rule}: crop {n}^3, {3 * mesh.n_nodes:,} mechanics dof, {last} of {steps} steps at {c_rate}C "
              f"(fewer: the voltage cut-off): {wall:.1f} s ({wall / last:.2f} s per step), peak memory {rss:.2f} GB")
        print(f"theta min / max at written steps: {np.round(lo, 3).tolist()} / {np.round(hi, 3).tolist()}")
        if kin is not None:
            e = kin.elec.stats
            print(f"electrolyte: {kin.elec.n_free:,} nodes, set-up {e.setup_s:.1f} s, {len(e.iterations)} solves, "
                  f"{sum(e.iterations)} CG iterations, {sum(e.solve_s):.1f} s")
            print(f"cell voltage at written steps (V): {np.round(volts, 4).tolist()}; fixed-point iterations "
                  f"of those steps: {its}")
    print(f"butler-volmer / uniform wall time: {walls['butler-volmer'] / walls['uniform']:.2f}x")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*[int(a) for a in args[:3]], *[float(a) for a in args[3:4]])
