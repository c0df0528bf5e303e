"""Matrix-free voxel operator and geometric multigrid against the assembled path."""

from pathlib import Path

import numpy as np
import pytest

from segmentation import make_composite
from solvers import fields
from solvers.matfree import (
    MatrixFreeSolver,
    apply_arrays,
    apply_numba,
    prolong,
    prolong_arrays,
    restrict,
    restrict_arrays,
)
from solvers.mesh import voxel_hex_mesh
from solvers.physics import ElasticProblem, get_material
from solvers.physics.diffusion import DiffusionProblem
from tomomech.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MATS = {1: get_material("Li6PS5Cl"), 2: get_material("NMC811")}


def composite(n, seed=1):
    ph, pa = make_composite((n, n, n), active_fraction=0.5, void_fraction=0.1, radius=4, seed=seed)
    return voxel_hex_mesh(ph, pa, [0.4e-6] * 3)


@pytest.mark.parametrize("top", ["free", "fixed", "stack_pressure"])
def test_operator_equals_assembled_matrix(top):
    mesh = composite(16)
    kw = dict(top=top, stack_pressure_Pa=1e7)
    asm = ElasticProblem(mesh, MATS, solver="direct", **kw)
    mf = ElasticProblem(mesh, MATS, backend="matrix-free", **kw)
    x = np.random.default_rng(0).normal(size=asm.n_dof)
    y_asm = asm.A @ x
    assert np.abs(mf.solver.matvec(x) - y_asm).max() <= 1e-12 * np.abs(y_asm).max()


def test_array_kernel_equals_numba_kernel():
    """The array-expression operator (the GPU code path, run here with numpy) equals the numba one."""
    mesh = composite(10)
    mf = ElasticProblem(mesh, MATS, backend="matrix-free")
    lv = mf.solver.levels[0]
    x = np.random.default_rng(1).normal(size=lv.node_shape)
    ke = np.asarray(lv.ke)
    a = apply_numba(x, np.asarray(lv.mat), ke)
    b = apply_arrays(x, np.asarray(lv.mat), ke)
    assert np.abs(a - b).max() <= 1e-12 * np.abs(a).max()


@pytest.mark.parametrize("top", ["free", "fixed"])
def test_coarse_levels_through_the_lame_kernel_equal_the_galerkin_operator(monkeypatch, top):
    """Coarse voxels whose children share one phase run the row kernel with the 2h element matrices
    (box conditions as a mask); the rest keep their Galerkin matrices: together the operator of all
    Galerkin matrices (fails if voxels of mixed children take the row kernel)."""
    import solvers.matfree as matfree

    monkeypatch.setattr(matfree, "COARSEST_DOF", 3000)  # levels 24^3, 12^3, 6^3
    mf = ElasticProblem(composite(24), MATS, backend="matrix-free", top=top).solver
    assert len(mf.levels) == 3
    lv = mf.levels[1]
    pure = (lv.phase >= 0).sum() / (lv.mat >= 0).sum()
    assert 0.1 < pure < 0.9 and lv.rest is not None  # both paths in use
    x = np.random.default_rng(4).normal(size=lv.node_shape)
    ref = apply_numba(x, np.asarray(lv.mat), np.asarray(lv.ke)) + lv.scale * x * lv.fixed
    assert np.abs(mf._apply_level(lv, x, np) - ref).max() <= 1e-12 * np.abs(ref).max()


def test_transfers_are_adjoint_on_odd_grids():
    rng = np.random.default_rng(2)
    fine, coarse = (9, 8, 7), (5, 5, 4)
    xc = rng.normal(size=coarse + (3,))
    xf = rng.normal(size=fine + (3,))
    assert np.sum(prolong(xc, fine) * xf) == pytest.approx(np.sum(xc * restrict(xf, coarse)), rel=1e-12, abs=0)
    # prolongation reproduces linear fields exactly
    z, y, x = np.indices(coarse, dtype=float)
    lin = np.stack([2 * z + 3 * y - x] * 3, axis=-1)
    zf, yf, xf_ = np.indices(fine, dtype=float) / 2
    assert np.allclose(prolong(lin, fine), np.stack([2 * zf + 3 * yf - xf_] * 3, axis=-1))


