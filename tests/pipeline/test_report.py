"""report.html: the one-line answer, per-particle p95, and slice montages with scale bars."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline import io, slices
from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory):
    """The demo (`make run`: samples/matbox_nmc/demo.toml, a 56^3 MATBOX crop, three steps), about 20 s."""
    out = tmp_path_factory.mktemp("report") / "demo"
    assert main(["-q", "run", str(ROOT / "samples/matbox_nmc/demo.toml"), "-o", str(out)]) == 0
    return out


def _colours(png) -> int:
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    return len(np.unique(img.reshape(-1, img.shape[-1]), axis=0))


def test_slice_montages_exist_are_not_blank_and_carry_scale_bars(demo_like):
    out = demo_like
    page = (out / "report.html").read_text()
    for name in ("slices_microstructure.png", "slices_fields.png"):
        assert f'src="{name}"' in page
        assert _colours(out / name) > 50, f"{name} looks blank"
    # every panel carries a scale bar, and the caption says its length: the figures as the report saves them
    from matplotlib.offsetbox import AnchoredOffsetbox

    from pipeline.report import _fig

    table = io.read_csv(out / "particles.csv")
    drawn, captions = zip(slices.microstructure_montage(_fig(), out, table), slices.fields_montage(_fig(), out))
    bar = slices.scale_bar_um(56 * 0.4)
    assert bar == 5.0
    for fig, caption in zip(drawn, captions):
        assert f"Scale bar {bar:g} µm" in caption
        panels = [a for a in fig.axes if a.images]
        assert len(panels) >= 6
        for ax in panels:
            bars = [a for a in ax.artists if isinstance(a, AnchoredOffsetbox)]
            assert len(bars) == 1
    # raw, phases, particles (3 rows) and 3 fields x first/last (6 rows), 3 planes each
    assert [len([a for a in f.axes if a.images]) for f in drawn] == [9, 18]


def test_headline_numbers_are_the_tables(demo_like):
    out = demo_like
    page = (out / "report.html").read_text()
    summary = json.loads((out / "summary.json").read_text())
    table = io.read_csv(out / "particles.csv")
    line = re.search(r'<p class="answer"><b>(.*?)</b></p>', page).group(1)
    n, peak, pid = re.fullmatch(r"(\d+) particles, peak particle p95 von Mises ([\d.e+-]+) MPa in particle (\d+)"
                                r"(?: \(every particle is cut by the box\))?\.", line).groups()
    assert int(n) == summary["particle_count"]
    last = (table["step"] == table["step"].max()) & table["meshed"]
    pool = last & ~table["touches_boundary"] if (last & ~table["touches_boundary"]).any() else last
    k = np.nanargmax(np.where(pool, table["von_mises_p95_MPa"], np.nan))
    assert int(pid) == table["particle_id"][k]
    assert float(peak) == pytest.approx(table["von_mises_p95_MPa"][k], rel=1e-3)
    assert "debonded" not in line  # a bonded run has no debonded share to report
    assert "every particle is cut" not in line  # the demo crop holds interior particles


def test_particle_plots_use_p95_and_label_the_max(demo_like):
    page = (demo_like / "report.html").read_text()
    assert "p95 von Mises" in page and "voxel-corner value" in page
    assert "<script" not in page and "http" not in page  # opens without network access


def test_scale_bar_lengths_are_round():
    assert [slices.scale_bar_um(e) for e in (10, 19.2, 40, 96, 0.9)] == [2.0, 2.0, 10.0, 20.0, 0.2]
