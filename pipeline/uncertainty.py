"""Segmentation uncertainty: the run's answers under seeded perturbations of the segmentation choices.

The segmentation is the least certain step of the pipeline. ``tomomech run --uncertainty N`` (or
``[uncertainty] samples = N``) reruns segmentation -> mesh -> solve N times, each with choices drawn
from stated ranges around the run's own:

- the intensity thresholds (grey inputs), uniform within the histogram valley around each nominal
  threshold: the intensities where the smoothed histogram stays below half-way from the valley
  floor to the lower of its two neighbouring peaks (or ``threshold_band``, +- that many grey
  values);
- the denoise strength (when the run denoises), the watershed split depth and the smallest
  particle kept, each times a factor drawn from its range.

The perturbed runs are the cases of a study (:mod:`pipeline.study`): they run on dask, scale out
and resume (a finished case is never recomputed; the draws depend only on the seed). Their
particles are matched to the run's own by overlap (intersection over union >= 0.5), and every
per-particle and electrode outcome gets a median and a 90 % interval (5th-95th percentile). An
outcome is called robust when its interval is within +-10 % of its median.

Results, in ``uncertainty/`` of the results folder: ``summary.json`` (electrode outcomes, the
draws, the matched share), ``particles.csv`` (per particle of the run), the cases and the study
tables; the run's report shows the electrode table.
"""

from __future__ import annotations

import copy
import logging
import tomllib
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from pipeline import io
from pipeline.config import Config, dump_config

log = logging.getLogger(__name__)

FOLDER = "uncertainty"
#: electrode outcomes (columns of a study row, :func:`pipeline.study._case_row`)
ELECTRODE = {
    "particle_count": "particle count",
    "void_fraction": "void fraction",
    "active_fraction": "active fraction",
    "active_von_mises_mean_MPa": "active-phase mean von Mises (MPa)",
    "particle_von_mises_p95_MPa": "p95 over particles of mean von Mises (MPa)",
    "interface_normal_traction_mean_MPa": "mean AP|SE normal traction (MPa)",
    "se_contact_area_per_active_volume_per_um": "AP|SE contact area per active volume (1/um)",
    "debonded_fraction": "debonded fraction",
}
#: per-particle outcomes (columns of particles.csv, last step)
PARTICLE = ("volume_um3", "se_contact_area_um2", "von_mises_mean_MPa", "von_mises_max_MPa",
            "hydrostatic_mean_MPa", "interface_normal_traction_mean_MPa", "debonded_fraction")
MATCH_IOU = 0.5
ROBUST = 0.10


def valley_ranges(values: np.ndarray, thresholds, bins: int = 256) -> list[tuple[float, float]]:
    """The intensity range of the histogram valley around each threshold.

    The histogram (``bins`` bins, smoothed over 2 bins) is followed from the threshold to both
    sides while it stays below half-way from its value there to the lower of the two peaks that
    bound the valley (the largest counts up to the neighbouring thresholds).

    Returns
    -------
    list of (low, high) intensities, one per threshold, each containing it.
    """
    values = np.asarray(values, float).ravel()
    h, edges = np.histogram(values, bins=bins)
    h = ndi.gaussian_filter1d(h.astype(float), 2.0)
    centre = (edges[:-1] + edges[1:]) / 2
    idx = [int(np.clip(np.searchsorted(centre, t), 0, bins - 1)) for t in thresholds]
    bounds = [0] + idx + [bins - 1]
    out = []
    for i, k in enumerate(idx):
        floor = h[k]
        peak = min(h[bounds[i]:k + 1].max(), h[k:bounds[i + 2] + 1].max())
        level = floor + 0.5 * (peak - floor)
        lo, hi = k, k
        while lo > bounds[i] and h[lo - 1] < level:
            lo -= 1
        while hi < bounds[i + 2] and h[hi + 1] < level:
            hi += 1
        out.append((float(min(edges[lo], thresholds[i])), float(max(edges[hi + 1], thresholds[i]))))
    return out


