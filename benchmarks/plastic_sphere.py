"""Misfit sphere in an elastic-perfectly-plastic matrix (PHYSICS.md 3(e)): mesh convergence on voxel hexes
and conforming quadratic tets.

Usage::

    python benchmarks/plastic_sphere.py hex A BOX            # octant of BOX^3 voxels, particle radius A voxels
    python benchmarks/plastic_sphere.py tet A BOX FINE COARSE  # whole sphere centred in BOX^3, tet sizes in voxels

Tets: the labels are upsampled 4x along smoothed indicators and the surfaces take 20 Taubin steps (the
conforming mesher's options), so the mesh follows a round sphere rather than the voxel staircase.

E_p = 140, E_m = 22 GPa, nu = 0.3, sigma_y = 300 MPa; misfits +2 % and -1.7 % in two load steps; all faces
rollers. Prints the interface pressure (volume-mean pressure of the particle) and c/a (from the yielded
volume) against 3(e), and the elastic pressure of the same mesh against 3(a), whose excess is the mesh's
and the box's own error. Hexes: run two radii and extrapolate (first order in 1/a).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from solvers import fields  # noqa: E402
from solvers.physics import ElasticProblem, Material  # noqa: E402
from solvers.physics.inelastic import PlasticProblem  # noqa: E402
from solvers.physics.plasticity import J2Plasticity  # noqa: E402
from tests.validation.closed_forms import eshelby_pressure, plastic_misfit_sphere  # noqa: E402

EP, EM, NU, SY = 140e9, 22e9, 0.3, 300e6


def mesh_of(kind: str, a: float, box: int, fine: float = 0.6, coarse: float = 4.0):
    from solvers.mesh import quadratic_tet_mesh, voxel_hex_mesh
    from solvers.mesh.conforming import conforming_tet_mesh

    centre = 0.0 if kind == "hex" else box / 2
    z, y, x = np.indices((box, box, box)) + 0.5 - centre
    ph = np.where(z**2 + y**2 + x**2 < a**2, 2, 1).astype(np.uint8)
    pa = (ph == 2).astype(np.int32)
    if kind == "hex":
        return voxel_hex_mesh(ph, pa, [1e-6] * 3), 8
    mesh = conforming_tet_mesh(ph, pa, [1e-6] * 3, max_cell_size_voxels=2 * fine, electrolyte_cell_size_voxels=coarse,
                               interface_cell_size_voxels=fine, interface_shell_voxels=0.6 * a,
                               max_facet_distance_voxels=0.1, upsample=4, smooth_iterations=20)
    return quadratic_tet_mesh(mesh), 1


def main(kind: str, a: float, box: int, *sizes: float):
    t0 = time.perf_counter()
    mesh, copies = mesh_of(kind, a, box, *sizes)
    base = ElasticProblem(mesh, {1: Material("m", EM / 1e9, NU), 2: Material("p", EP / 1e9, NU)}, top="fixed",
                          backend="matrix-free" if kind == "hex" else "assembled")
    print(f"{kind} a = {a}, box {box}: {base.n_dof} dof, mesh + set-up {time.perf_counter() - t0:.1f} s")
    ap = mesh.cell_phase == 2
    vol = np.abs(mesh.cell_volumes())
    a_eff = (3 * copies * vol[ap].sum() / (4 * np.pi)) ** (1 / 3)
    for misfit in (0.02, -0.017):
        prob = PlasticProblem(base, {1: J2Plasticity(SY / 1e6)})
        u, t0 = None, time.perf_counter()
        for f in (0.5, 1.0):
            eps = np.where(ap, f * misfit, 0.0)
            u = prob.solve(eps, x0=u)
        p = -np.average(fields.hydrostatic(prob.cell_stress(u, eps)[ap]), weights=vol[ap])
        yielded = vol[prob.cell_equivalent_plastic_strain() > 0].sum()
        c = (a_eff**3 + 3 * copies * yielded / (4 * np.pi)) ** (1 / 3)
        pc, xc = plastic_misfit_sphere(misfit, EP, NU, EM, NU, SY)
        its = [r["iterations"] for r in prob.history]
        print(f"  misfit {misfit:+.3f}: p {p / 1e6:7.1f} MPa vs {pc / 1e6:7.1f} ({100 * (p / pc - 1):+.2f} %), c/a "
              f"{c / a_eff:.4f} vs {xc:.4f} ({100 * (c / a_eff / xc - 1):+.2f} %); Newton {its}, "
              f"{time.perf_counter() - t0:.1f} s")
    eps = np.where(ap, 0.02, 0.0)
    pe = -np.average(fields.hydrostatic(base.cell_stress(base.solve(eps), eps)[ap]), weights=vol[ap])
    ref = eshelby_pressure(0.02, EP, NU, EM, NU)
    print(f"  elastic, misfit +0.020: p {pe / 1e6:.1f} MPa vs 3(a) {ref / 1e6:.1f} ({100 * (pe / ref - 1):+.2f} %)")


if __name__ == "__main__":
    kind, a, box, *rest = sys.argv[1:]
    main(kind, float(a), int(box), *(float(v) for v in rest))
