"""The microstructure section of report.html (and the standalone microstructure.html) from microstructure.json."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from pipeline import io

PHASE_COLOURS = {"void": "0.45", "electrolyte": "C0", "active": "C3"}


def _cumulative(ax, dist: dict, label: str, colour, style="-") -> None:
    """The fraction finer than each bin's upper edge (a distribution's usual plot: bins differ per phase)."""
    edges = np.asarray(dist.get("edges_um", []))
    if edges.size:
        ax.plot(edges, np.concatenate([[0.0], np.cumsum(dist["fraction"])]), label=label, color=colour,
                linestyle=style)


def _finish(plt, fig, ax, xlabel: str, ylabel: str, path: Path, caption: str) -> tuple[str, str]:
    """Label the axes, add the legend, save the figure: its (file name, caption)."""
    from pipeline.report import _save

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _save(plt, fig, path), caption


def plots(plt, out: Path, ms: dict) -> list[tuple[str, str]]:
    """PNG files (name, caption) of the representative volume, the size and chord distributions and S2."""
    made = []
    rev = ms["representative_volume"]
    h = float(min(ms["voxel_size_um"]))
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    edge = np.asarray(rev["size_voxels"]) * h
    for name, colour in PHASE_COLOURS.items():
        mean, std = np.asarray(rev[f"{name}_mean"]), np.asarray(rev[f"{name}_std"])
        ax.plot(edge, mean, "o-", color=colour, label=name)
        ax.fill_between(edge, mean - std, mean + std, color=colour, alpha=0.2)
        ax.plot(edge, rev[f"{name}_min"], ":", color=colour)
        ax.plot(edge, rev[f"{name}_max"], ":", color=colour)
        ax.axhline(ms["scalars"][f"{name}_fraction"], color=colour, lw=0.6)
    made.append(_finish(plt, fig, ax, "cube edge (µm)", "phase fraction", out / "microstructure_rev.png",
                        "Representative volume: phase fraction of every whole cube of the box against its edge "
                        "(mean, band of one standard deviation, dotted min and max; thin lines: the whole box)."))

    dist = ms["distributions"]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    _cumulative(ax, dist["particle_eq_diameter"], "particles, equivalent diameter", "k")
    for name, colour in PHASE_COLOURS.items():
        if f"{name}_local_thickness" in dist:
            _cumulative(ax, dist[f"{name}_local_thickness"], f"{name}, local thickness", colour)
    made.append(_finish(plt, fig, ax, "diameter d (µm)", "volume fraction finer than d",
                        out / "microstructure_sizes.png",
                        "Cumulative size distributions (volume-weighted): particle equivalent diameters, and the "
                        "local thickness (diameter of the largest inscribed sphere) of each phase."))

    if any(k.endswith("_chords_z") for k in dist):
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        for name, colour in PHASE_COLOURS.items():
            for axis, style in (("z", "-"), ("x", "--")):
                if f"{name}_chords_{axis}" in dist:
                    _cumulative(ax, dist[f"{name}_chords_{axis}"], f"{name} along {axis}", colour, style)
        made.append(_finish(plt, fig, ax, "chord length l (µm)", "length fraction in chords shorter than l",
                            out / "microstructure_chords.png",
                            "Cumulative chord length distributions along z (through the electrode) and x, "
                            "length-weighted; chords cut by the box are left out."))
    tpc = ms.get("two_point_correlation")
    if tpc:
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        ax.plot(tpc["distance_um"], tpc["probability"], color="C3")
        phi = tpc["volume_fraction"]
        ax.axhline(phi**2, color="0.5", ls="--", lw=0.8, label="φ² (uncorrelated)")
        made.append(_finish(plt, fig, ax, "r (µm)", "S2(r), active phase", out / "microstructure_s2.png",
                            f"Two-point correlation of the active phase over the central {tpc['region_voxels']} "
                            "voxels: S2(0) is its volume fraction, S2 falls to φ² beyond the particle size."))
    return made


def transport_table(ms: dict) -> str:
    """HTML table of the electrolyte's effective transport per axis."""
    rows = "".join(
        f"<tr><td>{a}</td><td>{t['volume_fraction']:.4f}</td><td>{t['percolating_fraction']:.4f}</td>"
        f"<td>{t['conductivity_ratio']:.4g}</td><td>{t['tortuosity']:.4g}</td><td>{t['iterations']}</td>"
        f"<td>{t['flux_mismatch']:.1e}</td></tr>" for a, t in ms["transport"].items())
    return ("<table><tr><th>axis</th><th>ε</th><th>ε percolating</th><th>κ_eff/κ</th><th>τ = ε_p κ/κ_eff</th>"
            f"<th>CG its</th><th>flux mismatch</th></tr>{rows}</table>")


def section(plt, out: Path) -> str:
    """The report's microstructure section ('' when the folder has no microstructure.json)."""
    f = out / "microstructure.json"
    if not f.exists():
        return ""
    ms = io.read_json(f)
    s = ms["scalars"]
    figs = plots(plt, out, ms)
    missing = (f"<p>Not computed: {', '.join(ms['needs_porespy'])} (they need porespy: "
               "<code>pip install 'tomomech[porespy]'</code>).</p>" if ms["needs_porespy"] else "")
    return f"""<h2>Microstructure</h2>
<p>AP|SE interface {s['ap_se_area_per_volume_per_um']:.4g} µm²/µm³ ({100 * s['ap_se_area_fraction']:.1f} % of the
active surface), AP|void {s['ap_void_area_per_volume_per_um']:.4g} µm²/µm³ (marching cubes; voxel faces give
{s['ap_se_area_per_volume_per_um_faces']:.4g} and {s['ap_void_area_per_volume_per_um_faces']:.4g}).
{100 * s['electrolyte_connected_fraction']:.1f} % of the electrolyte reaches the separator face;
{s['ionically_isolated_particles']} of {s['particle_count']} particles
({100 * s['ionically_isolated_volume_fraction']:.1f} % of the active volume) have no ionic path to it.</p>
<h3>Electrolyte transport</h3>{transport_table(ms)}{missing}
{''.join(f'<p>{html.escape(c)}</p><img src="{p}">' for p, c in figs)}
<p>All descriptors: <a href="microstructure.json">microstructure.json</a>.</p>"""


def write_page(out: str | Path) -> Path:
    """``microstructure.html``: the microstructure section alone (``tomomech describe``)."""
    from pipeline.report import _fig

    out = Path(out)
    body = section(_fig(), out)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tomomech microstructure</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>tomomech microstructure</h1>{body}</body></html>"""
    with io.atomic_path(out / "microstructure.html") as tmp:
        tmp.write_text(page)
    return out / "microstructure.html"
