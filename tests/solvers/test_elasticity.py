"""Voxel-hex elasticity: assembly, patch test, rigid-body modes, exact homogeneous cases."""

import numpy as np
import pytest
import scipy.sparse as sp

from segmentation import make_composite
from solvers import fields
from solvers.fem import HEX8
from solvers.fem.assembly import assemble_voxel_stiffness, elasticity_matrix, gradient_integral
from solvers.linalg import LinearSolver
from solvers.mesh import voxel_hex_mesh
from solvers.physics import ElasticProblem, Material, box_constraints
from solvers.physics.elasticity import free_rigid_motions
from tomomech.errors import ConvergenceError, MeshError

SPACING = np.array([1.0e-6, 1.5e-6, 0.8e-6])  # anisotropic on purpose
SE, AP = Material("se", 22.0, 0.3), Material("ap", 140.0, 0.25)


@pytest.fixture(scope="module")
def composite_mesh():
    ph, pa = make_composite((9, 8, 7), active_fraction=0.4, void_fraction=0.1, radius=2.5, seed=3)
    return voxel_hex_mesh(ph, pa, SPACING)


def reference_matrix(mesh, mat, kes):
    """Element-by-element COO assembly, the textbook way (independent of the stencil path)."""
    rows, cols, vals = [], [], []
    for e in range(mesh.n_cells):
        ke = kes[mat[e]].reshape(24, 24)
        d = (mesh.cells[e][:, None] * 3 + np.arange(3)).ravel()
        rows.append(np.repeat(d, 24))
        cols.append(np.tile(d, 24))
        vals.append(ke.ravel())
    n = 3 * mesh.n_nodes
    return sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), (n, n)).tocsr()


def test_stencil_assembly_equals_elementwise(composite_mesh):
    m = composite_mesh
    kes = [elasticity_matrix(HEX8, m.spacing, mm.E, mm.nu) for mm in (SE, AP)]
    mat = (m.cell_phase == 2).astype(int)
    A = assemble_voxel_stiffness(m, mat, kes)
    B = reference_matrix(m, mat, kes)
    assert A.has_sorted_indices
    assert abs(A - B).max() <= 1e-12 * abs(B).max()


def test_element_matrix_symmetric_with_six_zero_modes():
    ke = elasticity_matrix(HEX8, SPACING, 100e9, 0.3).reshape(24, 24)
    assert np.allclose(ke, ke.T, rtol=0, atol=1e-9 * abs(ke).max())
    w = np.linalg.eigvalsh(ke)
    assert np.sum(np.abs(w) < 1e-9 * w.max()) == 6
    assert w.min() > -1e-9 * w.max()


def test_rigid_body_motion_gives_zero_stress(composite_mesh):
    m = composite_mesh
    prob = ElasticProblem(m, {1: SE, 2: AP}, solver="direct")
    x = m.points
    u = np.array([1e-7, -2e-7, 3e-7]) + np.cross([0.01, -0.02, 0.015], x - x.mean(0))
    sig = prob.cell_stress(u, np.zeros(m.n_cells))
    assert np.abs(sig).max() < 1e-6 * AP.E * 0.01


def test_patch_uniform_strain_reproduced_exactly(composite_mesh):
    """Patch test: nodal displacements of a uniform strain give that strain in every cell."""
    m = composite_mesh
    prob = ElasticProblem(m, {1: SE, 2: AP}, solver="direct")
    E = np.array([[1e-3, 2e-4, -1e-4], [2e-4, -5e-4, 3e-4], [-1e-4, 3e-4, 7e-4]])
    u = m.points @ E.T
    eps = prob.cell_strain(u)
    assert np.abs(eps - E).max() < 1e-12
    # and the interior nodes are in equilibrium for a homogeneous material
    A = assemble_voxel_stiffness(m, np.zeros(m.n_cells, int), [elasticity_matrix(HEX8, m.spacing, AP.E, AP.nu)])
    r = (A @ u.ravel()).reshape(-1, 3)
    iz, iy, ix = m.node_index
    shape = m.shape
    interior = ((iz > 0) & (iz < shape[0]) & (iy > 0) & (iy < shape[1]) & (ix > 0) & (ix < shape[2]))
    # nodes surrounded by 8 solid cells only
    count = np.bincount(m.cells.ravel(), minlength=m.n_nodes)
    sel = interior & (count == 8)
    assert sel.any()
    assert np.abs(r[sel]).max() < 1e-9 * np.abs(r).max()


