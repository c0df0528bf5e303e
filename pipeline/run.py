"""The pipeline: stages, caching by content hash, provenance.

Stages (each reads and writes the results folder, see shared/DESIGN.md)::

    segment : stack -> phases.tif, particles.tif
    describe: phases, particles -> microstructure.json (descriptors, electrolyte tortuosity)
    mesh    : phases, particles -> mesh.xdmf (mesh.vtu on request)
    solve   : mesh -> fields.xdmf/.h5, particles.csv, summary.json
    report  : particles.csv, summary.json -> report.html + PNGs

A stage is skipped when its key (a hash of its inputs and options) matches
the key recorded in ``.tomomech/stages.json`` and its files exist, so
changing a solver option does not re-segment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.config import Config, dump_config
from pipeline.problem import build_problem, kinetic_flux, load_states, step_parts
from pipeline.stats import (
    particle_step_table,
    stack_tables,
    step_summary,
)
from tomomech import __version__
from tomomech.errors import ConfigError, InputError

log = logging.getLogger(__name__)

#: progress callback: (stage, done, total) -> None
Progress = Callable[[str, int, int], None]

STAGE_FILES = {
    "segment": ("phases.tif", "particles.tif"),
    "describe": ("microstructure.json",),
    "mesh": ("mesh.xdmf", "mesh.h5"),
    "solve": ("fields.xdmf", "fields.h5", "particles.csv", "summary.json"),
}
STATE = ".tomomech/stages.json"
EDITS = "edits"
MIN_VOXELS_PER_AXIS = 4


def _noop(stage: str, done: int, total: int) -> None:
    pass


def content_key(*parts) -> str:
    """Short SHA-256 of JSON-serialised parts: the cache key of a stage or a study case."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


@dataclass
class Workspace:
    """A results folder with its stage state."""

    out: Path

    def state(self) -> dict:
        p = self.out / STATE
        return json.loads(p.read_text()) if p.exists() else {}

    def fresh(self, stage: str, key: str) -> bool:
        files = STAGE_FILES.get(stage, ())
        return self.state().get(stage) == key and all((self.out / f).exists() for f in files)

    def mark(self, stage: str, key: str) -> None:
        st = self.state()
        st[stage] = key
        io.write_json(self.out / STATE, st)


# ----------------------------------------------------------------------------- stages

def segment_stage(image: np.ndarray, sc, spacing_um) -> tuple[np.ndarray, np.ndarray]:
    """Grey values or labels -> (phases uint8, particles int32). Pure.

    Parameters
    ----------
    image : (Z, Y, X) grey values or labels
    sc : SegmentationConfig
    spacing_um : (3,) voxel size
    """
    from segmentation import classify_thresholds, label_particles, map_phases, remove_small_particles

    inside = None
    if sc.method == "labels":
        if not np.issubdtype(image.dtype, np.integer):
            raise InputError(f"segmentation.method = 'labels' needs an integer label image, the input is "
                             f"{image.dtype}; use 'multiotsu' or 'thresholds' for grey values")
        classes = image
    else:
        img, inside, thr = grey_thresholds(image, sc)
        classes = classify_thresholds(img, thr)
    phases = map_phases(classes, sc.int_phase_map())
    if inside is not None:
        log.info("field of view: %.1f %% of every slice lies outside the reconstructed cylinder (one constant "
                 "grey value in every slice); masked as void, not segmented", 100 * (1 - inside.mean()))
        phases[:, ~inside] = 0
    phases = remove_small_particles(phases, sc.min_particle_voxels)
    particles = label_particles(phases, spacing=spacing_um, split_touching=sc.split_touching,
                                split_depth=sc.split_depth_voxels, method=sc.split_method)
    return phases, particles


