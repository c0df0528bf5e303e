"""Misfit sphere in an elastic-perfectly-plastic matrix (PHYSICS.md 3(e)) on voxel hexes.

The particle sits at the corner of an octant box whose three faces through its centre are planes of
symmetry (rollers are exact there); the far faces, 6 radii away, are rollers too. The plastic radius is
read from the yielded volume, ``c^3 = a^3 + 3 V_yield / (4 pi)`` for the whole sphere, with ``a`` the
voxelised particle's own equivalent radius.

Measured (benchmarks/plastic_sphere.py, docs/plasticity.md): the interface pressure carries the voxel
staircase's first-order excess (+27 % at a = 8 voxels, as the elastic hex pressure carries +15 %); its
Richardson extrapolation from a = 6 and 10 voxels lies within 3 % of 3(e). The plastic radius is within
3 % at a = 8 already, which this test holds.
"""

import numpy as np
import pytest

from solvers.mesh import voxel_hex_mesh
from solvers.physics import ElasticProblem, Material
from solvers.physics.inelastic import PlasticProblem
from solvers.physics.plasticity import J2Plasticity
from tests.validation.closed_forms import plastic_misfit_sphere

EP, EM, NU, SY = 140e9, 22e9, 0.3, 300e6


def octant(a: int, box: int):
    z, y, x = np.indices((box, box, box)) + 0.5
    ph = np.where(z**2 + y**2 + x**2 < a**2, 2, 1).astype(np.uint8)
    mesh = voxel_hex_mesh(ph, (ph == 2).astype(np.int32), [1e-6] * 3)
    return mesh, ElasticProblem(mesh, {1: Material("m", EM / 1e9, NU), 2: Material("p", EP / 1e9, NU)},
                                top="fixed", backend="matrix-free")


@pytest.mark.slow
@pytest.mark.parametrize("misfit", [0.02, -0.017])
def test_plastic_radius_of_a_misfit_sphere_matches_the_closed_form(misfit):
    """Swelling (2 %) and shrinking (-1.7 %) particle, a = 8 voxels: plastic radius within 3 % of 3(e)
    (measured +2.0 % / +2.2 %), and the electrolyte's cell stresses on or inside the yield surface."""
    mesh, base = octant(8, 48)
    prob = PlasticProblem(base, {1: J2Plasticity(SY / 1e6)})
    ap = mesh.cell_phase == 2
    u = None
    for f in (0.5, 1.0):
        eps = np.where(ap, f * misfit, 0.0)
        u = prob.solve(eps, x0=u)
    yielded = np.count_nonzero(prob.cell_equivalent_plastic_strain() > 0)
    a = (3 * 8 * ap.sum() / (4 * np.pi)) ** (1 / 3)
    c = (a**3 + 3 * 8 * yielded / (4 * np.pi)) ** (1 / 3)
    p, x = plastic_misfit_sphere(misfit, EP, NU, EM, NU, SY)
    print(f"misfit {misfit}: c/a {c / a:.4f} against {x:.4f} ({100 * (c / a / x - 1):+.2f} %)")
    assert c / a == pytest.approx(x, rel=0.03)
    from solvers import fields

    vm = fields.von_mises(prob.cell_stress(u, eps)[~ap])
    assert vm.max() <= SY * (1 + 1e-6)
