"""Cohesive AP|SE interface (PHYSICS.md section 1 and 3(d)).

Energy of full separation, the bonded limit, irreversibility with contact,
and the onset of delamination of a shrinking sphere against 3(d).
"""

import logging

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from solvers import fields
from solvers.linalg import LinearSolver, rigid_body_modes
from solvers.mesh import voxel_hex_mesh, voxel_tet_mesh
from solvers.physics import CohesiveLaw, CohesiveProblem, ElasticProblem, Material, default_penalty
from solvers.physics.cohesive.amg import PairBasis, _drop_weak_blocks, stiff_pairs
from solvers.physics.cohesive.nodepair import MAX_EXPANSION, STAGGER_TOL, energy_line_search
from tests.validation.closed_forms import shell_pressure

H = 1e-6
MATS = {1: Material("SE", 22.0, 0.3), 2: Material("AP", 140.0, 0.3)}
K0 = default_penalty(140e9, 22e9, H)
#: averaging length of the opening on voxel hexes, voxels (the pipeline's default [interface] averaging_voxels)
HEX_AVERAGING = 1.5


def sphere(R, n):
    z, y, x = np.indices((n, n, n)) + 0.5
    r = np.sqrt((z - n / 2) ** 2 + (y - n / 2) ** 2 + (x - n / 2) ** 2)
    ph = np.where(r < R, 2, 1).astype(np.uint8)
    return ph, (ph == 2).astype(np.int32)


def mesh_and_faces(ph, pa, kind="voxel-hex", **mesh_opts):
    """Bonded mesh of a label image and its AP|SE faces, for each mesh kind (``mesh_opts``: conforming only)."""
    if kind == "voxel-hex":
        mesh = voxel_hex_mesh(ph, pa, [H] * 3)
        return mesh, fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    if kind == "voxel-tet":
        mesh = voxel_tet_mesh(ph, pa, [H] * 3)
        return mesh, fields.tet_interface_faces(mesh, sigma_voxels=1.5)
    from solvers.mesh.conforming import conforming_tet_mesh

    mesh = conforming_tet_mesh(ph, pa, [H] * 3, **{"max_facet_distance_voxels": 0.1, "seed": 1, **mesh_opts})
    return mesh, fields.tet_interface_faces(mesh)


def problem(ph, pa, law, kind="voxel-hex", mesh_opts=None, **kw):
    mesh, faces = mesh_and_faces(ph, pa, kind, **(mesh_opts or {}))
    return mesh, CohesiveProblem(mesh, MATS, faces, law, **kw)


@pytest.mark.parametrize("kind", ["voxel-hex", "voxel-tet"])
@pytest.mark.parametrize("direction", [(1.0, 0.0, 0.0), (1.0, 1.0, 0.0), (0.0, 0.0, 1.0)],
                         ids=["mode-I", "mixed", "mode-II"])
def test_single_element_dissipates_fracture_energy(direction, kind):
    """An AP layer on an SE layer (2x2x2 voxels: four voxel faces or eight triangles), pulled apart along
    a fixed direction."""
    law = CohesiveLaw(strength_Pa=100e6, fracture_energy_J_m2=1.0, penalty_Pa_m=K0)
    ph = np.ones((2, 2, 2), np.uint8)
    ph[1] = 2
    _, prob = problem(ph, (ph == 2).astype(np.int32), law, kind)
    it = prob.interface
    assert it.n_faces == (4 if kind == "voxel-hex" else 8)
    assert it.point_area.sum() == pytest.approx(4 * H**2, rel=1e-12, abs=0)
    np.testing.assert_allclose(it.point_normal, [[-1.0, 0, 0]] * it.n_points, atol=1e-12)  # AP on top: n down
    area = it.point_area.sum()
    # AP moves by -s * e: the opening u_SE - u_AP = s * e, e has a positive normal component (or is tangential)
    e = np.asarray(direction) / np.linalg.norm(direction)
    e_open = np.array([-e[0], e[1], e[2]])  # z flipped: opening along +n = -z means moving AP up (+z)
    s_end = 1.5 * law.delta_f  # the effective opening is s for beta = 1
    s = np.concatenate([np.linspace(0, 2 * law.delta_0, 400), np.linspace(2 * law.delta_0, s_end, 20000)[1:]])
    kappa = np.zeros(it.n_points)
    work, peak = 0.0, 0.0
    f_prev = 0.0
    for k in range(1, s.size):
        u = np.zeros((prob.mesh.n_nodes, 3))
        u[it.pair_ap] = -s[k] * e_open
        t, _, kappa = prob.law_state(prob.openings(u), kappa)
        f = float(np.einsum("pi,i,p->", t, e_open, it.point_area))  # force conjugate to s
        work += 0.5 * (f + f_prev) * (s[k] - s[k - 1])
        f_prev = f
        peak = max(peak, float(np.linalg.norm(t[0])))
    dissipated = work  # at full separation no elastic energy is left
    assert prob.damage.max() == 0.0  # law_state does not commit
    assert np.all(law.damage(kappa) == 1.0)
    print(f"{direction}: dissipated / (G_c A) = {dissipated / (law.fracture_energy_J_m2 * area):.5f}")
    # G_c A is ~1e-12 J: no absolute slack
    assert dissipated == pytest.approx(law.fracture_energy_J_m2 * area, rel=0.02, abs=0)
    assert peak == pytest.approx(law.strength_Pa, rel=1e-3)


