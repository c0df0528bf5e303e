"""Butler-Volmer kinetics and the electrolyte potential against PHYSICS.md section 5.

Closed forms (the ohmic slab), conservation of Li and of charge, ionic isolation,
and PyBaMM's single particle model as an independent code.
"""

from pathlib import Path

import numpy as np
import pytest

from segmentation import make_composite
from solvers import fields
from solvers.mesh import voxel_hex_mesh, voxel_tet_mesh
from solvers.physics import ElasticProblem, Material, get_material
from solvers.physics.diffusion import FARADAY, DiffusionProblem
from solvers.physics.electrochem import KineticFlux
from solvers.physics.electrolyte import ElectrolyteProblem
from solvers.physics.kinetics import ButlerVolmer, Kinetics, _chen2020_nmc811, balance_current, open_circuit
from solvers.physics.transient import Galvanostatic, galvanostatic_states
from tomomech.errors import ConfigError

OCP = open_circuit("Chen2020-NMC811")
ROOT = Path(__file__).resolve().parents[2]


def faces_of(mesh):
    if hasattr(mesh, "node_grid"):
        return fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    return fields.tet_interface_faces(mesh)


@pytest.mark.parametrize("alphas", [(0.5, 0.5), (0.3, 0.7)])
@pytest.mark.parametrize("kind", ["voxel-hex", "voxel-tet"])
def test_ohmic_slab_voltage(kind, alphas):
    """PHYSICS.md 5: a flat AP plate at z = 0 under an electrolyte slab of thickness L gives
    phi_s = U + eta(I / A) + I L / (kappa A), to 1e-8 relative (the potential is linear in z, which
    both elements hold exactly; the Newton stops at 1e-10 of the current)."""
    n_se, nx, h, kappa = 7, 4, 0.5e-6, 0.2
    ph = np.ones((1 + n_se, nx, nx), np.uint8)
    ph[0] = 2
    pa = (ph == 2).astype(np.int32)
    mesh = (voxel_hex_mesh if kind == "voxel-hex" else voxel_tet_mesh)(ph, pa, [h] * 3)
    elec = ElectrolyteProblem(mesh, faces_of(mesh), kappa_S_m=kappa)
    law = ButlerVolmer(1e-10, 50000.0, alpha_a=alphas[0], alpha_c=alphas[1])
    area, i = nx * nx * h * h, 3.0  # A/m^2
    for theta in (0.3, 0.7):
        out = balance_current(elec, Kinetics(law, OCP), np.full(elec.point_area.size, theta),
                              np.ones(elec.point_area.size, bool), i * area)
        i0 = law.exchange_current(theta)
        expect = float(OCP(theta)) + float(law.overpotential(i, i0)) + i * area * n_se * h / (kappa * area)
        assert out["phi_s"] == pytest.approx(expect, rel=1e-8, abs=0)
        np.testing.assert_allclose(out["i"], i, rtol=1e-8)


def test_overpotential_inverts_the_current():
    """law.overpotential is the inverse of law.current (closed form for equal alphas, Newton otherwise)."""
    i = np.array([-40.0, -1.0, 0.0, 0.5, 7.0])
    i0 = np.array([2.0, 0.3, 1.0, 1.5, 0.2])
    for a in ((0.5, 0.5), (0.25, 0.6)):
        law = ButlerVolmer(1e-10, 50000.0, alpha_a=a[0], alpha_c=a[1])
        np.testing.assert_allclose(law.current(law.overpotential(i, i0), i0)[0], i, rtol=1e-12, atol=1e-12)


def composite(shape=(14, 14, 14), seed=5):
    ph, pa = make_composite(shape, active_fraction=0.45, void_fraction=0.1, radius=3, seed=seed)
    return voxel_hex_mesh(ph, pa, [0.5e-6] * 3)


def kinetic_run(mesh, proto, kappa=0.2, k0=3.5e-11):
    nmc = Material("nmc-bv", 140.0, 0.3, D_m2_s=1e-14, c_max_mol_m3=50000.0, omega_m3_mol=1e-6,
                   ocp="Chen2020-NMC811", k0_m_s=k0)
    se = get_material("Li6PS5Cl")
    faces = faces_of(mesh)
    mech = ElasticProblem(mesh, {1: se, 2: nmc}, solver="direct")
    elec = ElectrolyteProblem(mesh, faces, kappa_S_m=kappa)
    kin = KineticFlux(elec, Kinetics(ButlerVolmer(nmc.k0_m_s, nmc.c_max_mol_m3), OCP), rtol=1e-9)
    diff = DiffusionProblem(mesh, D=nmc.D_m2_s, dt=proto.dt, faces=faces, solver="direct")
    states = list(galvanostatic_states(mech, nmc, faces, proto, solver="direct", kinetics=kin))
    return nmc, faces, elec, diff, states


