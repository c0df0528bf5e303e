"""napari plugin: reader layers, widgets equal the library, saved edits feed the next run, screenshot."""

import numpy as np
import pytest

napari = pytest.importorskip("napari")

# napari and its stack (pydantic, npe2, vispy) emit their own deprecation warnings; ours stay errors
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

from pipeline import io  # noqa: E402
from pipeline.cli import main  # noqa: E402
from pipeline.config import SegmentationConfig  # noqa: E402
from pipeline.napari.layers import PHASE_NAMES  # noqa: E402
from pipeline.napari.reader import get_reader  # noqa: E402
from pipeline.napari.view import add_layers, layers_for  # noqa: E402
from pipeline.napari.widgets import (  # noqa: E402
    SegmentationWidget,
    colour_by,
    inspect_particle,
    write_segmentation_config,
)
from pipeline.run import save_edits, segment_stage  # noqa: E402


@pytest.fixture
def results(config_file):
    assert main(["-q", "run", str(config_file)]) == 0
    return config_file.parent / "out"


def test_reader_layers_names_scales_features(results):
    reader = get_reader(str(results))
    assert reader is not None
    layers = {kw["name"]: (data, kw, kind) for data, kw, kind in reader(str(results))}
    assert {"raw", "phases", "particles", "von Mises (MPa)", "hydrostatic (MPa)"} <= set(layers)
    data, kw, kind = layers["particles"]
    assert kind == "labels" and kw["scale"] == pytest.approx((0.5, 0.5, 0.5))
    table = io.read_csv(results / "particles.csv")
    last = table["step"] == table["step"].max()
    assert np.array_equal(kw["features"]["index"], table["particle_id"][last])
    assert np.allclose(kw["features"]["von_mises_max_MPa"], table["von_mises_max_MPa"][last], equal_nan=True)
    vm, kwv, _ = layers["von Mises (MPa)"]
    assert vm.shape == (2,) + data.shape and kwv["scale"][1:] == pytest.approx((0.5, 0.5, 0.5))
    # fields on the grid: NaN in void, finite in solid
    phases = layers["phases"][0]
    assert np.isnan(vm[-1][phases == 0]).all() and np.isfinite(vm[-1][phases > 0]).all()
    assert list(layers["phases"][1]["features"]["phase"]) == list(PHASE_NAMES.values())
    assert get_reader(str(results / "phases.tif")) is not None and get_reader(str(results / "x.csv")) is None


def test_layers_in_viewer_and_particle_tools(make_napari_viewer, results):
    viewer = make_napari_viewer()
    added = add_layers(viewer, layers_for(results))
    particles = viewer.layers["particles"]
    assert len(added) >= 5 and particles.features.shape[0] > 3
    colours = colour_by(particles, "von_mises_max_MPa")
    ids = particles.features["index"].to_numpy()
    vm = particles.features["von_mises_max_MPa"].to_numpy()
    assert colours[int(ids[np.nanargmax(vm)])] != colours[int(ids[np.nanargmin(vm)])]
    text = inspect_particle(viewer, particles, int(ids[0]))
    assert f"particle_id: {int(ids[0])}" in text and particles.selected_label == int(ids[0])
    row = particles.features.iloc[0]
    assert viewer.camera.center[-1] == pytest.approx(row["centroid_x_um"])


def test_segmentation_widget_equals_library(make_napari_viewer, tmp_path):
    """The widget segments a synthetic image to its known phases, and as the library and the CLI do.

    Grey levels increase with the phase code and the noise (sigma 50) is far below the half gaps (450 and
    1000), so the 3^3 median of the grey values lies in the level of the median phase of the window: the
    known answer is the median filter of the true labels (467 of its voxels differ from the labels), which
    multi-Otsu then separates exactly.
    """
    from scipy import ndimage as ndi

    from segmentation import make_composite

    phases, _ = make_composite((16, 16, 16), active_fraction=0.4, void_fraction=0.1, radius=3, seed=2)
    grey = np.array([100.0, 1000.0, 3000.0])[phases] + np.random.default_rng(0).normal(0, 50, phases.shape)
    known = ndi.median_filter(phases, size=3)
    viewer = make_napari_viewer()
    viewer.add_image(grey, name="grey", scale=(0.5, 0.5, 0.5))
    w = SegmentationWidget(viewer)
    w.image.value = viewer.layers["grey"]
    w.min_vox.value = 5
    w.denoise.value = "median"
    got_phases, got_particles = w.preview()
    assert len(w.axes.lines) == 2 and len(w.thresholds()) == 2  # histogram with the multi-Otsu thresholds
    assert np.array_equal(got_phases, known) and np.array_equal(got_particles > 0, known == 2)
    expect = segment_stage(grey, SegmentationConfig(denoise="median", min_particle_voxels=5), (0.5,) * 3)
    assert np.array_equal(got_phases, expect[0]) and np.array_equal(got_particles, expect[1])
    assert np.array_equal(viewer.layers["particles (preview)"].data, expect[1])
    cfg = write_segmentation_config(tmp_path / "seg.toml", w.options(), str(tmp_path / "grey.tif"), (0.5,) * 3)
    io.write_volume(tmp_path / "grey.tif", grey.astype(np.float32), (0.5,) * 3)
    assert main(["-q", "segment", str(cfg), "-o", str(tmp_path / "o")]) == 0
    assert np.array_equal(io.read_volume(tmp_path / "o" / "particles.tif").data, expect[1])


