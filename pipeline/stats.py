"""Per-particle tables and per-step electrode summaries (pure functions over arrays)."""

from __future__ import annotations

import numpy as np

from solvers import fields

PA_TO_MPA = 1e-6
PHASE_NAMES = {0: "void", 1: "electrolyte", 2: "active"}


def particle_step_table(geometry: dict[str, np.ndarray], *, step: int, time_s: float, soc: float,
                        cell_theta: np.ndarray, cell_particle: np.ndarray, sigma: np.ndarray,
                        faces: dict[str, np.ndarray], face_tn: np.ndarray,
                        cell_volume: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One row per particle for one step.

    Parameters
    ----------
    geometry : dict of (N,) arrays from :func:`segmentation.particle_geometry`
    step : int
    time_s : float
    soc : float
        Electrode-mean theta at this step (same on every row).
    cell_theta : (ne,) cell-mean theta of every cell
    cell_particle : (ne,) particle id of each cell (0 outside particles)
    sigma : (ne, 3, 3) cell stresses, Pa
    faces : AP|SE faces from :func:`solvers.fields.interface_faces`
    face_tn : (nf,) normal traction on those faces, Pa (tension positive)
    cell_volume : (ne,) m^3, optional
        Weights of the means and percentiles over cells (needed on tetrahedra,
        whose cells differ in size; equal weights when omitted).

    Returns
    -------
    dict of (N,) columns, stresses in MPa.
    """
    n = geometry["particle_id"].size
    m = n + 1
    sel = cell_particle > 0
    grp = cell_particle[sel]
    s = sigma[sel]
    w = None if cell_volume is None else np.asarray(cell_volume, float)[sel]
    vm = fields.group_stats(grp, fields.von_mises(s), m, weights=w, percentiles=(95,))
    hy = fields.group_stats(grp, fields.hydrostatic(s), m, weights=w)
    mp = fields.group_stats(grp, fields.max_principal(s), m, weights=w)
    tn = fields.group_stats(faces["particle"], face_tn, m, weights=faces["area"])
    th = fields.group_stats(grp, cell_theta[sel], m, weights=w)
    cols = {"particle_id": geometry["particle_id"], "step": np.full(n, step, np.int64),
            "time_s": np.full(n, float(time_s)), "soc": np.full(n, float(soc))}
    cols.update({k: v for k, v in geometry.items() if k != "particle_id"})
    cols.update({"soc_mean": th["mean"][1:], "soc_min": th["min"][1:], "soc_max": th["max"][1:]})
    body = {
        "meshed": vm["count"][1:] > 0,
        "von_mises_mean_MPa": vm["mean"], "von_mises_p95_MPa": vm["p95"], "von_mises_max_MPa": vm["max"],
        "hydrostatic_mean_MPa": hy["mean"], "hydrostatic_min_MPa": hy["min"],
        "hydrostatic_max_MPa": hy["max"], "max_principal_max_MPa": mp["max"],
        "interface_normal_traction_mean_MPa": tn["mean"],
        "interface_normal_traction_max_MPa": tn["max"],
    }
    for k, v in body.items():
        cols[k] = v if k == "meshed" else v[1:] * PA_TO_MPA
    return cols


def step_summary(*, step: int, soc: float, phases: np.ndarray, cell_phase: np.ndarray,
                 sigma: np.ndarray, faces: dict, face_tn: np.ndarray, cell_volume: np.ndarray | None = None,
                 region: np.ndarray | None = None) -> dict:
    """Electrode summary of one step: phase fractions and phase stress statistics (MPa).

    Means and the 95th percentile over cells are weighted by ``cell_volume`` when given.
    Phase fractions are taken over the voxels of ``region`` ((Z, Y, X) bool, the field of
    view) when given, else over the whole box.
    """
    counted = phases.ravel() if region is None else phases[region]
    frac = np.bincount(counted, minlength=3) / counted.size
    out = {"step": int(step), "soc": float(soc),
           "phase_fractions": {PHASE_NAMES[k]: float(frac[k]) for k in range(3)},
           "void_fraction": float(frac[0]),
           "active_interface_area_um2": float(faces["area"].sum() * 1e12),
           "interface_normal_traction_mean_MPa": _mpa(np.average(face_tn, weights=faces["area"])
                                                      if face_tn.size else np.nan),
           "interface_normal_traction_p95_MPa": _mpa(np.percentile(face_tn, 95) if face_tn.size else np.nan),
           "phases": {}}
    vm = fields.von_mises(sigma)
    hy = fields.hydrostatic(sigma)
    for code in (1, 2):
        sel = cell_phase == code
        if not sel.any():
            continue
        w = None if cell_volume is None else np.asarray(cell_volume, float)[sel]
        g = np.zeros(int(sel.sum()), np.int64)
        v = fields.group_stats(g, vm[sel], 1, weights=w, percentiles=(95,))
        h = fields.group_stats(g, hy[sel], 1, weights=w)
        out["phases"][PHASE_NAMES[code]] = {
            "von_mises_mean_MPa": _mpa(v["mean"][0]),
            "von_mises_p95_MPa": _mpa(v["p95"][0] if w is not None else np.percentile(vm[sel], 95)),
            "von_mises_max_MPa": _mpa(v["max"][0]),
            "hydrostatic_mean_MPa": _mpa(h["mean"][0]),
            "hydrostatic_min_MPa": _mpa(h["min"][0]),
            "hydrostatic_max_MPa": _mpa(h["max"][0]),
        }
    return out


def _mpa(v) -> float:
    return float(v) * PA_TO_MPA


def stack_tables(tables: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-step tables column by column."""
    if not tables:
        return {}
    return {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}


def interface_damage_table(geometry: dict[str, np.ndarray], prob, face_damage: np.ndarray) -> dict[str, np.ndarray]:
    """Per-particle delamination columns of one step (cohesive interface).

    Areas are the AP|SE face areas projected normal to the smoothed normal
    (the cohesive elements' areas), so fractions compare like with like.

    Parameters
    ----------
    geometry : particle geometry table (for ``particle_id``)
    prob : solvers.physics.CohesiveProblem
    face_damage : (nf,) damage of every AP|SE face

    Returns
    -------
    dict of (N,) columns: ``interface_damage_mean``, ``debonded_area_um2``,
    ``debonded_fraction`` (d = 1), ``damaged_fraction`` (d > 0),
    ``largest_debonded_patch_fraction`` (largest connected d = 1 patch / interface area).
    """
    from solvers.physics.cohesive import debonded_patches

    n = geometry["particle_id"].size
    it = prob.interface
    area = it.face_area
    part = prob.interface_particle
    tot = np.bincount(part, weights=area, minlength=n + 1)
    deb = face_damage >= 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "interface_damage_mean": np.bincount(part, weights=area * face_damage, minlength=n + 1) / tot,
            "debonded_area_um2": np.bincount(part, weights=area * deb, minlength=n + 1) * 1e12,
            "debonded_fraction": np.bincount(part, weights=area * deb, minlength=n + 1) / tot,
            "damaged_fraction": np.bincount(part, weights=area * (face_damage > 0), minlength=n + 1) / tot,
            "largest_debonded_patch_fraction": debonded_patches(it.face_pairs, deb, part, area, n + 1) / tot,
        }
    return {k: v[1:] for k, v in out.items()}