@pytest.mark.parametrize("contact_factor", [1.0, 0.1])
def test_tractions_and_tangent_derive_from_the_incremental_potential(contact_factor):
    """Tractions = d psi / d delta and the Newton tangent = d t / d delta, on every branch of the law
    (elastic, softening, unloading below the history, residual, contact), by central differences."""
    law = CohesiveLaw(strength_Pa=50e6, fracture_energy_J_m2=0.05, penalty_Pa_m=K0, mode_mixity=0.7,
                      residual=1e-3, contact_factor=contact_factor)
    ph, pa = sphere(2.5, 8)
    _, prob = problem(ph, pa, law, solver="direct")
    rng = np.random.default_rng(0)
    npt = prob.interface.n_points
    scale = np.array([0.3 * law.delta_0, 3.0 * law.delta_0, 0.5 * law.delta_f, 1.5 * law.delta_f])
    delta = rng.normal(size=(npt, 3)) * scale[rng.integers(0, 4, npt)][:, None]
    kappa_old = np.where(rng.random(npt) < 0.5, 0.0, rng.random(npt) * 1.2 * law.delta_f)
    t, K, _ = prob.law_state(delta, kappa_old)
    lam = np.linalg.norm(delta, axis=1)
    h = 1e-7 * np.maximum(lam, law.delta_0)[:, None]
    for i in range(3):
        e = np.zeros(3)
        e[i] = 1.0
        dp, dm = delta + h * e, delta - h * e
        grad = (prob.point_energy(dp, kappa_old) - prob.point_energy(dm, kappa_old)) / (2 * h[:, 0])
        np.testing.assert_allclose(grad, t[:, i], rtol=1e-5, atol=1e-6 * law.strength_Pa)
        dt = (prob.law_state(dp, kappa_old)[0] - prob.law_state(dm, kappa_old)[0]) / (2 * h)
        np.testing.assert_allclose(dt, K[:, :, i], rtol=1e-4, atol=1e-6 * law.penalty_Pa_m)
    dn = np.einsum("pi,pi->p", delta, prob.interface.point_normal)
    lam_eff = np.sqrt(np.maximum(dn, 0) ** 2 + law.mode_mixity**2 * (lam**2 - dn**2))
    branch_hit = {
        "contact": int((dn < 0).sum()),
        "softening": int(((lam_eff > kappa_old) & (lam_eff > law.delta_0) & (lam_eff < law.residual_onset)).sum()),
        "residual": int((lam_eff > law.residual_onset).sum()),
        "unloading": int(((lam_eff < kappa_old) & (kappa_old > law.delta_0)).sum()),
    }
    print(branch_hit)
    assert min(branch_hit.values()) > 20