def test_confined_block_uniform_eigenstrain_exact():
    """Rollers on all faces (top fixed): sigma = -3 K eps* I exactly, displacement 0."""
    ph = np.full((6, 5, 4), 2, np.uint8)
    m = voxel_hex_mesh(ph, np.ones(ph.shape, np.int32), SPACING)
    prob = ElasticProblem(m, {2: AP}, top="fixed", solver="direct")
    eps = np.full(m.n_cells, -0.01)
    sig = prob.cell_stress(prob.solve(eps), eps)
    expect = -3 * AP.K * -0.01
    assert np.allclose(sig, expect * np.eye(3), rtol=0, atol=1e-9 * expect)


def test_free_top_block_uniaxial_strain_exact():
    """Top free: sigma_zz = 0, lateral stresses E eps*/(1 - nu) (biaxially confined swelling)."""
    ph = np.full((6, 5, 4), 2, np.uint8)
    m = voxel_hex_mesh(ph, np.ones(ph.shape, np.int32), SPACING)
    prob = ElasticProblem(m, {2: AP}, top="free", solver="amg")
    eps = np.full(m.n_cells, 0.02)
    sig = prob.cell_stress(prob.solve(eps), eps)
    lateral = -AP.E * 0.02 / (1 - AP.nu)
    assert np.allclose(sig, np.diag([0.0, lateral, lateral]), rtol=0, atol=1e-7 * abs(lateral))


def test_stack_pressure_block_exact():
    """No eigenstrain, stack pressure p: sigma_zz = -p, lateral -p nu/(1-nu), two phases in layers."""
    ph = np.full((6, 5, 4), 1, np.uint8)
    ph[3:] = 2
    m = voxel_hex_mesh(ph, (ph == 2).astype(np.int32), SPACING)
    p = 5e6
    prob = ElasticProblem(m, {1: SE, 2: AP}, top="stack_pressure", stack_pressure_Pa=p, solver="direct")
    sig = prob.cell_stress(prob.solve(np.zeros(m.n_cells)), np.zeros(m.n_cells))
    nu = np.where(m.cell_phase == 2, AP.nu, SE.nu)
    assert np.allclose(sig[:, 0, 0], -p, rtol=1e-9)
    assert np.allclose(sig[:, 1, 1], -p * nu / (1 - nu), rtol=1e-9)


def test_box_constraints_remove_rigid_modes(composite_mesh):
    fixed = box_constraints(composite_mesh, "free")
    iz, iy, ix = composite_mesh.node_index
    assert fixed[iz == 0, 0].all() and not fixed[iz == composite_mesh.shape[0], 0].any()
    assert fixed[ix == 0, 2].all() and fixed[iy == composite_mesh.shape[1], 1].all()


def test_eigenstrain_load_is_self_equilibrated():
    g = gradient_integral(HEX8, SPACING)
    assert np.allclose(g.sum(axis=0), 0, atol=1e-24)
    # each column integrates to the face area times +-1 on opposite faces
    assert np.isclose(np.abs(g[:, 0]).sum(), 2 * SPACING[1] * SPACING[2], rtol=1e-12, atol=0)


def test_nonconverged_solve_raises(composite_mesh):
    prob = ElasticProblem(composite_mesh, {1: SE, 2: AP}, solver="amg", maxiter=1, rtol=1e-12)
    eps = np.where(composite_mesh.cell_phase == 2, -0.01, 0.0)
    with pytest.raises(ConvergenceError, match="relative residual"):
        prob.solve(eps)


