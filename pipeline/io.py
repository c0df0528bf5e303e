"""All file access of the project: volumes, label images, meshes, tables.

Everything written goes to a temporary name in the destination folder and is
renamed into place, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tomomech.errors import InputError

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
SUPPORTED_DTYPES = (np.uint8, np.uint16, np.int32, np.float32, np.float64, np.int16, np.int8)


@dataclass(frozen=True)
class Volume:
    """A 3D image with its voxel size.

    Attributes
    ----------
    data : (Z, Y, X) ndarray
    spacing_um : (3,) float or None
        Voxel size (z, y, x) in micrometres as found in the file metadata,
        None when the file carries none.
    source : str
        Path it was read from.
    """

    data: np.ndarray
    spacing_um: tuple[float, float, float] | None
    source: str = ""


# ----------------------------------------------------------------------------- atomic writes

@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(dest_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder in ``dest_dir``; move its files into ``dest_dir`` on success.

    For multi-file formats (XDMF + HDF5) whose files refer to each other by name.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest))
    try:
        yield tmp
        for f in tmp.iterdir():
            os.replace(f, dest / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: lock file of a results folder while a run writes to it
LOCK_NAME = ".tomomech.lock"


@contextlib.contextmanager
def results_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Hold a results folder for one run, after clearing what killed runs left in it.

    An exclusive ``flock`` on ``.tomomech.lock`` marks the folder as written to; the
    kernel drops it when the process ends in any way (SIGKILL included). Once it is
    held, every temporary in the folder (``.tmp-*`` folders of :func:`atomic_dir`,
    ``.*.part*`` files of :func:`atomic_path`) belongs to a run that died before its
    rename: they are removed, and each is logged.

    Raises
    ------
    InputError
        Another live run holds the folder.
    """
    import fcntl

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_NAME, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"another tomomech run is writing to {out}: wait for it to finish, or give "
                             "this run another output folder (-o)") from None
        for stale in stale_temporaries(out):
            size = sum(f.stat().st_size for f in stale.rglob("*") if f.is_file()) if stale.is_dir() \
                else stale.stat().st_size
            log.warning("removing %s (%.1f MB), left by a run that was killed before it finished", stale, size / 1e6)
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink()
        try:
            yield out
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Temporaries of :func:`atomic_dir` and :func:`atomic_path` anywhere in ``folder`` (a results folder)."""
    folder = Path(folder)
    dirs = [d for d in folder.rglob(".tmp-*") if d.is_dir()]
    files = [f for f in folder.rglob(".*.part*") if f.is_file() and not any(d in f.parents for d in dirs)]
    return sorted(dirs) + sorted(files)


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path):
    return json.loads(Path(path).read_text())


def write_csv(path, columns: dict[str, np.ndarray]) -> None:
    """Write equal-length columns as CSV (floats with 6 significant digits, NaN empty), vectorised."""
    names = list(columns)
    cols = [_format_column(np.asarray(columns[k])) for k in names]
    n = len(cols[0]) if cols else 0
    body = np.full(n, "", dtype=object)
    for j, c in enumerate(cols):  # one vectorised string join per column
        body = body + ("," if j else "") + c
    with atomic_path(path) as tmp:
        tmp.write_text(",".join(names) + "\n" + "".join(line + "\n" for line in body))


def _format_column(col: np.ndarray) -> np.ndarray:
    """Column as an object array of strings (CSV-quoted where needed)."""
    if col.dtype == bool:
        return np.where(col, "true", "false").astype(object)
    if np.issubdtype(col.dtype, np.integer):
        return col.astype(str).astype(object)
    if np.issubdtype(col.dtype, np.floating):
        out = np.char.mod("%.6g", col).astype(object)
        out[~np.isfinite(col)] = ""
        return out
    text = col.astype(str)
    quote = np.char.find(text, ",") >= 0
    return np.where(quote, np.char.add(np.char.add('"', np.char.replace(text, '"', '""')), '"'), text).astype(object)


def read_csv(path) -> dict[str, np.ndarray]:
    """Read a CSV written by :func:`write_csv` back into typed columns."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return {}
    names, body = rows[0], rows[1:]
    out = {}
    for j, name in enumerate(names):
        vals = [r[j] for r in body]
        if vals and all(v in ("true", "false") for v in vals):
            out[name] = np.array([v == "true" for v in vals])
        elif all(re.fullmatch(r"-?\d+", v) for v in vals):
            out[name] = np.array([int(v) for v in vals], dtype=np.int64)
        else:
            try:
                out[name] = np.array([float(v) if v else np.nan for v in vals])
            except ValueError:
                out[name] = np.array(vals, dtype=object)
    return out


