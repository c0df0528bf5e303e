"""The cohesive band on the matrix-free voxel operator (PHYSICS.md section 1 and 3(d)).

Tilted planar interfaces in periodic cells (:mod:`tests.validation.periodic_cell`):
the bonded limit, release in tension and in shear, contact in compression, the
energy of full separation; a shrinking sphere's onset against 3(d); cycles.
"""

import numpy as np
import pytest

from solvers import fields
from solvers.fem.mandel import from_mandel, tangent_frame
from solvers.mesh import voxel_hex_mesh
from solvers.physics import CohesiveLaw, ElasticProblem, Material, default_penalty
from solvers.physics.cohesive.band import driving_opening
from solvers.physics.cohesive.nodepair import CohesiveProblem
from solvers.physics.cohesive.voxel import VoxelCohesiveProblem
from tests.validation.periodic_cell import PeriodicCell, slab
from tests.validation.test_cohesive import onset_references, sphere

H = 0.4e-6
#: the four tilts of the plane normal to the grid: 0, 26.6, 45 and 54.7 degrees
TILTS = [(0, 0, 1), (0, 1, 2), (0, 1, 1), (1, 1, 1)]
MATS = {1: Material("SE", 22.0, 0.3), 2: Material("AP", 140.0, 0.3)}


def unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("tilt", TILTS)
def test_bonded_tilted_interface_between_equal_phases_is_homogeneous(tilt):
    """Bonded, with both phases alike and a stiff penalty, every voxel carries the homogeneous stress C E."""
    n0 = unit(tilt)
    law = CohesiveLaw(strength_Pa=100e6, penalty_Pa_m=1e30)  # the bonded limit: the band adds 1e-12 of compliance
    cell = PeriodicCell(slab(16, tilt), n0, H, law, E_ap=22e9)
    E = 1e-3 * np.array([[1.0, 0.3, -0.2], [0.3, -0.5, 0.4], [-0.2, 0.4, 0.7]])
    sig = cell.stress_at(E, debonded=False)
    lam, mu = 22e9 * 0.3 / (1.3 * 0.4), 22e9 / 2.6
    exact = lam * np.trace(E) * np.eye(3) + 2 * mu * E
    assert np.abs(sig - exact).max() <= 1e-9 * np.abs(exact).max()
    assert cell.state.damage.max() == 0.0


@pytest.fixture(scope="module", params=TILTS, ids=lambda t: "".join(map(str, t)))
def tilted(request):
    """A 140 | 22 GPa cell of each tilt: bonded and fully debonded stresses under four loads."""
    tilt = request.param
    n0 = unit(tilt)
    law = CohesiveLaw(strength_Pa=100e6, penalty_Pa_m=default_penalty(140e9, 22e9, H))
    cell = PeriodicCell(slab(16, tilt), n0, H, law)
    t1, t2 = tangent_frame(n0)
    loads = {"tension": 1e-3 * np.outer(n0, n0), "compression": -1e-3 * np.outer(n0, n0),
             "shear1": 1e-3 * (np.outer(t1, n0) + np.outer(n0, t1)),
             "shear2": 1e-3 * (np.outer(t2, n0) + np.outer(n0, t2))}
    out = {}
    for name, E in loads.items():
        bonded = cell.stress_at(E, debonded=False) @ n0
        debonded = cell.stress_at(E, debonded=True) @ n0
        direction = E @ n0 / np.linalg.norm(E @ n0)
        out[name] = (bonded @ direction, debonded @ direction, int(cell.state.closed.sum()))
    return tilt, out


def test_debonded_interface_opens_free_in_tension(tilted):
    """A fully debonded tilted interface pulled open carries nothing but the residual stiffness
    (measured: 6e-4 of the bonded traction at 0 degrees, 2e-5 to 2e-4 tilted)."""
    tilt, out = tilted
    bonded, debonded, closed = out["tension"]
    assert abs(debonded) <= 1e-3 * abs(bonded)
    assert closed == 0


