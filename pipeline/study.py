"""Studies: many cases (samples, crops, synthetic composites, swept config keys) on dask.

A study file names a base run config and the axes to vary::

    base = "../samples/matbox_nmc/demo.toml"
    combine = "product"            # or "zip"
    plot_against = ["void_fraction", "electrolyte_tortuosity_z"]   # study.csv columns (default: void)
    [sweep]                        # dotted config keys -> values
    "materials.electrolyte.E_GPa" = [10.0, 22.0]
    [crops]                        # tiles of the base input
    size = [32, 32, 32]            # stride defaults to size; max_count optional
    [synthetic]                    # seeded composites: lists are swept
    shape = [32, 32, 32]
    active_fraction = 0.5
    void_fraction = [0.0, 0.1, 0.2]
    seed = [0, 1]
    voxel_size_um = 0.4

Every case runs the normal pipeline into ``cases/<id>`` where ``id`` is a hash
of its resolved config and input, so a finished case is never recomputed and
an interrupted study resumes. A failing case is recorded and does not stop
the others. Results: study.csv (one row per case: swept keys, outcomes and the
microstructure descriptors of microstructure.json), particles_all.csv, plots of
the outcomes against each ``plot_against`` column with their regressions, report.html.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import io
from pipeline.config import MaterialsConfig, config_from_dict, read_toml
from pipeline.run import content_key
from tomomech.errors import ConfigError, TomomechError

log = logging.getLogger(__name__)

SYNTH_KEYS = {"shape", "active_fraction", "void_fraction", "radius", "seed", "voxel_size_um", "void_blob"}


@dataclass(frozen=True)
class Case:
    """One run of a study: a config mapping plus, for synthetic cases, generator options."""

    name: str
    config: dict
    swept: dict
    synthetic: dict | None = None
    key: str = ""


@dataclass(frozen=True)
class Study:
    """A parsed study file."""

    base: dict
    base_dir: Path
    cases: tuple[Case, ...]
    swept_keys: tuple[str, ...] = field(default_factory=tuple)
    plot_against: tuple[str, ...] = ("void_fraction",)


def _set(d: dict, dotted: str, value) -> None:
    """Set a dotted key; a preset name under [materials] becomes {base = name, ...}."""
    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if isinstance(nxt, str):  # e.g. materials.electrolyte = "Li6PS5Cl" -> inline override
            nxt = {"base": nxt}
        elif nxt is None:
            nxt = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"study sweep key {dotted!r}: {p!r} is not a table")
        cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def load_study(path: str | Path) -> Study:
    """Read a study TOML file and expand its cases (validated before anything runs)."""
    path = Path(path)
    data = read_toml(path, "study file")
    allowed = {"base", "combine", "sweep", "crops", "synthetic", "plot_against"}
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(f"unknown study keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    if "base" not in data:
        raise ConfigError("a study needs base = 'run.toml' (the config every case starts from)")
    base_path = (path.parent / data["base"]).resolve()
    base = read_toml(base_path, "study base config")
    base_dir = base_path.parent
    mats = base.setdefault("materials", {})  # explicit presets, so "materials.X.E_GPa" can override one
    for name in ("active", "electrolyte"):
        mats.setdefault(name, getattr(MaterialsConfig(), name))
    combine = data.get("combine", "product")
    if combine not in ("product", "zip"):
        raise ConfigError(f"study combine = {combine!r}: use 'product' or 'zip'")

    axes: list[list[tuple[dict, dict | None]]] = []  # each entry: (swept values, synthetic options)
    names: list[str] = []
    for key, values in data.get("sweep", {}).items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"study sweep {key!r} must be a non-empty list of values")
        axes.append([({key: v}, None) for v in values])
        names.append(key)
    if "crops" in data:
        axes.append([({"input.crop": c}, None) for c in _crops(data["crops"], base, base_dir)])
        names.append("input.crop")
    if "synthetic" in data:
        syn = data["synthetic"]
        bad = set(syn) - SYNTH_KEYS
        if bad:
            raise ConfigError(f"unknown [synthetic] keys {sorted(bad)}; allowed: {sorted(SYNTH_KEYS)}")
        listed = {k: v for k, v in syn.items() if isinstance(v, list) and k != "shape"}
        fixed = {k: v for k, v in syn.items() if k not in listed}
        combos = [dict(zip(listed, vals)) for vals in itertools.product(*listed.values())] or [{}]
        axes.append([({f"synthetic.{k}": v for k, v in c.items()}, {**fixed, **c}) for c in combos])
        names.append("synthetic")
    if not axes:
        raise ConfigError("the study varies nothing: add [sweep], [crops] or [synthetic]")
    if combine == "zip":
        n = {len(a) for a in axes}
        if len(n) != 1:
            raise ConfigError(f"combine = 'zip' needs axes of equal length, got {[len(a) for a in axes]}")
        combos = list(zip(*axes))
    else:
        combos = list(itertools.product(*axes))

    cases = []
    for combo in combos:
        cfg = copy.deepcopy(base)
        swept: dict[str, Any] = {}
        synthetic = None
        for values, syn in combo:
            swept.update(values)
            if syn is not None:
                synthetic = syn
                continue
            for k, v in values.items():
                _set(cfg, k, v)
        if synthetic is not None:
            cfg.setdefault("segmentation", {}).update(
                method="labels", phase_map={"0": "void", "1": "electrolyte", "2": "active"})
            cfg["input"] = {"path": "synthetic.tif", "voxel_size_um": float(synthetic.get("voxel_size_um", 0.4))}
        else:
            p = Path(cfg["input"]["path"])
            cfg["input"]["path"] = str(p if p.is_absolute() else (base_dir / p).resolve())
        cfg.pop("output", None)
        if synthetic is None:
            config_from_dict(copy.deepcopy(cfg), base_dir)  # validate now, before anything runs
        key = content_key({"config": cfg, "synthetic": synthetic,
                     "input": None if synthetic else io.file_hash(cfg["input"]["path"])})
        label = "-".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in swept.items())
        cases.append(Case(name=f"{key}", config=cfg, swept=swept, synthetic=synthetic, key=key))
        log.debug("case %s: %s", key, label)
    against = data.get("plot_against", ["void_fraction"])
    if not (isinstance(against, list) and against and all(isinstance(a, str) for a in against)):
        raise ConfigError(f"study plot_against = {against!r}: give a list of study.csv column names, e.g. "
                          "['void_fraction', 'electrolyte_tortuosity_z', 'ap_se_area_per_volume_per_um']")
    return Study(base, base_dir, tuple(cases), tuple(names), tuple(against))


def _short(v) -> str:
    return json.dumps(v, separators=(",", ":")) if isinstance(v, list) else str(v)


def _crops(spec: dict, base: dict, base_dir: Path) -> list[list[list[int]]]:
    """Tiles of ``size`` every ``stride`` voxels over the base input (within its own crop)."""
    size = spec.get("size")
    if not (isinstance(size, list) and len(size) == 3 and all(isinstance(s, int) and s > 0 for s in size)):
        raise ConfigError("[crops] size must be [z, y, x] positive integers")
    stride = spec.get("stride", size)
    p = Path(base["input"]["path"])
    vol = io.read_volume(p if p.is_absolute() else base_dir / p, crop=base["input"].get("crop"))
    origin = [r[0] for r in base["input"]["crop"]] if base["input"].get("crop") else [0, 0, 0]
    starts = [range(0, n - s + 1, st) for n, s, st in zip(vol.data.shape, size, stride)]
    tiles = [[[o + a, o + a + s] for o, a, s in zip(origin, st, size)] for st in itertools.product(*starts)]
    if not tiles:
        raise ConfigError(f"[crops] size {size} is larger than the volume {vol.data.shape}")
    return tiles[: spec.get("max_count", len(tiles))]


# ----------------------------------------------------------------------------- running

def run_case(case: Case, out_dir: str) -> dict:
    """Run one case (in a worker); never raises: failures come back as a record."""
    from pipeline.run import run
    from segmentation import make_composite

    folder = Path(out_dir).resolve() / "cases" / case.name
    t0 = time.perf_counter()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        cfg = copy.deepcopy(case.config)
        if case.synthetic is not None:
            s = case.synthetic
            phases, _ = make_composite(tuple(s.get("shape", (32, 32, 32))),
                                       active_fraction=float(s.get("active_fraction", 0.5)),
                                       void_fraction=float(s.get("void_fraction", 0.1)),
                                       radius=float(s.get("radius", 5.0)), seed=int(s.get("seed", 0)),
                                       void_blob=float(s.get("void_blob", 2.0)))
            io.write_volume(folder / "synthetic.tif", phases, [float(s.get("voxel_size_um", 0.4))] * 3)
            cfg["input"]["path"] = str(folder / "synthetic.tif")
        cfg["output"] = {"dir": str(folder)}
        run(config_from_dict(cfg, folder), progress=lambda *a: None)
        io.write_json(folder / "case.json", {"key": case.key, "swept": case.swept, "status": "done"})
        return {"case": case.name, "status": "done", "seconds": time.perf_counter() - t0}
    except Exception as exc:  # a broken case must not stop the study
        msg = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, TomomechError):
            log.exception("case %s failed", case.name)
        io.write_json(folder / "case.json", {"key": case.key, "swept": case.swept, "status": "failed",
                                             "error": msg})
        return {"case": case.name, "status": "failed", "error": msg, "seconds": time.perf_counter() - t0}


def is_done(case: Case, out_dir: Path) -> bool:
    f = out_dir / "cases" / case.name / "case.json"
    if not f.exists():
        return False
    rec = io.read_json(f)
    return rec.get("status") == "done" and rec.get("key") == case.key


def run_study(study: Study, out_dir: str | Path, *, workers: int | None = None, scheduler: str | None = None,
              progress: Callable[[dict], None] | None = None) -> dict:
    """Run all unfinished cases on dask.distributed and aggregate.

    Parameters
    ----------
    study : Study
    out_dir : results folder of the study
    workers : local worker processes (default: number of cores)
    scheduler : address of an existing dask scheduler (many machines)
    progress : callback receiving ``{"done", "running", "failed", "total", "eta_s"}``

    Returns
    -------
    dict with ``done``, ``failed`` (case -> error), ``skipped`` and the aggregate paths.
    """
    import os

    from dask.distributed import Client, LocalCluster, as_completed

    out = Path(out_dir).resolve()  # workers may run elsewhere: absolute paths only
    out.mkdir(parents=True, exist_ok=True)
    todo = [c for c in study.cases if not is_done(c, out)]
    skipped = len(study.cases) - len(todo)
    log.info("study: %d cases, %d already done, %d to run", len(study.cases), skipped, len(todo))
    failed: dict[str, str] = {}
    done = skipped
    if todo:
        cluster = None
        if scheduler:
            client = Client(scheduler)
        else:
            n = workers or os.cpu_count() or 1
            # dashboard on a free port: None means dask's fixed 8787, and a second study (or any other
            # dask cluster) on the machine then fails to start
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   silence_logs=logging.WARNING)
            client = Client(cluster)
        try:
            futures = [client.submit(run_case, c, str(out), pure=False, key=f"case-{c.name}") for c in todo]
            t0 = time.perf_counter()
            finished = 0
            for fut in as_completed(futures):
                rec = fut.result()
                finished += 1
                if rec["status"] == "done":
                    done += 1
                else:
                    failed[rec["case"]] = rec["error"]
                    log.warning("case %s failed: %s", rec["case"], rec["error"])
                if progress:
                    el = time.perf_counter() - t0
                    progress({"done": done, "failed": len(failed), "total": len(study.cases),
                              "running": min(len(todo) - finished, len(client.scheduler_info()["workers"])),
                              "eta_s": el / finished * (len(todo) - finished)})
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    paths = aggregate(study, out)
    return {"done": done, "failed": failed, "skipped": skipped, **paths}


# ----------------------------------------------------------------------------- aggregation

OUTCOMES = {
    "active_von_mises_mean_MPa": "active-phase mean von Mises (MPa)",
    "particle_von_mises_p95_MPa": "p95 over particles of mean von Mises (MPa)",
    "interface_normal_traction_mean_MPa": "mean AP|SE normal traction (MPa)",
}


def _case_row(case: Case, folder: Path, swept_keys) -> tuple[dict, dict | None]:
    rec = io.read_json(folder / "case.json") if (folder / "case.json").exists() else {"status": "missing"}
    row: dict[str, Any] = {"case": case.name, "status": rec.get("status", "missing"),
                           "error": rec.get("error", "")}
    for k in swept_keys:
        for sk, v in case.swept.items():
            if sk == k or (k == "synthetic" and sk.startswith("synthetic.")):
                row[sk] = _short(v) if isinstance(v, list) else v
    if row["status"] == "done" and not (folder / "summary.json").exists():
        row.update(status="failed", error="summary.json missing: the case folder is incomplete")
    if row["status"] != "done":
        return row, None
    outcomes, parts = run_outcomes(folder)
    row.update(outcomes)
    parts["case"] = np.array([case.name] * len(parts["case_void_fraction"]), dtype=object)
    return row, parts


def run_outcomes(folder: Path) -> tuple[dict, dict]:
    """Electrode outcomes of a finished run's folder (last step), and its particle rows of that step."""
    summary = io.read_json(folder / "summary.json")
    table = io.read_csv(folder / "particles.csv")
    last = summary["steps"][-1]
    rows = table["step"] == int(table["step"].max())
    vol = float(np.sum(table["volume_um3"][rows]))
    act = last["phases"].get("active", {})
    outcomes = {
        "void_fraction": last["void_fraction"],
        "active_fraction": last["phase_fractions"]["active"],
        "particle_count": summary["particle_count"],
        "se_contact_area_per_active_volume_per_um": float(np.sum(table["se_contact_area_um2"][rows])) / vol,
        "active_von_mises_mean_MPa": act.get("von_mises_mean_MPa", np.nan),
        "particle_von_mises_p95_MPa": float(np.nanpercentile(table["von_mises_mean_MPa"][rows], 95)),
        "interface_normal_traction_mean_MPa": last["interface_normal_traction_mean_MPa"],
        "debonded_fraction": last.get("debonded_fraction", np.nan),
    }
    if (folder / "microstructure.json").exists():
        for k, v in io.read_json(folder / "microstructure.json")["scalars"].items():
            outcomes.setdefault(k, v)
    parts = {k: v[rows] for k, v in table.items()}
    parts["case_void_fraction"] = np.full(int(rows.sum()), last["void_fraction"])
    return outcomes, parts


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    cols = {}
    for k in keys:
        vals = [r.get(k, np.nan) for r in rows]
        if all(isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) for v in vals):
            cols[k] = np.array(vals, dtype=float)
        else:
            cols[k] = np.array(["" if (isinstance(v, float) and np.isnan(v)) else v for v in vals], dtype=object)
    return cols


