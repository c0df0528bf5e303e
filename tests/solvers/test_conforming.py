"""Conforming tetrahedra (pygalmesh/CGAL) against PHYSICS.md 3(b), compared with voxel hexes."""

import numpy as np
import pytest

pygalmesh = pytest.importorskip("pygalmesh")

from solvers import fields  # noqa: E402
from solvers.mesh import quadratic_tet_mesh, voxel_hex_mesh  # noqa: E402
from solvers.mesh.conforming import conforming_tet_mesh, mesh_quality  # noqa: E402
from solvers.physics import ElasticProblem, Material  # noqa: E402
from solvers.physics.elasticity import box_faces  # noqa: E402
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
    """PHYSICS.md 3(b) on the same voxel sphere (R = 8.7): linear tets of 1 voxel and quadratic tets of 2
    voxels land within the free/fixed shell bounds (+-2 % hydrostatic, +-5 % median interface traction) and
    at most half as far from the mesh-converged value as voxel hexes.

    The mesh-converged value comes from the same code, so an error common to every mesh (a wrong swelling,
    a wrong modulus) would be invisible in the comparison and would hide in the wide free/fixed band at this
    volume fraction (403-735 MPa). The reference method (quadratic tets of 1.5 voxel) is
    therefore held, within 3 %, to the box value where the box value is known: at phi = 0.07 (R = 4.5 in
    18^3) the box's particle pressure is the mean of the free- and fixed-shell pressures to 1.5 %
    (``test_box_pressure_is_the_mean_of_the_shell_bounds``; here measured -0.4 %). At R = 8.7 in 26^3 the
    same rule does not hold: the reference lies 5.1 % below that mean (phi = 0.18; 6 % at phi = 0.26).
    """
    ph, pa = sphere()

    def tets(size, order, labels=(ph, pa)):
        m = conforming_tet_mesh(*labels, [1e-6] * 3, max_cell_size_voxels=size, seed=1)
        return m if order == 1 else quadratic_tet_mesh(m)

    # the reference method against the closed-form-anchored box value, phi = 0.07
    small = tets(1.5, 2, sphere(4.5, 18))
    vol = np.abs(small.cell_volumes())
    phi_small = vol[small.cell_phase == 2].sum() / vol.sum()  # of the meshed box (CGAL's is (n - 1)^3 voxels)
    box = 0.5 * sum(bounds(phi_small))
    hyd_small, _ = particle_hydrostatic_and_traction(small, solve(small))
    print(f"reference method at phi = {phi_small:.3f}: hydrostatic {hyd_small / 1e6:.1f} MPa, box value "
          f"(mean of the shell bounds) {box / 1e6:.1f} ({100 * (hyd_small / box - 1):+.1f} %)")
    assert hyd_small == pytest.approx(box, rel=0.03, abs=0)

    linear, quad = tets(1.0, 1), tets(2.0, 2)
    q = mesh_quality(linear, ph, pa)
    got = {"linear tets, 1 voxel": particle_hydrostatic_and_traction(linear, solve(linear)),
           "quadratic tets, 2 voxels": particle_hydrostatic_and_traction(quad, solve(quad))}
    hm = voxel_hex_mesh(ph, pa, [1e-6] * 3)
    sh = solve(hm)
    hf = fields.interface_faces(hm.phases, hm.particles, hm.spacing)
    cell_of = np.full(ph.size, -1)
    cell_of[hm.cell_voxel] = np.arange(hm.n_cells)
    got["voxel hexes"] = (fields.hydrostatic(sh[hm.cell_phase == 2]).mean(), np.median(
        fields.normal_traction(sh[cell_of[hf["ap_voxel"]]], sh[cell_of[hf["se_voxel"]]], hf["normal"])))
    vol = np.abs(linear.cell_volumes())
    lo, hi = bounds(vol[linear.cell_phase == 2].sum() / np.prod(np.array(ph.shape) * 1e-6))
    # the box has no closed form inside the bounds: the reference is quadratic tets of 1.5 voxel (linear
    # tets of 1 / 0.7 / 0.5 voxel converge towards it: hydrostatic 565.8 / 559.9 / 556.5 MPa against 548.9,
    # median t_n 442.2 / 448.6 / 455.0 against 462.3)
    ref = tets(1.5, 2)
    hyd_ref, tn_ref = particle_hydrostatic_and_traction(ref, solve(ref))
    vol = np.abs(ref.cell_volumes())
    phi_ref = vol[ref.cell_phase == 2].sum() / vol.sum()
    print(f"bounds [{lo / 1e6:.1f}, {hi / 1e6:.1f}] MPa; linear mesh {linear.n_cells} tets, min dihedral "
          f"{q['min_dihedral_deg']:.1f} deg; reference ({ref.n_cells} quadratic tets): hydrostatic "
          f"{hyd_ref / 1e6:.1f}, median t_n {tn_ref / 1e6:.1f} MPa; mean of the shell bounds at its phi = "
          f"{phi_ref:.3f}: {0.5 * sum(bounds(phi_ref)) / 1e6:.1f} MPa")
    for name, (hyd, tn) in got.items():
        print(f"{name}: particle mean hydrostatic {hyd / 1e6:.1f} MPa ({100 * (hyd / hyd_ref - 1):+.1f} %), median "
              f"interface t_n {tn / 1e6:.1f} MPa ({100 * (tn / tn_ref - 1):+.1f} %)")
    hyd_hex, tn_hex = got.pop("voxel hexes")
    for hyd, tn in got.values():
        assert 0.98 * lo <= hyd <= 1.02 * hi
        assert 0.95 * lo <= tn <= 1.05 * hi
        assert abs(hyd - hyd_ref) < 0.5 * abs(hyd_hex - hyd_ref)  # "clearly closer": at most half the hex error
        assert abs(tn - tn_ref) < 0.5 * abs(tn_hex - tn_ref)


