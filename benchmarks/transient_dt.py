"""Time-step convergence on the demo sample: a 3C charge with dt and dt/2.

Runs samples/matbox_nmc/demo.toml (48^3 crop) as a galvanostatic charge, theta 1.0 -> 0.22,
with STEPS and 2 x STEPS time steps (default 10), and prints the peak particle von Mises
stress at the end of charge and at mid-charge, and their relative change.
Usage: python benchmarks/transient_dt.py [STEPS]
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import io  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.run import run  # noqa: E402


def peak(steps: int, out: Path) -> dict[int, float]:
    cfg = load_config(ROOT / "samples/matbox_nmc/demo.toml", overrides={
        "cycling": {"mode": "galvanostatic", "c_rate": 3.0, "steps": steps, "output_every": steps // 2},
        "output": {"dir": str(out)}})
    t0 = time.perf_counter()
    run(cfg)
    t = io.read_csv(out / "particles.csv")
    res = {int(k): float(np.nanmax(t["von_mises_max_MPa"][t["step"] == k])) for k in np.unique(t["step"])}
    print(f"{steps} steps: {time.perf_counter() - t0:.0f} s, peak von Mises by step {res}", flush=True)
    return res


def main(steps: int = 10):
    with tempfile.TemporaryDirectory() as d:
        a = peak(steps, Path(d) / "a")
        b = peak(2 * steps, Path(d) / "b")
    for frac, ka, kb in (("mid-charge", steps // 2, steps), ("end of charge", steps, 2 * steps)):
        print(f"{frac}: {a[ka]:.1f} MPa (dt) vs {b[kb]:.1f} MPa (dt/2): change {100 * (a[ka] / b[kb] - 1):+.2f} %")


if __name__ == "__main__":
    main(*[int(x) for x in sys.argv[1:]])