def draws(cfg: Config, image: np.ndarray) -> list[dict]:
    """The perturbed segmentation options of every sample (dotted config keys -> values).

    Depends only on the config, the image and ``[uncertainty] seed``: the same seed gives the
    same draws, so a rerun finds its finished cases.
    """
    uc, sc = cfg.uncertainty, cfg.segmentation
    rng = np.random.default_rng(uc.seed)
    ranges = None
    if sc.method != "labels":
        from pipeline.run import grey_thresholds

        img, inside, thr = grey_thresholds(image, sc)
        if uc.threshold_band > 0:
            ranges = [(t - uc.threshold_band, t + uc.threshold_band) for t in thr]
        else:
            ranges = valley_ranges(img if inside is None else img[:, inside], thr)
        log.info("uncertainty: thresholds %s drawn within %s", np.round(thr, 4).tolist(),
                 [tuple(np.round(r, 4).tolist()) for r in ranges])
    out = []
    for _ in range(uc.samples):
        d = {}
        if ranges is not None:
            t = sorted(float(rng.uniform(lo, hi)) for lo, hi in ranges)
            d["segmentation.method"] = "thresholds"
            d["segmentation.thresholds"] = t
        f_denoise, f_split, f_min = (float(rng.uniform(*r)) for r in
                                     (uc.denoise_factor, uc.split_depth_factor, uc.min_particle_factor))
        if sc.denoise != "none":
            d["segmentation.denoise_strength"] = sc.denoise_strength * f_denoise
        if sc.split_method == "watershed":  # SNOW has no depth to perturb
            d["segmentation.split_depth_voxels"] = sc.split_depth_voxels * f_split
        d["segmentation.min_particle_voxels"] = max(1, int(round(sc.min_particle_voxels * f_min)))
        out.append(d)
    return out


def uncertainty_study(cfg: Config, spacing_um, image: np.ndarray):
    """The perturbed runs as a :class:`pipeline.study.Study` (validated, nothing run)."""
    from pipeline.config import config_from_dict
    from pipeline.run import content_key
    from pipeline.study import Case, Study, _set

    base = tomllib.loads(dump_config(cfg))
    for k in ("output", "uncertainty"):
        base.pop(k, None)
    base["input"]["voxel_size_um"] = list(spacing_um)
    in_hash = io.file_hash(cfg.input.path)
    cases = []
    for i, d in enumerate(draws(cfg, image)):
        c = copy.deepcopy(base)
        for k, v in d.items():
            _set(c, k, v)
        config_from_dict(copy.deepcopy(c))
        key = content_key({"config": c, "input": in_hash})
        cases.append(Case(name=f"{i:03d}-{key[:12]}", config=c, swept=d, key=key))
    return Study(base, Path(cfg.input.path).parent, tuple(cases), tuple(sorted({k for c in cases for k in c.swept})))


def match_particles(nominal: np.ndarray, other: np.ndarray, min_iou: float = MATCH_IOU) -> np.ndarray:
    """For every particle of ``nominal`` (labels 1..n), the label of ``other`` it matches, or 0.

    A match is the particle of ``other`` with the largest overlap, accepted when the intersection
    over union is at least ``min_iou`` (from 0.5 on, no particle of ``other`` is matched twice).
    """
    a = np.asarray(nominal, np.int64).ravel()
    b = np.asarray(other, np.int64).ravel()
    n, m = int(a.max()), int(b.max())
    both = (a > 0) & (b > 0)
    pair, inter = np.unique(a[both] * (m + 1) + b[both], return_counts=True)
    pa, pb = pair // (m + 1), pair % (m + 1)
    size_a = np.bincount(a, minlength=n + 1)
    size_b = np.bincount(b, minlength=m + 1)
    iou = inter / (size_a[pa] + size_b[pb] - inter)
    best = np.zeros(n + 1, np.int64)
    best_iou = np.zeros(n + 1)
    order = np.argsort(iou)  # the largest last: it wins the assignment
    best[pa[order]] = pb[order]
    best_iou[pa[order]] = iou[order]
    best[best_iou < min_iou] = 0
    return best[1:]