def particle_hydrostatic_and_traction(tm, sig):
    """Volume-mean particle hydrostatic stress and median AP|SE normal traction of a tet mesh, Pa."""
    vol = np.abs(tm.cell_volumes())
    ap = tm.cell_phase == 2
    faces = fields.tet_interface_faces(tm)
    tn = fields.normal_traction(sig[faces["ap_cell"]], sig[faces["se_cell"]], faces["normal"])
    return np.average(fields.hydrostatic(sig[ap]), weights=vol[ap]), np.median(tn)


def small_composite():
    from segmentation import make_composite

    return make_composite((14, 14, 14), active_fraction=0.4, void_fraction=0.05, radius=3, seed=4)


def test_conforming_mesh_is_reproducible_and_tagged():
    """Same labels, options and seed: the same mesh (perturb is off); every tet carries its phase and
    particle, every particle is meshed, no void is meshed, volumes per phase within 5 %."""
    ph, pa = small_composite()
    a = conforming_tet_mesh(ph, pa, [1e-6] * 3, seed=3)
    b = conforming_tet_mesh(ph, pa, [1e-6] * 3, seed=3)
    assert np.array_equal(a.points, b.points) and np.array_equal(a.cells, b.cells)
    assert set(np.unique(a.cell_phase)) == {1, 2}
    assert np.all((a.cell_phase == 2) == (a.cell_particle > 0))
    assert set(np.unique(a.cell_particle[a.cell_particle > 0])) == set(np.unique(a.particles[a.particles > 0]))
    # each tet's particle is the particle label of the voxel its centroid falls in, for most tets
    # (surface tets straddle voxels)
    assert np.mean(a.particles.ravel()[a.cell_voxel] == a.cell_particle) > 0.9
    assert np.all(a.cell_volumes() > 0)
    q = mesh_quality(a, a.phases, a.particles)
    assert all(abs(e) < 0.05 for e in q["phase_volume_rel_error"].values())


def circumradius_voxels(mesh):
    x = mesh.points[mesh.corners] / mesh.spacing.min()
    a, b, c = (x[:, k] - x[:, 0] for k in (1, 2, 3))
    num = (np.einsum("ei,ei->e", a, a)[:, None] * np.cross(b, c) + np.einsum("ei,ei->e", b, b)[:, None]
           * np.cross(c, a) + np.einsum("ei,ei->e", c, c)[:, None] * np.cross(a, b))
    return np.linalg.norm(num, axis=1) / (12 * np.abs(mesh.cell_volumes()) / mesh.spacing.min() ** 3)


