"""The band multigrid's solves as damage grows: local solves that follow it, rigid-body deflation of the particles."""

import numpy as np
import pytest

from solvers.deflation import CORNERS, RigidModes, node_clusters
from solvers.fem.mandel import hex_strain_matrix
from solvers.mesh.voxel import ACTIVE
from tests.solvers.test_matfree_band import assembled, band_case, solver_for
from tomomech.errors import ConvergenceError


def particle_labels(mesh):
    out = np.zeros(mesh.shape, np.int64)
    ap = mesh.cell_voxel[mesh.cell_phase == ACTIVE]
    out.ravel()[ap] = mesh.particles.ravel()[ap]
    return out


def mode_matrix(modes, shape):
    """Z (grid dofs, 6 p) column by column through ``prolong_add``."""
    cols = []
    for k in range(modes.size):
        c = np.zeros(modes.size)
        c[k] = 1.0
        cols.append(modes.prolong_add(c, np.zeros(shape)).ravel())
    return np.stack(cols, axis=1)


@pytest.fixture(scope="module")
def case():
    return band_case(14, seed=4)


def test_node_clusters_are_the_particles_shared_nodes_to_the_larger_label():
    a = np.zeros((6, 6, 6), np.int64)
    a[1, 1, 1] = 3
    a[2, 2, 2] = 7  # touches particle 3 at the node (2, 2, 2)
    a[4:6, 4:6, 4:6] = 5
    clusters, p = node_clusters(a)
    assert p == 3
    assert clusters[1, 1, 1] == 0 and clusters[3, 3, 3] == 2 and clusters[2, 2, 2] == 2
    assert clusters[5, 5, 5] == 1 and clusters[0, 0, 0] == -1


def test_modes_are_rigid_orthonormal_and_zero_on_fixed_dofs(case):
    mesh = case[0]
    mf = solver_for(case, case[4], case[5])
    fixed = mf.levels[0].fixed
    clusters, p = node_clusters(particle_labels(mesh))
    modes = RigidModes.build(clusters, p, ~fixed)
    Z = mode_matrix(modes, mf.levels[0].node_shape)
    live = ~modes.dead
    assert np.abs(Z.T @ Z - np.diag(live.astype(float))).max() < 1e-12
    assert np.abs(Z[fixed.ravel()]).max() == 0.0
    # the modes of a particle strain none of the voxels whose corners are all its own (and free)
    B = hex_strain_matrix(mesh.spacing, (0.5, 0.5, 0.5))
    zyx = np.argwhere(particle_labels(mesh) > 0)
    corner = tuple((zyx[:, None, :] + CORNERS[None]).transpose(2, 0, 1))
    for c in range(p):
        inside = (clusters[corner] == c).all(axis=1) & ~fixed[corner].any(axis=(1, 2))
        for k in np.flatnonzero(live[6 * c:6 * c + 6]) + 6 * c:
            u = Z[:, k].reshape(mf.levels[0].node_shape)
            ue = u[tuple(a[inside] for a in corner)].reshape(-1, 24)
            assert np.abs(ue @ B.T).max() <= 1e-12 * np.abs(u).max() / mesh.spacing[0]


def test_coarse_matrix_is_z_a_z_and_updates_exactly(case):
    """E = Z^T A Z with A the operator itself (to 1e-12), and after a band update equal to a fresh build."""
    mesh, damage, closed = case[0], case[4], case[5]
    mf = solver_for(case, damage, closed, deflate=particle_labels(mesh))
    mf.deflate_rigid_modes()
    shape = mf.levels[0].node_shape
    Z = mode_matrix(mf._deflation.modes, shape)
    AZ = np.stack([mf.apply(Z[:, k].reshape(shape)).ravel() for k in range(Z.shape[1])], axis=1)
    E = Z.T @ AZ
    assert np.abs(mf._deflation.E.toarray() - E).max() <= 1e-12 * np.abs(E).max()
    rng = np.random.default_rng(2)
    which = np.flatnonzero(rng.uniform(size=damage.size) < 0.4)
    d2, c2 = damage.copy(), closed.copy()
    d2[which] = 1.0
    c2[which] = False
    C, hg = case[3].stiffness(d2, c2, which)
    mf.update_band(C, hg, which)
    fresh = solver_for(case, d2, c2, deflate=particle_labels(mesh))
    fresh.deflate_rigid_modes()
    E2 = fresh._deflation.E.toarray()
    assert np.abs(mf._deflation.E.toarray() - E2).max() <= 1e-12 * np.abs(E2).max()


