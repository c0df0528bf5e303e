"""Conforming tetrahedra (pygalmesh/CGAL) against PHYSICS.md 3(b), compared with voxel hexes."""

import numpy as np
import pytest

pygalmesh = pytest.importorskip("pygalmesh")

from solvers import fields  # noqa: E402
from solvers.mesh import voxel_hex_mesh  # noqa: E402
from solvers.mesh.conforming import conforming_tet_mesh, mesh_quality  # noqa: E402
from solvers.physics import ElasticProblem, Material  # noqa: E402
from tests.validation.closed_forms import shell_pressure  # noqa: E402

EPS = -0.05 / 3
MATS = {1: Material("se", 22.0, 0.3), 2: Material("ap", 140.0, 0.3)}


def sphere(R=8.7, n=26):
    z, y, x = np.indices((n, n, n)) + 0.5
    ph = np.where((z - n / 2) ** 2 + (y - n / 2) ** 2 + (x - n / 2) ** 2 < R**2, 2, 1).astype(np.uint8)
    return ph, (ph == 2).astype(np.int32)


def bounds(phi):
    return (-shell_pressure(EPS, phi, 140e9, 0.3, 22e9, 0.3, "free"),
            -shell_pressure(EPS, phi, 140e9, 0.3, 22e9, 0.3, "fixed"))


def solve(mesh):
    prob = ElasticProblem(mesh, MATS, top="free")
    eps = np.where(mesh.cell_phase == 2, EPS, 0.0)
    return prob.cell_stress(prob.solve(eps), eps)


@pytest.mark.slow
def test_conforming_sphere_within_shell_bounds_and_better_than_hexes():
    ph, pa = sphere()
    tm = conforming_tet_mesh(ph, pa, [1e-6] * 3, max_cell_size_voxels=1.0, seed=1)
    q = mesh_quality(tm, ph, pa)
    sig = solve(tm)
    vol = np.abs(tm.cell_volumes())
    ap = tm.cell_phase == 2
    hyd_tet = np.average(fields.hydrostatic(sig[ap]), weights=vol[ap])
    faces = fields.tet_interface_faces(tm)
    tn_tet = np.median(fields.normal_traction(sig[faces["ap_cell"]], sig[faces["se_cell"]], faces["normal"]))
    hm = voxel_hex_mesh(ph, pa, [1e-6] * 3)
    sh = solve(hm)
    hyd_hex = fields.hydrostatic(sh[hm.cell_phase == 2]).mean()
    lo, hi = bounds(vol[ap].sum() / np.prod(np.array(ph.shape) * 1e-6))
    print(f"{tm.n_cells} tets, min dihedral {q['min_dihedral_deg']:.1f} deg; particle mean hydrostatic: "
          f"tets {hyd_tet / 1e6:.1f}, hexes {hyd_hex / 1e6:.1f} MPa; bounds [{lo / 1e6:.1f}, {hi / 1e6:.1f}]; "
          f"median t_n tets {tn_tet / 1e6:.1f} MPa")
    assert 0.98 * lo <= hyd_tet <= 1.02 * hi
    assert 0.95 * lo <= tn_tet <= 1.05 * hi
    mid = 0.5 * (lo + hi)
    assert abs(hyd_tet - mid) < abs(hyd_hex - mid)
