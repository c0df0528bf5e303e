"""``tomomech init STACK``: a commented starting config for a stack, with the evidence behind it.

It reads the stack once and proposes what a first run needs: the voxel size (from the file's
metadata, or a TODO), the segmentation (multi-Otsu thresholds over the field of view, with the
histogram saved as a PNG, or the label values of a label image) and a crop small enough for a
first run in minutes. Nothing is solved.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from pipeline import io
from tomomech.errors import InputError

log = logging.getLogger(__name__)

#: the largest crop edge proposed for a first run (96^3 voxel-hex: about 2.6 M dof, a minute per step)
FIRST_CROP = 96
#: a stack with at most this many distinct integer values is taken as a label image
MAX_LABELS = 8


def centred_crop(shape, inside=None, edge: int = FIRST_CROP) -> list[list[int]]:
    """The centred crop ``[[z0, z1], [y0, y1], [x0, x1]]`` at most ``edge`` voxels a side whose (y, x)
    square lies inside the field of view ``inside`` ((Y, X) bool, or None for all of it)."""
    shape = np.asarray(shape)
    size = np.minimum(shape, edge)
    if inside is not None:  # shrink the (y, x) square until it holds only live columns
        n = int(min(size[1], size[2]))
        y0, x0 = (shape[1] - n) // 2, (shape[2] - n) // 2
        while n > 2 and not inside[y0:y0 + n, x0:x0 + n].all():
            n -= 2
            y0, x0 = y0 + 1, x0 + 1
        size[1] = size[2] = n
    start = (shape - size) // 2
    return [[int(a), int(a + n)] for a, n in zip(start, size)]


def _histogram_png(path: Path, values: np.ndarray, thresholds, valleys) -> None:
    from pipeline.report import _fig, _save

    plt = _fig()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.hist(values.ravel(), bins=256, color="0.4")
    for i, (t, (lo, hi)) in enumerate(zip(thresholds, valleys)):
        ax.axvspan(lo, hi, color=f"C{i}", alpha=0.15, lw=0)
        ax.axvline(t, color=f"C{i}", label=f"threshold {i + 1}: {t:.4g} (valley {lo:.4g}-{hi:.4g})")
    ax.set_yscale("log")
    ax.set_xlabel("grey value (inside the field of view)")
    ax.set_ylabel("voxels")
    ax.legend(fontsize=8)
    ax.set_title("multi-Otsu: void | electrolyte | active, dark to bright")
    _save(plt, fig, path)


def init_config(stack, config_path=None, *, force: bool = False) -> Path:
    """Write a commented config for ``stack`` (TIFF or slice folder) and, for grey values, its histogram.

    Parameters
    ----------
    stack : path of the stack
    config_path : the TOML file to write (default: ``<stack name>.toml`` in the current folder)
    force : overwrite an existing config

    Returns
    -------
    Path of the config written.
    """
    stack = Path(stack)
    config_path = Path(config_path or Path.cwd() / f"{stack.with_suffix('').name}.toml")
    if config_path.suffix != ".toml":
        raise InputError(f"{config_path}: the config to write must end in .toml")
    if config_path.exists() and not force:
        raise InputError(f"{config_path} exists: choose another name with -o, or pass --force to overwrite it")
    vol = io.read_volume(stack)  # raises InputError for what it cannot read
    image = vol.data
    rel = os.path.relpath(stack.resolve(), config_path.resolve().parent)
    rel = str(stack.resolve()) if rel.startswith("..") else rel  # relative only below the config's folder
    lines = [f"# tomomech config for {stack.name}, written by `tomomech init` (shape z, y, x = "
             f"{', '.join(map(str, image.shape))}, {image.dtype}).",
             "# Check it, then: tomomech view " + str(stack) + "   and   tomomech run " + str(config_path),
             "# Every key: the config reference (docs/config.md).", "", "[input]", f'path = "{rel}"']
    if vol.spacing_um is None:
        lines += ["# TODO: the file carries no voxel size. Set it (micrometres, one number or [z, y, x]):",
                  "# voxel_size_um = 0.4"]
    else:
        vs = [round(float(v), 6) for v in vol.spacing_um]
        lines.append(f"voxel_size_um = {vs[0] if len(set(vs)) == 1 else vs}   # from the file's metadata")
    values = np.unique(image[:: max(1, image.shape[0] // 16)]) if np.issubdtype(image.dtype, np.integer) else []
    inside = None
    if 0 < len(values) <= MAX_LABELS:
        seg = ["[segmentation]", 'method = "labels"',
               f"# label values found: {', '.join(map(str, values))}. Map each to void, electrolyte or active:",
               "phase_map = { " + ", ".join(f'{v} = "TODO"' for v in values) + " }"]
        log.info("%s holds %d label values: proposed method = 'labels'; map them in [segmentation] "
                 "phase_map", stack.name, len(values))
    else:
        from pipeline.config import SegmentationConfig
        from pipeline.run import grey_thresholds
        from pipeline.uncertainty import valley_ranges

        img, inside, thr = grey_thresholds(image, SegmentationConfig())
        live = img if inside is None else img[:, inside]
        valleys = valley_ranges(live, thr)
        png = config_path.with_name(config_path.stem + "_histogram.png")
        _histogram_png(png, live, thr, valleys)
        cls = np.digitize(live, thr)
        frac = np.bincount(cls.ravel(), minlength=3) / cls.size
        seg = ["[segmentation]", 'method = "multiotsu"   # or "thresholds" with thresholds = [t1, t2]',
               f"# multi-Otsu proposes thresholds {', '.join(f'{t:.4g}' for t in thr)} (histogram: {png.name});",
               f"# classes dark -> bright hold {', '.join(f'{f:.1%}' for f in frac)} of the "
               + ("field of view" if inside is not None else "stack") + ".",
               f"# thresholds = [{', '.join(f'{t:.4g}' for t in thr)}]",
               'phase_map = { 0 = "void", 1 = "electrolyte", 2 = "active" }',
               'denoise = "none"             # "median" | "gaussian" | "nlmeans" for noisy stacks',
               "min_particle_voxels = 20"]
        if inside is not None:
            seg.insert(2, f"# a cylindrical field of view was found ({inside.mean():.0%} of each slice); "
                          "the outside is masked as void")
        log.info("multi-Otsu thresholds %s; histogram in %s", np.round(thr, 4).tolist(), png)
    crop = centred_crop(image.shape, inside)
    whole = all(c == [0, s] for c, s in zip(crop, image.shape))
    lines.append(("# " if whole else "") + f"crop = {crop}   # a centred first crop (at most "
                 f"{FIRST_CROP}^3, inside the field of view); remove it for the whole stack")
    lines += [""] + seg + ["", "[mesh]", 'kind = "voxel-hex"', "", "[materials]",
                           'active = "NMC811"             # `tomomech materials` lists the presets',
                           'electrolyte = "Li6PS5Cl"', "", "[mechanics]", 'top = "free"', "", "[cycling]",
                           'mode = "swell"                # or "galvanostatic" (Li diffusion at c_rate)',
                           "soc_start = 1.0", "soc_end = 0.22", "steps = 3", "", "[interface]",
                           'model = "bonded"              # "cohesive": the AP|SE interface can debond',
                           "", "[output]", f'dir = "{stack.with_suffix("").name}_results"', ""]
    with io.atomic_path(config_path) as tmp:
        tmp.write_text("\n".join(lines))
    log.info("wrote %s; next: tomomech run %s", config_path, config_path)
    return config_path