@pytest.mark.parametrize("n", [15, 16])
def test_coarse_levels_keep_translations_on_odd_grids(monkeypatch, n):
    """A z translation of the coarse grid (masked by its fixed dofs) prolongs to exactly 1 on every fine
    node away from the fixed bottom (z >= 2; the side rollers and the free top leave u_z free), at
    every level. Fails where a coarse node beyond an odd grid is fixed: the fine boundary nodes then get
    0.5, and CG on a 65^3 crop needed 3.6x the iterations of 64^3."""
    import solvers.matfree as matfree

    monkeypatch.setattr(matfree, "COARSEST_DOF", 200)
    ph = np.full((n, n, n), 1, np.uint8)
    mf = ElasticProblem(voxel_hex_mesh(ph, np.zeros(ph.shape, np.int32), [0.4e-6] * 3), MATS,
                        backend="matrix-free").solver
    assert len(mf.levels) >= 3
    for fine, coarse in zip(mf.levels[:-1], mf.levels[1:]):
        t = np.zeros(coarse.node_shape)
        t[..., 0] = 1.0
        u = prolong(t * ~coarse.fixed, fine.node_shape[:3])
        assert not fine.fixed[2:, ..., 0].any()
        assert np.abs(u[2:, ..., 0] - 1.0).max() < 1e-14


@pytest.mark.parametrize("n", [24, 25])
def test_odd_and_even_crops_need_the_same_iterations(n):
    """CG iterations on a MATBOX crop do not depend on the parity of the grid (25^3 needed 2.6x the
    iterations of 24^3 while a coarse node beyond an odd grid was fixed; 65^3 3.6x those of 64^3)."""
    its = {}
    for m in (24, n):
        mf = ElasticProblem(matbox_centre(m), MATS, backend="matrix-free")
        mf.solve(np.where(mf.mesh.cell_phase == 2, -0.017, 0.0))
        its[m] = mf.solver.stats.iterations[0]
    assert its[n] <= 1.2 * its[24]