def test_interface_shell_refines_both_sides_of_the_interface_only():
    """interface_cell_size_voxels = 0.5 in 1.5-voxel shells: electrolyte cells within a voxel of a
    particle and particle cells within a voxel of the electrolyte get at most that circumradius, cells
    far from the interface on either side keep theirs, and the shells take their tags back (no new
    phase, every particle kept, the same cells per particle in proportion)."""
    from scipy import ndimage as ndi

    ph, pa = small_composite()
    to_ap = ndi.distance_transform_edt(ph != 2)
    to_se = ndi.distance_transform_edt(ph != 1)
    out = []
    for opts in ({}, {"interface_cell_size_voxels": 0.5, "interface_shell_voxels": 1.5}):
        m = conforming_tet_mesh(ph, pa, [1e-6] * 3, seed=3, **opts)
        assert set(np.unique(m.cell_phase)) == {1, 2}
        assert set(np.unique(m.cell_particle[m.cell_particle > 0])) == set(np.unique(pa[pa > 0]))
        assert np.all((m.cell_particle > 0) == (m.cell_phase == 2))
        r = circumradius_voxels(m)
        cen = (m.points[m.corners].mean(axis=1) / 1e-6).T
        d_ap, d_se = (ndi.map_coordinates(d, cen, order=1) for d in (to_ap, to_se))
        se, ap = m.cell_phase == 1, m.cell_phase == 2
        vol = np.abs(m.cell_volumes())
        share = np.bincount(m.cell_particle[ap], weights=vol[ap]) / vol[ap].sum()
        out.append({"near": (r[se & (d_ap < 1.0)], r[ap & (d_se < 1.0)]),
                    "far": (r[se & (d_ap > 3.5)], r[ap & (d_se > 2.5)]), "cells": m.n_cells, "share": share})
    before, after = out
    for side, name in enumerate(("electrolyte", "particle")):
        near0, near1 = before["near"][side], after["near"][side]
        far0, far1 = before["far"][side], after["far"][side]
        print(f"{name}: cells {before['cells']} -> {after['cells']}; near-interface circumradius median "
              f"{np.median(near0):.2f} -> {np.median(near1):.2f} voxel (p99 {np.percentile(near1, 99):.3f}), "
              f"far ({far1.size} cells) {np.median(far0):.2f} -> {np.median(far1):.2f}")
        assert np.percentile(near0, 99) > 0.9  # without the shell they are voxel-sized
        assert np.percentile(near1, 99) <= 0.5 * 1.01 and near1.max() < 0.6  # CGAL's criterion, after exude
        assert far1.size > 50 and np.median(far1) == pytest.approx(np.median(far0), rel=0.1)
    np.testing.assert_allclose(after["share"], before["share"], atol=0.01)  # every shell went to its particle


def test_surface_smoothing_removes_the_staircase_without_shrinking_or_degrading_cells():
    """Taubin smoothing of a voxelised sphere (R = 4): the radii of its AP|SE nodes spread a third less,
    the particle keeps its volume (plain Laplacian smoothing shrinks it by a quarter), the box stays
    put, only points move, and no cell loses more than the guard allows."""
    from solvers.mesh.conforming import radius_ratio
    from solvers.mesh.smooth import MIN_QUALITY_KEPT, MIN_RADIUS_RATIO

    ph, pa = sphere(4, 16)
    rough, smooth = (conforming_tet_mesh(ph, pa, [1e-6] * 3, max_facet_distance_voxels=0.1, seed=1,
                                         smooth_iterations=it) for it in (0, 20))
    assert np.array_equal(rough.cells, smooth.cells)
    nodes = np.unique(fields.tet_interface_faces(rough)["nodes"])
    width = [np.subtract(*np.percentile(np.linalg.norm(m.points[nodes] / 1e-6 - 7.5, axis=1), [95, 5]))
             for m in (rough, smooth)]
    err = [m.quality["phase_volume_rel_error"]["active"] for m in (rough, smooth)]
    print(f"interface node radius p5-p95 width {width[0]:.3f} -> {width[1]:.3f} voxel; particle volume "
          f"error {100 * err[0]:+.1f} -> {100 * err[1]:+.1f} %; min dihedral {rough.quality['min_dihedral_deg']:.1f}"
          f" -> {smooth.quality['min_dihedral_deg']:.1f} deg")
    assert width[1] < 0.7 * width[0]
    assert abs(err[1]) <= abs(err[0]) and abs(err[1]) < 0.025
    ext = rough.extent
    on_box = np.any((rough.points < 1e-12) | (rough.points > ext - 1e-12), axis=1)
    assert on_box.sum() > 100 and np.array_equal(rough.points[on_box], smooth.points[on_box])
    rr0, rr1 = radius_ratio(rough.points, rough.cells), radius_ratio(smooth.points, smooth.cells)
    assert np.all(rr1 >= np.minimum(MIN_QUALITY_KEPT * rr0, MIN_RADIUS_RATIO))
    assert np.all(smooth.cell_volumes() > 0)


