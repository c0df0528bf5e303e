"""Wall time of an 8-case synthetic study with 1 and 2 dask workers (prints the speed-up).

Usage: python benchmarks/study_scaling.py
"""

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.study import load_study, run_study  # noqa: E402

STUDY = """
base = "base.toml"
[synthetic]
shape = [28, 28, 28]
active_fraction = 0.5
void_fraction = [0.0, 0.1, 0.2, 0.3]
seed = [1, 2]
radius = 5.0
"""
BASE = "[input]\npath = 'unused.tif'\n[cycling]\nsoc_start = 1.0\nsoc_end = 0.22\n"


def main():
    times = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            (d / "base.toml").write_text(BASE)
            (d / "study.toml").write_text(STUDY)
            t0 = time.perf_counter()
            res = run_study(load_study(d / "study.toml"), d / "out", workers=workers)
            times[workers] = time.perf_counter() - t0
            assert res["done"] == 8, res
            print(f"{workers} worker(s): 8 cases in {times[workers]:.1f} s", flush=True)
    print(f"speed-up with 2 workers: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