def test_direct_and_amg_agree(composite_mesh):
    eps = np.where(composite_mesh.cell_phase == 2, -0.01, 0.0)
    ud = ElasticProblem(composite_mesh, {1: SE, 2: AP}, solver="direct").solve(eps)
    ua = ElasticProblem(composite_mesh, {1: SE, 2: AP}, solver="amg", rtol=1e-10).solve(eps)
    assert np.abs(ud - ua).max() < 1e-7 * np.abs(ud).max()


def test_forward_backward_amg_smoother_solves_to_tolerance():
    """One forward sweep before and one backward sweep after the coarse correction is a symmetric
    V-cycle: CG converges with it and agrees with the factorisation; an unknown smoother is refused."""
    ph, pa = make_composite((14, 14, 14), active_fraction=0.4, void_fraction=0.05, radius=3.0, seed=4)
    mesh = voxel_hex_mesh(ph, pa, SPACING)
    prob = ElasticProblem(mesh, {1: SE, 2: AP}, solver="direct")
    eps = np.where(mesh.cell_phase == 2, -0.01, 0.0)
    ud = prob.solve(eps)
    b = prob.load(eps)
    its = {}
    for smoother in ("symmetric", "forward-backward"):
        s = LinearSolver(prob.A, method="amg", rtol=1e-10, smoother=smoother)
        u = s.solve(b)
        assert np.linalg.norm(prob.A @ u - b) <= 1e-10 * np.linalg.norm(b) * (1 + 1e-6)
        assert np.abs(u.reshape(-1, 3) - ud).max() < 1e-7 * np.abs(ud).max()
        its[smoother] = s.stats.iterations[-1]
    assert its["forward-backward"] < 3 * its["symmetric"]
    with pytest.raises(ValueError, match="unknown AMG smoother"):
        LinearSolver(prob.A, method="amg", smoother="jacobi")


def test_linear_solver_reuses_setup():
    A = sp.diags([-1, 2.5, -1], [-1, 0, 1], shape=(50, 50)).tocsr()
    s = LinearSolver(A, method="direct")
    for k in range(3):
        x = s.solve(np.full(50, float(k + 1)))
        assert np.allclose(A @ x, k + 1)
    assert s.stats.as_dict()["solves"] == 3


def test_floating_solid_removed_and_unholdable_body_rejected():
    ph = np.ones((6, 6, 6), np.uint8)
    ph[1:5, 1:5, 1:5] = 0
    ph[2, 2, 2] = 2  # floats in a void pocket
    m = voxel_hex_mesh(ph, (ph == 2).astype(np.int32), SPACING)
    assert m.removed_voxels == 1 and m.n_cells == 216 - 64
    ph2 = np.zeros((6, 6, 6), np.uint8)
    ph2[:, 1:5, 1:5] = 1  # does not reach the side faces: floats in x and y, and turns about z
    m2 = voxel_hex_mesh(ph2, np.zeros_like(ph2, dtype=np.int32), SPACING)
    with pytest.raises(MeshError, match="free: translation along y; translation along x; rotation about z. "
                                        "It touches the faces z_min, z_max only"):
        box_constraints(m2)
    with pytest.raises(MeshError, match="free: translation along z; translation along y; translation along x; "
                                        "rotation about z"):
        box_constraints(m2, faces={"z_min": "free"})
    assert box_constraints(m2, faces={"z_min": "fixed"}).sum() == 3 * 25  # clamped bottom: held


