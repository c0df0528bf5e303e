"""The describe stage on centred MATBOX crops: wall time per descriptor, peak memory, tortuosity iterations.

    python benchmarks/describe.py 251            # the largest cube the sample holds: every descriptor
    python benchmarks/describe.py 64 128 251 --transport-only   # the tortuosity solve's iterations per size

Phase mapping as in samples/matbox_nmc (pore -> electrolyte, NMC -> active, binder -> void), 0.4 um
voxels assumed. Run it alone on the machine. Prints one table row per size.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transient_charge import matbox_phases  # noqa: E402

from pipeline.config import DescribeConfig  # noqa: E402
from pipeline.describe import describe_stage  # noqa: E402
from segmentation import label_particles  # noqa: E402
from solvers.physics.tortuosity import transport  # noqa: E402

log = logging.getLogger("describe-bench")


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sizes", type=int, nargs="+")
    ap.add_argument("--transport-only", action="store_true", help="only the electrolyte transport along z")
    ap.add_argument("--rtol", type=float, default=1e-8)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sp = (0.4, 0.4, 0.4)
    for n in args.sizes:
        phases = matbox_phases(n)
        if args.transport_only:
            t0 = time.perf_counter()
            t = transport(phases == 1, "z", sp, rtol=args.rtol)
            print(f"{n}^3: {t.unknowns:,} unknowns, {t.iterations} CG its, tau_z {t.tortuosity:.4f}, "
                  f"{time.perf_counter() - t0:.1f} s, peak {peak_gb():.2f} GB", flush=True)
            continue
        t0 = time.perf_counter()
        particles = label_particles(phases, spacing=sp, split_depth=1.5)
        t_label = time.perf_counter() - t0
        t0 = time.perf_counter()
        ms = describe_stage(phases, particles, sp, DescribeConfig(tortuosity_rtol=args.rtol))
        total = time.perf_counter() - t0
        shares = ", ".join(f"{k} {v:.1f} s ({100 * v / total:.0f} %)" for k, v in ms["timings_s"].items())
        its = ", ".join(f"{a} {t['iterations']}" for a, t in ms["transport"].items())
        print(f"{n}^3: describe {total:.1f} s (labelling before it {t_label:.1f} s, not counted), peak "
              f"{peak_gb():.2f} GB; CG its {its}\n  {shares}", flush=True)


if __name__ == "__main__":
    main()