def test_deflation_gives_the_same_solution_in_fewer_iterations_when_debonded(case):
    """All band voxels open and fully damaged: the particles float on the residual stiffness. Deflated
    and plain multigrid CG reach the same displacement; deflation needs fewer iterations."""
    mesh, ela, geo = case[0], case[1], case[2]
    damage, closed = np.ones(geo.n), np.zeros(geo.n, bool)
    eps = np.where(mesh.cell_phase == ACTIVE, -0.01, 0.0)
    f = ela.load(eps)
    plain = solver_for(case, damage, closed, rtol=1e-10, maxiter=3000, local_cycles=0)
    defl = solver_for(case, damage, closed, rtol=1e-10, maxiter=3000, local_cycles=0, deflate=particle_labels(mesh))
    defl.deflate_rigid_modes()
    u0, u1 = plain.solve(f), defl.solve(f)
    assert np.abs(u1 - u0).max() <= 1e-6 * np.abs(u0).max()
    assert defl.stats.iterations[-1] < plain.stats.iterations[-1]


def test_local_solves_refactor_on_band_updates(case):
    """Local solves built on a band (after a failed solve) are refactored at every update: their columns are
    those of the new operator, and the solve equals plain CG's."""
    mesh, ela, geo = case[0], case[1], case[2]
    f = ela.load(np.where(mesh.cell_phase == ACTIVE, -0.01, 0.0))
    damage, closed = np.ones(geo.n), np.zeros(geo.n, bool)
    mf = solver_for(case, damage, closed, rtol=1e-10, maxiter=3000)
    assert mf._local == []
    mf._redetect_local()
    assert mf._local and mf.band_updates["local_rebuilds"] == 1
    which = np.arange(0, geo.n, 3)
    damage[which] = 0.5
    C, hg = case[3].stiffness(damage, closed, which)
    mf.update_band(C, hg, which)
    A = assembled(case, damage, closed, mf.levels[0].scale).tocsr()
    pos = np.full(np.prod(mf.levels[0].node_shape), -1)
    pos[(mesh.node_grid[:, None] * 3 + np.arange(3)).ravel()] = np.arange(A.shape[0])
    for dof_local, _, dof_rows, couple in mf._local:
        ref = A[pos[dof_rows]][:, pos[dof_local]]
        assert abs(couple - ref).max() <= 1e-12 * abs(ref).max()
    plain = solver_for(case, damage, closed, rtol=1e-10, maxiter=3000, local_cycles=0)
    u0 = plain.solve(f)
    u1 = mf.solve(f)
    assert np.abs(u1 - u0).max() <= 1e-6 * np.abs(u0).max()
    assert mf.stats.iterations[-1] < plain.stats.iterations[-1]


def test_a_solve_that_fails_turns_deflation_and_local_solves_on_and_converges(case):
    """A fully debonded state whose first solve runs out of iterations: the solver adds the rigid modes and
    local solves and solves again, to the answer of a plain CG with many more iterations."""
    mesh, ela, geo = case[0], case[1], case[2]
    damage, closed = np.ones(geo.n), np.zeros(geo.n, bool)
    f = ela.load(np.where(mesh.cell_phase == ACTIVE, -0.01, 0.0))
    plain = solver_for(case, damage, closed, rtol=1e-10, maxiter=3000, local_cycles=0)
    u0 = plain.solve(f)
    mf = solver_for(case, damage, closed, rtol=1e-10, maxiter=plain.stats.iterations[-1] // 2,
                    deflate=particle_labels(mesh))
    u1 = mf.solve(f)
    assert mf._deflation is not None and mf.band_updates["local_rebuilds"] == 1
    assert np.abs(u1 - u0).max() <= 1e-6 * np.abs(u0).max()
    with pytest.raises(ConvergenceError, match=r"rigid-body deflation; raise \[solver\] maxiter.*'assembled'"):
        solver_for(case, damage, closed, rtol=1e-10, maxiter=2, deflate=particle_labels(mesh)).solve(f)
