"""Layer data for napari from a results folder or a stack (no napari import: testable without Qt)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline import io

log = logging.getLogger(__name__)

PHASE_COLOURS = {0: (0.0, 0.0, 0.0, 0.0), 1: (0.25, 0.55, 0.95, 1.0), 2: (0.95, 0.6, 0.15, 1.0),
                 None: (1.0, 0.0, 1.0, 1.0)}  # None: any other value (an edit error) in magenta
PHASE_NAMES = {0: "void", 1: "electrolyte", 2: "active"}
FIELD_STYLE = {  # cell field -> (layer name, colormap, symmetric limits)
    "von_mises_MPa": ("von Mises (MPa)", "inferno", False),
    "hydrostatic_MPa": ("hydrostatic (MPa)", "coolwarm", True),
    "soc": ("SOC theta", "viridis", False),
    "interface_damage": ("interface damage", "magma", False),
}


def is_results_folder(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "phases.tif").exists()


def stack_layers(path) -> list[tuple]:
    """A raw stack (file or slice folder) as one grayscale image layer."""
    vol = io.read_volume(path)
    scale = vol.spacing_um or (1.0, 1.0, 1.0)
    lo, hi = np.percentile(vol.data, [0.5, 99.5]) if vol.data.size else (0, 1)
    return [(vol.data, {"name": Path(path).name, "scale": scale, "contrast_limits": (float(lo), float(hi)),
                        "metadata": {"spacing_um": scale}}, "image")]


def particle_features(out: Path, step: int | None = None) -> dict[str, np.ndarray] | None:
    """particles.csv rows of one step (default: last), with an ``index`` column = label value."""
    f = out / "particles.csv"
    if not f.exists():
        return None
    t = io.read_csv(f)
    k = int(t["step"].max()) if step is None else int(step)
    rows = t["step"] == k
    feats = {c: v[rows] for c, v in t.items()}
    feats["index"] = feats["particle_id"]
    return feats


def field_volumes(out: Path, shape, spacing_um, steps=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Cell fields of fields.xdmf on the voxel grid: name -> (times (T,), float32 (T, Z, Y, X)).

    ``steps``: the indices of the written steps to read (negative from the end; default: all).

    Hex cells fill their voxel. Tetrahedral meshes carry the ``voxel`` of
    every cell: a voxel takes the volume-weighted mean of its tets, and solid
    voxels that no conforming tet centroid falls in take the nearest value.
    Voxels without a cell (void) are NaN.
    """
    import meshio
    from scipy import ndimage as ndi

    f = out / "fields.xdmf"
    if not f.exists():
        return {}
    with meshio.xdmf.TimeSeriesReader(f) as r:
        points, cells = r.read_points_cells()
        which = range(r.num_steps) if steps is None else sorted({k % r.num_steps for k in steps})
        steps = [r.read_data(k) for k in which]
    conn = cells[0].data
    n_vox = int(np.prod(shape))
    if "voxel" in steps[0][2]:
        flat = np.asarray(steps[0][2]["voxel"][0]).astype(np.int64).ravel()
        x = points[conn[:, :4]]  # corners (quadratic tets list their mid-edge nodes after them)
        w = np.abs(np.linalg.det(x[:, 1:] - x[:, :1]))  # 6 x tet volume
        wsum = np.bincount(flat, weights=w, minlength=n_vox)
        hit = wsum > 0
        solid = np.zeros(n_vox, bool)
        solid[flat] = True
        solid = _solid_voxels(out, shape, solid)  # also the solid voxels that hold no tet centroid
        nearest = ndi.distance_transform_edt(~hit.reshape(shape), return_distances=False,
                                             return_indices=True)
        fill = np.ravel_multi_index(tuple(nearest.reshape(3, -1)), shape)
    else:
        corner = points[conn[:, 0]]  # node 0 of each hex: the (x, y, z) minimum corner, um
        ijk = np.rint(corner[:, ::-1] / np.asarray(spacing_um)).astype(np.int64)
        flat = np.ravel_multi_index(tuple(ijk.T), shape)
    out_fields = {}
    times = np.array([s[0] for s in steps])
    for name in FIELD_STYLE:
        if name not in steps[0][2]:
            continue
        vol = np.full((len(steps),) + tuple(shape), np.nan, np.float32)
        for k, (_, _, cd) in enumerate(steps):
            v = np.asarray(cd[name][0], float).ravel()
            if "voxel" in steps[0][2]:
                mean = np.bincount(flat, weights=w * v, minlength=n_vox) / np.where(hit, wsum, 1.0)
                vol[k].ravel()[:] = np.where(solid, mean[fill], np.nan)
            else:
                vol[k].ravel()[flat] = v
        out_fields[name] = (times, vol)
    return out_fields