def grey_thresholds(image: np.ndarray, sc) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The denoised grey values, the field of view ((Y, X) bool or None) and the thresholds that
    split them (``sc.thresholds``, or multi-Otsu over the field of view's values only)."""
    from segmentation import correct_z_drift, denoise, field_of_view, multiotsu_thresholds, remove_rings

    inside = field_of_view(image)
    img = image
    if sc.correct_drift:
        img = correct_z_drift(img, inside, sc.drift_window_slices)
    if sc.remove_rings:
        img = remove_rings(img, width_voxels=sc.ring_width_voxels)
    img = denoise(img, sc.denoise, sc.denoise_strength)
    if sc.method != "multiotsu":
        return img, inside, np.asarray(sc.thresholds, float)
    thr = multiotsu_thresholds(img if inside is None else img[:, inside], 3)
    log.info("multi-Otsu thresholds: %s", np.round(thr, 3).tolist())
    return img, inside, thr


def load_input(cfg: Config) -> tuple[np.ndarray, tuple[float, float, float], str]:
    """Read and crop the stack; resolve the voxel size. Raises before heavy work."""
    vol = io.read_volume(cfg.input.path, crop=cfg.input.crop)
    spacing = cfg.input.spacing_um() or vol.spacing_um
    if spacing is None:
        raise ConfigError(f"{cfg.input.path} carries no voxel size: set input.voxel_size_um "
                          "(micrometres) in the config or --voxel-size-um on the command line")
    if min(vol.data.shape) < MIN_VOXELS_PER_AXIS * cfg.mesh.coarsen:
        raise InputError(f"volume of shape {vol.data.shape} is too small to mesh: need at least "
                         f"{MIN_VOXELS_PER_AXIS * cfg.mesh.coarsen} voxels per axis (with mesh.coarsen = "
                         f"{cfg.mesh.coarsen}); enlarge input.crop")
    return vol.data, tuple(float(s) for s in spacing), io.file_hash(cfg.input.path)


def solve_stage(phases, particles, spacing_um, cfg: Config, out: Path, progress: Progress = _noop,
                inside=None) -> dict:
    """Mesh, solve every step, reduce to particle and summary tables, write them.

    The mechanics problem and the load states come from :mod:`pipeline.problem`;
    this function only times, reduces and writes. ``inside`` ((Y, X) bool, optional): the
    field of view; phase fractions count its voxels only.

    Returns
    -------
    dict: the content of summary.json.
    """
    from segmentation import particle_geometry
    from solvers import fields

    t = {}
    t0 = time.perf_counter()
    mesh = mesh_stage(phases, particles, spacing_um, cfg, out)
    sp_um = np.asarray(spacing_um, float) * cfg.mesh.coarsen
    t["mesh_s"] = time.perf_counter() - t0
    log.info("mesh: %d %s cells, %d nodes, %d dof", mesh.n_cells, mesh.element.name, mesh.n_nodes, 3 * mesh.n_nodes)
    quality = getattr(mesh, "quality", None)  # conforming meshes come with theirs
    if quality is None and cfg.mesh.kind != "voxel-hex":
        from solvers.mesh.conforming import mesh_quality

        quality = mesh_quality(mesh, mesh.phases, mesh.particles)

    region = None if inside is None else np.broadcast_to(coarsen_mask(inside, cfg.mesh.coarsen)[None],
                                                         mesh.phases.shape)
    geom = particle_geometry(mesh.phases, mesh.particles, sp_um, shell_voxels=cfg.statistics.shell_voxels,
                             region=region)
    faces, fa, fs = mesh_interface(mesh, cfg)
    cohesive = cfg.interface.model == "cohesive"
    onset_warning = onset_advice(cfg.mesh, cfg.interface) if cohesive else None
    if onset_warning:
        log.warning(onset_warning)
    prob = build_problem(mesh, faces, cfg)
    t.update(prob.timings)
    vol = mesh.cell_volumes()
    weights = None if cfg.mesh.kind == "voxel-hex" else vol  # tets differ in size: volume-weighted statistics
    diffusion_info = {}
    kinetics = kinetic_flux(mesh, faces, cfg)
    states, n_steps = load_states(prob, faces, cfg, diffusion_info, kinetics)
    parts = step_parts(mesh, geom, faces, prob if cohesive else None, kinetics,
                       prob if cfg.materials.plastic else None, cfg.statistics.shell_voxels)
    is_active = mesh.cell_phase == 2
    tables, summaries = [], []
    t_solve, warned, n_hist = 0.0, False, 0
    # the node-pair cohesive model writes its split mesh: debonded faces open visibly
    with io.time_series_writer(out / "fields.xdmf", prob.mesh.points * 1e6, prob.mesh.cells,
                               mesh.element.name) as write:
        ts = time.perf_counter()
        for st in states:
            t_solve += time.perf_counter() - ts
            progress("solve", st.step, n_steps)
            sig = st.sigma
            tn = fields.normal_traction(sig[fa], sig[fs], faces["normal"])
            soc = float(np.average(st.theta_cell[is_active], weights=vol[is_active]))
            tables.append(particle_step_table(geom, step=st.step, time_s=st.time_s, soc=soc,
                                              cell_theta=st.theta_cell, cell_particle=mesh.cell_particle,
                                              sigma=sig, faces=faces, face_tn=tn, cell_volume=weights))
            s = step_summary(step=st.step, soc=soc, phases=mesh.phases, cell_phase=mesh.cell_phase,
                             sigma=sig, faces=faces, face_tn=tn, cell_volume=weights, region=region)
            outside = float(np.mean((st.theta_cell[is_active] < 0) | (st.theta_cell[is_active] > 1)))
            if outside and not warned:
                log.warning("step %d: %.1f %% of the active volume has theta outside [0, 1]: %s", st.step,
                            100 * outside, THETA_ADVICE[kinetics is None])
                warned = True
            s.update(time_s=st.time_s, half_cycle=st.cycle, solver_iterations=st.iterations,
                     coupling_iterations=st.coupling_iterations, theta_outside_0_1_fraction=outside,
                     **prob.step_record(n_hist))
            n_hist = len(prob.history)
            cell_extra = {}
            for part in parts:  # what the optional physics add: columns, summary entries, cell fields
                cols, entries, cells = part(st)
                tables[-1].update(cols)
                s.update(entries)
                cell_extra.update(cells)
            summaries.append(s)
            if cfg.mesh.kind != "voxel-hex":  # lets viewers put tet fields back on the voxel grid
                cell_extra["voxel"] = mesh.cell_voxel
            write(st.time_s if cfg.cycling.mode == "galvanostatic" else st.step, {"displacement_um": st.u * 1e6},
                  {**cell_extra, **cell_fields(mesh, st.theta_cell, sig)})
            ts = time.perf_counter()
    t["solve_s"] = t_solve
    io.write_csv(out / "particles.csv", stack_tables(tables))
    summary = {
        "mode": cfg.cycling.mode,
        "particle_count": int(geom["particle_id"].size),
        "isolated_particles": int(np.sum(geom["isolated"])),
        "voxel_size_um": sp_um.tolist(),
        "box_um": (np.asarray(mesh.phases.shape) * sp_um).tolist(),
        "mesh": {"kind": cfg.mesh.kind, "element": mesh.element.name, "cells": mesh.n_cells,
                 "nodes": mesh.n_nodes, "dof": prob.n_dof, "removed_floating_voxels": mesh.removed_voxels,
                 **({"quality": quality} if quality else {})},
        **solver_records(prob, kinetics, diffusion_info, {"onset_warning": onset_warning} if cohesive else {}),
        "timings_s": {k: round(v, 3) for k, v in t.items()},
        **({"field_of_view": {"inside_fraction": float(inside.mean())}} if inside is not None else {}),
        "steps": summaries,
    }
    io.write_json(out / "summary.json", summary)
    return summary


def solver_records(prob, kinetics, diffusion_info: dict, interface_extra: dict) -> dict:
    """The summary.json sections the solvers fill: ``solver``, ``interface`` (with ``interface_extra``),
    and where they ran ``plasticity``, ``electrolyte_solver`` and ``diffusion_solver``."""
    interface = prob.summary()
    plasticity = interface.pop("plasticity", None)  # the bulk's law, a section of its own
    out = {"solver": prob.solver.stats.as_dict(), "interface": {**interface, **interface_extra}}
    if plasticity:
        out["plasticity"] = plasticity
    if kinetics is not None:
        out["electrolyte_solver"] = kinetics.elec.summary()
    if diffusion_info:
        out["diffusion_solver"] = {**diffusion_info["diffusion"].as_dict(), "nodes": diffusion_info["diffusion_nodes"]}
    return out


#: the warning when theta leaves [0, 1], by flux rule (uniform: True)
THETA_ADVICE = {True: "the uniform galvanostatic flux over-fills particles with a large interface per volume; "
                      "lower c_rate or narrow the SOC window",
                False: "the particles cannot take the current within one time step; give more [cycling] steps"}


def coarsen_mask(mask: np.ndarray, block: int) -> np.ndarray:
    """A (Y, X) mask on the grid of ``mesh.coarsen = block`` (trailing voxels cropped, as the phases):
    a coarse column is in where most of its block is."""
    b = int(block)
    if b <= 1:
        return mask
    y, x = (s // b for s in mask.shape)
    return mask[:y * b, :x * b].reshape(y, b, x, b).mean(axis=(1, 3)) >= 0.5


def cell_fields(mesh, theta_cell: np.ndarray, sigma: np.ndarray) -> dict[str, np.ndarray]:
    """The cell data of fields.xdmf: labels, state of charge and stress measures (MPa)."""
    from solvers import fields

    return {"phase": mesh.cell_phase, "particle": mesh.cell_particle, "soc": theta_cell,
            "von_mises_MPa": fields.von_mises(sigma) * 1e-6, "hydrostatic_MPa": fields.hydrostatic(sigma) * 1e-6,
            "max_principal_MPa": fields.max_principal(sigma) * 1e-6,
            "stress_MPa": sigma.reshape(-1, 9)[:, [8, 4, 0, 5, 2, 1]] * 1e-6}


def mesh_stage(phases, particles, spacing_um, cfg: Config, out: Path):
    """Coarsen, mesh (``cfg.mesh.kind``) and write mesh.xdmf (and mesh.vtu, mesh.msh).

    Returns
    -------
    VoxelMesh (voxel-hex) or TetMesh (voxel-tet, conforming-tet)
    """
    from solvers.mesh import coarsen_labels, quadratic_tet_mesh, voxel_hex_mesh, voxel_tet_mesh

    ph, pa = coarsen_labels(phases, particles, cfg.mesh.coarsen)
    spacing_m = np.asarray(spacing_um, float) * cfg.mesh.coarsen * 1e-6
    if cfg.mesh.kind == "voxel-hex":
        mesh = voxel_hex_mesh(ph, pa, spacing_m)
    elif cfg.mesh.kind == "voxel-tet":
        mesh = voxel_tet_mesh(ph, pa, spacing_m)
    else:
        from solvers.mesh.conforming import conforming_tet_mesh

        mesh = conforming_tet_mesh(ph, pa, spacing_m, **cfg.mesh.conforming_options())
    if cfg.mesh.order == 2:
        mesh = quadratic_tet_mesh(mesh)
    write_mesh_files(mesh, out, vtu=cfg.mesh.vtu, msh=cfg.mesh.msh)
    return mesh


def mesh_interface(mesh, cfg: Config) -> tuple[dict, np.ndarray, np.ndarray]:
    """AP|SE faces of a mesh and the active and electrolyte cell of each.

    Voxel meshes (hexes and voxel-tets) use the smoothed normals of the label
    image; conforming tets keep the normals of their surface triangles.
    """
    from solvers import fields

    sigma = cfg.statistics.normal_smoothing_voxels
    if cfg.mesh.kind == "voxel-hex":
        faces = fields.interface_faces(mesh.phases, mesh.particles, mesh.spacing, sigma_voxels=sigma)
        cell_of = mesh.voxel_cell
        return faces, cell_of[faces["ap_voxel"]], cell_of[faces["se_voxel"]]
    faces = fields.tet_interface_faces(mesh, sigma_voxels=sigma if cfg.mesh.kind == "voxel-tet" else None)
    return faces, faces["ap_cell"], faces["se_cell"]


def write_mesh_files(mesh, out: Path, vtu: bool = False, msh: bool = False) -> None:
    """mesh.xdmf/.h5 (and mesh.vtu, mesh.msh) with phase and particle cell data; points in micrometres."""
    cd = {"phase": mesh.cell_phase, "particle": mesh.cell_particle}
    for name, on in (("mesh.xdmf", True), ("mesh.vtu", vtu), ("mesh.msh", msh)):
        if on:
            io.write_mesh(out / name, mesh.points * 1e6, mesh.cells, mesh.element.name, cd)


def save_edits(out, phases: np.ndarray, particles: np.ndarray, spacing_um) -> Path:
    """Save hand-edited phases and particle labels; the next run uses them instead of segmenting.

    Particles are kept only where the phase is active, and active voxels without a
    particle label are given back to the electrolyte, so the two stay consistent.
    """
    out = Path(out) / EDITS
    phases = np.asarray(phases, np.uint8).copy()
    particles = np.where(phases == 2, np.asarray(particles), 0).astype(np.int32)
    phases[(phases == 2) & (particles == 0)] = 1
    io.write_volume(out / "phases.tif", phases, spacing_um)
    io.write_volume(out / "particles.tif", particles, spacing_um)
    return out


# ----------------------------------------------------------------------------- driver

def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "tomomech": __version__}
    for pkg in ("numpy", "scipy", "scikit-image", "tifffile", "pyamg", "meshio", "h5py", "matplotlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def run(cfg: Config, *, stages=("segment", "describe", "mesh", "solve", "report"), progress: Progress = _noop,
        force: bool = False) -> Path:
    """Run the pipeline (or some stages of it) into ``cfg.output.dir``.

    Parameters
    ----------
    cfg : Config
    stages : iterable of stage names to run (the earlier ones are loaded from the folder)
    progress : callback (stage, done, total)
    force : bool
        Ignore the cache.

    Returns
    -------
    Path of the results folder.
    """
    with io.results_folder(cfg.output.dir) as out:
        return _run(cfg, out, stages, progress, force)


def _run(cfg: Config, out: Path, stages, progress: Progress, force: bool) -> Path:
    ws = Workspace(out)
    timings = {}
    cached = {}
    t0 = time.perf_counter()
    image, spacing, in_hash = load_input(cfg)  # validates input before any heavy work
    timings["read_s"] = time.perf_counter() - t0
    with io.atomic_path(out / "config.toml") as tmp:
        tmp.write_text(dump_config(cfg))

    seg_key = content_key(in_hash, cfg.input.crop, spacing, asdict(cfg.segmentation), __version__)
    t0 = time.perf_counter()
    if not force and ws.fresh("segment", seg_key):
        phases = io.read_volume(out / "phases.tif").data.astype(np.uint8)
        particles = io.read_volume(out / "particles.tif").data.astype(np.int32)
        cached["segment"] = True
    elif "segment" in stages or not (out / "phases.tif").exists():
        progress("segment", 0, 1)
        phases, particles = segment_stage(image, cfg.segmentation, spacing)
        io.write_volume(out / "phases.tif", phases, spacing)
        io.write_volume(out / "particles.tif", particles, spacing)
        ws.mark("segment", seg_key)
        cached["segment"] = False
        progress("segment", 1, 1)
    else:
        raise InputError(f"{out} holds a segmentation from other inputs: run `tomomech segment` first")
    timings["segment_s"] = time.perf_counter() - t0
    edits = [out / EDITS / f for f in ("phases.tif", "particles.tif")]
    if any(f.exists() for f in edits):  # labels edited by hand (napari) replace the segmentation
        if edits[0].exists():
            phases = io.read_volume(edits[0]).data.astype(np.uint8)
        if edits[1].exists():
            particles = io.read_volume(edits[1]).data.astype(np.int32)
        if phases.shape != particles.shape:
            raise InputError(f"edited labels in {out / EDITS} have shapes {phases.shape} and {particles.shape}")
        seg_key = content_key(seg_key, *(io.file_hash(f) for f in edits if f.exists()))
        cached["edits"] = True
        log.info("using hand-edited labels from %s", out / EDITS)

    if "describe" in stages and (cfg.describe.enabled or "solve" not in stages):  # `tomomech describe` asks for it
        describe_key = content_key(seg_key, asdict(cfg.describe), __version__)
        if not force and ws.fresh("describe", describe_key):
            cached["describe"] = True
        else:
            from pipeline.describe import describe_stage

            t0 = time.perf_counter()
            progress("describe", 0, 1)
            io.write_json(out / "microstructure.json", describe_stage(phases, particles, spacing, cfg.describe))
            ws.mark("describe", describe_key)
            cached["describe"] = False
            timings["describe_s"] = time.perf_counter() - t0
            progress("describe", 1, 1)
    solve_key = content_key(seg_key, *(asdict(getattr(cfg, s)) for s in
                                ("mesh", "materials", "mechanics", "cycling", "solver", "statistics")))
    summary = None
    if "mesh" in stages and "solve" not in stages:
        mesh_stage(phases, particles, spacing, cfg, out)
    if "solve" in stages:
        if not force and ws.fresh("solve", solve_key):
            cached["solve"] = True
            summary = io.read_json(out / "summary.json")
        else:
            from segmentation import field_of_view

            inside = None if cfg.segmentation.method == "labels" else field_of_view(image)
            summary = solve_stage(phases, particles, spacing, cfg, out, progress, inside=inside)
            ws.mark("solve", solve_key)
            cached["solve"] = False
    if "solve" in stages and cfg.uncertainty.samples > 0:
        from pipeline.uncertainty import run_uncertainty

        t0 = time.perf_counter()
        run_uncertainty(cfg, out, spacing, image)
        timings["uncertainty_s"] = time.perf_counter() - t0
    if "report" in stages:
        from pipeline.report import write_report

        t0 = time.perf_counter()
        write_report(out)
        timings["report_s"] = time.perf_counter() - t0
    prov = {
        "versions": versions(),
        "input": {"path": cfg.input.path, "sha256": in_hash, "crop": cfg.input.crop,
                  "voxel_size_um": list(spacing)},
        "stage_keys": ws.state(),
        "cached": cached,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    if summary is not None:
        prov["solver"] = summary["solver"]
        prov["timings_s"].update(summary["timings_s"])
    io.write_json(out / "provenance.json", prov)
    return out


#: the mesh options under which the delamination onset of a sphere is within 5 % of PHYSICS.md 3(d)
ONSET_MESH = ("kind = 'conforming-tet', interface_cell_size_voxels = 0.35, interface_shell_voxels = 1.5, "
              "upsample = 4, smooth_surface_iterations = 20")


def onset_advice(mesh_cfg, interface_cfg) -> str | None:
    """A warning for cohesive runs on meshes whose delamination onset is known to come early, or None.

    The measured onsets of a sphere against PHYSICS.md 3(d) (docs/validation.md): 7 % early on
    voxel hexes with the opening averaged over 1.5 voxels (15-24 % with the local law; shorter
    averaging lengths were not measured with the softening springs), 4 % on conforming tets with
    the options of :data:`ONSET_MESH`, 16-20 % on conforming tets that follow the voxel staircase.
    Voxel tets (local law) were not measured.
    """
    if mesh_cfg.kind == "voxel-hex":
        if interface_cfg.averaging_voxels >= 1.5:
            return None
        return ("interface.model = 'cohesive' on voxel-hex meshes with interface.averaging_voxels = "
                f"{interface_cfg.averaging_voxels:g}: the voxel staircase makes delamination start early (a "
                "sphere's interface is half damaged 15-24 % below the PHYSICS.md 3(d) load with the local law, "
                "7 % with the default averaging_voxels = 1.5); where the onset load matters keep the default or "
                f"use [mesh] {ONSET_MESH}")
    if mesh_cfg.kind != "conforming-tet":
        return (f"interface.model = 'cohesive' on {mesh_cfg.kind} meshes: the voxel staircase makes "
                "delamination start early (the local law on voxel hexes: 15-24 % below the PHYSICS.md 3(d) "
                f"load); where the onset load matters use voxel-hex meshes or [mesh] {ONSET_MESH}")
    if not (mesh_cfg.interface_cell_size_voxels and mesh_cfg.upsample > 1 and mesh_cfg.smooth_surface_iterations):
        return ("interface.model = 'cohesive' on conforming tets without interface shells, upsampling and "
                "surface smoothing: delamination starts 5-20 % early (a sphere against PHYSICS.md 3(d)); "
                f"where the onset load matters use [mesh] {ONSET_MESH}")
    return None