def interface_damage_summary(prob, face_damage: np.ndarray, mesh) -> dict:
    """Electrode delamination summary of one step: debonded fraction, bonded area, accessible capacity."""
    area = prob.interface.face_area
    bonded = face_damage < 1.0
    part = prob.interface_particle
    n = int(mesh.particles.max()) + 1
    reach = np.bincount(part[bonded], minlength=n) > 0
    vol = np.bincount(mesh.particles.ravel(), minlength=n)
    vol[0] = 0
    damaged, debonded = prob.area_fractions(face_damage)
    return {
        "debonded_fraction": debonded,
        "damaged_fraction": damaged,
        "bonded_interface_area_um2": float(area[bonded].sum() * 1e12),
        "capacity_accessible_fraction": float(vol[reach].sum() / max(vol.sum(), 1)),
    }


def cell_face_max(face_values: np.ndarray, face_cell: np.ndarray, n_cells: int) -> np.ndarray:
    """Largest value over the faces of every cell (0 for cells without a face), (n_cells,)."""
    out = np.zeros(n_cells)
    np.maximum.at(out, face_cell, face_values)
    return out


def kinetics_table(geometry: dict[str, np.ndarray], faces: dict[str, np.ndarray], electro: dict) -> dict:
    """Per-particle electrochemistry of one step (Butler-Volmer runs).

    Parameters
    ----------
    geometry : particle geometry table (for ``particle_id``)
    faces : AP|SE faces
    electro : a state's ``electro`` record (:class:`solvers.physics.transient.State`)

    Returns
    -------
    dict of (N,) columns: ``current_share`` (fraction of the cell current, positive = the
    cell's direction), ``current_density_mean_A_m2`` and ``overpotential_mean_V`` (area means
    over the faces that carry current), ``surface_soc_mean`` (area mean over all AP|SE faces),
    ``ionically_isolated`` (no face with an ionic path to the separator).
    """
    n = geometry["particle_id"].size
    part, area = faces["particle"], faces["area"]
    on = electro["carries"]
    w = np.bincount(part, weights=area * on, minlength=n + 1)
    cur = np.bincount(part, weights=area * electro["i_face"], minlength=n + 1)
    total = electro["current_A"]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "current_share": cur / total if total else np.zeros(n + 1),
            "current_density_mean_A_m2": cur / w,
            "overpotential_mean_V": np.bincount(part, weights=area * on * electro["eta_face"], minlength=n + 1) / w,
            "surface_soc_mean": (np.bincount(part, weights=area * electro["theta_face"], minlength=n + 1)
                                 / np.bincount(part, weights=area, minlength=n + 1)),
            "ionically_isolated": np.bincount(part, weights=electro["connected"], minlength=n + 1) == 0,
        }
    return {k: v[1:] for k, v in out.items()}