@pytest.mark.parametrize("backend", ["assembled", "matrix-free"])
def test_void_padding_on_two_side_faces_changes_nothing(backend):
    """A crop padded with void on x = max and y = max (a corner of the sample) runs with the default
    rollers, which then hold it through the faces it touches, and gives the unpadded crop's answer with
    those two faces free, to 1e-8 (the nodes are the same and numbered alike)."""
    ph, pa = make_composite((14, 14, 14), active_fraction=0.45, void_fraction=0.08, radius=4, seed=5)
    mats = {1: SE, 2: AP}
    plain = voxel_hex_mesh(ph, pa, SPACING)
    padded = voxel_hex_mesh(np.pad(ph, [(0, 0), (0, 3), (0, 2)]), np.pad(pa, [(0, 0), (0, 3), (0, 2)]), SPACING)
    assert np.array_equal(plain.points, padded.points)
    free = {"y_max": "free", "x_max": "free"}
    kw = dict(backend=backend, rtol=1e-12) if backend == "assembled" else dict(backend=backend, rtol=1e-11)
    u = [ElasticProblem(m, mats, boundary=b, **kw).solve(np.where(m.cell_phase == 2, -0.01, 0.0))
         for m, b in ((plain, free), (padded, None))]
    assert np.abs(u[0] - u[1]).max() <= 1e-8 * np.abs(u[0]).max()
    held = ElasticProblem(plain, mats, backend=backend).solve(np.where(plain.cell_phase == 2, -0.01, 0.0))
    assert np.abs(held - u[0]).max() > 1e-3 * np.abs(u[0]).max()  # the two free faces do change the answer


def test_free_rigid_motions_rank_test():
    """Single motions are named; a free motion that is no single mode (a rotation about an axis away from
    the centroid) is named as a combination."""
    pts = np.array(np.meshgrid(*[np.arange(3.0)] * 3, indexing="ij")).reshape(3, -1).T
    fixed = np.zeros((len(pts), 3), bool)
    assert free_rigid_motions(pts, fixed) == ["translation along z", "translation along y", "translation along x",
                                              "rotation about z", "rotation about y", "rotation about x"]
    fixed[pts[:, 0] == 0] = True  # clamped bottom
    assert free_rigid_motions(pts, fixed) == []
    fixed[:] = False
    fixed[(pts[:, 1] == 0) & (pts[:, 2] == 0)] = True  # a clamped line along z at y = x = 0, off the centroid
    free = free_rigid_motions(pts, fixed)
    assert len(free) == 1 and "rotation about z" in free[0] and "translation" in free[0]


def test_von_mises_and_invariants():
    s = np.diag([3.0, 1.0, -2.0])
    assert np.isclose(fields.hydrostatic(s), 2 / 3)
    assert np.isclose(fields.max_principal(s), 3.0)
    assert np.isclose(fields.von_mises(np.diag([1.0, 0, 0])), 1.0)
    shear = np.zeros((3, 3))
    shear[0, 1] = shear[1, 0] = 1.0
    assert np.isclose(fields.von_mises(shear), np.sqrt(3))


def test_group_stats_against_numpy():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 5, 200)
    v = rng.normal(size=200)
    out = fields.group_stats(g, v, 6, percentiles=(95,))
    for k in range(5):
        sel = np.sort(v[g == k])
        assert np.isclose(out["mean"][k], sel.mean()) and np.isclose(out["max"][k], sel.max())
        assert np.isclose(out["p95"][k], sel[int(np.ceil(0.95 * sel.size)) - 1])
    assert np.isnan(out["mean"][5]) and out["count"][5] == 0


def test_weighted_group_stats_equal_repeated_samples():
    """Integer weights give the statistics of the sample with each value repeated that many times
    (the volume-weighted statistics of tetrahedral meshes)."""
    rng = np.random.default_rng(1)
    g = rng.integers(0, 4, 300)
    v = rng.normal(size=300)
    w = rng.integers(1, 6, 300)
    out = fields.group_stats(g, v, 5, weights=w.astype(float), percentiles=(5, 50, 95, 100))
    ref = fields.group_stats(np.repeat(g, w), np.repeat(v, w), 5, percentiles=(5, 50, 95, 100))
    for key in ("mean", "min", "max", "p5", "p50", "p95", "p100"):
        assert np.allclose(out[key][:4], ref[key][:4], rtol=1e-12, atol=0), key
    assert np.isnan(out["p95"][4])
