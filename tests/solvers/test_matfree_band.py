"""Band voxels (the cohesive interface) in the matrix-free operator and its multigrid."""

import numpy as np
import pytest

from segmentation import make_composite
from solvers import fields
from solvers.fem.assembly import apply_dirichlet, assemble_voxel_stiffness, elasticity_matrix, elasticity_parts, lame
from solvers.fem.elements import HEX8
from solvers.fem.mandel import hex_strain_matrix, isotropic
from solvers.matfree import MatrixFreeSolver
from solvers.mesh import voxel_hex_mesh
from solvers.physics import CohesiveLaw, ElasticProblem, Material, default_penalty
from solvers.physics.cohesive.band import BandLaw, band_geometry

H = 0.4e-6
MATS = {1: Material("SE", 22.0, 0.3), 2: Material("AP", 140.0, 0.3)}


def band_case(n, seed=3):
    """A composite with a random band state: mesh, bonded problem, band voxels and their stiffness."""
    ph, pa = make_composite((n, n, n), active_fraction=0.45, void_fraction=0.08, radius=4, seed=seed)
    mesh = voxel_hex_mesh(ph, pa, [H] * 3)
    faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    geo = band_geometry(mesh.phases, mesh.particles, mesh.spacing, faces)
    lam, mu = lame(22e9, 0.3)
    law = CohesiveLaw(penalty_Pa_m=default_penalty(140e9, 22e9, H))
    band = BandLaw(geo, lam, mu, law)
    rng = np.random.default_rng(seed)
    damage, closed = rng.uniform(0, 1, geo.n), rng.uniform(size=geo.n) < 0.3
    B = hex_strain_matrix(mesh.spacing, (0.5, 0.5, 0.5))
    kl, km = (k.reshape(24, 24) for k in elasticity_parts(HEX8, mesh.spacing))
    Khg = lam * kl + mu * km - H**3 * B.T @ isotropic(lam, mu) @ B
    return mesh, ElasticProblem(mesh, MATS), geo, band, damage, closed, B, Khg


def solver_for(case, damage, closed, **kw):
    mesh, ela, geo, band, _, _, _, Khg = case
    C, hg = band.stiffness(damage, closed)
    return MatrixFreeSolver(mesh, ela._lame[ela.cell_material], ela.fixed,
                            band={"voxel": geo.voxel, "C": C, "hourglass": hg, "Khg": Khg}, **kw)


def assembled(case, damage, closed, scale):
    """The same per-voxel stiffness assembled (one element matrix per band voxel)."""
    mesh, ela, geo, band, _, _, B, Khg = case
    C, hg = band.stiffness(damage, closed)
    cell_of = np.full(mesh.phases.size, -1)
    cell_of[mesh.cell_voxel] = np.arange(mesh.n_cells)
    kmat = [elasticity_matrix(HEX8, mesh.spacing, ela.materials[p].E, ela.materials[p].nu) for p in ela.phase_codes]
    cm = ela.cell_material.copy()
    cm[cell_of[geo.voxel]] = len(kmat) + np.arange(geo.n)
    Ke = H**3 * np.einsum("ki,bkl,lj->bij", B, C, B) + hg[:, None, None] * Khg
    A = assemble_voxel_stiffness(mesh, cm, kmat + list(Ke.reshape(-1, 8, 3, 8, 3)))
    return apply_dirichlet(A, ela.fixed, scale=scale)


@pytest.fixture(scope="module")
def case():
    return band_case(18)


def test_band_operator_equals_assembled_matrix(case):
    """The matrix-free operator with band voxels equals the assembled matrix of the same per-voxel stiffness."""
    damage, closed = case[4], case[5]
    mf = solver_for(case, damage, closed)
    A = assembled(case, damage, closed, mf.levels[0].scale)
    x = np.random.default_rng(0).normal(size=A.shape[0])
    y = A @ x
    assert np.abs(mf.matvec(x) - y).max() <= 1e-12 * np.abs(y).max()


def test_band_array_kernel_equals_numba_kernel(case):
    """The band kernel as array expressions (the GPU code path, run with numpy) equals the numba kernel."""
    mf = solver_for(case, case[4], case[5])
    lv = mf.levels[0]
    x = np.random.default_rng(1).normal(size=lv.node_shape)
    free = ~lv.fixed
    a = lv.band.add_apply(x, free, np.zeros_like(x))
    b = lv.band.add_apply_arrays(x, free, np.zeros_like(x))
    assert np.abs(a - b).max() <= 1e-12 * np.abs(a).max()


def test_update_equals_a_fresh_build(case):
    """Updating some band voxels recomputes the coarse levels above them exactly as a new setup would;
    the smoothers' spectral bound stays an upper bound (warm-started, never lowered); with the same
    bounds the two solves are the same to 1e-12, and the warm-started bound costs at most one CG
    iteration against a fresh set-up."""
    damage, closed = case[4], case[5]
    mf = solver_for(case, damage, closed)
    rng = np.random.default_rng(5)
    which = np.flatnonzero(rng.uniform(size=damage.size) < 0.2)
    d2, c2 = damage.copy(), closed.copy()
    d2[which] = np.minimum(1.0, d2[which] + rng.uniform(0, 0.5, which.size))
    c2[which] = ~c2[which]
    C, hg = case[3].stiffness(d2, c2, which)
    mf.update_band(C, hg, which)
    fresh = solver_for(case, d2, c2)
    assert len(mf.levels) == len(fresh.levels) >= 2
    for a, b in zip(mf.levels, fresh.levels):
        ka = a.ke_host if a.ke_host is not None else np.asarray(a.ke)
        kb = b.ke_host if b.ke_host is not None else np.asarray(b.ke)
        np.testing.assert_array_equal(a.mat, b.mat)
        np.testing.assert_array_equal(ka, kb)
        if b is not fresh.levels[-1]:  # the coarsest level is solved, not smoothed
            assert b.lmax / 1.1 * (1 - 1e-3) <= a.lmax <= 1.25 * b.lmax  # fresh: 1.1 x the top Ritz value
    f = case[1].load(np.where(case[0].cell_phase == 2, -0.01 / 3, 0.0))
    u_fresh = fresh.solve(f)
    its_fresh = fresh.stats.iterations[-1]
    for a, b in zip(mf.levels, fresh.levels):  # with the same bounds, the two hierarchies are one preconditioner
        b.lmax = a.lmax
    u1, u2 = mf.solve(f), fresh.solve(f)
    assert mf.stats.iterations[-1] == fresh.stats.iterations[-1] <= its_fresh + 1 <= 31
    assert np.abs(u1 - u2).max() <= 1e-12 * np.abs(u2).max()
    assert np.abs(u1 - u_fresh).max() <= 1e-6 * np.abs(u_fresh).max()  # both within the solver's rtol 1e-8
