"""Config validation: one clear error naming the key, before any heavy work."""

import pytest

from pipeline.config import config_from_dict, dump_config, load_config
from solvers.physics.materials import PRESETS, get_material
from tomomech.errors import ConfigError


def make(**sections):
    data = {"input": {"path": "x.tif"}}
    data.update(sections)
    return config_from_dict(data)


@pytest.mark.parametrize("sections, match", [
    ({"mesh": {"kindd": "voxel-hex"}}, "unknown key mesh.kindd .did you mean 'kind'"),
    ({"mechanics": {"faces": {"x_top": "free"}}}, "mechanics.faces has 'x_top': the faces are"),
    ({"uncertainty": {"split_depth_factor": [2.0, 1.0]}}, r"uncertainty.split_depth_factor = \[2.0, 1.0\]: give"),
    ({"uncertainty": {"samples": -1}}, "uncertainty.samples = -1 must be >= 0"),
    ({"mechanics": {"faces": {"x_max": "slip"}}}, r"mechanics.faces.x_max = 'slip': use one of \('roller'"),
    ({"mechanics": {"faces": {"y_min": "pressure"}}}, "a pressure is applied on the top only"),
    ({"mechanics": {"top": "fixed", "faces": {"z_max": "free"}}}, "both set the top face"),
    ({"mechanics": {"faces": "free"}}, "mechanics.faces = 'free' has the wrong type"),
    ({"mesh": {"kind": "octree"}}, "mesh.kind = 'octree' is not allowed"),
    ({"mesh": {"kind": "conforming-tet", "cell_size_voxels": 0}}, "mesh.cell_size_voxels = 0 must be > 0"),
    ({"mesh": {"kind": "voxel-tet"}, "solver": {"backend": "matrix-free"}}, "matrix-free' works on voxel-hex"),
    ({"mesh": {"upsample": 0}}, "mesh.upsample = 0 must be > 0"),
    ({"mesh": {"smooth_surface_iterations": -1}}, "mesh.smooth_surface_iterations = -1 must be >= 0"),
    ({"mesh": {"interface_shell_voxels": 0}}, "mesh.interface_shell_voxels = 0 must be > 0"),
    ({"mesh": {"interface_cell_size_voxels": -0.5}}, "mesh.interface_cell_size_voxels = -0.5 must be >= 0"),
    ({"mesh": {"order": 2}}, "mesh.order = 2 .quadratic elements. needs mesh.kind"),
    ({"mesh": {"kind": "voxel-tet", "order": 2}, "interface": {"model": "cohesive"}}, "cohesive' needs mesh.order = 1"),
    ({"interface": {"newton_rtol": 1e-3}}, r"interface.newton_rtol = 0.001 must lie in \(0, 1e-4\]"),
    ({"interface": {"contact_factor": 0.05}}, r"interface.contact_factor = 0.05 must lie in \[0.1, 1\]"),
    ({"interface": {"model": "cohesive", "contact_factor": 0.5}, "solver": {"backend": "matrix-free"}},
     r"interface.contact_factor belong to the assembled cohesive model"),
    ({"interface": {"traction_tol": 0}}, r"interface.traction_tol = 0 must lie in \(0, 1\)"),
    ({"interface": {"max_cuts": 20}}, r"interface.max_cuts = 20 must lie in \[0, 12\]"),
    ({"interface": {"contact_corrections": -1}}, r"interface.contact_corrections = -1 must lie in \[0, 10\]"),
    ({"meshing": {}}, r"unknown section \[meshing\]"),
    ({"mechanics": {"top": 3}}, "mechanics.top = 3 has the wrong type"),
    ({"mechanics": {"top": "stack_pressure"}}, "stack_pressure_MPa > 0"),
    ({"cycling": {"soc_end": 1.5}}, r"cycling.soc_end = 1.5 must lie in \[0, 1\]"),
    ({"cycling": {"soc_end": 0.1}}, "outside the volume-change table of NMC811"),
    ({"segmentation": {"method": "thresholds"}}, "needs segmentation.thresholds"),
    ({"segmentation": {"split_method": "bogus"}},
     r"segmentation.split_method = 'bogus' is not allowed: use one of 'watershed', 'snow'"),
    ({"segmentation": {"phase_map": {"0": "pore", "1": "active"}}}, "phase_map.0 = 'pore'"),
    ({"materials": {"active": "NMC9000"}}, "not a preset"),
    ({"materials": {"active": {"E_GPa": 100}}}, "inline material needs nu"),
    ({"materials": {"active": "Li6PS5Cl"}}, "has no volume-change law"),
    ({"solver": {"rtol": 2.0}}, "solver.rtol"),
    ({"solver": {"coarse": "amg"}}, r"solver.coarse = 'amg' is not allowed"),
    ({"solver": {"coarse": "split", "device": "gpu", "backend": "matrix-free"}}, "coarse = 'split' runs on the CPU"),
    ({"solver": {"device": "gpu"}, "mesh": {"kind": "conforming-tet"}},
     r"device = 'gpu' .* need the matrix-free voxel"),
    ({"solver": {"precision": "mixed"}, "mesh": {"kind": "voxel-tet"}}, r"precision = 'mixed' need the matrix-free"),
    ({"electrochemistry": {"kinetics": "tafel"}}, r"electrochemistry.kinetics = 'tafel' is not allowed"),
    ({"electrochemistry": {"kinetics": "butler-volmer"}}, "needs cycling.mode = 'galvanostatic'"),
    ({"electrochemistry": {"stress_coupled_ocp": True}}, "stress_coupled_ocp needs kinetics = 'butler-volmer'"),
    ({"electrochemistry": {"kinetics": "butler-volmer"}, "cycling": {"mode": "galvanostatic"}},
     r"cycling.soc_start = 1.0: the exchange current vanishes at theta = 0 and 1"),
    ({"electrochemistry": {"kinetics": "butler-volmer"}, "materials": {"electrolyte": "LPS"},
      "cycling": {"mode": "galvanostatic", "soc_start": 0.9}}, r"needs kappa_S_m in materials.electrolyte \(LPS\)"),
    ({"electrochemistry": {"kinetics": "butler-volmer"}, "materials": {"active": "NMC"},
      "cycling": {"mode": "galvanostatic", "soc_start": 0.9}}, r"needs ocp in materials.active \(NMC\)"),
    ({"materials": {"active": {"base": "NMC811", "ocp": "Chen2021"}}}, "ocp = 'Chen2021' is not a known fit"),
    ({"materials": {"active": {"base": "NMC811", "ocp": [[0.5, 4.0]]}}}, "at least two"),
    ({"materials": {"active": {"base": "NMC811", "ocp": 4.0}}}, r"materials.active.ocp must be a table"),
    ({"materials": {"active": {"base": "NMC811", "ocp": [[0.5, 4.0], [0.4, 4.1]]}}}, "ocp theta values must increase"),
    ({"materials": {"electrolyte": {"base": "Li6PS5Cl", "kappa_S_m": 0}}}, "kappa_S_m must be positive"),
    ({"electrochemistry": {"step_rtol": 0}}, r"electrochemistry.step_rtol = 0 must lie in \(0, 1\)"),
    ({"input": {"path": "x.tif", "voxel_size_um": -1}}, "voxel_size_um"),
    ({"input": {"path": "x.tif", "crop": [[0, 5], [0, 5]]}}, "input.crop"),
])
def test_bad_config_names_the_key(sections, match):
    with pytest.raises(ConfigError, match=match):
        make(**sections)