def kinetics_summary(electro: dict, point_area: np.ndarray | None = None) -> dict:
    """Electrode electrochemistry of one step: cell voltage, current, iterations; with a stress-coupled
    open-circuit potential, its shift ``Omega sigma_h / F`` averaged over the interface points (area
    weights ``point_area``, m^2), V."""
    out = {"cell_voltage_V": float(electro["phi_s"]), "current_A": float(electro["current_A"]),
           "kinetic_iterations": int(electro["kinetic_iterations"]),
           "newton_iterations": int(electro["newton_iterations"])}
    if "ocp_shift" in electro:
        out["ocp_stress_shift_mean_V"] = float(np.average(electro["ocp_shift"], weights=point_area))
    return out


def plastic_shells(mesh, shell_voxels: float) -> np.ndarray:
    """(ne,) particle id of the electrolyte shell each cell lies in, 0 outside every shell: the
    electrolyte cells of the particles' Voronoi shells (:func:`segmentation.geometry.voronoi_shells`,
    the shells of ``local_void_fraction``)."""
    from segmentation.geometry import voronoi_shells

    owner = voronoi_shells(mesh.particles, mesh.spacing, shell_voxels).ravel()[mesh.cell_voxel]
    return np.where(mesh.cell_phase == 1, owner, 0)


def plasticity_table(geometry: dict[str, np.ndarray], shell: np.ndarray, equivalent: np.ndarray,
                     cell_volume: np.ndarray) -> dict[str, np.ndarray]:
    """Per-particle plastic zone of one step.

    Parameters
    ----------
    shell : (ne,) particle of every cell's electrolyte shell (:func:`plastic_shells`), 0: none
    equivalent : (ne,) equivalent plastic strain of every cell
    cell_volume : (ne,) m^3

    Returns
    -------
    dict of (N,) columns: ``plastic_zone_fraction`` (yielded volume share of the particle's
    electrolyte shell) and ``plastic_strain_max`` (largest equivalent plastic strain in it).
    """
    n = geometry["particle_id"].size + 1
    tot = np.bincount(shell, weights=cell_volume, minlength=n)
    yielded = np.bincount(shell, weights=cell_volume * (equivalent > 0), minlength=n)
    peak = np.zeros(n)
    np.maximum.at(peak, shell, equivalent)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(tot > 0, yielded / tot, np.nan)
    return {"plastic_zone_fraction": frac[1:], "plastic_strain_max": peak[1:]}


def plasticity_summary(cell_phase: np.ndarray, equivalent: np.ndarray, cell_volume: np.ndarray,
                       phases: dict[int, str]) -> dict:
    """Electrode plasticity of one step, per plastic phase: yielded volume share, mean and largest
    equivalent plastic strain (``{name}_yielded_fraction``, ``{name}_plastic_strain_mean``, ``..._max``)."""
    out = {}
    for code, name in phases.items():
        sel = cell_phase == code
        if not sel.any():
            continue
        v, e = cell_volume[sel], equivalent[sel]
        out[f"{name}_yielded_fraction"] = float(v[e > 0].sum() / v.sum())
        out[f"{name}_plastic_strain_mean"] = float(np.average(e, weights=v))
        out[f"{name}_plastic_strain_max"] = float(e.max())
    return out