def test_li_and_charge_are_conserved_over_charge_and_discharge():
    """Li in the particles changes by exactly -I dt / F per step (backward Euler, rows of the diffusion
    matrix sum to zero), over a 2C charge and the discharge after it, to 1e-9 of the window's Li; the
    face currents add up to the applied current to the Newton tolerance (1e-10); the cell voltage is
    above U on charge and below it on discharge."""
    mesh = composite()
    proto = Galvanostatic(c_rate=2.0, soc_start=0.8, soc_end=0.4, cycles=2, steps=5)
    nmc, faces, elec, diff, states = kinetic_run(mesh, proto)
    c_max = nmc.c_max_mol_m3
    li0 = diff.total(np.full(diff.n_nodes, 0.8 * c_max))
    window = 0.4 * c_max * diff.mass.sum()
    passed = 0.0
    for st in states:
        e = st.electro
        passed += e["current_A"] * proto.dt / FARADAY
        assert diff.total(st.theta_nodes * c_max) == pytest.approx(li0 - passed, abs=1e-9 * window)
        assert np.sum(e["i"] * elec.point_area) == pytest.approx(e["current_A"], rel=1e-9)
        u_mean = np.average(OCP(e["theta"]), weights=elec.point_area * e["carries"].repeat(4))
        assert (e["phi_s"] - u_mean) * np.sign(e["current_A"]) > 0
    assert passed == pytest.approx(0.0, abs=1e-12 * window)  # charge and discharge cancel


def test_isolated_electrolyte_carries_no_current():
    """A particle whose electrolyte pocket is walled off by void from the separator gets no current and
    is flagged; the particle with a path takes all of it (PHYSICS.md 5)."""
    ph = np.zeros((12, 6, 12), np.uint8)
    ph[:, :, :6] = 1  # left column of electrolyte reaches the top
    ph[1:4, 1:5, 1:5] = 2  # particle 1 in it
    ph[0:10, :, 6:] = 1  # right pocket of electrolyte, capped by void at z = 10, 11
    ph[1:4, 1:5, 7:11] = 2  # particle 2 in the pocket
    ph[:, :, 5] = np.where(np.arange(12)[:, None] < 11, 0, 1)  # a void wall between them
    pa = np.zeros(ph.shape, np.int32)
    pa[1:4, 1:5, 1:5] = 1
    pa[1:4, 1:5, 7:11] = 2
    mesh = voxel_hex_mesh(ph, pa, [0.5e-6] * 3)
    faces = faces_of(mesh)
    elec = ElectrolyteProblem(mesh, faces, kappa_S_m=0.2)
    assert np.all(elec.face_connected == (faces["particle"] == 1))
    out = balance_current(elec, Kinetics(ButlerVolmer(1e-10, 50000.0), OCP), np.full(elec.point_area.size, 0.5),
                          np.ones(elec.point_area.size, bool), 1e-9)
    on2 = np.repeat(faces["particle"] == 2, elec.corners)
    assert np.all(out["i"][on2] == 0)
    assert np.sum(out["i"] * elec.point_area) == pytest.approx(1e-9, rel=1e-10)


def test_no_ionic_path_is_refused():
    ph = np.ones((6, 4, 4), np.uint8)
    ph[0:2] = 2
    ph[4:] = 0  # void caps the electrolyte
    mesh = voxel_hex_mesh(ph, (ph == 2).astype(np.int32), [0.5e-6] * 3)
    with pytest.raises(ConfigError, match="separator"):
        ElectrolyteProblem(mesh, faces_of(mesh), kappa_S_m=0.2)


