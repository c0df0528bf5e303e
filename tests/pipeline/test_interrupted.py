"""A run killed mid-solve: the rerun completes and nothing stale stays in the results folder."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline import io
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.run import run
from tests.pipeline.test_cli import galvanostatic_config

ROOT = Path(__file__).resolve().parents[2]


def test_killed_run_is_rerun_and_its_temporaries_removed(config_file, caplog):
    galvanostatic_config(config_file, 400)
    out = config_file.parent / "out"
    cmd = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))",
           "-q", "run", str(config_file)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _partly_written(out):  # the time series being written: the solve is under way
            assert proc.poll() is None, "the run ended before it could be killed mid-solve"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    left = io.stale_temporaries(out)
    assert left and not (out / "summary.json").exists()
    run(load_config(config_file))
    assert io.stale_temporaries(out) == []
    assert json.loads((out / "summary.json").read_text())["steps"][-1]["step"] == 800
    removed = [r.getMessage() for r in caplog.records if "killed before it finished" in r.getMessage()]
    assert len(removed) == len(left) and all(str(p) in " ".join(removed) for p in left)


def _partly_written(out):
    return any(f.stat().st_size > 0 for d in io.stale_temporaries(out) if d.is_dir() for f in d.iterdir())


def test_a_folder_another_run_holds_is_refused(config_file, capsys):
    """A second run into a folder a live run holds exits 2 and names the problem; the folder is untouched."""
    out = config_file.parent / "out"
    with io.results_folder(out):
        assert main(["-q", "run", str(config_file)]) == 2
    assert "another tomomech run is writing to" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [io.LOCK_NAME]
