"""Plastic phases on the finite-element problems: homogeneous closed forms on every mesh kind and backend,
the elastic limit, the two nonlinear solvers against each other, and load-step independence."""

import numpy as np
import pytest
from scipy.optimize import brentq

from solvers.mesh import voxel_hex_mesh, voxel_tet_mesh
from solvers.physics import ElasticProblem, Material
from solvers.physics.inelastic import PlasticProblem
from solvers.physics.plasticity import J2Plasticity
from tomomech.errors import ConvergenceError

E, NU = 22e9, 0.3
SE = Material("se", 22.0, 0.3)


def block(kind="voxel-hex", backend="assembled", shape=(6, 5, 4)):
    """A block of electrolyte only, held by rollers on the sides and the bottom, top free."""
    ph = np.ones(shape, np.uint8)
    pa = np.zeros(shape, np.int32)
    mesh = (voxel_hex_mesh if kind == "voxel-hex" else voxel_tet_mesh)(ph, pa, [1e-6] * 3)
    return mesh, ElasticProblem(mesh, {1: SE}, top="free", backend=backend)


def biaxial_stress(law, eps_star):
    """Lateral compressive stress of a block swelling by ``eps_star`` with its sides held (sigma_zz = 0):
    elastic ``E eps* / (1 - nu)``; plastic (J2, linear hardening H) from ``eps* = s (1 - nu) / E + p / 2``
    with ``s = sigma_y0 + H p`` (biaxial flow: the lateral plastic strain is ``-p / 2``)."""
    s = E * eps_star / (1 - NU)
    if s <= law.yield_Pa:
        return s
    H = law.hardening_Pa
    if H == 0:
        return law.yield_Pa
    return (eps_star + law.yield_Pa / (2 * H)) / ((1 - NU) / E + 1 / (2 * H))


@pytest.mark.parametrize("kind,backend", [("voxel-hex", "assembled"), ("voxel-hex", "matrix-free"),
                                          ("voxel-tet", "assembled")])
@pytest.mark.parametrize("method", ["newton", "initial-stiffness"])
def test_swelling_block_matches_the_biaxial_closed_form(kind, backend, method):
    """Load, yield with hardening, load further and unload: every cell's stress is the closed form's to the
    nonlinear tolerance (1e-6 of the load; 1e-5 of the peak stress asserted) at each step, sigma_zz = 0, and
    unloading is elastic."""
    mesh, base = block(kind, backend)
    law = J2Plasticity(300.0, 2000.0)
    prob = PlasticProblem(base, {1: law}, method=method)
    u, peak = None, 0.0
    for es in (0.005, 0.01, 0.02, 0.01):
        eps = np.full(mesh.n_cells, es)
        u = prob.solve(eps, x0=u)
        sig = prob.cell_stress(u, eps)
        if es >= peak:
            s, peak, s_peak = biaxial_stress(law, es), es, biaxial_stress(law, es)
        else:
            s = s_peak - E * (peak - es) / (1 - NU)  # elastic unloading from the peak
        tol = 1e-5 * s_peak
        assert sig[:, 1, 1] == pytest.approx(np.full(mesh.n_cells, -s), abs=tol)
        assert sig[:, 2, 2] == pytest.approx(np.full(mesh.n_cells, -s), abs=tol)
        assert np.abs(sig[:, 0, 0]).max() < tol
    assert prob.cell_equivalent_plastic_strain().min() > 0


def test_viscous_block_matches_the_one_dimensional_ode():
    """Perzyna (m = 2): a block swelling at a constant rate, then held. Homogeneous, so the finite-element
    step is the scalar backward-Euler recurrence of ``p' = <(s(p) - sigma_y0) / sigma_y0>^m / eta`` with
    ``s = E (eps* - p / 2) / (1 - nu)``, solved here by brentq: equal to 1e-7 at every step (the steps solved
    to 1e-9). A slower swelling gives a lower overstress."""
    law = J2Plasticity(300.0, 0.0, viscosity_s=50.0, rate_exponent=2.0)
    mesh, base = block()
    sy, eta, m = law.yield_Pa, law.viscosity_s, law.rate_exponent

    def run(t_load, n=20):
        prob = PlasticProblem(base, {1: law}, rtol=1e-9)
        prob.time_step_s = 2 * t_load / n
        eps_end, u, fe, ref, p = 0.02, None, [], [], 0.0
        for k in range(1, n + 1):
            es = eps_end * min(k / (n / 2), 1.0)
            u = prob.solve(np.full(mesh.n_cells, es), x0=u)
            fe.append(-prob.cell_stress(u, np.full(mesh.n_cells, es))[:, 1, 1].mean())

            def h(dp, p=p, es=es):
                s = E * (es - (p + dp) / 2) / (1 - NU)
                return dp - prob.time_step_s / eta * (max(s - sy, 0.0) / sy) ** m
            dp = 0.0 if h(0.0) >= 0 else brentq(h, 0.0, 2 * es, xtol=1e-300, rtol=1e-15)
            p += dp
            ref.append(E * (es - p / 2) / (1 - NU))
        return np.array(fe), np.array(ref)

    fast, ref_fast = run(10.0)
    slow, ref_slow = run(1000.0)
    assert fast == pytest.approx(ref_fast, rel=1e-7)
    assert slow == pytest.approx(ref_slow, rel=1e-7)
    assert fast[9] > slow[9] > sy  # overstress at the end of the ramp: larger when faster
    assert np.all(np.diff(fast[10:]) < 0)  # relaxation while held


