"""Splitting touching particles of the MATBOX sample: watershed against SNOW (porespy).

A centred cubic crop of the MATBOX NMC electrode (pore -> electrolyte, NMC -> active,
binder -> void) goes through the segment stage's steps: phase map, active islands below
30 voxels removed, then the active phase labelled by the h-maxima watershed (split depth
1.5 voxels) and by SNOW (porespy's defaults r_max = 4, sigma = 0.4). Each method runs in
its own process, one after the other, so the peak resident memory is its own; porespy is
imported before the clock starts.

Usage::

    python benchmarks/particle_split.py [--size 128]   # crop edge in voxels; --size 0: whole volume

Prints a Markdown table (the one in docs/samples.md) to stdout; progress goes to the log.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
METHODS = ("watershed", "snow")

log = logging.getLogger("particle_split")


def one(size: int, method: str, voxel_um: float, split_depth: float, min_voxels: int) -> dict:
    """Label one crop with one method; the row of the table as a dict."""
    from transient_charge import matbox_phases

    from segmentation import label_particles, remove_small_particles

    phases = remove_small_particles(matbox_phases(size), min_voxels)
    if method == "snow":
        from segmentation.porespy_compat import porespy

        with porespy():  # the import (about 2 s) is not timed
            pass
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    lab = label_particles(phases, spacing=(voxel_um,) * 3, split_touching=True, split_depth=split_depth,
                          method=method)
    wall = time.perf_counter() - t
    counts = np.bincount(lab.ravel())[1:]
    d = (6 * counts * voxel_um**3 / np.pi) ** (1 / 3)
    return {"method": method, "shape": list(phases.shape), "particles": int(lab.max()),
            "d_median": float(np.median(d)), "d_p10": float(np.percentile(d, 10)),
            "d_p90": float(np.percentile(d, 90)), "below_1um": float(np.mean(d < 1.0)), "wall_s": wall,
            "rss_before_MiB": rss_before / 1024,
            "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=128, help="crop edge in voxels (0: the whole volume)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--voxel-um", type=float, default=0.4, help="voxel size assumed (um)")
    p.add_argument("--split-depth", type=float, default=1.5, help="watershed h-maxima depth (voxels)")
    p.add_argument("--min-voxels", type=int, default=30, help="active islands below this are removed")
    p.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)  # the worker process
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if a.one:
        print(json.dumps(one(a.size, a.one, a.voxel_um, a.split_depth, a.min_voxels)))
        return
    rows = []
    for method in a.methods:
        log.info("%s on %s ...", method, f"{a.size}^3 crop" if a.size else "whole volume")
        out = subprocess.run([sys.executable, __file__, "--one", method, "--size", str(a.size),
                              "--voxel-um", str(a.voxel_um), "--split-depth", str(a.split_depth),
                              "--min-voxels", str(a.min_voxels)], capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{method} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        log.info("%s: %d particles in %.1f s", method, rows[-1]["particles"], rows[-1]["wall_s"])
    shape = "x".join(map(str, rows[0]["shape"]))
    print(f"| MATBOX {shape}, {a.voxel_um} um voxels | particles | median d (um) | d 10 / 90 % (um) "
          "| d < 1 um | labelling s | peak RSS MiB (before labelling) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        name = f"watershed, depth {a.split_depth}" if r["method"] == "watershed" else "SNOW (r_max 4, sigma 0.4)"
        print(f"| {name} | {r['particles']:,} | {r['d_median']:.2f} | {r['d_p10']:.2f} / {r['d_p90']:.2f} "
              f"| {100 * r['below_1um']:.1f} % | {r['wall_s']:.1f} "
              f"| {r['peak_rss_MiB']:.0f} ({r['rss_before_MiB']:.0f}) |")


if __name__ == "__main__":
    main()
