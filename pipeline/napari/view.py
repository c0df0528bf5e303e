"""Open results in napari, or render a screenshot headless (Xvfb)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

from pipeline.napari.layers import is_results_folder, results_layers, stack_layers
from tomomech.errors import InputError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def virtual_display(size=(1600, 1200)):
    """Run the block with a display: the current one, or a private Xvfb when there is none."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    if shutil.which("Xvfb") is None:
        raise InputError("no display and no Xvfb: install it (apt-get install xvfb xauth) for --screenshot")
    proc = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", f"{size[0]}x{size[1]}x24", "-nolisten",
                             "tcp"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        number = proc.stdout.readline().decode().strip()
        if not number:
            raise InputError("Xvfb did not start; check that it runs (`Xvfb -help`)")
        os.environ["DISPLAY"] = f":{number}"
        yield os.environ["DISPLAY"]
    finally:
        os.environ.pop("DISPLAY", None)
        proc.terminate()
        proc.wait(timeout=10)


def layers_for(path, step=None) -> list[tuple]:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{str(p)!r} does not exist: give a results folder or a TIFF stack")
    return results_layers(p, step) if is_results_folder(p) else stack_layers(p)


def add_layers(viewer, layers) -> list:
    """Add (data, kwargs, type) layer tuples to a viewer."""
    from napari.layers import Layer

    return [viewer.add_layer(Layer.create(data, kw, kind)) for data, kw, kind in layers]


def open_viewer(path, *, step=None, show: bool = True):
    """A napari viewer with the layers of a results folder or a stack, widgets docked."""
    import napari

    viewer = napari.Viewer(show=show, title=f"tomomech: {Path(path).name}")
    add_layers(viewer, layers_for(path, step))
    if is_results_folder(path):
        viewer.window.add_plugin_dock_widget("tomomech", "Particle inspector")
    viewer.reset_view()
    return viewer


def screenshot(path, file, *, step=None, size=(1200, 900)) -> Path:
    """Render the viewer of ``path`` to a PNG without a screen and close it."""
    file = Path(file)
    with virtual_display():
        import napari

        viewer = napari.Viewer(show=True)
        try:
            add_layers(viewer, layers_for(path, step))
            viewer.window.resize(*size)
            viewer.reset_view()
            img = viewer.screenshot(canvas_only=True, flash=False)
        finally:
            viewer.close()
    from PIL import Image

    from pipeline import io

    with io.atomic_path(file) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
    return file