def interval(x: np.ndarray, axis=0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, 5th and 95th percentile over ``axis``, ignoring NaN (all-NaN slices give NaN, silently)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(x, axis=axis), np.nanpercentile(x, 5, axis=axis), np.nanpercentile(x, 95, axis=axis)


def summarize(out: Path, study) -> dict:
    """Match the cases' particles to the run's, write ``uncertainty/summary.json`` and ``particles.csv``."""
    from pipeline.study import _case_row, run_outcomes

    folder = out / FOLDER
    nominal_labels = io.read_volume(out / "particles.tif").data
    nominal_table = io.read_csv(out / "particles.csv")
    last = nominal_table["step"] == int(nominal_table["step"].max())
    ids = nominal_table["particle_id"][last].astype(np.int64)
    nominal_row, _ = run_outcomes(out)
    rows, per_particle, shares = [], {k: [] for k in PARTICLE if k in nominal_table}, []
    for case in study.cases:
        cf = folder / "cases" / case.name
        row, parts = _case_row(case, cf, ())
        if row["status"] != "done":
            continue
        rows.append(row)
        match = match_particles(nominal_labels, io.read_volume(cf / "particles.tif").data)
        shares.append(float(np.mean(match[ids - 1] > 0)) if ids.size else np.nan)
        pid = np.asarray(parts["particle_id"], np.int64)
        where = np.full(int(max(pid.max(initial=0), match.max(initial=0))) + 1, -1)
        where[pid] = np.arange(pid.size)
        pos = np.where(match[ids - 1] > 0, where[match[ids - 1]], -1)
        for k in per_particle:
            v = np.asarray(parts[k], float) if k in parts else np.full(pid.size, np.nan)
            per_particle[k].append(np.where(pos >= 0, v[np.maximum(pos, 0)], np.nan))
    electrode = {}
    for k, label in ELECTRODE.items():
        vals = np.array([r.get(k, np.nan) for r in rows], float)
        if not np.isfinite(vals).any():
            continue
        med, lo, hi = interval(vals)
        electrode[k] = {"label": label, "nominal": nominal_row.get(k), "median": float(med), "p05": float(lo),
                        "p95": float(hi), "robust": bool(hi - lo <= 2 * ROBUST * abs(med))}
    summary = {"samples": len(study.cases), "done": len(rows), "matched_share_mean": float(np.nanmean(shares))
               if shares else None, "matched_share": shares, "electrode": electrode,
               "draws": [dict(c.swept) for c in study.cases], "match_iou": MATCH_IOU, "robust_within": ROBUST}
    io.write_json(folder / "summary.json", summary)
    table = {"particle_id": ids}
    if rows:
        table["matched_share"] = np.mean(np.isfinite(np.array(per_particle["volume_um3"])), axis=0)
        for k, v in per_particle.items():
            med, lo, hi = interval(np.array(v))
            table[f"{k}_nominal"] = np.asarray(nominal_table[k][last], float)
            table[f"{k}_median"], table[f"{k}_p05"], table[f"{k}_p95"] = med, lo, hi
    io.write_csv(folder / "particles.csv", table)
    log.info("uncertainty: %d of %d perturbed runs done, %.0f %% of the particles matched on average",
             len(rows), len(study.cases), 100 * (summary["matched_share_mean"] or 0))
    return summary


def run_uncertainty(cfg: Config, out: Path, spacing_um, image: np.ndarray, *, workers: int | None = None,
                    scheduler: str | None = None) -> dict:
    """Run the perturbed cases (dask; finished ones are kept) and summarize them."""
    from pipeline.study import run_study

    study = uncertainty_study(cfg, spacing_um, image)
    run_study(study, out / FOLDER, workers=workers or cfg.uncertainty.workers or None, scheduler=scheduler)
    return summarize(out, study)