@pytest.mark.slow
def test_single_particle_limit_matches_pybamm_spm():
    """PHYSICS.md 5, single particle: one sphere (conforming tets, radius 4.5 um), kappa 1e4 S/m, a 1C
    discharge 0.4 -> 0.85 and the charge back. PyBaMM's SPM, half-cell with a positive working electrode
    and an ideal Li counter electrode (i0 = 1e8 A/m^2), same U (this module's Chen 2020 function), k0,
    D, c_max and the same particle (radius 3 V / A of the mesh, so the current density is the same),
    gives the same voltage within 2 mV at every one of our time steps but those in the first 2 minutes
    after a current change, where the mesh does not resolve the surface boundary layer yet (3.4 mV; a
    gap, not a tolerance)."""
    pybamm = pytest.importorskip("pybamm", reason="PyBaMM is the independent code of this test (extra 'test')")
    pytest.importorskip("pygalmesh")
    from solvers.mesh.conforming import conforming_tet_mesh

    R, n, h = 9, 22, 0.5e-6
    z, y, x = np.indices((n, n, n)) + 0.5
    ph = np.where((z - n / 2) ** 2 + (y - n / 2) ** 2 + (x - n / 2) ** 2 < R**2, 2, 1).astype(np.uint8)
    mesh = conforming_tet_mesh(ph, (ph == 2).astype(np.int32), [h] * 3, seed=1, smooth_iterations=5)
    D, c_max, k0, th0, th1 = 1e-14, 63104.0, 1e-10, 0.4, 0.85
    proto = Galvanostatic(c_rate=1.0, soc_start=th0, soc_end=th1, cycles=2, steps=SPM_STEPS)
    nmc = Material("spm", 140, 0.3, D_m2_s=D, c_max_mol_m3=c_max, omega_m3_mol=0.0, ocp="Chen2020-NMC811",
                   k0_m_s=k0)
    faces = faces_of(mesh)
    mech = ElasticProblem(mesh, {1: get_material("Li6PS5Cl"), 2: nmc}, solver="direct")
    kin = KineticFlux(ElectrolyteProblem(mesh, faces, kappa_S_m=1e4),
                      Kinetics(ButlerVolmer(k0, c_max), OCP))
    ours = [(st.time_s, st.electro["phi_s"]) for st in
            galvanostatic_states(mech, nmc, faces, proto, solver="direct", kinetics=kin)]
    a = 3 * mesh.cell_volumes()[mesh.cell_phase == 2].sum() / faces["area"].sum()

    model = pybamm.lithium_ion.SPM({"working electrode": "positive"})
    p = pybamm.ParameterValues("Xu2019")
    p.update({"Positive electrode OCP [V]": _chen2020_nmc811,
              "Positive electrode exchange-current density [A.m-2]":
                  lambda c_e, c_s, c_m, T: FARADAY * k0 * c_m * (c_s / c_m) ** 0.5 * (1 - c_s / c_m) ** 0.5,
              "Maximum concentration in positive electrode [mol.m-3]": c_max, "Positive particle radius [m]": a,
              "Positive particle diffusivity [m2.s-1]": D,
              "Exchange-current density for lithium metal electrode [A.m-2]": 1e8,
              "Initial concentration in positive electrode [mol.m-3]": th0 * c_max,
              "Positive electrode OCP entropic change [V.K-1]": 0.0, "Ambient temperature [K]": 298.15,
              "Initial temperature [K]": 298.15, "Reference temperature [K]": 298.15,
              "Lower voltage cut-off [V]": 2.0, "Upper voltage cut-off [V]": 5.0}, check_already_exists=False)
    vol = (p["Positive electrode active material volume fraction"] * p["Positive electrode thickness [m]"]
           * p["Electrode width [m]"] * p["Electrode height [m]"])
    p.update({"Nominal cell capacity [A.h]": FARADAY * c_max * (th1 - th0) * vol / 3600})
    exp = pybamm.Experiment(["Discharge at 1C for 1 hour", "Charge at 1C for 1 hour"], period="10 seconds")
    sol = pybamm.Simulation(model, parameter_values=p, experiment=exp,
                            var_pts={"r_p": 200, "x_n": 5, "x_s": 5, "x_p": 5}).solve()
    t, v = np.array(ours).T
    ref = np.interp(t, sol["Time [s]"].entries, sol["Voltage [V]"].entries)
    err = np.abs(v - ref) * 1e3
    early = (t % 3600 > 0) & (t % 3600 <= 120.0 + 1e-6)  # the first 2 minutes after each current change
    print(f"SPM: max |V - V_pybamm| = {err[~early].max():.2f} mV from 2 minutes after each current change on, "
          f"{err[early].max():.2f} mV before")
    assert err[~early].max() < 2.0
    # just after a current change the surface boundary layer sqrt(D t) (0.8 um after 60 s) is not resolved by
    # the 0.5 um cells with lumped mass: measured 3.4 / 1.8 mV after 60 / 120 s, 2.8 / 1.7 mV with 0.33 um
    # cells, the same at 30 s steps; a gap of the mesh, not a tolerance (docs/electrochemistry.md)
    assert err[early].max() < 4.0

