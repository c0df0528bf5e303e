"""IO round trips and clear errors for bad stacks."""

import meshio
import numpy as np
import pytest
import tifffile

from pipeline import io
from tomomech.errors import InputError


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.int32])
def test_volume_round_trip_keeps_data_and_spacing(tmp_path, dtype):
    a = (np.arange(4 * 5 * 6) % 250).reshape(4, 5, 6).astype(dtype)
    io.write_volume(tmp_path / "v.tif", a, (0.7, 0.25, 0.5))
    v = io.read_volume(tmp_path / "v.tif")
    assert v.data.dtype == dtype and np.array_equal(v.data, a)
    assert np.allclose(v.spacing_um, (0.7, 0.25, 0.5))
    assert not list(tmp_path.glob(".*part*"))  # no temporary left behind


def test_ome_spacing_read(tmp_path):
    a = np.zeros((3, 4, 5), np.uint16)
    tifffile.imwrite(tmp_path / "o.ome.tif", a, ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3, "PhysicalSizeZ": 0.9})
    assert np.allclose(io.read_volume(tmp_path / "o.ome.tif").spacing_um, (0.9, 0.3, 0.3))


def test_plain_tiff_has_no_spacing(tmp_path):
    tifffile.imwrite(tmp_path / "p.tif", np.zeros((3, 4, 5), np.uint8), photometric="minisblack")
    assert io.read_volume(tmp_path / "p.tif").spacing_um is None


def test_folder_of_slices_natural_sort_and_crop(tmp_path):
    d = tmp_path / "slices"
    d.mkdir()
    for k in range(12):
        tifffile.imwrite(d / f"s{k}.tif", np.full((6, 7), k, np.uint16))
    v = io.read_volume(d)
    assert v.data.shape == (12, 6, 7) and list(v.data[:, 0, 0]) == list(range(12))
    c = io.read_volume(d, crop=[[2, 5], [0, 3], [1, 7]])
    assert c.data.shape == (3, 3, 6) and c.data[0, 0, 0] == 2


def test_folder_with_a_missing_or_repeated_slice_number_is_refused(tmp_path):
    d = tmp_path / "gap"
    d.mkdir()
    for k in (0, 1, 2, 4, 5):
        tifffile.imwrite(d / f"slice_{k:04d}.tif", np.full((6, 7), k, np.uint16))
    with pytest.raises(InputError, match=r"slice numbers 0..5 miss 1 \(3\); every later slice would sit at the "
                                         "wrong z"):
        io.read_volume(d)
    tifffile.imwrite(d / "slice_3.tif", np.zeros((6, 7), np.uint16))
    tifffile.imwrite(d / "slice_0003.tif", np.zeros((6, 7), np.uint16))
    with pytest.raises(InputError, match=r"slices with the same number \[3\]"):
        io.read_volume(d)
    (d / "slice_3.tif").unlink()
    assert io.read_volume(d).data.shape == (6, 6, 7)  # a run that starts at any number is fine


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        io.read_volume(tmp_path / "nope.tif")
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((6, 7), np.uint8))
    with pytest.raises(InputError, match="2D image"):
        io.read_volume(tmp_path / "flat.tif")
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.arange(4000, dtype=np.uint16).reshape(10, 20, 20))
    (tmp_path / "trunc.tif").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(InputError, match="cannot read"):
        io.read_volume(tmp_path / "trunc.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="cannot read"):
        io.read_volume(tmp_path / "junk.tif")
    d = tmp_path / "mixed"
    d.mkdir()
    tifffile.imwrite(d / "a1.tif", np.zeros((4, 4), np.uint8))
    tifffile.imwrite(d / "a2.tif", np.zeros((5, 4), np.uint8))
    with pytest.raises(InputError, match="same shape"):
        io.read_volume(d)
    nan = np.zeros((3, 3, 3), np.float32)
    nan[1, 1, 1] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan, photometric="minisblack")
    with pytest.raises(InputError, match="NaN"):
        io.read_volume(tmp_path / "nan.tif")
    with pytest.raises(InputError, match="outside"):
        io.read_volume(good, crop=[[0, 11], [0, 5], [0, 5]])


def test_csv_round_trip(tmp_path):
    cols = {"id": np.array([1, 2, 3]), "x": np.array([0.5, np.nan, 1e-7]), "flag": np.array([True, False, True])}
    io.write_csv(tmp_path / "t.csv", cols)
    back = io.read_csv(tmp_path / "t.csv")
    assert np.array_equal(back["id"], cols["id"]) and np.array_equal(back["flag"], cols["flag"])
    assert np.allclose(back["x"], cols["x"], equal_nan=True)


@pytest.mark.parametrize("suffix", [".xdmf", ".vtu", ".msh"])
def test_mesh_round_trip_through_meshio(tmp_path, suffix):
    """Points, cells and per-cell phase and particle come back (two cells with different tags)."""
    pts = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 0, 0], [1, 0, 1], [1, 1, 1], [1, 1, 0.],
                    [2, 0, 0], [2, 0, 1], [2, 1, 1], [2, 1, 0]])
    cells = np.array([np.arange(8), [4, 5, 6, 7, 8, 9, 10, 11]])
    phase, particle = np.array([2, 1], np.int32), np.array([7, 0], np.int32)
    io.write_mesh(tmp_path / f"m{suffix}", pts * 2.0, cells, "hexahedron", {"phase": phase, "particle": particle})
    m = meshio.read(tmp_path / f"m{suffix}")
    assert np.allclose(m.points, pts[:, ::-1] * 2.0)  # written as (x, y, z)
    assert np.array_equal(m.cells[0].data, cells)
    names = ("gmsh:physical", "gmsh:geometrical") if suffix == ".msh" else ("phase", "particle")
    assert np.array_equal(m.cell_data[names[0]][0], phase)
    assert np.array_equal(m.cell_data[names[1]][0], particle)


def test_time_series_round_trip(tmp_path):
    pts = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 0, 0], [1, 0, 1], [1, 1, 1], [1, 1, 0.]])
    cells = np.arange(8)[None, :]
    with io.time_series_writer(tmp_path / "f.xdmf", pts, cells, "hexahedron") as write:
        for t in (1, 2):
            write(t, {"u": pts * t}, {"s": np.array([10.0 * t])})
    assert (tmp_path / "f.h5").exists()
    with meshio.xdmf.TimeSeriesReader(tmp_path / "f.xdmf") as r:
        r.read_points_cells()
        got = [r.read_data(k) for k in range(r.num_steps)]
    assert [g[0] for g in got] == [1.0, 2.0]
    assert np.allclose(got[1][1]["u"], 2 * pts[:, ::-1]) and got[1][2]["s"][0][0] == 20.0