def test_opening_averaging_keeps_constants_and_is_a_contraction():
    """W of the averaged opening: rows sum to one, A_i W_ij = A_j W_ji, ||W x||_A <= ||x||_A, no
    weight across particles or between opposite normals."""
    ph, pa = sphere(4, 16)
    pa = pa.copy()
    pa[: 8][pa[: 8] > 0] = 2  # two particles touching along z = 8
    mesh, faces = mesh_and_faces(ph, pa)
    prob = CohesiveProblem(mesh, MATS, faces, CohesiveLaw(penalty_Pa_m=K0), averaging_length_m=1.5 * H)
    W, it = prob._W, prob.interface
    A = it.point_area
    np.testing.assert_allclose(np.asarray(W.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    AW = sp.diags(A) @ W
    assert abs(AW - AW.T).max() < 1e-9 * abs(AW).max()
    assert W.data.min() > -1e-12
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = rng.normal(size=A.size)
        assert A @ (W @ x) ** 2 <= A @ x**2
    i, j = W.nonzero()
    part = np.repeat(prob.interface_particle, it.points_per_face)
    assert np.all(part[i] == part[j])
    assert np.all(np.einsum("pi,pi->p", it.point_normal[i], it.point_normal[j]) >= -1e-12)
    assert 50 < W.nnz / A.size < 500  # each point averages over a patch of about 3 voxels


@pytest.mark.parametrize("contact_factor", [1.0, 0.1])
def test_averaged_opening_forces_and_tangent_derive_from_the_energy(contact_factor):
    """With the opening averaged, the interface forces (law on the average, contact of damaged points,
    fluctuation springs) are the gradient of the interface energy, and the CG operator is the
    derivative of the forces (central differences on random openings and histories)."""
    law = CohesiveLaw(strength_Pa=50e6, fracture_energy_J_m2=0.05, penalty_Pa_m=K0, mode_mixity=0.7,
                      residual=1e-3, contact_factor=contact_factor)
    ph, pa = sphere(2.5, 8)
    _, prob = problem(ph, pa, law, solver="direct", averaging_length_m=1.0 * H)
    rng = np.random.default_rng(0)
    npt = prob.interface.n_points
    area = prob.interface.point_area
    u = rng.normal(size=prob.mesh.n_nodes * 3) * 2.0 * law.delta_0
    u[prob.fixed.ravel()] = 0.0
    kappa_old = np.where(rng.random(npt) < 0.5, 0.0, rng.random(npt) * 0.5 * law.delta_f)
    assert (prob.law.damage(kappa_old) > 0).sum() > 20
    L = prob._fluctuation(kappa_old)

    def energy(v):
        J = prob._pair_openings(v)
        return prob.interface_energy(prob.openings(v), kappa_old) @ area + 0.5 * np.sum(J * (L @ J))

    def grad(v):
        t = prob.interface_forces(prob.openings(v), kappa_old)[0]
        return prob._scatter(t * area[:, None]) + prob._scatter_pairs(L @ prob._pair_openings(v))

    K = prob.interface_forces(prob.openings(u), kappa_old)[1]
    op = prob._interface_operator(K, prob.openings(u), kappa_old)
    g = grad(u)
    for _ in range(3):
        v = rng.normal(size=u.size) * law.delta_0
        v[prob.fixed.ravel()] = 0.0
        h = 1e-4
        slope = (energy(u + h * v) - energy(u - h * v)) / (2 * h)
        assert slope == pytest.approx(g @ v, rel=1e-5, abs=0)
        dg = (grad(u + h * v) - grad(u - h * v)) / (2 * h)
        np.testing.assert_allclose(dg, op @ v - prob._Kb @ v, rtol=1e-4, atol=1e-6 * np.abs(dg).max())
        # the preconditioner's matrix is the same tangent, assembled
        np.testing.assert_allclose(prob._nonlocal_matrix(K, prob.openings(u), kappa_old, drop=0.0) @ v, op @ v,
                                   rtol=1e-9,
                                   atol=1e-12 * np.abs(op @ v).max())


def test_fluctuation_springs_hold_exactly_what_the_average_misses():
    """sum of the springs' energy = K0 <delta, (I - W^2) delta>_A / 2 undamaged; a spring with a
    debonded end carries nothing, and the springs' form stays positive semi-definite for any damage."""
    law = CohesiveLaw(penalty_Pa_m=K0)
    ph, pa = sphere(4, 16)
    _, prob = problem(ph, pa, law, solver="direct", averaging_length_m=1.5 * H)
    it, W = prob.interface, prob._W
    A = it.point_area
    rng = np.random.default_rng(3)
    J = rng.normal(size=(it.pair_se.size, 3))
    delta = J[it.point_pair]
    L = prob._fluctuation(np.zeros(it.n_points))
    wd = W @ delta
    want = 0.5 * K0 * (A @ np.sum(delta**2, axis=1) - A @ np.sum(wd**2, axis=1))
    assert 0.5 * np.sum(J * (L @ J)) == pytest.approx(want, rel=1e-9, abs=0)
    # undamaged, the assembled nonlocal tangent is the local law's matrix
    K_und = prob.interface_forces(delta * 0.0, np.zeros(it.n_points), tangent=False)[1]
    diff = prob._nonlocal_matrix(K_und, delta * 0.0, np.zeros(it.n_points), drop=0.0) - prob._A
    assert abs(diff).max() < 1e-9 * abs(prob._A).max()
    L0 = L
    kappa = np.where(rng.random(it.n_points) < 0.3, 10 * law.delta_f, 0.0)  # debonded points
    L = prob._fluctuation(kappa)
    assert spla.eigsh(L, k=1, which="SA")[0][0] > -1e-9 * abs(L).max()
    s = prob._pair_softening(kappa)  # area share of a pair's points that are not debonded
    assert (s < 0.5).sum() > 20 and (s == 1.0).sum() > 20
    i, j = sp.triu(L0, k=1).nonzero()
    ratio = np.asarray(L[i, j]).ravel() / np.asarray(L0[i, j]).ravel()
    np.testing.assert_allclose(ratio, np.minimum(s[i], s[j]), rtol=1e-12)  # the weaker end decides


def test_dropping_weak_blocks_keeps_the_preconditioner_positive_definite():
    """_drop_weak_blocks removes small off-diagonal 3x3 blocks and adds their norms to the diagonals:
    the result minus the original is positive semi-definite, strong blocks are untouched."""
    rng = np.random.default_rng(5)
    n = 40
    X = sp.random(3 * n, 3 * n, density=0.05, random_state=rng)
    G = (X @ X.T + sp.identity(3 * n)).tocsr()
    out = _drop_weak_blocks(G, 0.2)
    Gb, Ob = sp.bsr_matrix(G, blocksize=(3, 3)), sp.bsr_matrix(out, blocksize=(3, 3))
    assert Ob.nnz < Gb.nnz  # something was dropped
    assert np.linalg.eigvalsh((out - G).toarray()).min() > -1e-12
    assert abs(out - out.T).max() < 1e-12
    diff = (out - G).tocoo()
    rows, cols = diff.row // 3, diff.col // 3
    strong = np.abs(diff.data) > 1e-14
    # off the diagonal a changed entry was dropped whole: out is zero there
    off = strong & (rows != cols)
    assert np.all(np.asarray(out[diff.row[off], diff.col[off]]).ravel() == 0)


def test_pair_basis_is_a_change_of_coordinates():
    """PairBasis: apply / apply_t / inverse are T, T^T and T^-1 of matrix(), galerkin is T^T A T, and a
    rigid-body mode has no jump in pair coordinates (so the AMG's coarse grids carry no jumps)."""
    rng = np.random.default_rng(2)
    n = 12
    basis = PairBasis(np.array([0, 3, 7]), np.array([5, 4, 11]), n)
    T = basis.matrix().toarray()
    v = rng.standard_normal((3 * n, 2))
    np.testing.assert_allclose(basis.apply(v), T @ v, atol=1e-14)
    np.testing.assert_allclose(basis.apply_t(v), T.T @ v, atol=1e-14)
    np.testing.assert_allclose(basis.apply(basis.inverse(v)), v, atol=1e-14)
    X = rng.standard_normal((3 * n, 3 * n))
    A = sp.csr_matrix(X @ X.T)
    np.testing.assert_allclose(basis.galerkin(A).toarray(), T.T @ A.toarray() @ T, rtol=1e-12, atol=1e-12)
    points = rng.standard_normal((n, 3))
    points[basis.ap] = points[basis.se]  # a pair's two nodes sit at the same place
    jumps = basis.inverse(rigid_body_modes(points)).reshape(n, 3, 6)[basis.ap]
    assert np.abs(jumps).max() < 1e-14


def test_pair_coordinates_make_the_cohesive_amg_as_good_as_the_bonded_one():
    """The penalty springs (100 x the bulk) make AMG on the split matrix slow; in (mean, jump) coordinates on
    the stiff pairs CG needs the bonded solve's iterations. Softened pairs stay split: their jump is not local."""
    law = CohesiveLaw(strength_Pa=1e12, fracture_energy_J_m2=1e9, penalty_Pa_m=K0)
    mesh, prob = problem(*sphere(4, 16), law, solver="amg", averaging_length_m=HEX_AVERAGING * H)
    eps = np.where(mesh.cell_phase == 2, -0.01, 0.0)
    f = prob.load(eps)
    f[prob.fixed.ravel()] = 0.0
    A = prob._A.copy()
    B = rigid_body_modes(prob.mesh.points)
    B[prob.fixed.ravel()] = 0.0
    its = {}
    for name, basis in (("split", None), ("pairs", prob._preconditioner_basis(A))):
        solver = LinearSolver(A, method="amg", near_nullspace=B, rtol=1e-8, smoother=prob.SMOOTHER, basis=basis)
        x = solver.solve(f, A=A)  # checks the true residual
        its[name] = solver.stats.iterations[-1]
    np.testing.assert_allclose(A @ x, f, atol=1e-7 * np.linalg.norm(f))
    bonded = ElasticProblem(mesh, MATS, solver="amg")
    Bb = rigid_body_modes(mesh.points)
    Bb[bonded.fixed.ravel()] = 0.0
    ref = LinearSolver(bonded.A, method="amg", near_nullspace=Bb, rtol=1e-8, smoother=prob.SMOOTHER)
    ref.solve(bonded.load(eps))
    its["bonded"] = ref.stats.iterations[-1]
    print(f"AMG-CG iterations to 1e-8: {its}")  # measured: split 67, pairs 11, bonded 11
    assert its["pairs"] <= its["split"] / 3
    assert its["pairs"] <= 1.25 * its["bonded"]
    # every pair with interface area is stiff undamaged; softened 10^4 times, none is
    it = prob.interface
    assert np.array_equal(stiff_pairs(A, it.pair_se, it.pair_ap, 1.0, prob.fixed), prob._pair_area > 0)
    K = prob.law_state(np.zeros((it.n_points, 3)), prob.kappa, tangent=False)[1]
    data = A.data.copy()
    prob._set_interface(1e-4 * K, data)
    soft = sp.bsr_matrix((data, A.indices, A.indptr), shape=A.shape)
    assert not stiff_pairs(soft, it.pair_se, it.pair_ap, 1.0, prob.fixed).any()
    # a node in two pairs cannot be in both coordinate changes
    se2 = np.r_[it.pair_se[:1], it.pair_se[:1]]
    assert not stiff_pairs(A, se2, it.pair_ap[:2], 1.0, prob.fixed).any()


def test_refreshing_the_finest_level_follows_local_damage():
    """LinearSolver.refresh_fine: after the interface softens on one side of the sphere, the hierarchy of the
    undamaged matrix with the softened matrix on its finest level stays a symmetric preconditioner and
    needs fewer CG iterations than the stale one (the smoother sees the change, the coarse grids need not)."""
    law = CohesiveLaw(strength_Pa=1e12, fracture_energy_J_m2=1e9, penalty_Pa_m=K0)
    mesh, prob = problem(*sphere(4, 16), law, solver="amg")
    it = prob.interface
    A = prob._A.copy()
    B = rigid_body_modes(prob.mesh.points)
    B[prob.fixed.ravel()] = 0.0
    solver = LinearSolver(A, method="amg", near_nullspace=B, rtol=1e-8, smoother=prob.SMOOTHER,
                          basis=prob._preconditioner_basis(A))
    K = prob.law_state(np.zeros((it.n_points, 3)), prob.kappa, tangent=False)[1]
    upper = prob.mesh.points[it.pair_se[it.point_pair], 0] > 8 * H  # one half of the interface softens
    prob._set_interface(np.where(upper[:, None, None], 1e-3, 1.0) * K)
    A2 = prob._A.copy()
    f = prob.load(np.where(mesh.cell_phase == 2, -0.01, 0.0))
    f[prob.fixed.ravel()] = 0.0
    solver.solve(f, A=A2)
    stale = solver.stats.iterations[-1]
    solver.refresh_fine(A2)
    x = solver.solve(f, A=A2)
    fresh = solver.stats.iterations[-1]
    np.testing.assert_allclose(A2 @ x, f, atol=1e-7 * np.linalg.norm(f))
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, A2.shape[0]))
    M = solver._M
    assert a @ (M @ b) == pytest.approx(b @ (M @ a), rel=1e-10, abs=0)
    print(f"CG iterations on the half-softened interface: stale hierarchy {stale}, refreshed finest level {fresh}")
    assert fresh < stale