def regression(x, y) -> dict:
    """Ordinary least squares ``y = a + b x`` with the 95 % confidence interval of the slope."""
    from scipy import stats

    ok = np.isfinite(x) & np.isfinite(y)
    x, y = np.asarray(x)[ok], np.asarray(y)[ok]
    if x.size < 3 or np.ptp(x) == 0:
        return {"n": int(x.size), "slope": np.nan, "intercept": np.nan, "slope_ci95": [np.nan, np.nan],
                "r2": np.nan, "p_value": np.nan}
    r = stats.linregress(x, y)
    t = stats.t.ppf(0.975, x.size - 2)
    return {"n": int(x.size), "slope": r.slope, "intercept": r.intercept,
            "slope_ci95": [r.slope - t * r.stderr, r.slope + t * r.stderr], "r2": r.rvalue**2,
            "p_value": r.pvalue}


def _fit_band(ax, x, y, color="C0"):
    """Scatter, OLS line and the 95 % confidence band of the mean prediction."""
    from scipy import stats

    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    ax.scatter(x, y, s=12, color=color, alpha=0.7)
    if x.size < 3 or np.ptp(x) == 0:
        return
    r = stats.linregress(x, y)
    xs = np.linspace(x.min(), x.max(), 50)
    resid = y - (r.intercept + r.slope * x)
    s = np.sqrt(np.sum(resid**2) / (x.size - 2))
    se = s * np.sqrt(1 / x.size + (xs - x.mean()) ** 2 / np.sum((x - x.mean()) ** 2))
    t = stats.t.ppf(0.975, x.size - 2)
    fit = r.intercept + r.slope * xs
    ax.plot(xs, fit, color=color)
    ax.fill_between(xs, fit - t * se, fit + t * se, color=color, alpha=0.2)


