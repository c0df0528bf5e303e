"""report.html with plots and tables from particles.csv and summary.json."""

from __future__ import annotations

import html
import logging
from pathlib import Path

import numpy as np

from pipeline import io

log = logging.getLogger(__name__)

#: the per-particle stress the report plots: the 95th percentile over the particle's cells. The max
#: sits on a staircase voxel corner (README, limits) and is listed, labelled, in the table only.
PARTICLE_STRESS = "von_mises_p95_MPa"


def _fig():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> str:
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path.name


def make_plots(out: Path, table: dict[str, np.ndarray], summary: dict) -> list[tuple[str, str]]:
    """Write the PNGs; return (file name, caption) pairs."""
    plt = _fig()
    last = int(table["step"].max())
    rows = (table["step"] == last) & table["meshed"]
    interior = rows & ~table["touches_boundary"]
    plots = []

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ph = summary["steps"][-1]["phases"]
    names = list(ph)
    for key, a in (("von_mises", ax[0]), ("hydrostatic", ax[1])):
        vals = [[ph[n][f"{key}_mean_MPa"] for n in names],
                [ph[n].get(f"{key}_p95_MPa", ph[n].get(f"{key}_max_MPa")) for n in names]]
        x = np.arange(len(names))
        a.bar(x - 0.2, vals[0], 0.4, label="mean")
        a.bar(x + 0.2, vals[1], 0.4, label="p95" if key == "von_mises" else "max")
        a.set_xticks(x, names)
        a.set_ylabel(f"{key.replace('_', ' ')} (MPa)")
        a.legend()
    fig.suptitle(f"Stress per phase at step {last}")
    plots.append((_save(plt, fig, out / "stress_by_phase.png"), "Volume statistics of stress per phase."))

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    cut = rows & table["touches_boundary"]
    for a, (xk, xl) in zip(ax, (("eq_diameter_um", "equivalent diameter (µm)"),
                                ("local_void_fraction", "local void fraction"))):
        a.scatter(table[xk][cut], table[PARTICLE_STRESS][cut], s=14, marker="x", c="0.6",
                  label="cut by the box")
        a.scatter(table[xk][interior], table[PARTICLE_STRESS][interior], s=16, c="C3", label="interior")
        a.set_xlabel(xl)
        a.set_ylabel("particle p95 von Mises (MPa)")
        a.legend()
    plots.append((_save(plt, fig, out / "particle_stress.png"),
                  "Particle p95 von Mises stress (95th percentile over its volume) against size and against local "
                  "void fraction; particles cut by the box (grey crosses) feel the box conditions. The max "
                  "(particles.csv von_mises_max_MPa) is a voxel-corner value and is not plotted."))

    fig, ax = plt.subplots(figsize=(5, 3.8))
    ax.scatter(table["eq_diameter_um"][rows], table["interface_normal_traction_mean_MPa"][rows], s=12)
    ax.axhline(0, c="k", lw=0.5)
    ax.set_xlabel("equivalent diameter (µm)")
    ax.set_ylabel("mean AP|SE normal traction (MPa, tension +)")
    plots.append((_save(plt, fig, out / "interface_traction.png"),
                  "Mean normal traction on each particle's electrolyte interface."))

    if summary.get("interface", {}).get("model") == "cohesive":
        plots += delamination_plots(plt, out, table, summary)
    if "cell_voltage_V" in summary["steps"][0]:
        plots += kinetics_plots(plt, out, table, summary)
    if "plasticity" in summary:
        plots += plasticity_plots(plt, out, table, summary)
    if summary.get("mode") == "galvanostatic":
        plots += transient_plots(plt, out, table, summary)
    elif len(summary["steps"]) > 1:
        fig, ax = plt.subplots(figsize=(5, 3.8))
        soc = [s["soc"] for s in summary["steps"]]
        for n in names:
            ax.plot(soc, [s["phases"][n]["von_mises_mean_MPa"] for s in summary["steps"]], "o-", label=n)
        ax.set_xlabel("state of charge theta")
        ax.set_ylabel("mean von Mises (MPa)")
        ax.legend()
        plots.append((_save(plt, fig, out / "stress_vs_soc.png"), "Mean von Mises stress per phase against SOC."))
    return plots


