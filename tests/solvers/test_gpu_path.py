"""The GPU branches of the matrix-free solvers, on every commit.

Without a GPU they run through the CuPy test double (:mod:`tests.fake_cupy`: numpy underneath,
raising on implicit host/device conversion as CuPy does, counting every transfer); where a
working CUDA device and CuPy exist they run again on it (the ``cupy`` parameter), with the same
tolerances. Every answer is compared with the CPU path of the same crop.
"""

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

import solvers.matfree as matfree
from segmentation import make_composite
from solvers import fields
from solvers.matfree import apply_arrays, apply_numba, prolong, restrict
from solvers.mesh import voxel_hex_mesh
from solvers.physics import CohesiveLaw, ElasticProblem, default_penalty, get_material
from solvers.physics.diffusion import DiffusionProblem
from tests import fake_cupy
from tomomech.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MATS = {1: get_material("Li6PS5Cl"), 2: get_material("NMC811")}


def _real_cupy_works() -> bool:
    try:
        matfree._cupy()
        return True
    except ConfigError:
        return False


@pytest.fixture(params=["double", "cupy"])
def xp(request, monkeypatch):
    """The device namespace: the test double always, real CuPy where a GPU works (skipped elsewhere)."""
    if request.param == "cupy":
        if not _real_cupy_works():
            pytest.skip("no working CUDA device and CuPy here (the double runs the same test)")
        import cupy

        return cupy
    return fake_cupy.install(monkeypatch)


def on_host(a):
    return a if isinstance(a, np.ndarray) else a.get()


def composite_mesh(n, void=0.3, seed=1):
    ph, pa = make_composite((n, n, n), active_fraction=0.5, void_fraction=void, radius=4, seed=seed)
    return voxel_hex_mesh(ph, pa, [0.4e-6] * 3)


def pair(mesh, monkeypatch, **kw):
    """CPU and GPU elastic problems on one mesh, with three grid levels (24^3) and local solves."""
    monkeypatch.setattr(matfree, "COARSEST_DOF", 3000)
    cpu = ElasticProblem(mesh, MATS, backend="matrix-free", **kw)
    gpu = ElasticProblem(mesh, MATS, backend="matrix-free", device="gpu", **kw)
    return cpu, gpu


@pytest.fixture(scope="module")
def mesh24():
    return composite_mesh(24)


def test_operator_on_every_level_equals_the_cpu_kernels(xp, mesh24, monkeypatch):
    """The array-expression operator on the device, in slabs (forced thin here) and with both of its
    forms (few matrices: the fine level; gathered matrices: the Galerkin levels), equals the numba
    kernels to 1e-12."""
    monkeypatch.setattr(matfree, "CHUNK_ENTRIES", 2**14)  # several slabs per level
    cpu, gpu = pair(mesh24, monkeypatch)
    assert len(cpu.solver.levels) == 3
    rng = np.random.default_rng(0)
    for lc, lg in zip(cpu.solver.levels, gpu.solver.levels):
        x = rng.normal(size=lc.node_shape)
        ke = np.asarray(lc.ke, np.float64)
        ref = apply_numba(x, lc.mat, ke)
        got = on_host(apply_arrays(xp.asarray(x), lg.mat, xp.asarray(ke), xp))
        assert np.abs(got - ref).max() <= 1e-12 * np.abs(ref).max()
    assert any(lv.ke.shape[0] > matfree.FEW_MATRICES for lv in cpu.solver.levels)  # both forms ran


def test_transfers_on_the_device_equal_the_numba_ones(xp):
    rng = np.random.default_rng(2)
    fine, coarse = (9, 8, 7), (5, 5, 4)
    xc, xf = rng.normal(size=coarse + (3,)), rng.normal(size=fine + (3,))
    assert np.abs(on_host(prolong(xp.asarray(xc), fine, xp)) - prolong(xc, fine)).max() <= 1e-14
    assert np.abs(on_host(restrict(xp.asarray(xf), coarse, xp)) - restrict(xf, coarse)).max() <= 1e-13


def test_setup_hands_the_levels_and_solves_to_the_device(xp, mesh24, monkeypatch):
    """After set-up every array a cycle touches is on the device, and so are the local and coarsest solves."""
    cpu, gpu = pair(mesh24, monkeypatch)
    mf = gpu.solver
    assert mf._local, "this crop needs local solves (the test would not cover them)"
    device = type(xp.zeros(1))
    for lv in mf.levels:
        assert isinstance(lv.ke, device) and isinstance(lv.mat, device) and isinstance(lv.free_dev, device)
    for dof_local, lu, dof_rows, couple in mf._local:
        assert isinstance(dof_local, device) and isinstance(dof_rows, device)
        assert all(type(a).__module__.startswith(("cupyx", "tests.fake_cupy")) for a in (lu, couple))
    assert type(mf._coarse_lu).__module__.startswith(("cupyx", "tests.fake_cupy"))
    assert [len(s[0]) for s in mf._local] == [len(s[0]) for s in cpu.solver._local]


