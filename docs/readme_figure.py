"""The README's picture, from the demo's results: phases, particles and von Mises in the middle x slice.

Usage: make run && python docs/readme_figure.py   (writes docs/demo.png)
"""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import io  # noqa: E402
from pipeline.napari.layers import field_volumes  # noqa: E402
from pipeline.report import _fig  # noqa: E402
from pipeline.slices import _panel, _particle_colours, middle_slices, phase_rgba, scale_bar_um  # noqa: E402


def main(out=ROOT / "results/matbox_demo"):
    ph = io.read_volume(out / "phases.tif")
    spacing = ph.spacing_um
    particles = io.read_volume(out / "particles.tif").data
    table = io.read_csv(out / "particles.csv")
    last = table["step"] == table["step"].max()
    cut = set(table["particle_id"][last & table["touches_boundary"]].astype(int).tolist())
    vm = field_volumes(out, ph.data.shape, spacing, steps=[-1])["von_mises_MPa"][1][-1]
    bar = scale_bar_um(min(s * n for s, n in zip(spacing, ph.data.shape)))
    plt = _fig()
    fig, ax = plt.subplots(1, 3, figsize=(10, 3.6))
    _panel(ax[0], phase_rgba(middle_slices(ph.data)[2]), spacing, 2, bar)
    _panel(ax[1], _particle_colours(middle_slices(particles)[2], cut), spacing, 2, bar)
    import matplotlib

    cmap = matplotlib.colormaps["inferno"].with_extremes(bad="black")
    art = _panel(ax[2], np.ma.masked_invalid(middle_slices(vm)[2]), spacing, 2, bar, cmap=cmap,
                 vmin=0, vmax=float(np.nanpercentile(vm, 99)))
    fig.colorbar(art, ax=ax[2], label="von Mises (MPa)", shrink=0.85)
    for a, t in zip(ax, ("phases: electrolyte, active, void", "particles (cut by the box: grey)",
                         "von Mises after a charge")):
        a.set_title(t, fontsize=10)
    fig.savefig(ROOT / "docs/demo.png", dpi=90, bbox_inches="tight")


if __name__ == "__main__":
    main()