def file_hash(path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file or of all files of a folder (sorted by name)."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            while b := fh.read(chunk):
                h.update(b)
    return h.hexdigest()


# ----------------------------------------------------------------------------- volumes

def _check_slice_numbers(folder: Path, names: list[str]) -> None:
    """Refuse a folder of numbered slices with a gap or a repeated number: either would put every
    later slice at the wrong height (z) without a sign in the results."""
    numbers = [re.findall(r"\d+", Path(n).stem) for n in names]
    if not all(numbers):
        return  # not all numbered: natural sort order is all there is
    idx = np.array([int(n[-1]) for n in numbers])
    stems = {re.sub(r"\d+(?=\D*$)", "#", Path(n).stem) for n in names}
    if len(stems) > 1:
        return  # several name patterns: no single index to check
    uniq, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][:5].tolist()
        raise InputError(f"folder {str(folder)!r} has slices with the same number {dup}: keep one file per slice")
    missing = np.setdiff1d(np.arange(idx.min(), idx.max() + 1), idx)
    if missing.size:
        shown = ", ".join(str(m) for m in missing[:10]) + (" ..." if missing.size > 10 else "")
        raise InputError(f"folder {str(folder)!r}: slice numbers {idx.min()}..{idx.max()} miss {missing.size} "
                         f"({shown}); every later slice would sit at the wrong z. Restore the missing slices, "
                         "or move the slices on one side of the gap to another folder")


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _spacing_from_tiff(tf) -> tuple[float, float, float] | None:
    """Voxel size in micrometres from ImageJ, OME or tomomech metadata, if present."""
    import tifffile

    to_um = {"micron": 1.0, "um": 1.0, "µm": 1.0, "\\u00B5m": 1.0, "nm": 1e-3, "mm": 1e3, "m": 1e6}
    page = tf.pages[0]
    if tf.shaped_metadata and "spacing_um" in tf.shaped_metadata[0]:
        s = tf.shaped_metadata[0]["spacing_um"]
        return tuple(float(v) for v in s)
    if tf.is_ome and tf.ome_metadata:
        import xml.etree.ElementTree as ET

        root = ET.fromstring(tf.ome_metadata)
        for el in root.iter():
            if el.tag.endswith("Pixels") and "PhysicalSizeX" in el.attrib:
                unit = el.attrib.get("PhysicalSizeXUnit", "µm")
                f = to_um.get(unit, 1.0)
                sx = float(el.attrib["PhysicalSizeX"]) * f
                sy = float(el.attrib.get("PhysicalSizeY", sx / f)) * f
                sz = float(el.attrib.get("PhysicalSizeZ", sx / f)) * f
                return (sz, sy, sx)
    if tf.is_imagej and tf.imagej_metadata:
        md = tf.imagej_metadata
        unit = md.get("unit", "")
        if unit in to_um and "XResolution" in page.tags:
            f = to_um[unit]
            xr = page.tags["XResolution"].value
            yr = page.tags["YResolution"].value
            sx = xr[1] / xr[0] * f
            sy = yr[1] / yr[0] * f
            sz = float(md.get("spacing", sx / f)) * f
            return (sz, sy, sx)
    del tifffile
    return None


