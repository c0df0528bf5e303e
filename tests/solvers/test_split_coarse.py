"""Split coarse levels (solvers.topology): copies per piece of solid, an exact Galerkin level 1, and the
iterations they keep on an open band."""

import numpy as np
import pytest
import scipy.sparse as sp

from solvers.linalg import counted_cg, flexible_cg
from solvers.matfree import _assemble_cells, _host_view, _split_level_one
from solvers.mesh.voxel import ACTIVE
from solvers.topology import coarse_levels, gap_only_nodes, joined_labels, tile_labels
from tests.solvers.test_matfree_band import band_case, solver_for


def test_tile_labels_part_pieces_inside_a_tile_and_join_them_across_an_edge():
    m = np.zeros((4, 4, 4), bool)
    m[0, :, :] = m[2, :, :] = True  # two sheets with a void sheet between them, in one 4^3 tile
    lab, n = tile_labels(m, 4, (0, 0, 0))
    assert n == 2 and lab[0, 0, 0] != lab[2, 0, 0] and lab[1, 0, 0] == -1
    m[1, 0, 0] = True  # a voxel touching both sheets: one piece
    assert tile_labels(m, 4, (0, 0, 0))[1] == 1
    lab, n = tile_labels(m, 2, (0, 0, 0))  # 2^3 tiles: the pieces never cross a tile face
    assert n == 8 and lab[0, 0, 0] == lab[1, 0, 0] != lab[0, 0, 2]
    edge = np.zeros((2, 2, 2), bool)
    edge[0, 0, 0] = edge[1, 1, 0] = True  # an edge contact is 26-connected
    assert tile_labels(edge, 2, (0, 0, 0))[1] == 1


def test_joined_labels_join_the_electrolyte_to_a_particle_only_through_glue():
    se = np.zeros((2, 2, 4), bool)
    ap = np.zeros_like(se)
    se[:, :, :2] = True
    ap[:, :, 2:] = True
    glue = np.zeros_like(se)
    assert joined_labels((se, ap), glue, 4, (0, 0, 0))[1] == 2
    glue[0, 0, 1] = True
    lab, n = joined_labels((se, ap), glue, 4, (0, 0, 0))
    assert n == 1 and lab.min() == 0
    glue[...] = False
    glue[0, 0, 0] = True  # glue that touches no particle voxel joins nothing
    assert joined_labels((se, ap), glue, 4, (0, 0, 0))[1] == 2


@pytest.fixture(scope="module")
def case():
    return band_case(16, seed=5)


def split_inputs(mf):
    """(mat, ke, pieces, glue, gap, fixed) of a band solver's fine level, as _build_split sees them."""
    fine = mf.levels[0]
    mat, ke = mf._with_band(fine)
    solid = mat >= 0
    gap = np.zeros(solid.shape, bool)
    gap[tuple(fine.band.zyx[fine.band.order[mf._open]].T)] = True
    glue = np.zeros(solid.shape, bool)
    glue[tuple(fine.band.zyx[fine.band.order[~mf._open]].T)] = True
    se = solid & (mf.mesh.phases != ACTIVE)
    return mat, ke, (se, solid & ~se), glue, gap, _host_view(fine).fixed


def galerkin_reference(mat, ke, P1, fixed):
    """``P1^T A P1`` with the fine matrix assembled and the fixed dofs' rows of P1 zeroed."""
    A, nodes = _assemble_cells(mat >= 0, mat, ke)
    dofs = (nodes[:, None] * 3 + np.arange(3)).ravel()
    P = sp.diags((~fixed.reshape(-1)[dofs]).astype(float)) @ sp.kron(P1[nodes], sp.identity(3), format="csr")
    return (P.T @ A @ P).tocsr()


@pytest.mark.parametrize("opened", [0.0, 0.5, 1.0])
def test_level_one_is_the_galerkin_product_of_the_split_prolongation(case, opened):
    """The cell-by-cell level 1 (mixed voxels by sparse products) equals P^T A P assembled, to 1e-12."""
    geo = case[2]
    open_ = np.random.default_rng(2).uniform(size=geo.n) < opened
    damage = np.where(open_, 1.0, case[4])
    mf = solver_for(case, damage, np.zeros(geo.n, bool))
    mf._open = open_
    mat, ke, pieces, glue, gap, fixed = split_inputs(mf)
    P1, more, cid, mixed = coarse_levels(pieces, glue, gap, coarsest_dof=2000)
    if opened:
        assert (gap & mixed).sum() > 0  # open voxels whose corners go with the particles: the sparse path
    A1 = _split_level_one(mat, ke, P1, cid, mixed)
    ref = galerkin_reference(mat, ke, P1, fixed)
    assert abs(A1 - ref).max() <= 1e-12 * abs(ref).max()
    # a partition of unity on every node with solid, at every level: rigid translations are in every space
    has = np.asarray(P1.sum(axis=1)).ravel() != 0
    assert np.abs(np.asarray(P1.sum(axis=1)).ravel()[has] - 1).max() < 1e-12
    for P in more:
        assert np.abs(np.asarray(P.sum(axis=1)).ravel() - 1).max() < 1e-12