def aggregate(study: Study, out: Path) -> dict:
    """study.csv, particles_all.csv, plots and report.html from the case folders."""
    rows, parts = [], []
    for case in sorted(study.cases, key=lambda c: c.name):
        row, p = _case_row(case, out / "cases" / case.name, study.swept_keys)
        rows.append(row)
        if p is not None:
            parts.append(p)
    cols = _columns(rows)
    io.write_csv(out / "study.csv", cols)
    if parts:
        keys = [k for k in parts[0] if all(k in p for p in parts)]
        io.write_csv(out / "particles_all.csv", {k: np.concatenate([p[k] for p in parts]) for k in keys})
    reg = {}
    for x in set(study.plot_against) - set(cols):
        log.warning("study: plot_against column %r is not in study.csv (columns: %s)", x, ", ".join(cols))
    against = [x for x in study.plot_against if x in cols]
    for x in against:
        xs = cols[x].astype(float)
        reg.update({k if x == "void_fraction" else f"{k}_vs_{x}": regression(xs, cols[k].astype(float))
                    for k in OUTCOMES if k in cols})
    if "void_fraction" in cols:
        if parts:
            pv = np.concatenate([p["local_void_fraction"] for p in parts])
            ps = np.concatenate([p["von_mises_mean_MPa"] for p in parts])
            reg["particle_local_void_vs_von_mises_mean"] = regression(pv, ps)
    io.write_json(out / "regression.json", reg)
    _study_report(out, cols, parts, reg, against)
    return {"study_csv": str(out / "study.csv"), "regression": reg}