@pytest.mark.parametrize("max_stagger", [0, 20])
def test_springs_lag_one_increment_unless_staggered(max_stagger):
    """The fluctuation springs use the damage committed before an increment: by default a second solve
    at the same load still softens them; with staggering the load is solved again until they settle."""
    law = CohesiveLaw(strength_Pa=60e6, fracture_energy_J_m2=0.2, penalty_Pa_m=K0)
    mesh, prob = problem(*sphere(3, 12), law, solver="direct", averaging_length_m=HEX_AVERAGING * H,
                         max_stagger=max_stagger)
    eps = np.where(mesh.cell_phase == 2, -0.009 / 3, 0.0)
    prob.solve(eps)
    assert prob.damage.mean() > 0.05
    assert (prob.history[-1]["stagger_rounds"] > 0) == (max_stagger > 0)
    before = prob.kappa.copy()
    prob.solve(eps)  # the same load once more: only the springs' lag can move it
    moved = float(np.abs(prob._pair_softening(prob.kappa) - prob._pair_softening(before)).max())
    print(f"max_stagger {max_stagger}: rounds {prob.history[0]['stagger_rounds']}, pair softening moved by "
          f"{moved:.3f} on the repeated load")
    if max_stagger:
        assert moved <= STAGGER_TOL
    else:
        assert moved > STAGGER_TOL


