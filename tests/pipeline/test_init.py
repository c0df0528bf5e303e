"""``tomomech init``: a commented config a first run can start from."""

import numpy as np
import pytest

from pipeline import init
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.io import write_volume


def grey_stack(shape=(24, 40, 40), seed=0):
    """Three grey levels (void 1000, electrolyte 3000, active 6000, noise 150) inside a cylinder; outside 0."""
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, 3, shape)
    img = np.array([1000.0, 3000.0, 6000.0])[cls] + rng.normal(0, 150, shape)
    yy, xx = np.mgrid[:shape[1], :shape[2]]
    inside = (yy - shape[1] / 2 + 0.5) ** 2 + (xx - shape[2] / 2 + 0.5) ** 2 < (shape[1] / 2 - 1) ** 2
    img[:, ~inside] = 0
    return img.astype(np.uint16), inside


def test_grey_stack_gets_thresholds_histogram_and_a_crop_inside_the_field_of_view(tmp_path):
    img, inside = grey_stack()
    write_volume(tmp_path / "s.tif", img, (0.5, 0.5, 0.5))
    assert main(["-q", "init", str(tmp_path / "s.tif"), "-o", str(tmp_path / "s.toml")]) == 0
    text = (tmp_path / "s.toml").read_text()
    assert (tmp_path / "s_histogram.png").exists()
    thr = [float(t) for t in text.split("# thresholds = [")[1].split("]")[0].split(",")]
    assert 1000 < thr[0] < 3000 < thr[1] < 6000
    assert "cylindrical field of view" in text
    cfg = load_config(tmp_path / "s.toml")  # valid as written: the voxel size came from the metadata
    assert cfg.input.spacing_um() == pytest.approx((0.5, 0.5, 0.5))
    (z0, z1), (y0, y1), (x0, x1) = cfg.input.crop
    assert (z0, z1) == (0, 24) and inside[y0:y1, x0:x1].all() and y1 - y0 >= 24  # inscribed square
    # the run it proposes reads the stack and segments it
    assert main(["-q", "segment", str(tmp_path / "s.toml")]) == 0


def test_label_stack_without_voxel_size_gets_todos(tmp_path):
    import tifffile

    labels = np.random.default_rng(1).integers(0, 3, (16, 16, 16)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "l.tif", labels)
    path = init.init_config(tmp_path / "l.tif", tmp_path / "l.toml")
    text = path.read_text()
    assert 'method = "labels"' in text and 'phase_map = { 0 = "TODO", 1 = "TODO", 2 = "TODO" }' in text
    assert "# TODO: the file carries no voxel size" in text
    assert main(["-q", "run", str(path)]) == 2  # the TODOs stop the run with a message, before any work


def test_existing_config_is_not_overwritten(tmp_path, capsys):
    img, _ = grey_stack()
    write_volume(tmp_path / "s.tif", img, (0.5, 0.5, 0.5))
    (tmp_path / "s.toml").write_text("# mine\n")
    assert main(["-q", "init", str(tmp_path / "s.tif"), "-o", str(tmp_path / "s.toml")]) == 2
    assert "--force" in capsys.readouterr().err and (tmp_path / "s.toml").read_text() == "# mine\n"


def test_centred_crop():
    assert init.centred_crop((75, 75, 75)) == [[0, 75]] * 3
    assert init.centred_crop((200, 120, 100), edge=96) == [[52, 148], [12, 108], [2, 98]]
    inside = np.zeros((100, 100), bool)
    inside[30:70, 30:70] = True
    assert init.centred_crop((10, 100, 100), inside) == [[0, 10], [30, 70], [30, 70]]
