"""The electrolyte potential under Butler-Volmer kinetics against crop size.

Usage: python benchmarks/electrolyte_solve.py [SIZE ...]   (default 32 48 64 96)

Synthetic composites (``segmentation.make_composite``: 45 % NMC811 particles of radius 5
voxels, 10 % void, the rest Li6PS5Cl; voxel 0.4 um), uniform surface theta 0.5, the 1C current
of the whole active volume. One current balance (:func:`solvers.physics.kinetics.balance_current`)
per size: prints the electrolyte nodes, the set-up time, the Newton iterations, the CG
iterations of every linear solve, the wall time and the peak memory (ru_maxrss).
Run it alone on the machine.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segmentation import make_composite  # noqa: E402
from solvers import fields  # noqa: E402
from solvers.mesh import voxel_hex_mesh  # noqa: E402
from solvers.physics import get_material  # noqa: E402
from solvers.physics.diffusion import FARADAY  # noqa: E402
from solvers.physics.electrolyte import ElectrolyteProblem  # noqa: E402
from solvers.physics.kinetics import ButlerVolmer, Kinetics, balance_current, open_circuit  # noqa: E402


def main(sizes):
    nmc, se = get_material("NMC811"), get_material("Li6PS5Cl")
    kin = Kinetics(ButlerVolmer(nmc.k0_m_s, nmc.c_max_mol_m3), open_circuit(nmc.ocp))
    print("size  nodes      setup_s  newton  cg_its_per_solve          solve_s  peak_GB")
    for n in sizes:
        ph, pa = make_composite((n, n, n), active_fraction=0.45, void_fraction=0.1, radius=5, seed=3)
        mesh = voxel_hex_mesh(ph, pa, [0.4e-6] * 3)
        faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
        t0 = time.perf_counter()
        elec = ElectrolyteProblem(mesh, faces, kappa_S_m=se.kappa_S_m)
        t_setup = time.perf_counter() - t0
        current = FARADAY * nmc.c_max_mol_m3 * 0.78 * (mesh.cell_phase == 2).sum() * mesh.cell_volume / 3600
        t0 = time.perf_counter()
        out = balance_current(elec, kin, np.full(elec.point_area.size, 0.5), np.ones(elec.point_area.size, bool),
                              current)
        t_solve = time.perf_counter() - t0
        its = elec.stats.iterations
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"{n:4d}  {elec.n_free:9d}  {t_setup + elec.stats.setup_s:7.2f}  {out['newton_iterations']:6d}  "
              f"{str(its):24s}  {t_solve:7.2f}  {peak:7.2f}", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [32, 48, 64, 96])