def _solid_voxels(out: Path, shape, fallback: np.ndarray) -> np.ndarray:
    """Solid voxels of the meshed label image (phases.tif or its edit), flat; ``fallback`` if unreadable."""
    for f in (out / "edits" / "phases.tif", out / "phases.tif"):
        if f.exists():
            ph = io.read_volume(f).data
            if ph.shape == tuple(shape):
                return (ph != 0).ravel()
    return fallback


def raw_volume(out: Path) -> np.ndarray | None:
    """The run's input stack as it was cropped (from the results folder's config.toml), or None when
    the config or the input can no longer be read (a moved stack)."""
    from pipeline.config import load_config
    from tomomech.errors import TomomechError

    cfg_file = Path(out) / "config.toml"
    try:
        cfg = load_config(cfg_file) if cfg_file.exists() else None
        if cfg is None or not Path(cfg.input.path).exists():
            return None
        return io.read_volume(cfg.input.path, crop=cfg.input.crop).data
    except TomomechError as exc:
        log.info("raw grey values not shown (%s)", exc)
        return None


def colour_limits(values: np.ndarray, symmetric: bool = False) -> tuple[float, float] | None:
    """1st-99th percentile of the finite ``values`` (symmetric about 0 if asked), or None if none is finite."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    lo, hi = np.percentile(finite, [1, 99])
    if symmetric:
        m = max(abs(lo), abs(hi), 1e-9)
        lo, hi = -m, m
    return float(lo), float(max(hi, lo + 1e-9))


def results_layers(path, step: int | None = None) -> list[tuple]:
    """Layers of a results folder: raw (cropped), phases, particles (+ features), fields."""
    out = Path(path)
    edits = out / "edits"  # hand edits (pipeline.run.save_edits) take precedence
    ph_file = edits / "phases.tif" if (edits / "phases.tif").exists() else out / "phases.tif"
    pa_file = edits / "particles.tif" if (edits / "particles.tif").exists() else out / "particles.tif"
    phases_vol = io.read_volume(ph_file)
    particles = io.read_volume(pa_file).data
    spacing = phases_vol.spacing_um or (1.0, 1.0, 1.0)
    layers = []
    raw = raw_volume(out)
    if raw is not None:
        lo, hi = np.percentile(raw, [0.5, 99.5])
        layers.append((raw, {"name": "raw", "scale": spacing, "visible": False,
                             "contrast_limits": (float(lo), float(max(hi, lo + 1)))}, "image"))
    meta = {"results_dir": str(out.resolve()), "spacing_um": spacing}
    fields = field_volumes(out, phases_vol.data.shape, spacing)
    for name, (times, vol) in fields.items():
        label, cmap, sym = FIELD_STYLE[name]
        limits = colour_limits(vol, sym)
        if limits is None:
            continue
        layers.append((vol, {"name": label, "scale": (1.0,) + tuple(spacing), "colormap": cmap,
                             "contrast_limits": limits, "visible": False,
                             "metadata": {**meta, "times": times.tolist()}}, "image"))
    layers.append((phases_vol.data, {"name": "phases", "scale": spacing, "opacity": 0.5,
                                     "colormap": PHASE_COLOURS,
                                     "features": {"index": np.array([0, 1, 2]),
                                                  "phase": np.array(list(PHASE_NAMES.values()), dtype=object)},
                                     "metadata": meta}, "labels"))
    feats = particle_features(out, step)
    kw = {"name": "particles", "scale": spacing, "metadata": meta}
    if feats is not None:
        kw["features"] = feats
    layers.append((particles, kw, "labels"))
    return layers