def delamination_plots(plt, out: Path, table: dict[str, np.ndarray], summary: dict) -> list[tuple[str, str]]:
    """Debonded and damaged interface against SOC and half-cycle; per particle against size and void."""
    steps = summary["steps"]
    soc = np.array([s["soc"] for s in steps])
    half = np.array([s.get("half_cycle", 1) for s in steps])
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for h in np.unique(half):
        sel = half == h
        ax[0].plot(soc[sel], [steps[i]["debonded_fraction"] for i in np.flatnonzero(sel)], "o-",
                   label=f"debonded, half-cycle {h}")
        ax[0].plot(soc[sel], [steps[i]["damaged_fraction"] for i in np.flatnonzero(sel)], "x--",
                   label=f"damaged, half-cycle {h}")
    ax[0].set_xlabel("electrode mean theta")
    ax[0].set_ylabel("fraction of the AP|SE area")
    ax[0].legend(fontsize=8)
    k = np.arange(1, len(steps) + 1)
    ax[1].plot(k, [s["debonded_fraction"] for s in steps], "C3o-", label="debonded (d = 1)")
    ax[1].plot(k, [s["capacity_accessible_fraction"] for s in steps], "C0s-", label="capacity accessible")
    ax[1].set_xlabel("output step (half-cycles in order)")
    ax[1].set_ylabel("fraction")
    ax[1].set_ylim(-0.02, 1.02)
    ax[1].legend(fontsize=8)
    plots = [(_save(plt, fig, out / "delamination_vs_soc.png"),
              "Debonded (d = 1) and damaged (d > 0) fraction of the AP|SE interface against SOC per "
              "half-cycle, and the debonded fraction and accessible capacity over the run.")]

    last = int(table["step"].max())
    rows = (table["step"] == last) & table["meshed"] & (table["se_contact_area_um2"] > 0)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for a, (xk, xl) in zip(ax, (("eq_diameter_um", "equivalent diameter (µm)"),
                                ("local_void_fraction", "local void fraction"))):
        sc = a.scatter(table[xk][rows], table["debonded_fraction"][rows], s=14,
                       c=table["interface_damage_mean"][rows], vmin=0, vmax=1, cmap="viridis")
        a.set_xlabel(xl)
        a.set_ylabel("debonded fraction of the particle's interface")
    fig.colorbar(sc, ax=ax[1], label="mean interface damage")
    plots.append((_save(plt, fig, out / "delamination_per_particle.png"),
                  f"Per particle at step {last}: debonded fraction of its AP|SE interface against size and "
                  "local void fraction (colour: mean damage)."))
    return plots


def kinetics_plots(plt, out: Path, table: dict[str, np.ndarray], summary: dict) -> list[tuple[str, str]]:
    """Cell voltage against passed charge per half-cycle; each particle's current share against its depth
    below the separator and its size (Butler-Volmer runs)."""
    steps = summary["steps"]
    t = np.array([s["time_s"] for s in steps])
    cur = np.array([s["current_A"] for s in steps])
    half = np.array([s.get("half_cycle", 1) for s in steps])
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    start = 0.0
    for h in np.unique(half):  # the last step of every half-cycle is always written: it starts the next one
        sel = half == h
        q = np.abs(cur[sel]) * (t[sel] - start) / 3600 * 1e12  # pAh
        ax[0].plot(q, [steps[i]["cell_voltage_V"] for i in np.flatnonzero(sel)], "o-",
                   label=f"half-cycle {h} ({'charge' if cur[sel][0] > 0 else 'discharge'})")
        start = t[sel].max()
    ax[0].set_xlabel("charge passed in the half-cycle (pAh)")
    ax[0].set_ylabel("cell voltage vs Li/Li+ (V)")
    ax[0].legend(fontsize=8)
    last = int(table["step"].max())
    rows = (table["step"] == last) & table["meshed"] & ~table["ionically_isolated"]
    depth = summary["box_um"][0] - table["centroid_z_um"][rows]
    sc = ax[1].scatter(depth, table["current_share"][rows], s=8 + 2 * table["eq_diameter_um"][rows] ** 2,
                       c=table["surface_soc_mean"][rows], cmap="viridis")
    fig.colorbar(sc, ax=ax[1], label="surface theta (area mean)")
    ax[1].set_xlabel("particle depth below the separator (µm)")
    ax[1].set_ylabel("share of the cell current")
    plots = [(_save(plt, fig, out / "voltage_and_current_share.png"),
              f"Cell voltage against charge passed in each half-cycle; at step {last}, each particle's share of "
              "the current against its depth below the separator (marker size: particle size, colour: surface "
              f"theta). {int(np.sum(table['ionically_isolated'][table['step'] == last]))} particles have no "
              "ionic path to the separator.")]
    return plots