def read_volume(path, *, crop=None) -> Volume:
    """Read a 3D volume from a multi-page TIFF or a folder of 2D TIFF slices.

    Parameters
    ----------
    path : str or Path
        A ``.tif``/``.tiff`` file, or a folder whose TIFF files are slices
        (natural sort: ``s2`` before ``s10``).
    crop : [[z0, z1], [y0, y1], [x0, x1]], optional
        Half-open voxel ranges to keep.

    Returns
    -------
    Volume

    Raises
    ------
    InputError
        Missing or unreadable file, a 2D image, slices of different shapes,
        unsupported dtype, NaN or inf values, or a crop outside the volume.
    """
    import tifffile

    p = Path(path)
    if not p.exists():
        raise InputError(f"input path {str(p)!r} does not exist: check [input] path (relative paths "
                         "are taken from the config file's folder)")
    spacing = None
    try:
        if p.is_dir():
            files = sorted((f for f in p.iterdir() if f.suffix.lower() in TIFF_SUFFIXES),
                           key=lambda f: _natural_key(f.name))
            if not files:
                raise InputError(f"folder {str(p)!r} holds no .tif/.tiff slices")
            _check_slice_numbers(p, [f.name for f in files])
            slices = []
            for f in files:
                a = tifffile.imread(f)
                if a.ndim != 2:
                    raise InputError(f"slice {f.name} has shape {a.shape}: a folder must hold 2D slices")
                if slices and a.shape != slices[0].shape:
                    raise InputError(f"slice {f.name} has shape {a.shape} but {files[0].name} has "
                                     f"{slices[0].shape}: all slices must have the same shape")
                slices.append(a)
            data = np.stack(slices)
            with tifffile.TiffFile(files[0]) as tf:
                s2 = _spacing_from_tiff(tf)
            spacing = s2
        else:
            with tifffile.TiffFile(p) as tf:
                data = tf.asarray()
                spacing = _spacing_from_tiff(tf)
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise InputError(f"cannot read {str(p)!r} as TIFF ({type(exc).__name__}: {exc}); "
                         "is the file complete and a TIFF stack?") from exc
    data = np.squeeze(data)
    if data.ndim == 2:
        raise InputError(f"{str(p)!r} is a 2D image {data.shape}: a 3D stack (z, y, x) is needed")
    if data.ndim != 3:
        raise InputError(f"{str(p)!r} has {data.ndim} dimensions {data.shape}: a single-channel 3D "
                         "stack (z, y, x) is needed; split channels or time points first")
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if not any(data.dtype == d for d in SUPPORTED_DTYPES):
        raise InputError(f"{str(p)!r} has dtype {data.dtype}: use uint8, uint16, int32 or float32")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise InputError(f"{str(p)!r} contains NaN or inf values: fill or mask them before segmenting")
    if crop is not None:
        data = apply_crop(data, crop)
    return Volume(data, spacing, str(p))


def apply_crop(data: np.ndarray, crop) -> np.ndarray:
    """Crop a (Z, Y, X) array to half-open ranges ``[[z0, z1], [y0, y1], [x0, x1]]``."""
    if len(crop) != 3 or any(len(r) != 2 for r in crop):
        raise InputError(f"input.crop must be [[z0, z1], [y0, y1], [x0, x1]], got {crop!r}")
    sl = []
    for ax, ((a, b), n) in enumerate(zip(crop, data.shape)):
        if not (0 <= a < b <= n):
            raise InputError(f"input.crop range {[a, b]} on axis {'zyx'[ax]} lies outside 0..{n}: "
                             f"the volume has shape {data.shape}")
        sl.append(slice(int(a), int(b)))
    return np.ascontiguousarray(data[tuple(sl)])