@pytest.mark.parametrize("kind", ["voxel-hex", "voxel-tet", "conforming-tet"])
def test_very_strong_interface_gives_the_bonded_result(kind):
    """Strength far above any traction: no damage, and stresses converge to the bonded ones as 1 / K0
    (the same on every mesh kind: the split and the interface elements are element-agnostic)."""
    if kind == "conforming-tet":
        pytest.importorskip("pygalmesh")
    mesh, faces = mesh_and_faces(*sphere(4, 16), kind)
    eps = np.where(mesh.cell_phase == 2, -0.05 / 3, 0.0)
    bonded = ElasticProblem(mesh, MATS)
    sb = bonded.cell_stress(bonded.solve(eps), eps)
    vol = mesh.cell_volumes()[mesh.cell_phase == 2]
    hb = np.average(fields.hydrostatic(sb)[mesh.cell_phase == 2], weights=vol)
    errs, diffs = [], []
    for factor in (1.0, 100.0):
        law = CohesiveLaw(strength_Pa=1e12, fracture_energy_J_m2=1e9, penalty_Pa_m=K0 * factor)
        prob = CohesiveProblem(mesh, MATS, faces, law)
        u = prob.solve(eps)
        assert prob.damage.max() == 0.0
        sc = prob.cell_stress(u, eps)
        errs.append(abs(np.average(fields.hydrostatic(sc)[mesh.cell_phase == 2], weights=vol) / hb - 1))
        diffs.append(np.abs(sc - sb).max() / np.abs(sb).max())
    # the default penalty adds a 1/100-voxel compliance; conforming meshes have cells down to 0.1 voxel
    # (measured: the worst are 0.10-0.20 voxel across), whose strain it changes by up to 9 %
    assert diffs[0] < (0.05 if kind != "conforming-tet" else 0.10)
    print(f"{kind}: particle mean hydrostatic {hb / 1e6:.1f} MPa bonded; cohesive relative errors {errs}, "
          f"largest stress difference / largest stress {diffs}")
    assert diffs[1] < diffs[0] / 30  # pointwise too, the difference falls like 1 / K0
    assert errs[0] < 0.01  # the default penalty adds a 1/100-voxel compliance
    assert errs[1] < errs[0] / 30  # and the error falls like 1 / K0