def _study_report(out: Path, cols, parts, reg, against) -> None:
    import html

    from pipeline.report import _fig, _save, _table_html

    plt = _fig()
    imgs = []
    for x in against:
        xs = cols[x].astype(float)
        fig, axes = plt.subplots(1, len(OUTCOMES), figsize=(4.2 * len(OUTCOMES), 3.6))
        for ax, (k, label) in zip(axes, OUTCOMES.items()):
            _fit_band(ax, xs, cols[k].astype(float))
            ax.set_xlabel(x.replace("_", " "))
            ax.set_ylabel(label)
        fig.tight_layout()
        imgs.append(_save(plt, fig, out / ("void_vs_stress.png" if x == "void_fraction" else f"{x}_vs_stress.png")))
    if parts:
        fig, ax = plt.subplots(figsize=(5, 3.8))
        pv = np.concatenate([p["local_void_fraction"] for p in parts])
        ps = np.concatenate([p["von_mises_mean_MPa"] for p in parts])
        _fit_band(ax, pv, ps, color="C1")
        ax.set_xlabel("particle local void fraction")
        ax.set_ylabel("particle mean von Mises (MPa)")
        imgs.append(_save(plt, fig, out / "particle_void_vs_stress.png"))
    reg_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{r['n']}</td><td>{r['slope']:.4g}</td>"
        f"<td>[{r['slope_ci95'][0]:.4g}, {r['slope_ci95'][1]:.4g}]</td><td>{r['r2']:.3f}</td>"
        f"<td>{r['p_value']:.3g}</td></tr>" for k, r in reg.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tomomech study</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px}}img{{max-width:100%}}</style></head><body>
<h1>Study: microstructure against stress</h1>
<h2>Linear regressions on {html.escape(", ".join(against))} (95 % confidence interval of the slope)</h2>
<table><tr><th>outcome</th><th>n</th><th>slope</th><th>95 % CI</th><th>r2</th><th>p</th></tr>{reg_rows}</table>
{''.join(f'<img src="{i}">' for i in imgs)}
<h2>Cases</h2>{_table_html(cols, range(len(cols['case'])))}
<p><a href="study.csv">study.csv</a>, <a href="particles_all.csv">particles_all.csv</a>, case folders in cases/.</p>
</body></html>"""
    with io.atomic_path(out / "report.html") as tmp:
        tmp.write_text(page)