SPM_STEPS = 60


@pytest.mark.slow
def test_theta_stays_in_bounds_on_matbox_at_3c(tmp_path):
    """PHYSICS.md 5 on the MATBOX demo crop (coarsened 2x, 28^3), a 3C charge 0.95 -> 0.22 in 10 steps:
    the uniform rule drives part of the active volume below theta = 0 (small particles with a large
    interface per volume); under Butler-Volmer every cell stays in [0, 1] (i0 vanishes with the surface
    theta, so the current moves to other faces) and the charge ends at the 4.4 V cut-off."""
    import json

    from pipeline import io
    from pipeline.config import load_config
    from pipeline.run import run

    got = {}
    for kin in ("uniform", "butler-volmer"):
        cfg = load_config(ROOT / "samples/matbox_nmc/demo.toml", {
            "mesh": {"coarsen": 2}, "electrochemistry": {"kinetics": kin},
            "cycling": {"mode": "galvanostatic", "c_rate": 3.0, "soc_start": 0.95, "soc_end": 0.22, "steps": 10},
            "output": {"dir": str(tmp_path / kin)}})
        out = run(cfg, stages=("segment", "mesh", "solve"))
        got[kin] = (io.read_csv(out / "particles.csv"), json.loads((out / "summary.json").read_text())["steps"])
    t, steps = got["uniform"]
    assert t["soc_min"].min() < -0.1 and steps[-1]["theta_outside_0_1_fraction"] > 0.01
    t, steps = got["butler-volmer"]
    assert t["soc_min"].min() >= 0.0 and t["soc_max"].max() <= 1.0
    assert all(s["theta_outside_0_1_fraction"] == 0 for s in steps)
    assert steps[-1]["cell_voltage_V"] >= 4.4 > steps[-2]["cell_voltage_V"]


def test_a_current_the_surfaces_cannot_take_stops_with_advice():
    """Charging particles to empty at 20C: once the surfaces are empty no face can carry the current; the
    step is cut three times and the run stops naming c_rate (no voltage cut-off set here)."""
    from tomomech.errors import ConvergenceError

    with pytest.raises(ConvergenceError, match="after 3 cuts of the time step.*c_rate"):
        kinetic_run(composite(), Galvanostatic(c_rate=20.0, soc_start=0.06, soc_end=0.0, steps=4))


def test_debonded_faces_carry_no_current_and_the_rest_carry_all():
    """Faces outside the flux mask (debonded, cohesive runs) carry no current; the bonded faces of the
    same particle and of the others take all of it (the current is rerouted, not scaled)."""
    mesh = composite()
    faces = faces_of(mesh)
    proto = Galvanostatic(c_rate=2.0, soc_start=0.8, soc_end=0.4, steps=5)
    nmc = Material("nmc-bv", 140.0, 0.3, D_m2_s=1e-14, c_max_mol_m3=50000.0, omega_m3_mol=1e-6,
                   ocp="Chen2020-NMC811", k0_m_s=3.5e-11)
    diff = DiffusionProblem(mesh, D=nmc.D_m2_s, dt=proto.dt, faces=faces, solver="direct")
    elec = ElectrolyteProblem(mesh, faces, kappa_S_m=0.2)
    kin = KineticFlux(elec, Kinetics(ButlerVolmer(nmc.k0_m_s, nmc.c_max_mol_m3), OCP), rtol=1e-9)
    first = faces["particle"] == faces["particle"].min()
    mask = ~(first & (np.arange(first.size) % 2 == 0))  # half of the first particle's faces debonded
    c = np.full(diff.n_nodes, 0.8 * nmc.c_max_mol_m3)
    current = 1e-9
    kin.step(diff, c, 0.0, mask, current)
    i = kin.last["i"].reshape(-1, elec.corners)
    assert np.all(i[~mask] == 0) and np.all(i[mask & elec.face_connected] > 0)
    assert np.sum(kin.last["i"] * elec.point_area) == pytest.approx(current, rel=1e-9)