def test_averaged_opening_changes_nothing_before_damage():
    """Undamaged, the averaged-opening interface has exactly the local law's energy: same displacements."""
    law = CohesiveLaw(strength_Pa=1e12, fracture_energy_J_m2=1e9, penalty_Pa_m=K0)
    mesh, faces = mesh_and_faces(*sphere(4, 16))
    eps = np.where(mesh.cell_phase == 2, -0.05 / 3, 0.0)
    u0 = CohesiveProblem(mesh, MATS, faces, law, solver="direct").solve(eps)
    prob = CohesiveProblem(mesh, MATS, faces, law, solver="direct", averaging_length_m=1.5 * H)
    u1 = prob.solve(eps)
    assert prob.damage.max() == 0.0
    assert np.abs(u1 - u0).max() < 1e-6 * np.abs(u0).max()


@pytest.mark.parametrize("averaging, contact_factor", [(0.0, 1.0), (HEX_AVERAGING, 1.0), (0.0, 0.1),
                                                      (HEX_AVERAGING, 0.1)],
                         ids=["local", "averaged", "local-soft-contact", "averaged-soft-contact"])
def test_damage_is_irreversible_and_closed_faces_do_not_interpenetrate(averaging, contact_factor, caplog):
    """Shrink until the interface is damaged, swell back and beyond: damage never heals, contact holds.

    The particle debonds all round on the way (only the residual stiffness holds it), then is
    pressed back into contact. Every solve logs its progress (a long run is watched through it).
    A softer contact (``contact_factor``) of debonded faces lets them in by ``|t_n| / (c K0)`` only.
    """
    law = CohesiveLaw(strength_Pa=60e6, fracture_energy_J_m2=1.0, penalty_Pa_m=K0, contact_factor=contact_factor)
    ph, pa = sphere(3, 12)
    mesh, prob = problem(ph, pa, law, solver="direct", averaging_length_m=averaging * H)
    path = np.concatenate([np.linspace(0, -0.02, 5)[1:], np.linspace(-0.02, 0.02, 5)[1:]])
    d_prev = prob.damage
    damaged = 0.0
    for dv in path:
        eps = np.where(mesh.cell_phase == 2, dv / 3, 0.0)
        with caplog.at_level(logging.INFO, logger="solvers.physics.cohesive"):
            u = prob.solve(eps)
        fd, area = prob.face_damage(), prob.interface.face_area
        line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cohesive solve")][-1]
        assert line.startswith(f"cohesive solve {len(prob.history)}: {prob.history[-1]['nonlinear_iterations']} ")
        assert line.endswith(f"debonded {100 * area[fd >= 1].sum() / area.sum():.1f} % (of its area)")
        d = prob.damage
        assert np.all(d >= d_prev)
        d_prev = d
        damaged = max(damaged, float(np.mean(prob.face_damage() > 0.9)))
    assert damaged > 0.3, "the weak interface should be badly damaged on charge"
    # swollen by +2 %: the damaged faces are pressed shut
    n = prob.interface.point_normal
    dn = np.einsum("pi,pi->p", prob.openings(u), n)
    tn = np.einsum("pi,pi->p", prob.tractions(u), n)
    closed = prob.damage > 0.9
    assert np.median(tn[closed]) < 0, "damaged faces carry compression in contact"
    # penetration is only the penalty compliance |t_n| / (K0 (s + (1 - s) c)), far below a voxel
    # (a contact 1/c times softer lets faces in 1/c times deeper)
    assert dn.min() > -1e-3 * H / contact_factor
    # the local law's contact is exactly the penalty; averaged, part of the load is on the smooth opening's contact
    if averaging == 0.0:
        s = np.maximum(1.0 - prob.damage, law.residual)
        k_c = K0 * (s + (1.0 - s) * contact_factor)
        np.testing.assert_allclose(dn[dn < 0], tn[dn < 0] / k_c[dn < 0], rtol=1e-9)
    print(f"faces with d > 0.9: {damaged:.2f}; deepest penetration {-dn.min() / H:.1e} voxel")


