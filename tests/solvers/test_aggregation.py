"""Block aggregation multigrid of voxel-graph Laplacians: aggregates follow the connectivity."""

import numpy as np
import pytest
import scipy.sparse as sp

from solvers.aggregation import BlockAggregation, block_aggregates
from solvers.linalg import flexible_cg
from solvers.physics.tortuosity import conductance_matrix


def laplacian(mask, ground=1e-3):
    index = np.full(mask.shape, -1, np.int64)
    index[mask] = np.arange(int(mask.sum()))
    A = conductance_matrix(index, mask.astype(float), (1.0, 1.0, 1.0))
    return (A + ground * sp.identity(A.shape[0])).tocsr(), np.argwhere(mask)


def test_a_block_cut_in_two_gives_two_aggregates():
    """Two voxels of one 2x2x2 block that touch only at an edge are not aggregated together."""
    mask = np.zeros((2, 2, 2), bool)
    mask[0, 0, 0] = mask[1, 1, 0] = True  # edge contact only: no face between them
    A, coords = laplacian(mask)
    P, coarse = block_aggregates(A, coords)
    assert P.shape == (2, 2) and np.array_equal(coarse, np.zeros((2, 3)))
    mask[1, 0, 0] = True  # now joined through a face: one aggregate
    A, coords = laplacian(mask)
    P, _ = block_aggregates(A, coords)
    assert P.shape == (3, 1)


def test_aggregates_partition_the_unknowns_and_coarsen_by_blocks():
    rng = np.random.default_rng(2)
    mask = rng.random((16, 16, 16)) < 0.6
    A, coords = laplacian(mask)
    P, coarse = block_aggregates(A, coords)
    assert np.all(np.asarray(P.sum(axis=1)).ravel() == 1)  # every unknown in exactly one aggregate
    # members of an aggregate share its block, and the block count bounds the aggregates from below
    agg = P.indices
    assert np.array_equal(coarse[agg], coords // 2)
    assert P.shape[1] >= len({tuple(c) for c in coords // 2})


def test_k_cycle_solves_a_random_porous_laplacian():
    """Flexible CG with the K-cycle reaches 1e-10 on a random 40 % electrolyte, and agrees with splu."""
    rng = np.random.default_rng(5)
    mask = rng.random((24, 24, 24)) < 0.7
    A, coords = laplacian(mask)
    mg = BlockAggregation(A, coords, coarsest=200)
    assert len(mg.sizes) >= 3
    b = rng.standard_normal(A.shape[0])
    x, its = flexible_cg(lambda v: A @ v, b, mg.cycle, rtol=1e-10, maxiter=100)
    assert its < 40
    ref = sp.linalg.spsolve(A.tocsc(), b)
    assert np.linalg.norm(x - ref) / np.linalg.norm(ref) == pytest.approx(0, abs=1e-8)


def test_electrolyte_potential_on_the_aggregation_path_equals_a_direct_solve():
    """Above the direct limit, the electrolyte's potential (voxel mesh) is solved by flexible CG with the
    block-aggregation K-cycle: the true residual reaches rtol = 1e-10, and the solution equals a sparse
    direct solve of the same matrix to 1e-6 (the residual times this weakly grounded matrix's condition)."""
    from segmentation import make_composite
    from solvers import fields
    from solvers.linalg import DIRECT_LIMIT
    from solvers.mesh import voxel_hex_mesh
    from solvers.physics.electrolyte import ElectrolyteProblem

    ph, pa = make_composite((32, 32, 32), active_fraction=0.45, void_fraction=0.1, radius=5, seed=3)
    mesh = voxel_hex_mesh(ph, pa, [0.4e-6] * 3)
    faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    elec = ElectrolyteProblem(mesh, faces, kappa_S_m=0.2, rtol=1e-10)
    assert elec.n_free > DIRECT_LIMIT and elec.stats.as_dict()["method"] == "fcg-block-aggregation"
    rng = np.random.default_rng(0)
    g = rng.random(elec.point_area.size) * 1e-3 * elec.point_area / elec.point_area.mean()
    b = elec.B @ rng.standard_normal(elec.point_area.size)
    x = elec.solve(b, g)
    ref = sp.linalg.spsolve(elec.matrix(g).tocsc(), b)
    A = elec.matrix(g)
    assert np.linalg.norm(b - A @ x) / np.linalg.norm(b) <= 1e-10
    assert np.linalg.norm(x - ref) / np.linalg.norm(ref) < 1e-6
    assert elec.stats.iterations[-1] < 30