def plasticity_plots(plt, out: Path, table: dict[str, np.ndarray], summary: dict) -> list[tuple[str, str]]:
    """Yielded share and equivalent plastic strain of every plastic phase against SOC; each particle's plastic
    zone (yielded share of its electrolyte shell) against its size, coloured by its stress."""
    steps = summary["steps"]
    soc = [s["soc"] for s in steps]
    names = sorted({k[: -len("_yielded_fraction")] for k in steps[-1] if k.endswith("_yielded_fraction")})
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for n in names:
        ax[0].plot(soc, [s[f"{n}_yielded_fraction"] for s in steps], "o-", label=f"{n}: yielded share")
        ax[0].plot(soc, [s[f"{n}_plastic_strain_mean"] for s in steps], "s--", label=f"{n}: mean plastic strain")
    ax[0].set_xlabel("state of charge theta")
    ax[0].legend(fontsize=8)
    last = int(table["step"].max())
    rows = (table["step"] == last) & table["meshed"]
    sc = ax[1].scatter(table["eq_diameter_um"][rows], table["plastic_zone_fraction"][rows], s=16,
                       c=table[PARTICLE_STRESS][rows], cmap="magma")
    fig.colorbar(sc, ax=ax[1], label="particle p95 von Mises (MPa)")
    ax[1].set_xlabel("equivalent diameter (µm)")
    ax[1].set_ylabel("plastic zone: yielded share of the shell")
    return [(_save(plt, fig, out / "plasticity.png"),
             "Left: share of each plastic phase's volume that has yielded, and its mean equivalent plastic "
             f"strain, against SOC. Right: at step {last}, each particle's plastic zone (yielded share of its "
             "electrolyte shell, [statistics] shell_voxels) against its size, coloured by its p95 von Mises "
             "stress.")]


def transient_plots(plt, out: Path, table: dict[str, np.ndarray], summary: dict) -> list[tuple[str, str]]:
    """SOC and stress against time, and peak stress against particle size."""
    steps = np.unique(table["step"])
    t_h = np.array([table["time_s"][table["step"] == k][0] for k in steps]) / 3600.0
    plots = []
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    ax[0].plot([s["time_s"] / 3600 for s in summary["steps"]], [s["soc"] for s in summary["steps"]], "k.-")
    ax[0].set_xlabel("time (h)")
    ax[0].set_ylabel("electrode mean theta")
    q = np.array([np.nanpercentile(table["soc_mean"][table["step"] == k], [0, 5, 50, 95, 100]) for k in steps])
    within = np.array([np.nanmean((table["soc_max"] - table["soc_min"])[table["step"] == k]) for k in steps])
    ax[1].fill_between(t_h, q[:, 0], q[:, 4], color="C0", alpha=0.2, label="min-max over particles")
    ax[1].fill_between(t_h, q[:, 1], q[:, 3], color="C0", alpha=0.4, label="5-95 %")
    ax[1].plot(t_h, q[:, 2], "C0", label="median particle")
    ax2 = ax[1].twinx()
    ax2.plot(t_h, within, "C3--", label="mean within-particle spread")
    ax2.set_ylabel("max - min theta inside a particle", color="C3")
    ax[1].set_xlabel("time (h)")
    ax[1].set_ylabel("particle mean theta")
    ax[1].legend(fontsize=8, loc="best")
    plots.append((_save(plt, fig, out / "soc_vs_time.png"),
                  "Electrode state of charge, spread of particle SOC and SOC gradients inside particles."))

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    vm = table[PARTICLE_STRESS]
    ax[0].plot(t_h, [np.nanmax(vm[table["step"] == k]) for k in steps], "C3.-", label="most stressed particle")
    ax[0].plot(t_h, [np.nanmedian(vm[table["step"] == k]) for k in steps], "C0.-", label="median particle")
    ax[0].set_xlabel("time (h)")
    ax[0].set_ylabel("particle p95 von Mises (MPa)")
    ax[0].legend()
    ids = table["particle_id"]
    n = int(ids.max())
    peak = np.full(n + 1, -np.inf)
    np.maximum.at(peak, ids, np.nan_to_num(vm, nan=-np.inf))
    diam = np.zeros(n + 1)
    diam[ids] = table["eq_diameter_um"]
    ok = np.isfinite(peak)
    ax[1].scatter(diam[ok], peak[ok], s=12)
    ax[1].set_xlabel("equivalent diameter (µm)")
    ax[1].set_ylabel("peak over time of p95 von Mises (MPa)")
    plots.append((_save(plt, fig, out / "stress_vs_time.png"),
                  "Peak particle stress against time, and each particle's peak against its size."))
    return plots