def onset(R, n, step=0.0005, start=0.004, stop=0.0131, kind="voxel-hex", mesh_opts=None, averaging_voxels=0.0):
    """dV/V (positive number) at first damage and at half of the interface area damaged."""
    law = CohesiveLaw(strength_Pa=100e6, fracture_energy_J_m2=10.0, penalty_Pa_m=K0)
    ph, pa = sphere(R, n)
    mesh, prob = problem(ph, pa, law, kind, mesh_opts, solver="amg", averaging_length_m=averaging_voxels * H)
    area = prob.interface.point_area
    first, half, prev = None, None, (0.0, 0.0)
    for dv in np.arange(start, stop, step):
        prob.solve(np.where(mesh.cell_phase == 2, -dv / 3, 0.0))
        frac = float(area[prob.damage > 0].sum() / area.sum())
        if first is None and frac > 0:
            first = dv
        if frac >= 0.5:
            half = prev[0] + (0.5 - prev[1]) * (dv - prev[0]) / (frac - prev[1])
            break
        prev = (dv, frac)
    # the particle's volume fraction of the meshed box (no void here): a CGAL box runs between the outer
    # voxel centres, (n - 1)^3 voxels, so phi is 8.0 % where the voxels give 6.8 % (R = 4 in 16^3)
    vol = np.abs(mesh.cell_volumes())
    phi = float(vol[mesh.cell_phase == 2].sum() / vol.sum())
    return first, half, onset_references(phi, law.strength_Pa)


def onset_references(phi, strength_Pa):
    """3(d) onsets dV/V of the free and fixed outer shell, and of the box (top free, rollers elsewhere).

    The box has no closed form; its interface pressure is the mean of the two shell pressures to
    1 % (:func:`test_box_pressure_is_the_mean_of_the_shell_bounds`), so its onset is 3 F_c over that mean.
    """
    p = {o: abs(shell_pressure(1.0, phi, 140e9, 0.3, 22e9, 0.3, o)) for o in ("free", "fixed")}
    return {"free": 3 * strength_Pa / p["free"], "fixed": 3 * strength_Pa / p["fixed"],
            "box": 3 * strength_Pa / (0.5 * (p["free"] + p["fixed"]))}


@pytest.mark.slow
def test_box_pressure_is_the_mean_of_the_shell_bounds():
    """The onset reference of the box: bonded quadratic tets of 1.5 voxel (the mesh-converged reference
    of the 3(b) comparison) give a particle pressure within 1.5 % of the mean of the free- and
    fixed-shell pressures (tension: the particle shrinks), at the particle's volume fraction of the meshed box."""
    pytest.importorskip("pygalmesh")
    from solvers.mesh import quadratic_tet_mesh

    eps = -0.01 / 3
    for R, n in ((4, 16), (6, 24)):
        mesh = quadratic_tet_mesh(mesh_and_faces(*sphere(R, n), "conforming-tet", max_cell_size_voxels=1.5)[0])
        ap = mesh.cell_phase == 2
        vol = np.abs(mesh.cell_volumes())
        phi = vol[ap].sum() / vol.sum()
        prob = ElasticProblem(mesh, MATS, top="free")
        e = np.where(ap, eps, 0.0)
        p = np.average(fields.hydrostatic(prob.cell_stress(prob.solve(e), e)[ap]), weights=vol[ap])
        bounds = [abs(shell_pressure(eps, phi, 140e9, 0.3, 22e9, 0.3, o)) for o in ("free", "fixed")]
        print(f"R = {R}: phi {phi:.4f}, box pressure {p / 1e6:.2f} MPa, shell bounds {bounds[0] / 1e6:.2f} / "
              f"{bounds[1] / 1e6:.2f} MPa, mean {np.mean(bounds) / 1e6:.2f} ({100 * (p / np.mean(bounds) - 1):+.2f} %)")
        assert p == pytest.approx(np.mean(bounds), rel=0.015)