def test_an_open_band_parts_the_particles_from_the_electrolyte_at_level_one(case):
    geo = case[2]
    mf = solver_for(case, np.ones(geo.n), np.zeros(geo.n, bool))
    mat, ke, pieces, glue, gap, fixed = split_inputs(mf)
    assert not gap.any()  # no open set given: the band counts as bonded
    bonded = coarse_levels(pieces, np.ones_like(glue), gap, coarsest_dof=2000)[0].shape[1]
    gap[tuple(mf.levels[0].band.zyx.T)] = True
    P1, _, cid, _ = coarse_levels(pieces, np.zeros_like(glue), gap, coarsest_dof=2000)
    assert P1.shape[1] > bonded
    # no copy holds fine voxels of both a particle and the electrolyte away from the band
    se, ap = pieces[0] & ~gap, pieces[1]
    for b in range(8):
        assert not np.intersect1d(cid[se, b], cid[ap, b]).size


def open_case_solvers(case):
    geo = case[2]
    out = {}
    for coarse in ("trilinear", "split"):
        mf = solver_for(case, np.zeros(geo.n), np.zeros(geo.n, bool), coarse=coarse, maxiter=400)
        mf._adaptive_local = False
        C, hg = case[3].stiffness(np.ones(geo.n), np.zeros(geo.n, bool))
        mf.update_band(C, hg, open=np.ones(geo.n, bool))  # every band voxel opens
        out[coarse] = mf
    return out


def test_split_levels_keep_cg_short_on_an_open_band_and_give_the_same_answer(case):
    """All band voxels open: the trilinear hierarchy's CG count grows several-fold (500 at 48^3 MATBOX);
    split levels and local solves on the nodes inside the gap keep it near the bonded count."""
    mesh, ela = case[0], case[1]
    solvers = open_case_solvers(case)
    b = np.random.default_rng(3).standard_normal(3 * mesh.n_nodes) * ~ela.fixed.ravel()
    x = {k: s.solve(b) for k, s in solvers.items()}
    its = {k: s.stats.iterations[-1] for k, s in solvers.items()}
    bonded = solver_for(case, np.zeros(case[2].n), np.zeros(case[2].n, bool))
    bonded.solve(b)
    assert its["split"] <= 2.5 * bonded.stats.iterations[-1], its
    assert its["trilinear"] >= 2 * its["split"], its
    assert solvers["split"].band_updates["split_rebuilds"] == 1
    assert np.linalg.norm(x["split"] - x["trilinear"]) <= 1e-6 * np.linalg.norm(x["trilinear"])
    mat, _, _, _, gap, _ = split_inputs(solvers["split"])
    assert gap_only_nodes(mat >= 0, gap).any() and len(solvers["split"]._local) == 1


def test_smoothers_bound_the_spectrum_after_band_voxels_open(case):
    """Opening voxels moves the top of D^-1 A away from the last top vector: the bound is renewed from a
    fresh Lanczos run (a few power steps from the old vector left it 23 % low on a 48^3 crop, and the
    Chebyshev smoother amplified what lay above it)."""
    for mf in open_case_solvers(case).values():
        for lv in mf._smoothed():
            fresh = mf._lambda_max(lv, steps=40) / 1.1  # the top Ritz value: a lower bound of lmax
            assert lv.lmax >= fresh, (lv.lmax, fresh)


def test_flexible_cg_matches_cg_with_a_fixed_preconditioner_and_takes_a_varying_one():
    rng = np.random.default_rng(0)
    n = 60
    Q = rng.standard_normal((n, n))
    A = Q @ Q.T + n * np.eye(n)
    b = rng.standard_normal(n)
    d = 1.0 / np.diag(A)
    x1, k1 = flexible_cg(lambda v: A @ v, b, lambda r: d * r, rtol=1e-10, maxiter=200)
    x2, k2 = counted_cg(A, b, M=np.diag(d), rtol=1e-10, maxiter=200)
    assert abs(k1 - k2) <= 1 and np.linalg.norm(x1 - x2) <= 1e-8 * np.linalg.norm(x2)
    calls = [0]

    def varying(r):  # Jacobi with a weight that changes every call: not a fixed linear map
        calls[0] += 1
        return (1.0 + 0.5 * np.sin(calls[0])) * d * r

    x3, k3 = flexible_cg(lambda v: A @ v, b, varying, rtol=1e-10, maxiter=200)
    assert np.linalg.norm(A @ x3 - b) <= 1e-10 * np.linalg.norm(b) * 1.0001 and k3 < 200
