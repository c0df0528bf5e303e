"""Meshing the MATBOX sample three ways: element counts, meshing time, quality, peak memory.

A centred cubic crop of the MATBOX NMC electrode (pore -> electrolyte, NMC -> active,
binder -> void, particles labelled as in the pipeline) meshed as voxel-hex, voxel-tet and
conforming-tet (CGAL) at two cell sizes, plus per-phase sizing (coarser electrolyte).
Every case runs in its own process, so the peak resident memory is its own.

Usage::

    python benchmarks/meshing.py [SIZE] [MATCH]  # crop edge in voxels, default 96; only cases containing MATCH

Prints a Markdown table (the meshing table of docs/performance.md).
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
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "samples/matbox_nmc/nmc-1-cal_generatedCBD_bridge.tif"
SPACING_UM = 0.4  # assumed, as in the demo
CASES = {
    "voxel-hex": {},
    "voxel-tet": {},
    "conforming-tet, 2 voxel cells": {"max_cell_size_voxels": 2.0, "max_facet_distance_voxels": 0.5},
    "conforming-tet, 1 voxel cells": {"max_cell_size_voxels": 1.0, "max_facet_distance_voxels": 0.25},
    "conforming-tet, 1 voxel in particles, 3 in electrolyte": {
        "max_cell_size_voxels": 1.0, "electrolyte_cell_size_voxels": 3.0, "max_facet_distance_voxels": 0.25},
    "conforming-tet, 1 voxel, 0.5 within 1.5 voxels of the interface (both sides)": {
        "max_cell_size_voxels": 1.0, "max_facet_distance_voxels": 0.25, "interface_cell_size_voxels": 0.5,
        "interface_shell_voxels": 1.5},
    "conforming-tet, 1 voxel, 0.5 near the interface, labels upsampled 4x, surfaces smoothed (20 Taubin steps)": {
        "max_cell_size_voxels": 1.0, "max_facet_distance_voxels": 0.25, "interface_cell_size_voxels": 0.5,
        "interface_shell_voxels": 1.5, "smooth_iterations": 20, "upsample": 4},
    "conforming-tet, 1 voxel, 0.35 near the interface, labels upsampled 4x, surfaces smoothed": {
        "max_cell_size_voxels": 1.0, "max_facet_distance_voxels": 0.25, "interface_cell_size_voxels": 0.35,
        "interface_shell_voxels": 1.5, "smooth_iterations": 20, "upsample": 4},
}


def labels(n: int):
    from pipeline.io import read_volume
    from segmentation import label_particles, remove_small_particles

    raw = read_volume(SAMPLE).data
    z0, y0, x0 = ((np.array(raw.shape) - n) // 2).tolist()
    phases = np.array([1, 2, 0], np.uint8)[raw[z0:z0 + n, y0:y0 + n, x0:x0 + n]]
    phases = remove_small_particles(phases, 30)
    return phases, label_particles(phases, spacing=(SPACING_UM,) * 3, split_touching=True, split_depth=1.5)


def one(n: int, case: str) -> dict:
    from solvers.mesh import voxel_hex_mesh, voxel_tet_mesh
    from solvers.mesh.conforming import conforming_tet_mesh, mesh_quality

    phases, particles = labels(n)
    h = [SPACING_UM * 1e-6] * 3
    t = time.perf_counter()
    if case == "voxel-hex":
        mesh = voxel_hex_mesh(phases, particles, h)
    elif case == "voxel-tet":
        mesh = voxel_tet_mesh(phases, particles, h)
    else:
        mesh = conforming_tet_mesh(phases, particles, h, seed=0, **CASES[case])
    t_mesh = time.perf_counter() - t
    row = {"case": case, "voxels": n, "particles": int(particles.max()), "cells": mesh.n_cells,
           "nodes": mesh.n_nodes, "mesh_s": t_mesh}
    if case != "voxel-hex":
        q = mesh_quality(mesh, mesh.phases, mesh.particles)
        row.update(min_dihedral=q["min_dihedral_deg"], p1_dihedral=q["p1_dihedral_deg"],
                   volume_error_active=q["phase_volume_rel_error"]["active"],
                   cells_active=q["cells_per_phase"]["active"])
    row["peak_rss_GB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return row


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--one":
        print(json.dumps(one(int(argv[1]), argv[2])))
        return
    n = int(argv[0]) if argv else 96
    cases = [c for c in CASES if len(argv) < 2 or argv[1] in c]
    print(f"| {n}^3 MATBOX crop | cells | nodes (dof/3) | meshing s | min / p1 dihedral (deg) | "
          "active volume error | peak RSS GB |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), case], capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{case} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        q = (f"{r['min_dihedral']:.1f} / {r['p1_dihedral']:.1f} | {100 * r['volume_error_active']:+.2f} %"
             if "min_dihedral" in r else "90 / 90 | 0")
        print(f"| {case} | {r['cells']:,} | {r['nodes']:,} | {r['mesh_s']:.1f} | {q} | {r['peak_rss_GB']:.2f} |",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