def matbox(n=16):
    """A small two-phase composite with touching spheres of active material in electrolyte."""
    rng = np.random.default_rng(3)
    z, y, x = np.indices((n, n, n)) + 0.5
    ph = np.ones((n, n, n), np.uint8)
    pa = np.zeros((n, n, n), np.int32)
    for k, c in enumerate(rng.uniform(2, n - 2, (5, 3)), start=1):
        inside = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < 3.2**2
        ph[inside], pa[inside] = 2, k
    return ph, pa


def composite_problem(backend="assembled"):
    ph, pa = matbox()
    mesh = voxel_hex_mesh(ph, pa, [1e-6] * 3)
    base = ElasticProblem(mesh, {1: SE, 2: Material("p", 140.0, 0.3)}, top="free", backend=backend)
    return mesh, base


def swell(mesh, prob, steps, total=-0.017):
    u = None
    for k in range(1, steps + 1):
        eps = np.where(mesh.cell_phase == 2, total * k / steps, 0.0)
        u = prob.solve(eps, x0=u)
    return prob.cell_stress(u, eps)


def test_huge_yield_stress_is_elastic():
    """A yield stress no cell reaches reproduces the elastic problem to 1e-10."""
    mesh, base = composite_problem()
    eps = np.where(mesh.cell_phase == 2, -0.017, 0.0)
    elastic = base.cell_stress(base.solve(eps), eps)
    plastic = swell(mesh, PlasticProblem(base, {1: J2Plasticity(1e9)}), 1)
    assert np.abs(plastic - elastic).max() <= 1e-10 * np.abs(elastic).max()


def test_newton_and_initial_stiffness_agree_and_load_steps_do_not_matter():
    """The same composite by Newton and by the initial-stiffness iteration agrees to 1e-5; halving the load
    steps (4 -> 8) changes the particles' mean stresses by at most 1 % (the issue's bound)."""
    mesh, base = composite_problem()
    law = {1: J2Plasticity(300.0)}
    ap = mesh.cell_phase == 2
    a = swell(mesh, PlasticProblem(base, law), 4)
    b = swell(mesh, PlasticProblem(base, law, method="initial-stiffness"), 4)
    c = swell(mesh, PlasticProblem(base, law), 8)
    scale = np.abs(a).max()
    assert np.abs(a - b).max() < 1e-5 * scale
    part = mesh.cell_particle[ap]
    mean = lambda s: np.array([np.bincount(part, weights=s[ap][:, i, i])[1:] for i in range(3)])  # noqa: E731
    assert np.abs(mean(c) - mean(a)).max() <= 0.01 * np.abs(mean(a)).max()


def test_matrix_free_equals_assembled():
    """The plastic composite on the matrix-free multigrid equals the assembled one to the solver tolerance."""
    law = {1: J2Plasticity(300.0, 500.0)}
    mesh, base = composite_problem()
    a = swell(mesh, PlasticProblem(base, law), 2)
    mesh, base = composite_problem("matrix-free")
    b = swell(mesh, PlasticProblem(base, law), 2)
    assert np.abs(a - b).max() < 1e-5 * np.abs(a).max()


def test_a_step_that_cannot_converge_raises():
    """Too few iterations: ConvergenceError naming the option, and the committed state is untouched."""
    mesh, base = composite_problem()
    prob = PlasticProblem(base, {1: J2Plasticity(300.0)}, maxiter=2)
    with pytest.raises(ConvergenceError, match="plastic_maxiter"):
        swell(mesh, prob, 1)
    assert not prob.equivalent.any() and not prob.history


def test_viscous_electrolyte_through_galvanostatic_cycles():
    """A charge and a discharge (2 half-cycles) with a viscoplastic electrolyte: the plastic state persists
    (the largest equivalent plastic strain never falls from step to step), every step is solved (path
    dependence), and a faster charge leaves a larger overstress above the yield stress at the end of the
    charge, which the rate-independent law never exceeds."""
    from solvers import fields
    from solvers.physics import get_material
    from solvers.physics.transient import Galvanostatic, galvanostatic_states

    ph, pa = matbox(14)
    mesh = voxel_hex_mesh(ph, pa, [1e-6] * 3)
    faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    nmc = get_material("NMC")
    se = mesh.cell_phase == 1

    def run(c_rate, law):
        prob = PlasticProblem(ElasticProblem(mesh, {1: SE, 2: nmc}, top="free"), {1: law})
        proto = Galvanostatic(c_rate=c_rate, soc_start=0.9, soc_end=0.3, cycles=2, steps=4)
        peaks, over = [], None
        for st in galvanostatic_states(prob, nmc, faces, proto, output_every=2):
            peaks.append(prob.equivalent.max())
            if st.step == 4:
                over = fields.von_mises(st.sigma[se]).max() / law.yield_Pa - 1
        assert len(prob.history) == 8  # every step solved, not only the 4 written ones
        return np.array(peaks), over

    viscous = J2Plasticity(20.0, 0.0, viscosity_s=300.0)
    peaks, slow = run(1.0, viscous)
    _, fast = run(20.0, viscous)
    _, plain = run(20.0, J2Plasticity(20.0))
    assert peaks[-1] > 0 and np.all(np.diff(peaks) >= 0)
    assert fast > slow > 0 and plain <= 1e-6
