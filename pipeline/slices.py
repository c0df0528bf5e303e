"""Orthogonal slice montages of a results folder for report.html: the microstructure and the fields.

Three planes through the middle of the volume (z, y and x), drawn in µm with a scale bar:
raw grey values, phases and particles (particles cut by the box in grey), then von Mises,
hydrostatic stress, SOC and interface damage (where the run has them) at the first and the last
written step. Matplotlib only; each montage is returned as a figure with its caption, and
report.html saves them as PNGs beside it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.napari.layers import FIELD_STYLE, PHASE_COLOURS, colour_limits, field_volumes, raw_volume
from solvers.mesh.voxel import ACTIVE

log = logging.getLogger(__name__)

PLANES = (("z", 0), ("y", 1), ("x", 2))  # (name of the axis held, axis)


def scale_bar_um(extent_um: float) -> float:
    """A round scale-bar length (1, 2 or 5 x 10^k µm) near a quarter of ``extent_um``."""
    target = extent_um / 4
    k = np.floor(np.log10(target))
    return float(max((m * 10**k for m in (1, 2, 5) if m * 10**k <= target), default=10**k))


def middle_slices(vol: np.ndarray) -> list[np.ndarray]:
    """The (z, y, x) volume's three middle planes: yx at mid z, zx at mid y, zy at mid x."""
    return [np.take(vol, vol.shape[a] // 2, axis=a) for _, a in PLANES]


def _panel(ax, img, spacing, axis, bar_um, **kw):
    """One slice in µm (rows and columns of the plane), with its scale bar; returns the image artist."""
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    sr, sc = [s for a, s in enumerate(spacing) if a != axis]
    art = ax.imshow(img, extent=(0, img.shape[1] * sc, img.shape[0] * sr, 0), interpolation="nearest", **kw)
    ax.add_artist(AnchoredSizeBar(ax.transData, bar_um, f"{bar_um:g} µm", "lower right", pad=0.3, color="white",
                                  frameon=False, size_vertical=img.shape[0] * sr / 60,
                                  fontproperties=FontProperties(size=7)))
    ax.set_xticks([])
    ax.set_yticks([])
    return art


def _particle_colours(particles: np.ndarray, cut: set[int]):
    """RGBA image of particle labels: interior particles in distinct colours, particles cut by the box grey."""
    import matplotlib

    rng = np.random.default_rng(0)
    n = int(particles.max()) + 1
    table = matplotlib.colormaps["tab20"](rng.integers(0, 20, n))
    table[0] = (0, 0, 0, 1)
    for k in cut:
        if 0 < k < n:
            table[k] = (0.55, 0.55, 0.55, 1)
    return table[particles]


def phase_rgba(img: np.ndarray) -> np.ndarray:
    """RGBA image of a phase slice: electrolyte blue, active orange, void black."""
    colours = np.array([PHASE_COLOURS[k] for k in range(3)])
    rgba = colours[np.clip(img, 0, 2)]
    rgba[img == 0] = (0, 0, 0, 1)
    return rgba


def microstructure_montage(plt, out: Path, table: dict):
    """raw | phases | particles in the three middle planes: (figure, caption)."""
    ph_vol = io.read_volume(out / "phases.tif")
    phases, spacing = ph_vol.data, ph_vol.spacing_um or (1.0, 1.0, 1.0)
    particles = io.read_volume(out / "particles.tif").data
    last = table["step"] == table["step"].max()
    cut = set(table["particle_id"][last & table["touches_boundary"]].astype(int).tolist())
    raw = raw_volume(out)
    raw = raw if raw is not None and raw.shape == phases.shape else None
    rows = ([("raw", raw)] if raw is not None else []) + [("phases", phases), ("particles", particles)]
    bar = scale_bar_um(min(s * n for s, n in zip(spacing, phases.shape)))
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for r, (name, vol) in enumerate(rows):
        for c, ((held, axis), img) in enumerate(zip(PLANES, middle_slices(vol))):
            ax = axes[r, c]
            if name == "raw":
                lo, hi = np.percentile(vol, [0.5, 99.5])
                _panel(ax, img, spacing, axis, bar, cmap="gray", vmin=lo, vmax=hi)
            elif name == "phases":
                _panel(ax, phase_rgba(img), spacing, axis, bar)
            else:
                _panel(ax, _particle_colours(img, cut), spacing, axis, bar)
            ax.set_title(f"{name}, mid {held}", fontsize=9)
    fig.tight_layout()
    return fig, (f"Middle slices (z, y, x) of the {'raw grey values, ' if raw is not None else ''}phases "
                  f"(electrolyte blue, active orange, void black) and particles (cut by the box: grey). "
                  f"Scale bar {bar:g} µm.")


def fields_montage(plt, out: Path):
    """Each cell field at the first and last written step, three middle planes: (figure, caption), or
    None without fields."""
    ph_vol = io.read_volume(out / "phases.tif")
    spacing = ph_vol.spacing_um or (1.0, 1.0, 1.0)
    fields = field_volumes(out, ph_vol.data.shape, spacing, steps=[0, -1])
    if not fields:
        return None
    active = ph_vol.data == ACTIVE
    rows = []
    for name, (_, vol) in fields.items():
        if name == "soc":  # the state of charge lives in the particles only
            vol = np.where(active[None], vol, np.nan)
        limits = colour_limits(vol, FIELD_STYLE[name][2]) or (0.0, 1.0)  # both steps on one scale
        for k in sorted({0, len(vol) - 1}):
            rows.append((name, k, vol, limits))
    bar = scale_bar_um(min(s * n for s, n in zip(spacing, ph_vol.data.shape)))
    fig, axes = plt.subplots(len(rows), 3, figsize=(9.6, 2.8 * len(rows)), squeeze=False)
    import matplotlib

    for r, (name, k, vol, (lo, hi)) in enumerate(rows):
        label, cmap, _ = FIELD_STYLE[name]
        cm = matplotlib.colormaps[cmap].with_extremes(bad="black")
        for c, ((held, axis), img) in enumerate(zip(PLANES, middle_slices(vol[k]))):
            art = _panel(axes[r, c], np.ma.masked_invalid(img), spacing, axis, bar, cmap=cm, vmin=lo, vmax=hi)
            axes[r, c].set_title(f"{'first' if k == 0 else 'last'} step, mid {held}", fontsize=9)
        fig.colorbar(art, ax=list(axes[r]), shrink=0.8, label=label)
    return fig, (f"Cell fields in the middle slices at the first and the last written step (void black, and the "
                  f"electrolyte for SOC; colour limits: 1st-99th percentile). Scale bar {bar:g} µm.")
