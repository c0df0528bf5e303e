"""Transient 1C charge of a MATBOX crop: time per step split into diffusion and mechanics.

Usage: python benchmarks/transient_charge.py [SIZE] [STEPS] [OUTPUT_EVERY] [cohesive]
[--backend assembled|matrix-free] [--local] [--feedback-every N] [--newton-rtol X]
[--contact-factor C]
(default 96 40 10 assembled; matrix-free: mechanics by geometric multigrid in mixed precision,
diffusion by Jacobi-CG, bonded runs only).
Mechanics runs at every written step (exact for one-way coupling); its preconditioner is
built once and reused for every solve.
NMC811 (volume-change table) in Li6PS5Cl, theta 1.0 -> 0.22, voxel 0.4 um.
With ``cohesive`` the same charge runs again with a cohesive AP|SE interface
(100 MPa, 1 J/m^2, default penalty, the opening averaged over 1.5 voxels as the
pipeline does on voxel hexes, ``--local`` for the local law; mechanics at every step
because the damage masks the flux, or every N-th step and at written steps with
``--feedback-every N``; ``--newton-rtol`` and ``--contact-factor``: the pipeline's [interface]
newton_rtol and contact_factor, default 1e-6 and 1)
and the wall-time ratio to the bonded run is printed, with
the debonded fraction and the particles' mean theta at the written steps.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.io import read_volume  # noqa: E402
from segmentation import label_particles, remove_small_particles  # noqa: E402
from solvers import fields  # noqa: E402
from solvers.mesh import voxel_hex_mesh  # noqa: E402
from solvers.physics import CohesiveLaw, CohesiveProblem, ElasticProblem, default_penalty, get_material  # noqa: E402
from solvers.physics.transient import Galvanostatic, galvanostatic_states  # noqa: E402

SAMPLE = ROOT / "samples/matbox_nmc/nmc-1-cal_generatedCBD_bridge.tif"
#: the pipeline's default [interface] averaging_voxels on voxel hexes (--local: 0, the local law)
AVERAGING_VOXELS = 1.5


def matbox_phases(n: int) -> np.ndarray:
    """Phase codes of the centred n^3 crop of the MATBOX sample (0: the whole volume), mapped as the
    demo maps them: pore -> electrolyte, NMC -> active, binder -> void."""
    raw = read_volume(SAMPLE).data
    if n:
        z0, y0, x0 = ((np.array(raw.shape) - n) // 2).tolist()
        raw = raw[z0:z0 + n, y0:y0 + n, x0:x0 + n]
    return np.array([1, 2, 0], np.uint8)[raw]


def matbox_crop(n: int):
    """The centred n^3 crop of the MATBOX sample as phases and particles (the demo's segmentation),
    and the segmentation time in s."""
    phases = matbox_phases(n)
    t0 = time.perf_counter()
    phases = remove_small_particles(phases, 30)
    particles = label_particles(phases, spacing=(0.4,) * 3, split_depth=1.5)
    return phases, particles, time.perf_counter() - t0


def main(n=96, steps=40, output_every=10, interface="bonded", backend="assembled", feedback_every=1,
         newton_rtol=1e-6, contact_factor=1.0):
    phases, particles, t_seg = matbox_crop(n)
    mesh = voxel_hex_mesh(phases, particles, [0.4e-6] * 3)
    nmc, se = get_material("NMC811"), get_material("Li6PS5Cl")
    faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing)
    proto = Galvanostatic(c_rate=1.0, soc_start=1.0, soc_end=0.22, steps=steps)
    walls = {}
    for model in ("bonded", "cohesive") if interface == "cohesive" else ("bonded",):
        t0 = time.perf_counter()
        if model == "bonded":
            mech = ElasticProblem(mesh, {1: se, 2: nmc}, rtol=1e-8, backend=backend,
                                  precision="mixed" if backend == "matrix-free" else "float64")
            mask = None
        else:
            law = CohesiveLaw(strength_Pa=100e6, fracture_energy_J_m2=1.0,
                              penalty_Pa_m=default_penalty(nmc.E, se.E, 0.4e-6), contact_factor=contact_factor)
            mech = CohesiveProblem(mesh, {1: se, 2: nmc}, faces, law, rtol=1e-8,
                                   averaging_length_m=AVERAGING_VOXELS * 0.4e-6, nl_rtol=newton_rtol)
            mask = partial(_bonded_faces, mech)
        info = {}
        peak, soc, debonded = [], [], []
        in_particles = mech.mesh.cell_phase == 2
        for st in galvanostatic_states(mech, nmc, faces, proto, output_every=output_every, stats=info,
                                       flux_mask=mask, backend=backend if model == "bonded" else "assembled",
                                       feedback_every=feedback_every):
            peak.append(np.nanmax(fields.von_mises(st.sigma[in_particles])) / 1e6)
            soc.append(float(st.theta_cell[in_particles].mean()))
            if model == "cohesive":
                debonded.append(float(np.mean(mech.face_damage() >= 1.0)))
        wall = walls[model] = time.perf_counter() - t0
        report(model, n, particles, t_seg, mesh, mech, info, steps, wall, peak)
        print(f"particle mean theta at written steps: {np.round(soc, 4).tolist()}")
        if model == "cohesive":
            print(f"mechanics (and flux mask) every {feedback_every} steps and at written steps; debonded "
                  f"fraction at written steps: {np.round(debonded, 3).tolist()}")
    if len(walls) == 2:
        print(f"cohesive / bonded wall time: {walls['cohesive'] / walls['bonded']:.1f}x")


def _bonded_faces(mech, _state):
    """Flux mask of a cohesive run: faces not fully debonded."""
    return mech.face_damage() < 1.0


def report(model, n, particles, t_seg, mesh, mech, info, steps, wall, peak):
    """Print one run's table rows."""
    dstats = info["diffusion"]
    ms = mech.solver.stats
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"== {model}: crop {n}^3, {particles.max()} particles, segmentation {t_seg:.1f} s")
    print(f"mechanics: {3 * mesh.n_nodes:,} dof, {ms.method}, assembly {mech.timings['assembly_s']:.1f} s, "
          f"setup once {ms.setup_s:.1f} s, {len(ms.iterations)} solves, mean {np.mean(ms.solve_s):.1f} s, "
          f"iterations {ms.iterations}")
    print(f"diffusion: {info['diffusion_nodes']:,} nodes, setup once {dstats.setup_s:.2f} s, "
          f"{len(dstats.iterations)} solves, "
          f"mean {np.mean(dstats.solve_s):.2f} s ({dstats.method})")
    print(f"time loop {wall:.1f} s for {steps} steps ({wall / steps:.1f} s per step), peak memory {rss:.2f} GB")
    print(f"peak von Mises in particles at written steps (MPa): {np.round(peak, 1).tolist()}")
    if model == "cohesive":
        h = mech.history
        print(f"cohesive: {sum(r['nonlinear_iterations'] for r in h)} Newton iterations over {len(h)} solves, "
              f"{sum(r['cuts'] for r in h)} step cuts, {mech.rebuilds} preconditioner rebuilds, "
              f"{sum(r['linear_iterations'] for r in h)} CG iterations, "
              f"{sum(r['secant_directions'] for r in h)} tangent directions rejected (secant instead), "
              f"{sum(r.get('stagger_rounds', 0) for r in h)} loads solved again for softened springs, "
              f"debonded fraction at the end {float(np.mean(mech.face_damage() >= 1.0)):.3f}")


if __name__ == "__main__":
    # a cohesive run's progress: one line per solve on stderr (CohesiveProblem logs it)
    logging.basicConfig(stream=sys.stderr, format="  %(message)s")
    logging.getLogger("solvers.physics.cohesive").setLevel(logging.INFO)
    argv = sys.argv[1:]
    opts = {}
    for flag in ("--backend", "--feedback-every", "--newton-rtol", "--contact-factor"):
        if flag in argv:
            k = argv.index(flag)
            opts[flag] = argv[k + 1]
            del argv[k:k + 2]
    if "--local" in argv:
        AVERAGING_VOXELS = 0.0
    main(*[int(a) for a in argv if a.isdigit()], interface="cohesive" if "cohesive" in argv else "bonded",
         backend=opts.get("--backend", "assembled"), feedback_every=int(opts.get("--feedback-every", 1)),
         newton_rtol=float(opts.get("--newton-rtol", 1e-6)), contact_factor=float(opts.get("--contact-factor", 1)))