def write_volume(path, data: np.ndarray, spacing_um, *, compress: bool = True) -> None:
    """Write a (Z, Y, X) array as TIFF carrying its voxel size.

    uint8/uint16/float32 arrays are written as ImageJ hyperstacks (Fiji reads
    the voxel size); other dtypes (int32 labels) as a plain multi-page TIFF
    with resolution tags and the spacing in its JSON description.
    """
    import tifffile

    data = np.asarray(data)
    sz, sy, sx = (float(v) for v in spacing_um)
    kw = {"compression": "zlib"} if compress else {}
    with atomic_path(path) as tmp:
        if data.dtype in (np.uint8, np.uint16, np.float32):
            tifffile.imwrite(tmp, data, imagej=True, resolution=(1 / sx, 1 / sy),
                             metadata={"spacing": sz, "unit": "micron", "axes": "ZYX"}, **kw)
        else:
            tifffile.imwrite(tmp, data, photometric="minisblack", resolution=(1 / sx, 1 / sy), resolutionunit="NONE",
                             metadata={"spacing_um": [sz, sy, sx], "axes": "ZYX"}, **kw)


# ----------------------------------------------------------------------------- meshes

def _meshio_points(points_zyx: np.ndarray) -> np.ndarray:
    """(z, y, x) coordinates to the (x, y, z) order of meshio, ParaView and VTK."""
    return np.ascontiguousarray(np.asarray(points_zyx)[:, ::-1])


#: mesh formats by suffix. ".msh" is Gmsh 2.2 (not ANSYS, which meshio would guess from the suffix, and
#: not Gmsh 4.1: meshio 5.3 writes one 4.1 entity block per cell type and drops the per-cell tags)
MESH_FORMATS = {".xdmf": "xdmf", ".vtu": "vtu", ".msh": "gmsh22"}


def write_mesh(path, points_zyx, cells, cell_type: str, cell_data: dict[str, np.ndarray]) -> None:
    """Write a single-block mesh with cell data (format from the suffix: .xdmf, .vtu, .msh).

    Points are given as (z, y, x) and written as (x, y, z). Gmsh files (2.2)
    carry ``phase`` as the physical tag and ``particle`` as the geometrical tag
    of every element.
    """
    import meshio

    if Path(path).suffix == ".msh":
        cell_data = {"gmsh:physical": cell_data["phase"], "gmsh:geometrical": cell_data["particle"]}
    m = meshio.Mesh(_meshio_points(points_zyx), [(cell_type, np.asarray(cells))],
                    cell_data={k: [np.asarray(v)] for k, v in cell_data.items()})
    path = Path(path)
    if path.suffix == ".xdmf":
        with atomic_dir(path.parent) as tmp:
            meshio.write(tmp / path.name, m)
    else:
        fmt = MESH_FORMATS.get(path.suffix)
        if fmt is None:
            raise InputError(f"unknown mesh format {path.suffix!r}: use one of {', '.join(MESH_FORMATS)}")
        with atomic_path(path) as tmp:
            meshio.write(tmp, m, file_format=fmt)


def _time_series_writer(filename):
    """meshio's TimeSeriesWriter, opening its HDF5 file beside the XDMF file.

    meshio 5.3.5 opens it relative to the working directory; the XDMF file keeps
    the relative reference, so the pair can be moved together.
    """
    import h5py
    import meshio

    class Writer(meshio.xdmf.TimeSeriesWriter):
        def __enter__(self):
            self.h5_filename = self.filename.stem + ".h5"
            self.h5_file = h5py.File(self.filename.parent / self.h5_filename, "w")
            return self

    return Writer(filename)


@contextlib.contextmanager
def time_series_writer(path, points_zyx, cells, cell_type: str):
    """Stream an XDMF/HDF5 time series; files appear only when it completes.

    Yields a function ``write(t, point_data, cell_data)``. Vector point data
    given in (z, y, x) components is written in (x, y, z).
    """
    path = Path(path)
    with atomic_dir(path.parent) as tmp, _time_series_writer(tmp / path.name) as w:
        w.write_points_cells(_meshio_points(points_zyx), [(cell_type, np.asarray(cells))])

        def write(t, point_data, cell_data):
            pd = {k: (np.ascontiguousarray(v[:, ::-1]) if np.ndim(v) == 2 and np.shape(v)[1] == 3 else v)
                  for k, v in point_data.items()}
            w.write_data(float(t), point_data=pd, cell_data={k: [np.asarray(v)] for k, v in cell_data.items()})

        yield write