@pytest.mark.slow
def test_delamination_onset_matches_closed_form_on_two_radii():
    """Voxel hexes with the opening averaged over 1.5 voxels (fluctuation springs softening with the
    damage): half-damage onset within 15 % of the 3(d) box value on R = 4 and 6, and within 10 % of
    each other (measured: -6.8 % and -7.1 %, first damage at 0.85 / 0.80 %; with the springs converged
    at every increment -7.6 / -8.0 %; the local law: -24 / -15 %, and -21 % at R = 8)."""
    out = {}
    for R, n in ((4, 24), (6, 36)):
        first, half, ref = onset(R, n, averaging_voxels=HEX_AVERAGING)
        mid = ref["box"]
        out[R] = half
        print(f"R = {R}: first damage at dV/V = {100 * first:.3f} %, half damaged at {100 * half:.3f} % "
              f"({100 * (half / mid - 1):+.1f} %); 3(d) fixed/free outer shell {100 * ref['fixed']:.3f} / "
              f"{100 * ref['free']:.3f} %")
        assert half == pytest.approx(mid, rel=0.15)
    assert out[4] == pytest.approx(out[6], rel=0.10)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the local law on voxel hexes: half-damage onset 24 % below 3(d) at R = 4 "
                   "(15 % at R = 6, 21 % at R = 8): the staircase corners' openings spread from 0.3 to 2.9x "
                   "their median and the first faces to fail shed load onto the rest; see docs/performance.md")
def test_local_law_on_voxel_hexes_delaminates_early():
    first, half, ref = onset(4, 24)
    assert half == pytest.approx(ref["box"], rel=0.15)


#: conforming cells of 1 voxel, 0.35 voxel within 1.5 voxels of the interface on both sides, the label
#: image drawn 4x finer along smoothed indicators and the meshed surfaces smoothed (Taubin). On R = 4:
#: -20 % with 1-voxel cells on the voxel staircase, -10 % with a 0.5-voxel electrolyte shell, -7 % with
#: Taubin smoothing, -5.3 % with upsampling too, -4.2 % with the particle side of the shell refined
#: (-4.7 % at 0.5 voxel, -5.6 % in a 1-voxel shell; 0.35 voxel in the whole particle: -4.1 %)
CONFORMING = {"interface_cell_size_voxels": 0.35, "interface_shell_voxels": 1.5, "smooth_iterations": 20,
              "upsample": 4, "max_facet_distance_voxels": 0.25}


@pytest.fixture(scope="module")
def conforming_onsets():
    """Onsets on conforming tets for R = 4 in 16^3 and R = 6 in 24^3 (about 150 s)."""
    pytest.importorskip("pygalmesh")
    out = {}
    for R, n in ((4, 16), (6, 24)):
        first, half, ref = onset(R, n, kind="conforming-tet", mesh_opts=CONFORMING)
        mid = ref["box"]
        print(f"conforming tets R = {R}: first damage at dV/V <= {100 * first:.3f} %, half damaged at "
              f"{100 * half:.3f} % ({100 * (half / mid - 1):+.1f} %); 3(d) fixed/free outer shell "
              f"{100 * ref['fixed']:.3f} / {100 * ref['free']:.3f} %")
        out[R] = half, mid
    return out


@pytest.mark.slow
def test_conforming_onset_does_not_depend_on_radius(conforming_onsets):
    """Half-damage onset on R = 4 and R = 6 within 10 % (measured: 0.895 and 0.900 %)."""
    assert conforming_onsets[4][0] == pytest.approx(conforming_onsets[6][0], rel=0.10)


@pytest.mark.slow
def test_conforming_onset_within_5_percent_of_closed_form(conforming_onsets):
    """Half-damage onset within 5 % of the 3(d) box value on both radii (measured: -4.2 % at R = 4, -3.9 %
    at R = 6). What is left is the spread of the nodal interface tractions on a surface drawn from
    voxels (p10-p90 0.78-1.20 x their mean): points past onset soften and pass their load on."""
    for half, mid in conforming_onsets.values():
        assert half == pytest.approx(mid, rel=0.05)


def test_line_search_lengthens_steps_on_a_flat_energy_and_shortens_them_on_a_steep_one():
    """energy_line_search on parabolas whose minimiser lies beyond, before, or not along the step."""
    def parabola(a_min):  # change(a) with slope -1 at 0 and its minimum at a_min
        return lambda a: -a + 0.5 * a**2 / a_min

    # snap-through: the energy is 8x flatter than the Newton model, its minimum 8 steps away
    assert energy_line_search(parabola(8.0), -1.0) == 8.0
    assert energy_line_search(parabola(1e3), -1.0) == MAX_EXPANSION
    assert energy_line_search(parabola(8.0), -1.0, alpha_max=3.0) == 2.0  # the trust region caps it
    # an exact Newton step is kept
    assert energy_line_search(parabola(1.0), -1.0) == 1.0
    # a step 20x too long: backtracking lands within a factor 2 of the minimiser with sufficient decrease
    a = energy_line_search(parabola(0.05), -1.0)
    assert 0.025 <= a <= 0.1 and parabola(0.05)(a) <= -1e-4 * a
    # no decrease along the direction at all (the energy rises): 0, so the caller cuts the increment
    assert energy_line_search(lambda a: a, -1.0) == 0.0
