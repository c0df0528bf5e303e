"""Delamination during a 1C charge of a MATBOX crop: the cohesive band (matrix-free) against bonded and the reference.

Usage::

    python benchmarks/cohesive_charge.py [--size 96] [--steps 40] [--output-every 10]
        [--reference] [--halve] [--precision mixed|float64] [--no-bonded] [--max-cuts K]
        [--contact-corrections K] [--coarse split|trilinear] [--split-patience F]

Runs, one after the other in this process, on the same centred crop:

- ``bonded``: the matrix-free bonded run, mechanics at every step (the time to beat, x3);
- ``band``: ``[interface] model = "cohesive"`` on the matrix-free multigrid, mechanics at every
  step (the damage masks the flux), the pipeline's defaults (100 MPa, 1 J/m^2, averaging 1.5 voxels);
- ``reference`` (``--reference``): the assembled node-pair model with the same law;
- ``halved`` (``--halve``): the band with twice the steps.

Prints per run: dof, set-up and loop wall time, s per step, peak memory (ru_maxrss of the
process, so the largest so far), CG iterations per solve against the debonded fraction, and
the debonded fraction (area-weighted, d = 1) at the written steps. With the reference: the
largest difference of the debonded fraction over the written steps, the correlation of the
per-particle debonded fractions at the end, and the particles isolated (no bonded face) by each.
NMC811 in Li6PS5Cl, theta 1.0 -> 0.22, voxel 0.4 um. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.io import read_volume  # noqa: E402
from segmentation import label_particles, remove_small_particles  # noqa: E402
from solvers import fields  # noqa: E402
from solvers.mesh import voxel_hex_mesh  # noqa: E402
from solvers.physics import CohesiveLaw, CohesiveProblem, ElasticProblem, default_penalty, get_material  # noqa: E402
from solvers.physics.cohesive.voxel import VoxelCohesiveProblem  # noqa: E402
from solvers.physics.transient import Galvanostatic, galvanostatic_states  # noqa: E402

SAMPLE = ROOT / "samples/matbox_nmc/nmc-1-cal_generatedCBD_bridge.tif"
H = 0.4e-6
AVERAGING_VOXELS = 1.5  # the pipeline's default on voxel hexes


def crop(n: int):
    raw = read_volume(SAMPLE).data
    z0, y0, x0 = ((np.array(raw.shape) - n) // 2).tolist()
    phases = np.array([1, 2, 0], np.uint8)[raw[z0:z0 + n, y0:y0 + n, x0:x0 + n]]
    phases = remove_small_particles(phases, 30)
    particles = label_particles(phases, spacing=(0.4,) * 3, split_depth=1.5)
    return voxel_hex_mesh(phases, particles, [H] * 3)


#: the band's stepping and coarse spaces (``--max-cuts``, ``--contact-corrections``, ``--coarse``); absent: defaults
STEPPING = {}
#: ``--split-patience``: stale split levels may take this many times their first CG count (0: rebuild at once)
PATIENCE = None


def build(model: str, mesh, faces, precision: str):
    nmc, se = get_material("NMC811"), get_material("Li6PS5Cl")
    mats = {1: se, 2: nmc}
    law = CohesiveLaw(strength_Pa=100e6, fracture_energy_J_m2=1.0, penalty_Pa_m=default_penalty(nmc.E, se.E, H))
    if model == "bonded":
        return ElasticProblem(mesh, mats, rtol=1e-8, backend="matrix-free", precision=precision)
    if model == "reference":
        return CohesiveProblem(mesh, mats, faces, law, rtol=1e-8, averaging_length_m=AVERAGING_VOXELS * H)
    return VoxelCohesiveProblem(mesh, mats, faces, law, rtol=1e-8, averaging_length_m=AVERAGING_VOXELS * H,
                                precision=precision, **STEPPING)


def run(model: str, mesh, faces, steps: int, output_every: int, precision: str) -> dict:
    nmc = get_material("NMC811")
    t0 = time.perf_counter()
    mech = build(model, mesh, faces, precision)
    if model == "band" and PATIENCE is not None:
        mech.solver.split_patience = PATIENCE
    setup = time.perf_counter() - t0
    cohesive = model != "bonded"
    proto = Galvanostatic(c_rate=1.0, soc_start=1.0, soc_end=0.22, steps=steps)
    info, debonded, written = {}, [], []
    n_solves = 0
    t0 = time.perf_counter()
    every = 1 if model == "bonded" else output_every  # bonded: mechanics at every step, as the band has it
    states = galvanostatic_states(mech, nmc, faces, proto, output_every=every, stats=info,
                                  backend="matrix-free" if model != "reference" else "assembled",
                                  flux_mask=(lambda _s: mech.face_damage() < 1.0) if cohesive else None)
    for st in states:
        written.append(st.step)
        if cohesive:
            debonded.append(mech.area_fractions()[1])
    wall = time.perf_counter() - t0
    ms = mech.solver.stats
    if model == "band":
        iters = [r["cg_iterations"] / max(r["solves"], 1) for r in mech.history]
        n_solves = sum(r["solves"] for r in mech.history)
    else:
        iters, n_solves = list(ms.iterations), len(ms.iterations)
    out = {"model": model, "mech": mech, "setup_s": setup, "wall_s": wall, "steps": steps,
           "written": written, "debonded": debonded, "cg_per_solve": iters, "solves": n_solves,
           "peak_GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
           "diffusion_s": float(np.sum(info["diffusion"].solve_s))}
    print(f"== {model}: {3 * mesh.n_nodes:,} dof, {ms.method}, set-up {setup:.1f} s, time loop {wall:.1f} s "
          f"({wall / steps:.2f} s per step; diffusion {out['diffusion_s']:.1f} s), {n_solves} linear solves, "
          f"peak memory so far {out['peak_GB']:.2f} GB")
    if cohesive:
        print(f"   debonded fraction at written steps {written}: {np.round(debonded, 4).tolist()}")
        if model == "band":
            h = mech.history
            print(f"   band: {sum(r['increments'] for r in h)} increments, {sum(r['cuts'] for r in h)} cuts, "
                  f"largest IMPL-EX error {max(r['error'] for r in h):.3f} of the strength, "
                  f"{sum(r['updated_voxels'] for r in h)} band-voxel updates of {mech.band_geometry.n}, "
                  f"operator updates {dict(mech.solver.band_updates)}")
            print(f"   CG iterations per linear solve, by step: {np.round(iters, 1).tolist()}")
    else:
        print(f"   CG iterations per solve: {iters}")
    return out


def per_particle(mech) -> tuple[np.ndarray, np.ndarray]:
    """(debonded fraction per particle, isolated mask) at the end, particles with an interface."""
    fd, area, part = mech.face_damage(), mech.interface.face_area, mech.interface_particle
    n = int(part.max()) + 1
    tot = np.bincount(part, weights=area, minlength=n)
    deb = np.bincount(part, weights=area * (fd >= 1), minlength=n)
    has = tot > 0
    has[0] = False
    bonded = np.bincount(part[fd < 1], minlength=n) > 0
    return deb[has] / tot[has], ~bonded[has]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--output-every", type=int, default=10)
    ap.add_argument("--precision", default="mixed", choices=("mixed", "float64"))
    ap.add_argument("--reference", action="store_true", help="also run the assembled node-pair model")
    ap.add_argument("--halve", action="store_true", help="also run the band with twice the steps")
    ap.add_argument("--no-bonded", action="store_true", help="skip the bonded run")
    ap.add_argument("--max-cuts", type=int, help="band: smallest increment 1/2^k of a step (0: one solve per step)")
    ap.add_argument("--contact-corrections", type=int, help="band: re-solves for a changed contact state")
    ap.add_argument("--coarse", choices=("split", "trilinear"), help="band: the multigrid's coarse spaces")
    ap.add_argument("--split-patience", type=float, help="band, split: rebuild after this many times the "
                    "iterations of the levels' first solve (0: whenever voxels open or close)")
    a = ap.parse_args()
    STEPPING.update({k: v for k, v in (("max_cuts", a.max_cuts), ("contact_corrections", a.contact_corrections),
                                       ("coarse", a.coarse)) if v is not None})
    global PATIENCE
    PATIENCE = a.split_patience
    t0 = time.perf_counter()
    mesh = crop(a.size)
    faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    print(f"crop {a.size}^3: {int(mesh.particles.max())} particles, {faces['area'].size} AP|SE faces, "
          f"prepared in {time.perf_counter() - t0:.1f} s; {a.steps} steps of a 1C charge")
    runs = {}
    for model in (["bonded"] if not a.no_bonded else []) + ["band"] + (["reference"] if a.reference else []):
        runs[model] = run(model, mesh, faces, a.steps, a.output_every, a.precision)
    if "bonded" in runs:
        b = runs["bonded"]
        print(f"band / bonded time loop: {runs['band']['wall_s'] / b['wall_s']:.2f}x; CG per solve bonded "
              f"mean {np.mean(b['cg_per_solve']):.1f}")
    band = runs["band"]
    if "reference" in runs:
        ref = runs["reference"]
        diff = np.abs(np.array(band["debonded"]) - np.array(ref["debonded"]))
        fb, ib = per_particle(band["mech"])
        fr, ir = per_particle(ref["mech"])
        r = np.corrcoef(fb, fr)[0, 1] if fb.std() > 0 and fr.std() > 0 else float("nan")
        print(f"band vs reference: debonded fraction differs by at most {diff.max():.4f} over the written steps "
              f"({np.round(diff, 4).tolist()}); per-particle debonded fractions r = {r:.3f} over {fb.size} "
              f"particles; isolated at the end: band {np.flatnonzero(ib).tolist()}, reference "
              f"{np.flatnonzero(ir).tolist()}; time loop reference / band {ref['wall_s'] / band['wall_s']:.1f}x")
    if a.halve:
        half = run("band", mesh, faces, 2 * a.steps, 2 * a.output_every, a.precision)
        print(f"halving the time step changes the final debonded fraction by "
              f"{half['debonded'][-1] - band['debonded'][-1]:+.4f}")


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="  %(message)s")
    main()