def test_debonded_interface_in_compression_is_bonded(tilted):
    """Pressed together, a debonded interface carries the bonded normal traction (contact without a
    penalty; measured exact at 0, 45 and 54.7 degrees, 0.44 % at 26.6 degrees where the frictionless
    contact lets the staircase slide a little)."""
    tilt, out = tilted
    bonded, debonded, closed = out["compression"]
    assert debonded == pytest.approx(bonded, rel=0.01, abs=0)
    assert closed > 0


@pytest.mark.parametrize("load", ["shear1", "shear2"])
def test_debonded_interface_slides_free_in_shear(tilted, load):
    """Sheared along the plane, a debonded interface keeps at most 2 % of the bonded tangential traction
    (measured 0.0007-0.21 %; a laminate that keeps its in-plane stiffness holds 50-72 % on a staircase)."""
    tilt, out = tilted
    bonded, debonded, _ = out[load]
    assert abs(debonded) <= 0.02 * abs(bonded)


@pytest.mark.parametrize("tilt", TILTS)
def test_intact_interface_is_driven_by_the_plane_traction(tilt):
    """Bonded, the opening that drives the damage is the plane's normal traction over the penalty
    (onset when the traction reaches the strength): the skin's share-weighted mean within 3 % and every
    band voxel within 8 % (measured: exact at 0 and 45 degrees, +1.6 % at 54.7, +2.5 % at 26.6 with
    voxels from -0.9 to +6.9 %). The face voxels alone carry 0.64-0.85 of it and the particle voxels
    behind them 1.17-1.39."""
    n0 = unit(tilt)
    law = CohesiveLaw(strength_Pa=100e6, penalty_Pa_m=default_penalty(140e9, 22e9, H))
    cell = PeriodicCell(slab(16, tilt), n0, H, law, one_interface=True)
    geo, zero, open_ = cell.geo, np.zeros(cell.geo.n), np.zeros(cell.geo.n, bool)
    eps, sig = cell.solve_with(1e-3 * np.outer(n0, n0), *cell.band.stiffness(zero, open_))
    traction = n0 @ from_mandel(sig.mean(0)) @ n0
    lam = driving_opening(cell.band, eps[geo.voxel], cell.ap_traction(sig), zero, open_, cell.band.averaging)
    ratio = lam * law.penalty_Pa_m / traction
    has = geo.share > 0
    assert np.average(ratio[has], weights=geo.share[has]) == pytest.approx(1.0, abs=0.03)
    assert np.abs(ratio[has] - 1.0).max() <= 0.08


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 27 target not met: measured -3.3 / -7.3 / -7.4 % at R = 6 / 9 / 12 "
                   "(docs/performance.md, 2026-12-08); the bonded voxel sphere itself carries 3-10 % more than 3(d)")
def test_onset_of_a_shrinking_sphere():
    """Half of the interface damaged within 5 % of the 3(d) box value at R = 6, 9 and 12 voxels,
    and the three radii within 3 % of one another (issue 27's target). Measured -3.3, -7.3 and -7.4 %:
    the driving traction is unbiased on tilted planes (test above), and at the 3(d) load the bonded voxel
    sphere's interior stress is 103-110 MPa for 100 (R = 6) and 99-106 MPa (R = 12), so the voxel
    model's interface reaches the strength early (the node-pair model on voxel hexes: -6.8 / -7.1 % at
    R = 4 / 6). The first band (damage inherited by the corner voxels) gave -0.5, -1.9 and -2.6 % with a
    traction estimate about 10 % low on planes."""
    values = []
    for R, n in [(6, 36), (9, 54), (12, 72)]:
        half, ref = sphere_onset(R, n)
        print(f"R = {R}: half damaged at dV/V = {100 * half:.3f} % ({100 * (half / ref - 1):+.2f} % of 3(d))")
        values.append(half / ref)
    assert all(abs(v - 1.0) <= 0.05 for v in values)
    assert max(values) <= 1.03 * min(values)