def test_vcycle_on_the_device_equals_the_cpu_one(xp, mesh24, monkeypatch):
    """In float64. (A float32 cycle is not compared entry by entry: the numba kernels accumulate in
    float64 and the array expressions in float32, and the local solves of soft features amplify that
    difference to about 1e-4 of the cycle; the mixed-precision solve below is the check that counts.)"""
    cpu, gpu = pair(mesh24, monkeypatch)
    r = np.random.default_rng(3).normal(size=cpu.solver.levels[0].node_shape) * ~cpu.solver.levels[0].fixed
    a = cpu.solver.precondition(r)
    b = on_host(gpu.solver.precondition(xp.asarray(r)))
    assert np.abs(a - b).max() <= 1e-12 * np.abs(a).max()


@pytest.mark.parametrize("precision", ["float64", "mixed"])
def test_solve_on_the_device_equals_the_cpu_one_and_moves_only_b_and_x(xp, mesh24, monkeypatch, precision):
    """CG, the V-cycle, the local and coarsest solves and the true-residual check stay on the device: the
    vectors that cross are the right-hand side (in) and the solution (out), the rest are scalars. A host
    conversion inside CG (or a ``.get()`` on the host result, the crash this path had) fails here."""
    cpu, gpu = pair(mesh24, monkeypatch, precision=precision)
    eig = np.where(mesh24.cell_phase == 2, 0.01, 0.0)
    u_cpu = cpu.solve(eig)
    fake_cupy.LEDGER.reset()
    u_gpu = gpu.solve(eig)
    its = gpu.solver.stats.iterations[-1]
    assert its == cpu.solver.stats.iterations[-1] and its > 5
    tol = 1e-12 if precision == "float64" else 1e-9
    assert np.abs(u_gpu - u_cpu).max() <= tol * np.abs(u_cpu).max()
    if xp is fake_cupy:
        grid = gpu.solver.levels[0].fixed.size * 8  # one float64 full-grid vector
        led = fake_cupy.LEDGER
        assert (led.h2d, led.h2d_bytes) == (1, grid)
        assert led.d2h_bytes - grid <= 8 * led.d2h and led.d2h <= 3 * its + 10  # x once, then scalars


def test_solve_refuses_a_device_without_a_working_computation(monkeypatch):
    """``_cupy`` runs a small computation before it says yes: a broken device is a ConfigError at set-up."""
    cupy = fake_cupy.install(monkeypatch)
    monkeypatch.setattr(cupy, "vdot", lambda a, b: cupy.asarray(0.0), raising=False)
    with pytest.raises(ConfigError, match=r"test computation on the device gave .*use device = 'cpu'"):
        matfree._cupy()
    monkeypatch.setattr(cupy._Runtime, "device_count", 0)
    with pytest.raises(ConfigError, match="no CUDA device"):
        ElasticProblem(composite_mesh(8), MATS, backend="matrix-free", device="gpu")


def test_without_cupy_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    with pytest.raises(ConfigError, match="needs CuPy and a working CUDA device"):
        ElasticProblem(composite_mesh(8), MATS, backend="matrix-free", device="gpu")


def test_diffusion_step_on_the_device_equals_the_cpu_one(xp):
    """Jacobi-CG of the matrix-free diffusion runs on the device: the fluxes in, the concentration out."""
    mesh = composite_mesh(16, void=0.1)
    faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    kw = dict(D=MATS[2].D_m2_s, dt=90.0, faces=faces, backend="matrix-free")
    cpu, gpu = DiffusionProblem(mesh, **kw), DiffusionProblem(mesh, device="gpu", **kw)
    c0 = np.full(cpu.n_nodes, 5e4)
    flux = np.full(cpu.face_area.size, -2e-4)
    a = cpu.step(c0, cpu.face_load(flux))
    fake_cupy.LEDGER.reset()
    b = gpu.step(c0, gpu.face_load(flux))
    assert gpu.solver.stats.iterations == cpu.solver.stats.iterations
    assert np.abs(a - b).max() <= 1e-12 * np.abs(a).max()
    if xp is fake_cupy:
        assert fake_cupy.LEDGER.h2d_bytes <= 2 * 8 * cpu.n_nodes  # b (and a start), never per iteration
        assert fake_cupy.LEDGER.d2h_bytes - 8 * cpu.n_nodes <= 8 * fake_cupy.LEDGER.d2h


def test_cohesive_band_on_the_device_equals_the_cpu_one(xp):
    """A shrinking sphere that debonds: the band's operator, its updates and the band solves on the
    device give the CPU's damage and displacement."""
    from solvers.physics.cohesive.voxel import VoxelCohesiveProblem
    from tests.validation.test_cohesive_band import MATS as BAND_MATS
    from tests.validation.test_cohesive_band import sphere

    ph, pa = sphere(4, 14)
    mesh = voxel_hex_mesh(ph, pa, [1e-6] * 3)
    faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    law = CohesiveLaw(strength_Pa=30e6, fracture_energy_J_m2=0.1, penalty_Pa_m=default_penalty(140e9, 22e9, 1e-6))
    probs = [VoxelCohesiveProblem(mesh, BAND_MATS, faces, law, averaging_length_m=1.5e-6, top="free", device=d)
             for d in ("cpu", "gpu")]
    for dv in (-0.01, -0.03):
        u = [p.solve(np.where(mesh.cell_phase == 2, dv / 3, 0.0)) for p in probs]
        assert np.abs(u[1] - u[0]).max() <= 1e-10 * np.abs(u[0]).max()
        assert np.abs(probs[1].face_damage() - probs[0].face_damage()).max() <= 1e-8
    assert probs[0].face_damage().max() == 1.0  # the device ran the open band too


