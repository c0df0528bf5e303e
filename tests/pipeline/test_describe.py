"""``tomomech describe`` and the describe stage of ``run``: outputs, caching, report, options."""

import json

import pytest

from pipeline import io
from pipeline.cli import main


def test_describe_command_writes_descriptors_and_page(config_file):
    assert main(["-q", "describe", str(config_file)]) == 0
    out = config_file.parent / "out"
    ms = json.loads((out / "microstructure.json").read_text())
    s = ms["scalars"]
    assert sum(s[f"{p}_fraction"] for p in ("void", "electrolyte", "active")) == pytest.approx(1.0)
    assert s["void_fraction"] == pytest.approx(0.08, abs=0.01)
    assert set(ms["transport"]) == {"z", "y", "x"}
    for a, t in ms["transport"].items():
        assert 1.0 <= t["tortuosity"] < 20 and t["flux_mismatch"] < 1e-5
        assert s[f"electrolyte_tortuosity_{a}"] == t["tortuosity"]
    assert len(ms["particles"]["ionic_path"]) == s["particle_count"]
    assert (out / "microstructure.html").exists() and (out / "microstructure_rev.png").exists()
    assert not (out / "summary.json").exists()  # describe does not solve
    # cached: a second call does not recompute
    assert main(["-q", "describe", str(config_file)]) == 0
    assert json.loads((out / "provenance.json").read_text())["cached"]["describe"] is True


def test_run_describes_and_reports_unless_disabled(config_file):
    assert main(["-q", "run", str(config_file)]) == 0
    out = config_file.parent / "out"
    assert (out / "microstructure.json").exists()
    assert "<h2>Microstructure</h2>" in (out / "report.html").read_text()
    table = io.read_csv(out / "particles.csv")
    assert "ionic_path" in table
    off = config_file.parent / "off"
    text = config_file.read_text().replace('dir = "out"', 'dir = "off"') + "[describe]\nenabled = false\n"
    config_file.write_text(text)
    assert main(["-q", "run", str(config_file)]) == 0
    assert (off / "report.html").exists() and not (off / "microstructure.json").exists()


def test_describe_options_are_checked(config_file, capsys):
    config_file.write_text(config_file.read_text() + '[describe]\ntortuosity_axes = ["z", "w"]\n')
    assert main(["-q", "describe", str(config_file)]) == 2
    assert "describe.tortuosity_axes" in capsys.readouterr().err
