"""Time to solution against accuracy: voxel hexes and conforming tets on the misfit sphere.

The problem of PHYSICS.md 3(b) in a box: a sphere of radius 8.7 voxels (NMC, 140 GPa)
shrinking by dV/V = 5 % in Li6PS5Cl (22 GPa), centred in the box [0, 25]^3 voxels of 1 um
(rollers on the sides and the bottom, top free). Two quantities: the particle's volume-mean
hydrostatic stress and the area-weighted median normal traction on its interface.

- conforming-tet: CGAL on the 26^3 label image (its box runs between the outer voxel
  centres: [0, 25]^3) at several cell sizes, linear and quadratic (P2);
- voxel-hex: the same sphere imaged k times finer (voxel centres at (j + 1/2) / k) for
  k = 1, 2, 3, 4: what a finer scan would give; the staircase shrinks with k.

The errors are against the finest conforming mesh (printed with the finest hexes, so the
spread of the two references shows the reference's own uncertainty).

Usage::

    python benchmarks/sphere_accuracy.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import resource
import time

import numpy as np

from solvers import fields
from solvers.mesh import voxel_hex_mesh
from solvers.physics import ElasticProblem, Material

R, BOX = 8.7, 25
EPS = -0.05 / 3
MATS = {1: Material("se", 22.0, 0.3), 2: Material("ap", 140.0, 0.3)}
H = 1e-6


def weighted_median(values, weights):
    o = np.argsort(values)
    c = np.cumsum(weights[o])
    return float(values[o][np.searchsorted(c, 0.5 * c[-1])])


def solve(mesh):
    t0 = time.perf_counter()
    prob = ElasticProblem(mesh, MATS, top="free", solver="amg", rtol=1e-10)
    eps = np.where(mesh.cell_phase == 2, EPS, 0.0)
    sig = prob.cell_stress(prob.solve(eps), eps)
    return sig, time.perf_counter() - t0, prob.n_dof


def hex_case(k):
    n = BOX * k
    c = (np.indices((n, n, n)) + 0.5) / k - BOX / 2
    ph = np.where((c**2).sum(axis=0) < R**2, 2, 1).astype(np.uint8)
    t0 = time.perf_counter()
    mesh = voxel_hex_mesh(ph, (ph == 2).astype(np.int32), [H / k] * 3)
    t_mesh = time.perf_counter() - t0
    sig, t_solve, dof = solve(mesh)
    ap = mesh.cell_phase == 2
    hyd = float(fields.hydrostatic(sig[ap]).mean())
    f = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    cell_of = np.full(ph.size, -1)
    cell_of[mesh.cell_voxel] = np.arange(mesh.n_cells)
    tn = fields.normal_traction(sig[cell_of[f["ap_voxel"]]], sig[cell_of[f["se_voxel"]]], f["normal"])
    return dict(name=f"voxel-hex, scan {k}x finer", cells=mesh.n_cells, dof=dof, mesh_s=t_mesh,
                solve_s=t_solve, hyd=hyd, tn=weighted_median(tn, f["area"]))


def tet_case(size, order=1):
    from solvers.mesh import quadratic_tet_mesh
    from solvers.mesh.conforming import conforming_tet_mesh

    n = BOX + 1
    z, y, x = np.indices((n, n, n)) + 0.5
    ph = np.where((z - n / 2) ** 2 + (y - n / 2) ** 2 + (x - n / 2) ** 2 < R**2, 2, 1).astype(np.uint8)
    t0 = time.perf_counter()
    mesh = conforming_tet_mesh(ph, (ph == 2).astype(np.int32), [H] * 3, max_cell_size_voxels=size,
                               max_facet_distance_voxels=min(0.25, size / 4), seed=1)
    if order == 2:
        mesh = quadratic_tet_mesh(mesh)
    t_mesh = time.perf_counter() - t0
    sig, t_solve, dof = solve(mesh)
    vol = np.abs(mesh.cell_volumes())
    ap = mesh.cell_phase == 2
    f = fields.tet_interface_faces(mesh)
    tn = fields.normal_traction(sig[f["ap_cell"]], sig[f["se_cell"]], f["normal"])
    name = f"conforming-tet{'' if order == 1 else ' P2'}, cells {size:g} voxel"
    return dict(name=name, cells=mesh.n_cells, dof=dof, mesh_s=t_mesh, solve_s=t_solve,
                hyd=float(np.average(fields.hydrostatic(sig[ap]), weights=vol[ap])),
                tn=weighted_median(tn, f["area"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the two most expensive cases")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sizes = (2.0, 1.5, 1.0, 0.7) + (() if args.quick else (0.5,))
    ks = (1, 2, 3) + (() if args.quick else (4,))
    rows = [tet_case(s) for s in sizes] + [tet_case(s, 2) for s in (2.0, 1.5)] + [hex_case(k) for k in ks]
    ref = rows[len(sizes) - 1]
    print(f"reference: {ref['name']} (hydrostatic {ref['hyd'] / 1e6:.1f} MPa, median t_n {ref['tn'] / 1e6:.1f} MPa)")
    print(f"{'mesh':32s} {'cells':>9s} {'dof':>9s} {'mesh s':>7s} {'solve s':>8s} {'hydro MPa':>10s} "
          f"{'err %':>6s} {'t_n MPa':>8s} {'err %':>6s}")
    for r in rows:
        print(f"{r['name']:32s} {r['cells']:9d} {r['dof']:9d} {r['mesh_s']:7.1f} {r['solve_s']:8.1f} "
              f"{r['hyd'] / 1e6:10.1f} {100 * (r['hyd'] / ref['hyd'] - 1):+6.1f} {r['tn'] / 1e6:8.1f} "
              f"{100 * (r['tn'] / ref['tn'] - 1):+6.1f}")
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")


if __name__ == "__main__":
    main()