def _table_html(cols: dict[str, np.ndarray], idx) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in cols)
    body = []
    for i in idx:
        cells = []
        for v in (cols[k][i] for k in cols):
            cells.append(f"<td>{v:.4g}</td>" if isinstance(v, (float, np.floating)) else f"<td>{v}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _mesh_html(mesh: dict) -> str:
    """One line on the mesh: kind, cells, dof, and the quality report of tetrahedral meshes."""
    element = {"tetra": "tetrahedra", "tetra10": "quadratic tetrahedra", "hexahedron": "hexahedra"}.get(
        mesh.get("element", "hexahedron"), "cells")
    line = f"{html.escape(mesh.get('kind', 'voxel-hex'))}: {mesh['cells']} {element}, {mesh['dof']} dof"
    q = mesh.get("quality")
    if q:
        err = ", ".join(f"{k} {100 * v:+.2f} %" for k, v in q["phase_volume_rel_error"].items())
        line += (f" (dihedral angles {q['min_dihedral_deg']:.1f}&ndash;{q['max_dihedral_deg']:.1f}°, 1st percentile of "
                 f"the smallest {q['p1_dihedral_deg']:.1f}°; radius ratio min {q['radius_ratio_min']:.2f}, mean "
                 f"{q['radius_ratio_mean']:.2f}; phase volume against the voxels: {err})")
    return line


def _onset_html(summary: dict) -> str:
    """The cohesive run's warning about its mesh's delamination onset, as a paragraph ('' if none)."""
    warning = summary.get("interface", {}).get("onset_warning")
    return f'\n<p><b>Delamination onset:</b> {html.escape(warning)}.</p>' if warning else ""


def _uncertainty_html(out: Path) -> str:
    """The segmentation-uncertainty table of ``uncertainty/summary.json`` ('' without one)."""
    f = out / "uncertainty" / "summary.json"
    if not f.exists():
        return ""
    u = io.read_json(f)
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(e['label'])}</th><td>{_fmt(e['nominal'])}</td>"
        f"<td>{_fmt(e['median'])}</td><td>{_fmt(e['p05'])} - {_fmt(e['p95'])}</td>"
        f"<td>{'robust' if e['robust'] else '<b>depends on the segmentation</b>'}</td></tr>"
        for e in u["electrode"].values())
    share = u.get("matched_share_mean")
    return (f"\n<h2>Segmentation uncertainty</h2><p>{u['done']} of {u['samples']} runs with perturbed segmentation "
            f"choices; {100 * (share or 0):.0f} % of the particles matched on average (overlap IoU >= "
            f"{u['match_iou']}). Robust: the 90 % interval lies within +-{100 * u['robust_within']:.0f} % of the "
            f"median. Per particle: <a href='uncertainty/particles.csv'>uncertainty/particles.csv</a>.</p>"
            f"<table><tr><th>outcome</th><th>this run</th><th>median</th><th>90 % interval</th><th></th></tr>"
            f"{rows}</table>")


def headline(table: dict[str, np.ndarray], summary: dict) -> dict:
    """The run's answer in numbers: particle count, debonded share of the interface at the end (cohesive
    runs), and the largest particle p95 von Mises at the last step with its particle (interior particles
    when there are any)."""
    last = (table["step"] == table["step"].max()) & table["meshed"]
    interior = last & ~table["touches_boundary"]
    pool = interior if interior.any() else last
    vm = np.where(pool, np.nan_to_num(table[PARTICLE_STRESS], nan=-np.inf), -np.inf)
    k = int(np.argmax(vm))
    return {"particles": int(summary["particle_count"]),
            "debonded_fraction": summary["steps"][-1].get("debonded_fraction"),
            "peak_p95_MPa": float(table[PARTICLE_STRESS][k]), "peak_particle": int(table["particle_id"][k]),
            "peak_interior": bool(interior.any())}