def test_band_deflation_on_the_device_equals_the_cpu_one(xp):
    """The rigid-body deflation's correction (the fallback of a band solve) on the device."""
    from tests.solvers.test_matfree_band import band_case, solver_for

    case = band_case(14)
    labels = case[0].particles
    cpu = solver_for(case, case[4], case[5], deflate=labels)
    gpu = solver_for(case, case[4], case[5], deflate=labels, device="gpu")
    cpu.deflate_rigid_modes()
    gpu.deflate_rigid_modes()
    r = np.random.default_rng(6).normal(size=cpu.levels[0].node_shape) * ~cpu.levels[0].fixed
    a = cpu.precondition(r)
    b = on_host(gpu.precondition(xp.asarray(r)))
    assert np.abs(a - b).max() <= 1e-11 * np.abs(a).max()


# -- coverage of the GPU branches --------------------------------------------------------------------

GPU_FILES = ("solvers/matfree.py", "solvers/matfree_band.py", "solvers/deflation.py", "solvers/linalg.py")


#: functions and classes that only the device path calls (the CPU runs numba kernels instead)
DEVICE_CODE = {"apply_arrays", "prolong_arrays", "restrict_arrays", "add_apply_arrays", "_device_tables", "PhaseArrays"}


def gpu_branch_lines(path: Path) -> set[int]:
    """Lines that run only on the device: the bodies of :data:`DEVICE_CODE`, of ``if <...>xp is not np``
    and the ``else`` of ``if <...>xp is np``, less the CPU branches of those tests."""
    device, host = set(), set()

    def span(stmts, into):
        for st in stmts:
            into.update(range(st.lineno, st.end_lineno + 1))

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in DEVICE_CODE:
            span(node.body[1:] if isinstance(node.body[0], ast.Expr) else node.body, device)  # not the docstring
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1):
            continue
        left, op, right = node.test.left, node.test.ops[0], node.test.comparators[0]
        is_xp = isinstance(left, (ast.Name, ast.Attribute)) and ast.unparse(left).endswith("xp")
        if is_xp and isinstance(right, ast.Name) and right.id == "np" and isinstance(op, (ast.Is, ast.IsNot)):
            gpu, cpu = (node.body, node.orelse) if isinstance(op, ast.IsNot) else (node.orelse, node.body)
            span(gpu, device)
            span(cpu, host)
    return device - host


def test_the_double_runs_every_gpu_branch(monkeypatch, mesh24, capsys):
    """Trace the device runs above (with the double) and count the GPU-branch lines they execute:
    every one of them, in the files of the GPU path. The count is printed (docs/gpu.md quotes it)."""
    files = {str(ROOT / f): gpu_branch_lines(ROOT / f) for f in GPU_FILES}
    seen = {f: set() for f in files}

    def tracer(frame, event, arg):
        f = frame.f_code.co_filename
        if f in seen:
            if event == "line":
                seen[f].add(frame.f_lineno)
            return tracer
        return None

    cupy = fake_cupy.install(monkeypatch)
    sys.settrace(tracer)
    try:
        test_solve_on_the_device_equals_the_cpu_one_and_moves_only_b_and_x(cupy, mesh24, monkeypatch, "mixed")
        test_diffusion_step_on_the_device_equals_the_cpu_one(cupy)
        test_band_deflation_on_the_device_equals_the_cpu_one(cupy)
        test_cohesive_band_on_the_device_equals_the_cpu_one(cupy)
        test_operator_on_every_level_equals_the_cpu_kernels(cupy, mesh24, monkeypatch)
        test_transfers_on_the_device_equal_the_numba_ones(cupy)
    finally:
        sys.settrace(None)
    total = sum(len(v) for v in files.values())
    code = {f: {n for n in v if _is_code(f, n)} for f, v in files.items()}
    missed = {Path(f).name: sorted(v - seen[f]) for f, v in code.items() if v - seen[f]}
    covered = sum(len(v & seen[f]) for f, v in code.items())
    with capsys.disabled():
        print(f"\nGPU-branch lines run by the CuPy double: {covered} of {sum(len(v) for v in code.values())} "
              f"statements ({total} lines with comments)")
    assert not missed, f"GPU-branch lines no test runs: {missed}"


def _is_code(path: str, line: int) -> bool:
    text = Path(path).read_text().splitlines()[line - 1].strip()
    # lines that make no line event of their own: comments, docstrings, imports run at import, def, else
    return bool(text) and not text.startswith(("#", '"""', "import ", "from ", "def ", "else:")) \
        and text not in (")", "]", "}")
