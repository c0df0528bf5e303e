"""CG iterations of the cohesive band's multigrid at 0 %, about 50 % and 100 % debonded, against bonded.

Usage: python benchmarks/band_cg.py [SIZE] [COARSE]   (default 48 trilinear; COARSE: trilinear or split)

One shrinking step (dV/V = -3 % in the particles) on the centred MATBOX crop, solved with the band's
damage set by hand (no stepping): undamaged, half of the band voxels (at random) debonded, all
debonded, each open (tension) and, for comparison, the bonded problem. Prints the CG iterations
(a solve that fails and is run again with rigid-body deflation and local solves shows both counts),
the solve time and the particles left without any bonded band voxel. Run it alone.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cohesive_charge import STEPPING, build, crop  # noqa: E402

from solvers import fields  # noqa: E402
from tomomech.errors import ConvergenceError  # noqa: E402


def main(n=48, coarse="trilinear"):
    STEPPING["coarse"] = coarse
    n = int(n)
    mesh = crop(n)
    faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    eps = np.where(mesh.cell_phase == 2, -0.01, 0.0)
    bonded = build("bonded", mesh, faces, "mixed")
    f = bonded.load(eps)
    t0 = time.perf_counter()
    bonded.solver.solve(f)
    print(f"crop {n}^3, {3 * mesh.n_nodes:,} dof, {int(mesh.particles.max())} particles; bonded: "
          f"{bonded.solver.stats.iterations[-1]} CG its, {time.perf_counter() - t0:.1f} s")
    band = build("band", mesh, faces, "mixed")
    geo = band.band_geometry
    rng = np.random.default_rng(0)
    for label, share in (("0 %", 0.0), ("50 %", 0.5), ("100 %", 1.0)):
        damage = (rng.uniform(size=geo.n) < share).astype(float)
        band._set_operator(damage, np.zeros(geo.n, bool))
        t0 = time.perf_counter()
        before = len(band.solver.stats.iterations)
        try:
            band.solver.solve(f)
            its = " then ".join(str(i) for i in band.solver.stats.iterations[before:])
        except ConvergenceError as err:  # floating particles: near rigid-body modes
            its = f"no convergence ({err})"
        bonded_left = np.bincount(geo.particle[damage < 1], minlength=int(mesh.particles.max()) + 1)[1:]
        print(f"band, {label} of the band voxels debonded: {its} CG its, "
              f"{time.perf_counter() - t0:.1f} s; {int((bonded_left == 0).sum())} particles without a bonded "
              f"band voxel")


if __name__ == "__main__":
    main(*sys.argv[1:])