def test_interface_shell_reaches_the_mesher_and_zero_means_none():
    assert make().mesh.conforming_options()["interface_cell_size_voxels"] is None
    opts = make(mesh={"interface_cell_size_voxels": 0.5, "interface_shell_voxels": 3.0,
                      "smooth_surface_iterations": 20, "upsample": 4}).mesh.conforming_options()
    assert opts["interface_cell_size_voxels"] == 0.5 and opts["interface_shell_voxels"] == 3.0
    assert opts["smooth_iterations"] == 20 and opts["upsample"] == 4 and opts["upsample_sigma_voxels"] == 1.0


def test_cohesive_runs_on_unvalidated_meshes_are_told_the_validated_options():
    """The advice names the mesh options of the 5 % onset validation (tests/validation/test_cohesive.py)
    and falls silent under exactly those, and on voxel hexes with the validated opening averaging."""
    import tomllib

    from pipeline.run import ONSET_MESH, onset_advice
    from tests.validation.test_cohesive import CONFORMING, HEX_AVERAGING

    advised = tomllib.loads(ONSET_MESH.replace(", ", "\n"))
    cfg = make(mesh=advised)
    assert onset_advice(cfg.mesh, cfg.interface) is None
    opts = cfg.mesh.conforming_options()
    assert {k: opts[k] for k in CONFORMING} == CONFORMING
    for other in ({"kind": "voxel-tet"}, {**advised, "upsample": 1}, {**advised, "interface_cell_size_voxels": 0}):
        cfg = make(mesh=other)
        assert "interface_cell_size_voxels = 0.35" in onset_advice(cfg.mesh, cfg.interface)
    hex_default = make()
    assert hex_default.mesh.kind == "voxel-hex" and hex_default.interface.averaging_voxels == HEX_AVERAGING
    assert onset_advice(hex_default.mesh, hex_default.interface) is None
    local = make(interface={"averaging_voxels": 0.0})
    assert "averaging_voxels = 1.5" in onset_advice(local.mesh, local.interface)


def test_missing_input_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"\[input\]"):
        config_from_dict({})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[input\npath=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_resolved_config_round_trips(tmp_path):
    cfg = make(materials={"active": {"base": "NMC811", "E_GPa": 199.0}}, mechanics={"top": "fixed"})
    text = dump_config(cfg)
    f = tmp_path / "c.toml"
    f.write_text(text)
    assert load_config(f) == cfg
    assert cfg.materials.resolve()[0].E_GPa == 199.0 and cfg.materials.resolve()[0].c_max_mol_m3 == 63104.0


def test_presets_cite_sources_and_swelling_law():
    for m in PRESETS.values():
        assert "PHYSICS.md" in m.source
    nmc = get_material("nmc811")
    assert nmc.relative_volume_change(0.22, 1.0) == pytest.approx(-0.051)
    assert nmc.swelling_strain(1.0, 1.0) == 0.0
    lin = get_material("NMC")
    assert lin.relative_volume_change(0.5, 0.0) == pytest.approx(1.338e-6 * 38320 * 0.5)


def test_butler_volmer_config_and_inline_ocp_table():
    """The presets carry what Butler-Volmer needs; an inline table may replace the OCP fit."""
    cfg = make(electrochemistry={"kinetics": "butler-volmer"}, cycling={"mode": "galvanostatic", "soc_start": 0.95})
    assert cfg.electrochemistry.kinetics == "butler-volmer"
    active = make(materials={"active": {"base": "NMC811", "ocp": [[0.2, 4.3], [1.0, 3.6]]}}).materials.resolve()[0]
    from solvers.physics.kinetics import open_circuit

    assert open_circuit(active.ocp)(0.6) == pytest.approx(3.95, rel=1e-12)