def sphere_problem(R, n, law, **kw):
    ph, pa = sphere(R, n)
    mesh = voxel_hex_mesh(ph, pa, [1e-6] * 3)
    faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    return mesh, VoxelCohesiveProblem(mesh, MATS, faces, law, averaging_length_m=1.5e-6, top="free", **kw)


def sphere_onset(R, n, step=0.0005):
    """dV/V (a positive number) at which half of the interface area is damaged, and its 3(d) value."""
    law = CohesiveLaw(strength_Pa=100e6, fracture_energy_J_m2=10.0, penalty_Pa_m=default_penalty(140e9, 22e9, 1e-6))
    mesh, prob = sphere_problem(R, n, law)
    area = prob.interface.face_area
    prev = (0.0, 0.0)
    for dv in np.arange(0.006, 0.015, step):
        prob.solve(np.where(mesh.cell_phase == 2, -dv / 3, 0.0))
        frac = float(area[prob.face_damage() > 0].sum() / area.sum())
        if frac >= 0.5:
            half = prev[0] + (0.5 - prev[1]) * (dv - prev[0]) / (frac - prev[1])
            break
        prev = (dv, frac)
    phi = float((mesh.phases == 2).mean())
    return half, onset_references(phi, law.strength_Pa)["box"]


def test_swelling_never_damages_and_a_debonded_sphere_closes_back():
    """Pure swelling leaves the interface intact; a sphere debonded by shrinking and swollen back closes
    (no normal jump in contact) and its pressure is that of the node-pair model (an independent code,
    fully debonded and closed the same way) within 2 %; damage never decreases.

    Measured: band -127.7 MPa, node-pair -126.9, bonded -130.4. A closed debonded interface slides
    without friction, which releases the shear that the bonded box interface carries (its particle's
    stress is not hydrostatic: the top is free), so the bonded pressure is not the target (issue 27
    asks for it within 2 %: the node-pair model itself is 2.7 % off it; the first band, whose corner
    voxels did not slide, was 1.3 % off)."""
    law = CohesiveLaw(strength_Pa=30e6, fracture_energy_J_m2=0.1, penalty_Pa_m=default_penalty(140e9, 22e9, 1e-6))
    mesh, prob = sphere_problem(4, 20, law)
    ap = mesh.cell_phase == 2
    eig = {dv: np.where(ap, dv / 3, 0.0) for dv in (0.02, -0.03, 0.01)}
    prob.solve(eig[0.02])
    assert prob.state.damage.max() == 0.0, "pure swelling damages nothing"
    prob.solve(eig[-0.03])
    debonded = prob.area_fractions()[1]
    assert debonded >= 0.99
    d_before = prob.state.damage.copy()
    u = prob.solve(eig[0.01])
    assert (prob.state.damage >= d_before).all(), "damage never decreases"
    has = prob.band_geometry.has_area
    assert prob.state.closed[has].mean() >= 0.95, "the swollen particle presses the debonded interface shut"
    w, _ = prob.band.jump(prob._band_strain(u), prob.state.damage, prob.state.closed)
    assert np.all(w[prob.state.closed, 0] == 0.0), "closed voxels do not interpenetrate"
    ref = CohesiveProblem(mesh, MATS, prob.faces, law, averaging_length_m=1.5e-6, top="free")
    for dv in (0.02, -0.06, -0.1, 0.01):  # the node-pair interface needs a deeper shrink to debond all round
        u_ref = ref.solve(np.where(ap, dv / 3, 0.0))
    assert ref.area_fractions()[1] >= 0.99
    bonded = ElasticProblem(mesh, MATS, top="free")
    u_b = bonded.solve(eig[0.01])
    inner = ap & (mesh.cell_particle > 0)
    p, p_ref, p_b = (np.mean(fields.hydrostatic(pr.cell_stress(x, eig[0.01])[inner]))
                     for pr, x in ((prob, u), (ref, u_ref), (bonded, u_b)))
    print(f"particle pressure after closing {p / 1e6:.2f} MPa, node-pair {p_ref / 1e6:.2f}, bonded {p_b / 1e6:.2f}")
    assert p == pytest.approx(p_ref, rel=0.02)