def _headline_html(h: dict) -> str:
    parts = [f"{h['particles']} particles"]
    if h["debonded_fraction"] is not None:
        parts.append(f"{100 * h['debonded_fraction']:.1f} % of the AP|SE interface debonded at the end")
    parts.append(f"peak particle p95 von Mises {h['peak_p95_MPa']:.4g} MPa in particle {h['peak_particle']}"
                 + ("" if h["peak_interior"] else " (every particle is cut by the box)"))
    return f'<p class="answer"><b>{", ".join(parts)}.</b></p>'


def _fmt(v) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.4g}"


def write_report(out: str | Path) -> Path:
    """Write ``report.html`` (and PNGs) into a results folder."""
    out = Path(out)
    table = io.read_csv(out / "particles.csv")
    summary = io.read_json(out / "summary.json")
    plots = make_plots(out, table, summary)
    last = summary["steps"][-1]
    rows = np.flatnonzero(table["step"] == int(table["step"].max()))
    top = rows[np.argsort(-np.nan_to_num(table[PARTICLE_STRESS][rows], nan=-np.inf))[:10]]
    show = ["particle_id", "eq_diameter_um", "touches_boundary", "isolated", "local_void_fraction",
            PARTICLE_STRESS, "von_mises_max_MPa", "hydrostatic_mean_MPa", "interface_normal_traction_mean_MPa"]
    plt = _fig()
    from pipeline.microstructure_report import section as microstructure_section
    from pipeline.slices import fields_montage, microstructure_montage

    montages = {"slices_microstructure.png": microstructure_montage(plt, out, table),
                "slices_fields.png": fields_montage(plt, out)}
    slices = []
    for name, made in montages.items():
        if made is not None:
            fig, caption = made
            slices.append((_save(plt, fig, out / name), caption))
    steps_cols = {"step": np.array([s["step"] for s in summary["steps"]]),
                  "time_s": np.array([s.get("time_s", 0.0) for s in summary["steps"]]),
                  "soc": np.array([s["soc"] for s in summary["steps"]]),
                  "iterations": np.array([s.get("solver_iterations", -1) for s in summary["steps"]])}
    for n in last["phases"]:
        steps_cols[f"{n} von Mises mean (MPa)"] = np.array(
            [s["phases"][n]["von_mises_mean_MPa"] for s in summary["steps"]])
        steps_cols[f"{n} hydrostatic mean (MPa)"] = np.array(
            [s["phases"][n]["hydrostatic_mean_MPa"] for s in summary["steps"]])
    fr = last["phase_fractions"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tomomech report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>tomomech report</h1>
{_headline_html(headline(table, summary))}
<p>{summary['particle_count']} particles ({summary['isolated_particles']} isolated, no electrolyte contact);
phase fractions: active {fr['active']:.3f}, electrolyte {fr['electrolyte']:.3f}, void {fr['void']:.3f};
mesh {_mesh_html(summary['mesh'])}; voxel size {summary['voxel_size_um']} µm.</p>
<p>Stresses in MPa, tension positive. Particles that touch the box are cut by the crop: their
stresses depend on the box conditions.</p>{_onset_html(summary)}
{_uncertainty_html(out)}
<h2>Slices</h2>{''.join(f'<p>{html.escape(c)}</p><img src="{f}" alt="{html.escape(c)}">' for f, c in slices)}
<h2>Steps</h2>{_table_html(steps_cols, range(len(summary['steps'])))}
{''.join(f'<h3>{html.escape(c)}</h3><img src="{f}">' for f, c in plots)}
{microstructure_section(plt, out)}
<h2>Ten most stressed particles (last step, by p95 von Mises)</h2>
<p>von_mises_max_MPa is the largest cell value: a voxel-corner value, not a particle stress.</p>
{_table_html({k: table[k] for k in show}, top)}
<p>All rows: <a href="particles.csv">particles.csv</a>; per-step summary: <a href="summary.json">summary.json</a>;
fields: fields.xdmf (ParaView).</p></body></html>"""
    with io.atomic_path(out / "report.html") as tmp:
        tmp.write_text(page)
    return out / "report.html"
