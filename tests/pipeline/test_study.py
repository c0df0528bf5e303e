"""Studies on a local dask cluster: aggregation, resume, failures, reproducibility."""

import json
import socket

import numpy as np
import pytest

from pipeline import io
from pipeline.cli import main
from pipeline.study import load_study, regression, run_study
from tomomech.errors import ConfigError

BASE = """
[input]
path = "unused.tif"
[segmentation]
min_particle_voxels = 5
[cycling]
soc_start = 1.0
soc_end = 0.5
"""


def write_study(folder, body: str, base: str = BASE, name: str = "study.toml"):
    """A base config and a study file naming it, in ``folder``."""
    (folder / "base.toml").write_text(base)
    f = folder / name
    f.write_text('base = "base.toml"\n' + body)
    return f


@pytest.fixture
def study_file(tmp_path):
    return write_study(tmp_path, """plot_against = ["void_fraction", "electrolyte_tortuosity_z"]
[synthetic]
shape = [14, 14, 14]
active_fraction = 0.4
void_fraction = [0.0, 0.1, 0.2, 0.3]
radius = 3.0
seed = 4
voxel_size_um = 0.5
""")


def test_four_case_study_aggregates_resumes_and_reproduces(study_file, tmp_path):
    study = load_study(study_file)
    assert len(study.cases) == 4
    out = tmp_path / "res"
    res = run_study(study, out, workers=2)
    assert res["done"] == 4 and not res["failed"] and res["skipped"] == 0
    table = io.read_csv(out / "study.csv")
    assert np.allclose(np.sort(table["void_fraction"]), [0.0, 0.1, 0.2, 0.3], atol=1 / 14**3)
    # each row equals the numbers of its own case folder
    for i, case in enumerate(table["case"]):
        s = json.loads((out / "cases" / case / "summary.json").read_text())
        assert table["active_von_mises_mean_MPa"][i] == pytest.approx(
            s["steps"][-1]["phases"]["active"]["von_mises_mean_MPa"], rel=1e-5)
        parts = io.read_csv(out / "cases" / case / "particles.csv")
        assert table["particle_count"][i] == parts["particle_id"].size
        ms = json.loads((out / "cases" / case / "microstructure.json").read_text())["scalars"]
        for k in ("electrolyte_tortuosity_z", "ap_se_area_per_volume_per_um", "electrolyte_connected_fraction"):
            assert table[k][i] == pytest.approx(ms[k], rel=1e-5)  # every descriptor is a column (6 digits)
    pa = io.read_csv(out / "particles_all.csv")
    assert pa["case"].size == int(table["particle_count"].sum())
    assert (out / "report.html").exists() and (out / "void_vs_stress.png").exists()
    assert (out / "electrolyte_tortuosity_z_vs_stress.png").exists()
    reg = json.loads((out / "regression.json").read_text())
    assert reg["active_von_mises_mean_MPa_vs_electrolyte_tortuosity_z"]["n"] == 4
    first = (out / "study.csv").read_text()
    # resume: nothing is recomputed, and the aggregate is identical
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("cases/*/summary.json")}
    res2 = run_study(load_study(study_file), out, workers=1)
    assert res2["skipped"] == 4 and res2["done"] == 4
    assert {p: p.stat().st_mtime_ns for p in out.glob("cases/*/summary.json")} == mtimes
    assert (out / "study.csv").read_text() == first
    # the same study from scratch gives an identical study.csv
    assert main(["-q", "study", str(study_file), "-o", str(tmp_path / "again"), "--workers", "2"]) == 0
    assert (tmp_path / "again" / "study.csv").read_text() == first


def test_broken_case_is_reported_and_others_finish(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative study folder, as users type it
    write_study(tmp_path, """
[sweep]
"segmentation.min_particle_voxels" = [5, 1000000]
[synthetic]
shape = [12, 12, 12]
void_fraction = 0.1
radius = 3.0
""")
    # another study (or any dask cluster) already holds dask's default dashboard port: this one still runs
    with socket.socket() as other:
        try:
            other.bind(("", 8787))
            other.listen()
        except OSError:  # taken already: the same situation
            pass
        res = run_study(load_study("study.toml"), "res", workers=2)
    assert res["done"] == 1 and len(res["failed"]) == 1
    assert (tmp_path / "res" / "cases").is_dir() and not (tmp_path / "res" / "cases" / "results").exists()
    assert "smaller than min_particle_voxels" in next(iter(res["failed"].values()))
    table = io.read_csv(tmp_path / "res" / "study.csv")
    assert sorted(table["status"]) == ["done", "failed"]


def test_crop_and_sweep_expansion(tmp_path, label_stack):
    path, _ = label_stack
    f = write_study(tmp_path, """
[sweep]
"materials.electrolyte.E_GPa" = [10.0, 30.0]
[crops]
size = [10, 10, 10]
""", base=f'[input]\npath = "{path}"\n[segmentation]\nmethod = "labels"\n', name="s.toml")
    study = load_study(f)
    assert len(study.cases) == 2 * 8
    crops = {json.dumps(c.swept["input.crop"]) for c in study.cases}
    assert len(crops) == 8 and "[[10, 20], [10, 20], [10, 20]]" in crops
    c = study.cases[0].config
    assert c["materials"]["electrolyte"] == {"base": "Li6PS5Cl", "E_GPa": 10.0}
    f.write_text('base = "base.toml"\ncombine = "zip"\n[sweep]\n"mechanics.top" = ["free", "fixed"]\n'
                 '"cycling.soc_end" = [0.5]\n')
    with pytest.raises(ConfigError, match="equal length"):
        load_study(f)
    f.write_text('base = "base.toml"\n[sweep]\n"mechanics.top" = ["free", "sideways"]\n')
    with pytest.raises(ConfigError, match="mechanics.top"):
        load_study(f)


def test_regression_recovers_a_known_line():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 0.3, 200)
    y = 100 - 50 * x + rng.normal(0, 1, 200)
    r = regression(x, y)
    assert r["slope_ci95"][0] < -50 < r["slope_ci95"][1] and r["r2"] > 0.5