def matbox_centre(n):
    """The centred n^3 crop of the bundled MATBOX sample (pore -> SE, NMC -> AP, binder -> void)."""
    from pipeline.io import read_volume

    raw = read_volume(ROOT / "samples/matbox_nmc/nmc-1-cal_generatedCBD_bridge.tif").data
    z0, y0, x0 = ((np.array(raw.shape) - n) // 2).tolist()
    phases = np.array([1, 2, 0], np.uint8)[raw[z0:z0 + n, y0:y0 + n, x0:x0 + n]]
    return voxel_hex_mesh(phases, (phases == 2).astype(np.int32), [0.4e-6] * 3)


@pytest.mark.parametrize("fine", [(9, 8, 7), (8, 9, 10)])
def test_numba_transfers_equal_the_array_expressions(fine):
    """The CPU kernels and the array form the GPU runs (odd and even grids, where the last
    coarse node has one fine neighbour or two)."""
    rng = np.random.default_rng(3)
    coarse = tuple((f + 2) // 2 for f in fine)
    xc = rng.normal(size=coarse + (3,))
    xf = rng.normal(size=fine + (3,))
    assert np.abs(prolong(xc, fine) - prolong_arrays(xc, fine)).max() <= 1e-14
    assert np.abs(restrict(xf, coarse) - restrict_arrays(xf, coarse)).max() <= 1e-13


@pytest.mark.parametrize("precision", ["float64", "mixed"])
def test_multigrid_cg_equals_assembled_solution(precision):
    mesh = composite(32)
    eps = np.where(mesh.cell_phase == 2, -0.017, 0.0)
    asm = ElasticProblem(mesh, MATS, rtol=1e-10)
    mf = ElasticProblem(mesh, MATS, backend="matrix-free", rtol=1e-10, precision=precision)
    ua, um = asm.solve(eps), mf.solve(eps)
    assert len(mf.solver.levels) >= 2
    assert np.abs(ua - um).max() <= 1e-7 * np.abs(ua).max()
    # particle statistics identical between backends
    sa, sm = asm.cell_stress(ua, eps), mf.cell_stress(um, eps)
    grp = mesh.cell_particle
    n = int(grp.max()) + 1
    va = fields.group_stats(grp, fields.von_mises(sa), n)["mean"][1:]
    vm = fields.group_stats(grp, fields.von_mises(sm), n)["mean"][1:]
    ok = np.isfinite(va)
    assert np.allclose(vm[ok], va[ok], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("top", ["free", "fixed"])
def test_iterations_nearly_flat(top):
    """At most +30 % iterations from 32^3 to 64^3 (without the local solves: 12 -> 17 and 11 -> 15)."""
    its = {}
    for n in (32, 64):
        mesh = composite(n)
        mf = ElasticProblem(mesh, MATS, backend="matrix-free", top=top)
        mf.solve(np.where(mesh.cell_phase == 2, -0.017, 0.0))
        its[n] = mf.solver.stats.iterations[0]
    assert its[64] <= 1.3 * its[32]


def matbox_top_corner():
    """A 24^3 crop at the free top face of the bundled MATBOX sample (a corner of the 240^3 benchmark crop).

    Thin features there hang across the faces of the local-solve boxes: with the boxes alone the
    V-cycle, used as a stationary iteration, lets their error grow (1.2x its start after 11 cycles).
    """
    from pipeline.io import read_volume

    raw = read_volume(ROOT / "samples/matbox_nmc/nmc-1-cal_generatedCBD_bridge.tif").data
    phases = np.array([1, 2, 0], np.uint8)[raw[221:245, 102:126, 102:126]]  # pore -> SE, NMC -> AP, binder -> void
    return voxel_hex_mesh(phases, (phases == 2).astype(np.int32), [0.4e-6] * 3)


def test_preconditioner_with_local_solves_is_symmetric():
    """CG needs a symmetric preconditioner: the local solves sit on both sides of the coarse correction."""
    mesh = matbox_top_corner()
    prob = ElasticProblem(mesh, MATS)
    mf = MatrixFreeSolver(mesh, prob._lame[prob.cell_material], prob.fixed)
    assert len(mf._local) == 2  # the boxes, and the features they cut with the boxes they touch
    rng = np.random.default_rng(3)
    a, b = (mf._to_grid(mf.matvec(rng.normal(size=prob.n_dof))) for _ in range(2))
    ma, mb = mf.precondition(a), mf.precondition(b)
    assert np.sum(ma * b) == pytest.approx(np.sum(a * mb), rel=1e-10, abs=0)
    assert np.sum(ma * a) > 0
    # the residual the local solve hands on (updated through its columns of the operator) is the true one
    for stage in mf._local:
        x, r = np.zeros_like(a), a.copy()
        mf._local_correct(x, r, stage)
        assert np.abs(x).max() > 0
        assert np.abs(r - (a - mf.apply(x))).max() <= 1e-9 * np.abs(a).max()


def test_local_blocks_merge_around_the_features_the_boxes_cut(monkeypatch):
    """Merging the boxes a cut feature spans cuts CG iterations (measured 24 -> 15 at rtol 1e-10); same solution."""
    import solvers.matfree as matfree

    mesh = matbox_top_corner()
    eps = np.where(mesh.cell_phase == 2, -0.017, 0.0)
    its = {}
    for cycles in (0, matfree.REFINE_CYCLES):
        monkeypatch.setattr(matfree, "REFINE_CYCLES", cycles)
        mf = ElasticProblem(mesh, MATS, backend="matrix-free", rtol=1e-10)
        um = mf.solve(eps)
        its[cycles] = mf.solver.stats.iterations[0]
    assert its[matfree.REFINE_CYCLES] <= 16 and its[0] >= 1.5 * its[matfree.REFINE_CYCLES], its
    ua = ElasticProblem(mesh, MATS, solver="direct").solve(eps)
    assert np.abs(ua - um).max() <= 1e-7 * np.abs(ua).max()


def test_merge_blocks_joins_the_boxes_a_group_touches():
    from solvers.matfree import _merge_blocks

    block = np.repeat(np.arange(4), 3)[:, None, None] * np.ones((1, 2, 2), int)  # 4 slabs of 3 layers
    weak = np.zeros(block.shape, bool)
    weak[1:11] = True
    left = np.zeros_like(weak)
    left[5:7, 0, 0] = True  # straddles slabs 1 and 2
    left[11, 1, 1] = True  # outside the weak set: a block of its own
    w, b = _merge_blocks(weak, block, left)
    assert (w == (weak | left)).all()
    assert len(np.unique(b[w])) == 3 + 1  # slabs 0, 1+2, 3 and the lone node
    assert len(np.unique(b[3:9][w[3:9]])) == 1 and b[0, 0, 0] == -1
    assert len({b[1, 0, 0], b[3, 0, 0], b[9, 0, 0], b[11, 1, 1]}) == 4


def test_mixed_precision_needs_the_matrix_free_backend():
    """(The GPU's own errors are tested in test_gpu_path.py, with and without a device.)"""
    with pytest.raises(ConfigError, match="need backend = 'matrix-free'"):
        ElasticProblem(composite(8), MATS, precision="mixed")


# -- diffusion --------------------------------------------------------------------------------------


def diffusion_pair(n, dt=90.0, seed=1):
    """Assembled and matrix-free diffusion of NMC811 on an n^3 composite (touching particles)."""
    mesh = composite(n, seed=seed)
    faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    D = MATS[2].D_m2_s
    asm = DiffusionProblem(mesh, D=D, dt=dt, faces=faces, solver="direct" if n <= 32 else "amg")
    mf = DiffusionProblem(mesh, D=D, dt=dt, faces=faces, backend="matrix-free")
    return asm, mf


def test_diffusion_operator_equals_assembled_matrix():
    asm, mf = diffusion_pair(16)
    assert mf.A is None and mf.solver.stats.method == "matrix-free-jacobi-cpu"
    grid_nodes = np.unique(mf._keys // mf._n_part).size
    assert mf.n_nodes > grid_nodes  # particles touch: some nodes are duplicated, and kept apart
    x = np.random.default_rng(0).normal(size=mf.n_nodes)
    y = asm.A @ x
    assert np.abs(mf.solver.op(x) - y).max() <= 1e-12 * np.abs(y).max()
    op = mf.solver.op  # the array-expression path (CuPy on a GPU) with numpy
    assert np.abs(op.apply_arrays(x, op.cells, op.ke) - y).max() <= 1e-12 * np.abs(y).max()
    assert np.allclose(op.diagonal, asm.A.diagonal(), rtol=1e-14, atol=0)


@pytest.mark.parametrize("dt", [90.0, 9000.0])
def test_matrix_free_diffusion_step_equals_assembled(dt):
    """Five backward-Euler steps of a 1C-like charge: both backends agree to the solver tolerance."""
    asm, mf = diffusion_pair(24, dt=dt)
    flux = np.full(asm.face_area.size, -2e-4)  # mol/m^2/s out of the particles
    ca = cm = np.full(asm.n_nodes, 5e4)
    for _ in range(5):
        ca, cm = asm.step(ca, asm.face_load(flux)), mf.step(cm, mf.face_load(flux))
    assert np.abs(cm - ca).max() <= 1e-8 * np.abs(ca).max()
    assert mf.total(cm) == pytest.approx(asm.total(ca), rel=1e-12, abs=0)


def test_matrix_free_diffusion_iterations_flat_in_volume():
    """Particles are separate diffusion domains: Jacobi-CG iterations depend on their size in voxels
    and on D dt / h^2, not on the sample size (same particle radius at 24^3 and 48^3)."""
    its = []
    for n in (24, 48):
        mesh = composite(n)
        faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
        mf = DiffusionProblem(mesh, D=MATS[2].D_m2_s, dt=90.0, faces=faces, backend="matrix-free")
        mf.step(np.full(mf.n_nodes, 5e4), mf.face_load(np.full(mf.face_area.size, -2e-4)))
        its.append(mf.solver.stats.iterations[-1])
    assert its[1] <= 1.1 * its[0], its


def test_unique_rows_matches_numpy_and_survives_a_collision(monkeypatch):
    from solvers import matfree

    rng = np.random.default_rng(3)
    key = rng.integers(-1, 4, size=(5000, 5))
    uniq, inv = matfree._unique_rows(key)
    ref = np.unique(key, axis=0)
    assert np.array_equal(uniq[inv], key) and len(uniq) == len(ref)
    assert np.array_equal(np.unique(uniq, axis=0), ref)
    # every row hashes alike: the equality check must notice and fall back to the row sort
    real_unique = np.unique
    monkeypatch.setattr(matfree.np, "unique", lambda a, **kw: real_unique(np.zeros_like(a), **kw)
                        if a.ndim == 1 and a.dtype == np.uint64 else real_unique(a, **kw))
    uniq, inv = matfree._unique_rows(key)
    assert np.array_equal(uniq[inv], key) and len(uniq) == len(ref)
