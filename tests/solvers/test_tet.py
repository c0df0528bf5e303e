"""Voxel-tet meshes and unstructured (element-as-data) elasticity assembly."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla

from segmentation import make_composite
from solvers.fem import HEX8, TET4
from solvers.fem.assembly import assemble_elasticity, assemble_voxel_stiffness, element_gradients, lame
from solvers.mesh import voxel_hex_mesh, voxel_tet_mesh

SPACING = np.array([1.0e-6, 1.5e-6, 0.8e-6])


def mesh():
    ph, pa = make_composite((8, 7, 6), active_fraction=0.4, void_fraction=0.1, radius=2.5, seed=3)
    return voxel_tet_mesh(ph, pa, SPACING), voxel_hex_mesh(ph, pa, SPACING)


def test_voxel_tet_mesh_is_valid_and_conforming():
    tm, hm = mesh()
    assert tm.n_cells == 6 * hm.n_cells and tm.n_nodes == hm.n_nodes
    v = tm.cell_volumes()
    assert np.all(v > 0)
    assert np.isclose(v.sum(), hm.n_cells * np.prod(SPACING), rtol=1e-12, atol=0)  # m^3: no absolute slack
    # conforming: every interior triangle is shared by exactly two tets, boundary ones by one
    faces = np.sort(np.concatenate([tm.cells[:, [0, 1, 2]], tm.cells[:, [0, 1, 3]], tm.cells[:, [0, 2, 3]],
                                    tm.cells[:, [1, 2, 3]]]), axis=1)
    _, counts = np.unique(faces, axis=0, return_counts=True)
    assert counts.max() == 2


def test_tet_patch_test_uniform_strain_exact():
    tm, _ = mesh()
    E = np.array([[1e-3, 2e-4, -1e-4], [2e-4, -5e-4, 3e-4], [-1e-4, 3e-4, 7e-4]])
    u = tm.points @ E.T
    dn, _ = element_gradients(TET4, tm.points, tm.cells)
    grad = np.einsum("eai,eaj->eij", u[tm.cells], dn[:, 0])
    assert np.abs(grad - E).max() < 1e-12
    lam, mu = lame(100e9, 0.3)
    A = assemble_elasticity(TET4, tm.points, tm.cells, np.full(tm.n_cells, lam), np.full(tm.n_cells, mu))
    r = (A @ u.ravel()).reshape(-1, 3)
    interior = np.all((tm.points > 1e-12) & (tm.points < np.array(tm.shape) * SPACING - 1e-12), axis=1)
    # interior nodes surrounded by solid are in equilibrium under a uniform strain
    count = np.bincount(tm.cells.ravel(), minlength=tm.n_nodes)
    sel = interior & (count == count.max())
    assert sel.any() and np.abs(r[sel]).max() < 1e-9 * np.abs(r).max()


def test_general_assembly_reproduces_the_hex_stencil_assembly():
    """Element type is data: the unstructured path with HEX8 equals the structured voxel path."""
    _, hm = mesh()
    E, nu = np.where(hm.cell_phase == 2, 140e9, 22e9), 0.3
    lam, mu = lame(E, nu)
    A = assemble_elasticity(HEX8, hm.points, hm.cells, lam, mu)
    from solvers.fem.assembly import elasticity_matrix

    kes = [elasticity_matrix(HEX8, hm.spacing, e, nu) for e in (22e9, 140e9)]
    B = assemble_voxel_stiffness(hm, (hm.cell_phase == 2).astype(int), kes)
    assert abs(A - B).max() <= 1e-12 * abs(B).max()


def test_tet_block_confined_swelling_exact():
    """Uniform eigenstrain eps on a tet block (closed forms, E = 100 GPa, nu = 0.25).

    Rollers on all faces: the eigenstress load balances at every free dof, so u = 0 for any stiffness.
    Top (z = L) free: u_z = eps (1 + nu) / (1 - nu) z, u_x = u_y = 0, and the stress is
    sigma_zz = 0, sigma_xx = sigma_yy = -E eps / (1 - nu) (uniaxial strain with the lateral strain held),
    which the stiffness has to get right (lambda and mu enter both the matrix and the stress).
    """
    tm = voxel_tet_mesh(np.full((4, 4, 4), 2, np.uint8), np.ones((4, 4, 4), np.int32), SPACING)
    E, nu = 100e9, 0.25
    lam, mu = lame(E, nu)
    A = assemble_elasticity(TET4, tm.points, tm.cells, np.full(tm.n_cells, lam), np.full(tm.n_cells, mu))
    dn, w = element_gradients(TET4, tm.points, tm.cells)
    eps = -0.01
    s = 3 * (lam + 2 * mu / 3) * eps
    f = np.zeros((tm.n_nodes, 3))
    np.add.at(f, tm.cells, s * np.einsum("eq,eqai->eai", w, dn))
    L = np.array(tm.shape) * SPACING
    tol = 1e-3 * SPACING  # node coordinates are ~1e-6 m: an absolute tolerance in metres
    lo, hi = np.isclose(tm.points, 0, rtol=0, atol=tol), np.isclose(tm.points, L, rtol=0, atol=tol)

    def solve(fixed):
        u = np.zeros(3 * tm.n_nodes)
        free = ~fixed.ravel()
        u[free] = spla.spsolve(A[free][:, free].tocsc(), f.ravel()[free])
        return u.reshape(-1, 3)

    assert np.abs(solve(lo | hi)).max() < 1e-20  # rollers everywhere
    top_free = lo | hi
    top_free[:, 0] = lo[:, 0]
    u = solve(top_free)
    exact = np.zeros_like(u)
    exact[:, 0] = eps * (1 + nu) / (1 - nu) * tm.points[:, 0]
    assert np.abs(u - exact).max() <= 1e-9 * np.abs(exact).max()
    grad = np.einsum("eai,eaj->eij", u[tm.cells], dn[:, 0])  # constant-strain tets
    e = 0.5 * (grad + grad.transpose(0, 2, 1)) - eps * np.eye(3)  # elastic strain
    sig = lam * np.trace(e, axis1=1, axis2=2)[:, None, None] * np.eye(3) + 2 * mu * e
    sig_exact = np.diag([0.0, 1.0, 1.0]) * (-E * eps / (1 - nu))
    assert np.abs(sig - sig_exact).max() <= 1e-9 * E * abs(eps) / (1 - nu)


@pytest.mark.parametrize("order", [1, 2])
def test_elastic_problem_on_tets_exact_blocks(order):
    """The same ElasticProblem on linear and quadratic voxel-tets: confined swelling and stack pressure
    (quadratic: the consistent face load, all on the mid-edge nodes) are exact."""
    from solvers.mesh import quadratic_tet_mesh
    from solvers.physics import ElasticProblem, Material

    def tets(ph, pa):
        m = voxel_tet_mesh(ph, pa, SPACING)
        return m if order == 1 else quadratic_tet_mesh(m)

    se, ap = Material("se", 22.0, 0.3), Material("ap", 140.0, 0.25)
    ph = np.full((6, 5, 4), 1, np.uint8)
    ph[3:] = 2
    tm = tets(ph, (ph == 2).astype(np.int32))
    prob = ElasticProblem(tm, {1: se, 2: ap}, top="stack_pressure", stack_pressure_Pa=5e6, solver="direct")
    zero = np.zeros(tm.n_cells)
    sig = prob.cell_stress(prob.solve(zero), zero)
    nu = np.where(tm.cell_phase == 2, ap.nu, se.nu)
    assert np.allclose(sig[:, 0, 0], -5e6, rtol=1e-9)
    assert np.allclose(sig[:, 1, 1], -5e6 * nu / (1 - nu), rtol=1e-9)
    tm2 = tets(np.full((4, 4, 4), 2, np.uint8), np.ones((4, 4, 4), np.int32))
    prob2 = ElasticProblem(tm2, {2: ap}, top="fixed", solver="direct")
    eps = np.full(tm2.n_cells, -0.01)
    sig2 = prob2.cell_stress(prob2.solve(eps), eps)
    assert np.allclose(sig2, 3 * ap.K * 0.01 * np.eye(3), rtol=0, atol=1e-9 * 3 * ap.K * 0.01)


def test_tet_misfit_sphere_equal_moduli_matches_eshelby():
    """Voxel-tet sphere (R = 6, phi = 2 %): interior hydrostatic stress within 1 % of PHYSICS.md (a)."""
    from scipy import ndimage as ndi

    from solvers import fields
    from solvers.physics import ElasticProblem, Material
    from tests.validation.closed_forms import eshelby_pressure

    n, R = 36, 6
    z, y, x = np.indices((n, n, n)) + 0.5
    ph = np.where((z - n / 2) ** 2 + (y - n / 2) ** 2 + (x - n / 2) ** 2 < R**2, 2, 1).astype(np.uint8)
    tm = voxel_tet_mesh(ph, (ph == 2).astype(np.int32), [1e-6] * 3)
    m = Material("m", 22.0, 0.3)
    prob = ElasticProblem(tm, {1: m, 2: m})
    eps = np.where(tm.cell_phase == 2, -0.05 / 3, 0.0)
    hyd = fields.hydrostatic(prob.cell_stress(prob.solve(eps), eps))
    depth = ndi.distance_transform_edt(ph == 2).ravel()[tm.cell_voxel]
    interior = float(hyd[(tm.cell_phase == 2) & (depth > 2)].mean())
    exact = -eshelby_pressure(-0.05 / 3, 22e9, 0.3, 22e9, 0.3)
    print(f"voxel-tet interior {interior / 1e6:.1f} MPa vs Eshelby {exact / 1e6:.1f} MPa")
    assert abs(interior / exact - 1) < 0.01


def test_quadratic_tets_patch_test():
    """TET10: shape functions interpolate (Kronecker at the nodes, partition of unity, gradients match
    finite differences); uniform strain is reproduced and in equilibrium (the exact blocks are in
    test_elastic_problem_on_tets_exact_blocks)."""
    from solvers.fem import TET10
    from solvers.mesh import quadratic_tet_mesh

    assert np.abs(TET10.shape(TET10.nodes) - np.eye(10)).max() < 1e-15
    xi = np.random.default_rng(0).random((6, 3)) / 3
    h = 1e-6
    fd = np.stack([(TET10.shape(xi + h * e) - TET10.shape(xi - h * e)) / (2 * h) for e in np.eye(3)], axis=-1)
    assert np.abs(fd - TET10.grad(xi)).max() < 1e-8 and np.allclose(TET10.shape(xi).sum(axis=1), 1)
    tm, _ = mesh()
    qm = quadratic_tet_mesh(tm)
    assert qm.n_cells == tm.n_cells and np.allclose(qm.cell_volumes(), tm.cell_volumes(), rtol=1e-12, atol=0)
    E = np.array([[1e-3, 2e-4, -1e-4], [2e-4, -5e-4, 3e-4], [-1e-4, 3e-4, 7e-4]])
    u = qm.points @ E.T
    dn, w = element_gradients(TET10, qm.points, qm.cells)
    assert np.abs(np.einsum("eai,eqaj->eqij", u[qm.cells], dn) - E).max() < 1e-12
    assert np.allclose(w.sum(axis=1), tm.cell_volumes(), rtol=1e-12, atol=0)
    lam, mu = lame(100e9, 0.3)
    A = assemble_elasticity(TET10, qm.points, qm.cells, np.full(qm.n_cells, lam), np.full(qm.n_cells, mu))
    r = (A @ u.ravel()).reshape(-1, 3)
    inside = np.all((qm.points > 1e-12) & (qm.points < np.array(qm.shape) * SPACING - 1e-12), axis=1)
    corner_interior = inside & (np.arange(qm.n_nodes) < tm.n_nodes)
    count = np.bincount(tm.cells.ravel(), minlength=tm.n_nodes)
    sel = np.flatnonzero(corner_interior[: tm.n_nodes] & (count == count.max()))
    assert sel.size and np.abs(r[sel]).max() < 1e-9 * np.abs(r).max()


def test_chunked_assembly_equals_one_chunk():
    """Assembling in chunks of cells (to bound memory) gives the same matrix as all cells at once."""
    tm, _ = mesh()
    rng = np.random.default_rng(2)
    lam, mu = rng.random(tm.n_cells) * 1e9, rng.random(tm.n_cells) * 1e9
    A = assemble_elasticity(TET4, tm.points, tm.cells, lam, mu, chunk=tm.n_cells)
    B = assemble_elasticity(TET4, tm.points, tm.cells, lam, mu, chunk=97)
    assert abs(A - B).max() <= 1e-12 * abs(A).max()
