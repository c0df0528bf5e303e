"""A plastic electrolyte through the CLI: config, outputs, refusals."""

import json
import tomllib

import meshio
import numpy as np
import pytest

from pipeline import io
from pipeline.cli import main
from pipeline.config import config_from_dict
from tomomech.errors import ConfigError

PLASTIC = "[materials]\nelectrolyte = { base = 'Li6PS5Cl', plasticity = { yield_MPa = 100.0 } }\n"


def test_plastic_swelling_run_outputs(config_file, capsys):
    """Swelling with a 100 MPa electrolyte: the electrolyte's von Mises stress stays at or below the yield stress
    (perfect plasticity), its yielded share grows with the swelling, and the plastic zone per particle, the
    equivalent plastic strain field and the report plot are written."""
    text = config_file.read_text().replace("[cycling]", PLASTIC + "[cycling]")
    config_file.write_text(text)
    assert main(["-q", "run", str(config_file)]) == 0
    out = config_file.parent / "out"
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    assert summary["plasticity"]["laws"][0]["yield_MPa"] == 100.0
    assert 0 < steps[0]["electrolyte_yielded_fraction"] < steps[-1]["electrolyte_yielded_fraction"] <= 1
    assert steps[-1]["electrolyte_plastic_strain_max"] > 0 and steps[-1]["plastic_iterations"] >= 2
    # perfect plasticity: the cell-mean stress of electrolyte cells lies on or inside the yield surface
    assert steps[-1]["phases"]["electrolyte"]["von_mises_max_MPa"] <= 100.0 * (1 + 1e-6)
    t = io.read_csv(out / "particles.csv")
    last = t["step"] == t["step"].max()
    zone = t["plastic_zone_fraction"][last]
    assert np.all((zone[~np.isnan(zone)] >= 0) & (zone[~np.isnan(zone)] <= 1)) and np.nanmax(zone) > 0
    with meshio.xdmf.TimeSeriesReader(out / "fields.xdmf") as r:
        r.read_points_cells()
        _, _, cd = r.read_data(r.num_steps - 1)
    e = cd["equivalent_plastic_strain"][0]
    assert np.all(e[cd["phase"][0] == 2] == 0) and e.max() == pytest.approx(steps[-1]["electrolyte_plastic_strain_max"])
    assert (out / "plasticity.png").exists()
    assert "plasticity.png" in (out / "report.html").read_text()
    capsys.readouterr()
    assert main(["materials"]) == 0
    listing = capsys.readouterr().out
    assert "plastic laws" in listing and "Li6PS5Cl" in listing.split("plastic laws")[1]


def load_config_text(text: str):
    return config_from_dict(tomllib.loads(text))


def test_plasticity_config_errors():
    """Bad plasticity tables and a plastic cohesive run are refused at load, naming the key."""
    base = "[input]\npath = 'x.tif'\n"
    for table, match in (("{ yield_MPa = -1 }", "yield_MPa"), ("{ hardening_MPa = 10 }", "needs yield_MPa"),
                         ("{ yield_MPa = 100, visc = 1 }", "unknown keys"), ("'LLZO'", "LLZO stays elastic")):
        with pytest.raises(ConfigError, match=match):
            load_config_text(base + f"[materials]\nelectrolyte = {{ base = 'Li6PS5Cl', plasticity = {table} }}\n")
    with pytest.raises(ConfigError, match="cohesive"):
        load_config_text(base + PLASTIC + "[interface]\nmodel = 'cohesive'\n")
    cfg = load_config_text(base + "[materials]\nelectrolyte = { base = 'Li6PS5Cl', plasticity = 'li6ps5cl' }\n")
    assert cfg.materials.resolve()[1].plasticity.yield_MPa == 300.0