def test_saved_edits_are_used_by_the_next_run(results, config_file):
    import json

    particles = io.read_volume(results / "particles.tif").data
    phases = io.read_volume(results / "phases.tif").data
    ids = np.unique(particles[particles > 0])
    a, b = int(ids[0]), int(ids[1])
    merged = np.where(particles == b, a, particles)  # merge two particles by hand
    save_edits(results, phases, merged, (0.5, 0.5, 0.5))
    assert main(["-q", "run", str(config_file)]) == 0
    prov = json.loads((results / "provenance.json").read_text())
    assert prov["cached"]["edits"] is True and prov["cached"]["solve"] is False
    table = io.read_csv(results / "particles.csv")
    assert b not in set(table["particle_id"][table["meshed"]])
    # a third run with nothing changed reuses everything
    assert main(["-q", "run", str(config_file)]) == 0
    assert json.loads((results / "provenance.json").read_text())["cached"]["solve"] is True


def test_view_screenshot_is_not_blank(results, tmp_path):
    png = tmp_path / "shot.png"
    assert main(["-q", "view", str(results), "--screenshot", str(png)]) == 0
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB"))
    colours = np.unique(img.reshape(-1, 3), axis=0)
    # black background, the electrolyte blue and at least three particle colours
    assert img.shape[0] > 200 and len(colours) >= 5
    assert (img.reshape(-1, 3).max(axis=1) > 30).mean() > 0.3  # most of the canvas is not black


@pytest.mark.parametrize("kind, order", [("voxel-tet", 1), ("voxel-tet", 2), ("conforming-tet", 1)])
def test_tet_fields_on_the_voxel_grid(config_file, kind, order):
    """Tet cell fields come back on the voxel grid: a voxel-tet voxel is the mean of its 6 equal tets;
    every solid voxel is finite (conforming: from the nearest voxel holding a tet centroid), void is NaN;
    quadratic tets go through the whole pipeline (tetra10 in the XDMF files)."""
    import json

    import meshio

    if kind == "conforming-tet":
        pytest.importorskip("pygalmesh")
    config_file.write_text(config_file.read_text().replace(
        "[cycling]", f'[mesh]\nkind = "{kind}"\norder = {order}\n[cycling]'))
    assert main(["-q", "run", str(config_file)]) == 0
    out = config_file.parent / "out"
    layers = {kw["name"]: data for data, kw, _ in get_reader(str(out))(str(out))}
    vm, phases = layers["von Mises (MPa)"], layers["phases"]
    assert np.isnan(vm[-1][phases == 0]).all() and np.isfinite(vm[-1][phases > 0]).all()
    with meshio.xdmf.TimeSeriesReader(out / "fields.xdmf") as r:
        r.read_points_cells()
        _, _, cd = r.read_data(r.num_steps - 1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mesh"]["element"] == ("tetra" if order == 1 else "tetra10")
    voxel = cd["voxel"][0].astype(np.int64)
    cell_vm = cd["von_mises_MPa"][0]
    lo, hi = cell_vm.min(), cell_vm.max()
    slack = 1e-5 * (hi - lo)  # the layers are float32
    assert lo - slack <= np.nanmin(vm[-1]) and np.nanmax(vm[-1]) <= hi + slack  # means stay within the range
    if kind == "voxel-tet":
        expect = np.bincount(voxel, weights=cell_vm, minlength=phases.size) / 6
        solid = (phases > 0).ravel()
        assert np.allclose(vm[-1].ravel()[solid], expect[solid], rtol=1e-6)
