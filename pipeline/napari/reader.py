"""npe2 reader: results folders (all stages) and raw stacks."""

from __future__ import annotations

from pathlib import Path

from pipeline.io import TIFF_SUFFIXES
from pipeline.napari.layers import is_results_folder, results_layers, stack_layers


def get_reader(path):
    """Return a reader function for ``path``, or None if it is not ours."""
    if isinstance(path, list):
        path = path[0]
    p = Path(path)
    if is_results_folder(p):
        return lambda _p: results_layers(p)
    if (p.is_file() and p.suffix.lower() in TIFF_SUFFIXES) or (
            p.is_dir() and any(f.suffix.lower() in TIFF_SUFFIXES for f in p.iterdir())):
        return lambda _p: stack_layers(p)
    return None