def test_stress_coupled_ocp_shifts_the_voltage_by_omega_sigma_over_f():
    """A uniform hydrostatic stress in the particles shifts every face's open-circuit potential by
    Omega sigma_h / F, so the same currents flow and the cell voltage moves by exactly that
    (to the Newton tolerance): 200 MPa of tension with Omega = 1e-6 m^3/mol is +2.07 mV."""
    mesh = composite()
    faces = faces_of(mesh)
    omega, sigma = 1e-6, 200e6
    diff = DiffusionProblem(mesh, D=1e-14, dt=60.0, faces=faces, solver="direct")
    c0 = np.full(diff.n_nodes, 0.6 * 50000.0)
    runs = []
    for coupled in (False, True):
        elec = ElectrolyteProblem(mesh, faces, kappa_S_m=0.2)
        kin = KineticFlux(elec, Kinetics(ButlerVolmer(3.5e-11, 50000.0), OCP, newton_rtol=1e-12), rtol=1e-11,
                          omega=(lambda th: np.full_like(th, omega)) if coupled else None)
        if coupled:
            kin.set_surface_stress(np.full(diff.n_nodes, sigma))
        c = kin.step(diff, c0, 0.0, np.ones(faces["area"].size, bool), 2e-9)
        runs.append((c, kin.last))
    (c_a, a), (c_b, b) = runs
    shift = omega * sigma / FARADAY
    assert b["phi_s"] - a["phi_s"] == pytest.approx(shift, rel=1e-7, abs=0)
    np.testing.assert_allclose(b["ocp_shift"], shift, rtol=1e-15)
    np.testing.assert_allclose(b["i"], a["i"], rtol=1e-7, atol=1e-9 * np.abs(a["i"]).max())
    assert np.abs(c_b - c_a).max() <= 1e-9 * c0.max()
    assert "ocp_shift" not in a


def test_stress_coupled_ocp_uses_the_stress_of_the_step_before():
    """In a run, each step's shift is Omega(theta_s) sigma_h / F with sigma_h the particles' nodal
    hydrostatic stress of the previous step's mechanics, and none before the first solve."""
    mesh = composite()
    proto = Galvanostatic(c_rate=2.0, soc_start=0.8, soc_end=0.6, steps=3)
    nmc = Material("nmc-bv", 140.0, 0.3, D_m2_s=1e-14, c_max_mol_m3=50000.0, omega_m3_mol=1e-6,
                   ocp="Chen2020-NMC811", k0_m_s=3.5e-11)
    faces = faces_of(mesh)
    mech = ElasticProblem(mesh, {1: get_material("Li6PS5Cl"), 2: nmc}, solver="direct")
    elec = ElectrolyteProblem(mesh, faces, kappa_S_m=0.2)
    kin = KineticFlux(elec, Kinetics(ButlerVolmer(nmc.k0_m_s, nmc.c_max_mol_m3), OCP), rtol=1e-9,
                      omega=nmc.partial_molar_volume)
    diff = DiffusionProblem(mesh, D=nmc.D_m2_s, dt=proto.dt, faces=faces, solver="direct")
    states = list(galvanostatic_states(mech, nmc, faces, proto, solver="direct", kinetics=kin))
    assert len(states) == 3
    np.testing.assert_array_equal(states[0].electro["ocp_shift"], 0.0)
    nodes = diff.face_nodes.ravel()
    for before, st in zip(states, states[1:]):
        sh = diff.to_nodes(fields.hydrostatic(before.sigma[diff.cell_index]))[nodes]
        expect = nmc.partial_molar_volume(st.electro["theta"]) * sh / FARADAY
        np.testing.assert_allclose(st.electro["ocp_shift"], expect, rtol=1e-12, atol=0)
    # the particles shrink on charge against the electrolyte: tension at their surfaces raises U
    assert np.average(states[-1].electro["ocp_shift"], weights=elec.point_area) > 0


def test_partial_molar_volume_of_a_table_is_its_slope():
    """Omega(theta) of a volume-change table is the slope per c_max relative to the volume there;
    of a linear law, omega_m3_mol."""
    table = Material("t", 100.0, 0.3, c_max_mol_m3=40000.0, volume_change=[[0.0, 0.0], [1.0, 0.05]])
    theta = np.array([0.2, 0.5, 0.9])
    np.testing.assert_allclose(table.partial_molar_volume(theta), 0.05 / 40000.0 / (1 + 0.05 * theta), rtol=1e-8)
    lin = Material("l", 100.0, 0.3, c_max_mol_m3=40000.0, omega_m3_mol=1.3e-6)
    np.testing.assert_allclose(lin.partial_molar_volume(theta), 1.3e-6, rtol=0)