def test_upsampled_mesh_keeps_the_box_the_tags_and_the_voxel_map():
    """upsample = 2: CGAL's box runs between the outer fine voxel centres ((n - 1/2) voxels), every
    particle is meshed, the phase volumes are no further off than without upsampling (CGAL's 1-voxel
    cells cut the corners of these R = 3 particles: -3.3 % active without, -2.3 % with), and most
    cells map to a voxel of their phase."""
    ph, pa = small_composite()
    plain = conforming_tet_mesh(ph, pa, [1e-6] * 3, seed=3)
    m = conforming_tet_mesh(ph, pa, [1e-6] * 3, seed=3, upsample=2, upsample_sigma_voxels=0.7)
    np.testing.assert_allclose(m.extent, (np.array(ph.shape) - 0.5) * 1e-6)
    tol = 0.03e-6  # CGAL's box faces are flat to about 0.02 voxel
    assert m.points.min() > -tol and np.all(m.points.max(axis=0) < m.extent + tol)
    assert np.all(m.points.max(axis=0) > m.extent - tol)
    assert set(np.unique(m.cell_particle[m.cell_particle > 0])) == set(np.unique(pa[pa > 0]))
    for phase, err in m.quality["phase_volume_rel_error"].items():
        assert abs(err) <= abs(plain.quality["phase_volume_rel_error"][phase]) + 0.005
    assert np.mean(ph.ravel()[m.cell_voxel] == m.cell_phase) > 0.9


def test_mesh_quality_names_a_vanished_particle_and_a_volume_error():
    """The checks behind the conforming mesher's clear errors, on a voxel-tet mesh with cells taken away."""
    import dataclasses

    from solvers.mesh import voxel_tet_mesh
    from tomomech.errors import MeshError

    ph, pa = small_composite()
    tm = voxel_tet_mesh(ph, pa, [1e-6] * 3)
    mesh_quality(tm, tm.phases, tm.particles)  # complete: no error
    gone = int(np.bincount(tm.cell_particle)[1:].argmin()) + 1  # the smallest particle
    keep = tm.cell_particle != gone
    # give the lost particle's volume back to the phase (relabel its cells as another particle) so that
    # only the vanished particle is wrong
    other = int(np.flatnonzero(np.bincount(tm.cell_particle)[1:])[0]) + 1
    other = other if other != gone else other + 1
    lost = dataclasses.replace(tm, cell_particle=np.where(keep, tm.cell_particle, other))
    with pytest.raises(MeshError, match=rf"particles \[{gone}\] vanished.*lower max_cell_size_voxels"):
        mesh_quality(lost, tm.phases, tm.particles)
    sel = np.flatnonzero(tm.cell_phase == 2)[::10]  # drop a tenth of the active cells
    mask = np.ones(tm.n_cells, bool)
    mask[sel] = False
    thin = dataclasses.replace(tm, cells=tm.cells[mask], cell_phase=tm.cell_phase[mask],
                               cell_particle=tm.cell_particle[mask], cell_voxel=tm.cell_voxel[mask])
    with pytest.raises(MeshError, match=r"active volume .* differs .* by -10.0 %"):
        mesh_quality(thin, tm.phases, tm.particles)


def test_stack_pressure_and_rollers_on_rounded_box_edges():
    """CGAL rounds the box edges over 1-1.5 voxels. The platen force is the pressure times the solid top
    area exactly, and a homogeneous confined block under it carries the uniform sigma_zz = -p on volume
    average within 2 % (measured 0.9 %, linear and quadratic; with the corner nodes of the flat faces
    alone, as before, the force was 73 % and the mean 4.6 % low)."""
    se = Material("se", 22.0, 0.3)
    ph = np.full((10, 8, 8), 1, np.uint8)
    m = conforming_tet_mesh(ph, np.zeros(ph.shape, np.int32), [1e-6] * 3, seed=0)
    for mesh in (m, quadratic_tet_mesh(m)):
        prob = ElasticProblem(mesh, {1: se}, top="stack_pressure", stack_pressure_Pa=5e6, solver="direct")
        zero = np.zeros(mesh.n_cells)
        f = prob.load(zero).reshape(-1, 3)
        assert f[:, 0].sum() == pytest.approx(-5e6 * 7e-6 * 7e-6, rel=1e-12, abs=0)
        sig = prob.cell_stress(prob.solve(zero), zero)
        assert np.average(sig[:, 0, 0], weights=mesh.cell_volumes()) == pytest.approx(-5e6, rel=0.02)
        lo, hi = box_faces(mesh)
        # every node of the outer surface within 0.3 voxel of a side plane is held on that side
        faces = np.sort(mesh.cells[:, [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]].reshape(-1, 3), axis=1)
        uniq, counts = np.unique(faces, axis=0, return_counts=True)
        on_surface = np.zeros(mesh.n_nodes, bool)
        on_surface[uniq[counts == 1].ravel()] = True
        near = np.abs(mesh.points[:, 2]) < 0.3e-6
        assert near[on_surface].sum() > 40 and lo[near & on_surface, 2].all()
