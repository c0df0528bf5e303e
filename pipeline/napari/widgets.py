"""Thin magicgui widgets over the library's stage functions (no computation here)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
from magicgui import magic_factory, widgets

from pipeline.config import SegmentationConfig
from pipeline.run import save_edits, segment_stage


def _spacing(layer) -> tuple[float, float, float]:
    return tuple(float(s) for s in layer.scale[-3:])


def segmentation_options(method="multiotsu", denoise="none", denoise_strength=1.0, t1=0.0, t2=1.0,
                         min_particle_voxels=20, split_touching=True, split_depth_voxels=1.0,
                         split_method="watershed") -> SegmentationConfig:
    """The widget's choices as the config section the CLI runs."""
    return SegmentationConfig(
        method=method, denoise=denoise, denoise_strength=float(denoise_strength),
        thresholds=[float(t1), float(t2)] if method == "thresholds" else None,
        min_particle_voxels=int(min_particle_voxels), split_touching=bool(split_touching),
        split_depth_voxels=float(split_depth_voxels), split_method=split_method)


def write_segmentation_config(path, sc: SegmentationConfig, input_path: str | None = None,
                              voxel_size_um=None) -> Path:
    """Write (or update the [segmentation] section of) a config file the CLI can run."""
    import tomli_w

    from pipeline import io

    path = Path(path)
    data = tomllib.loads(path.read_text()) if path.exists() else {}
    seg = {k: v for k, v in sc.__dict__.items() if v is not None}
    data["segmentation"] = seg
    if input_path and "input" not in data:
        data["input"] = {"path": str(input_path)}
        if voxel_size_um is not None:
            data["input"]["voxel_size_um"] = list(voxel_size_um)
    with io.atomic_path(path) as tmp:
        tmp.write_text(tomli_w.dumps(data))
    return path


class SegmentationWidget(widgets.Container):
    """Live segmentation preview of an image layer; writes its choices to a config file."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.image = widgets.ComboBox(label="image", choices=self._images)
        self.method = widgets.ComboBox(label="method", choices=["multiotsu", "thresholds"], value="multiotsu")
        self.denoise = widgets.ComboBox(label="denoise", choices=["none", "median", "gaussian", "nlmeans"])
        self.strength = widgets.FloatSpinBox(label="strength (vox)", value=1.0, min=0.1, max=10)
        self.t1 = widgets.FloatSpinBox(label="threshold 1", value=0.0, min=-1e12, max=1e12)
        self.t2 = widgets.FloatSpinBox(label="threshold 2", value=1.0, min=-1e12, max=1e12)
        self.min_vox = widgets.SpinBox(label="min particle voxels", value=20, min=0, max=10**9)
        self.split = widgets.CheckBox(label="split touching", value=True)
        self.split_method = widgets.ComboBox(label="split method", choices=["watershed", "snow"], value="watershed")
        self.depth = widgets.FloatSpinBox(label="split depth (vox)", value=1.0, min=0.1, max=20)
        self.live = widgets.CheckBox(label="live preview", value=False)
        self.run_button = widgets.PushButton(text="Preview")
        self.config_path = widgets.FileEdit(label="config", mode="w", filter="*.toml")
        self.save_button = widgets.PushButton(text="Write config")
        self.extend([self.image, self.method, self.denoise, self.strength, self.t1, self.t2, self.min_vox,
                     self.split, self.split_method, self.depth, self.live, self.run_button, self.config_path,
                     self.save_button])
        self.run_button.changed.connect(self.preview)
        self.save_button.changed.connect(self.save_config)
        self._histogram()
        self.image.changed.connect(self._draw_histogram)
        for w in (self.method, self.t1, self.t2):
            w.changed.connect(self._draw_histogram)
        for w in (self.method, self.denoise, self.strength, self.t1, self.t2, self.min_vox, self.split,
                  self.split_method, self.depth):
            w.changed.connect(self._maybe_preview)

    def _histogram(self):
        """A grey-value histogram with the current thresholds (multi-Otsu or manual)."""
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.5, 2.0), tight_layout=True)
        self.axes = self.figure.add_subplot(111)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.native.layout().addWidget(self.canvas)
        self._draw_histogram()

    def thresholds(self):
        """The thresholds the preview uses: multi-Otsu's, or the two spin boxes."""
        layer = self.image.value
        if layer is None:
            return []
        if self.method.value == "thresholds":
            return [self.t1.value, self.t2.value]
        from pipeline.run import grey_thresholds  # the run's own: multi-Otsu over the field of view

        return list(grey_thresholds(np.asarray(layer.data), self.options())[2])

    def _draw_histogram(self, *_):
        self.axes.clear()
        layer = self.image.value
        if layer is not None:
            data = np.asarray(layer.data).ravel()
            self.axes.hist(data[:: max(1, data.size // 200_000)], bins=128, color="0.4")
            for t in self.thresholds():
                self.axes.axvline(t, color="C3")
        self.axes.set_yticks([])
        self.canvas.draw_idle()

    def _images(self, _w=None):
        return [layer for layer in self.viewer.layers if layer.__class__.__name__ == "Image"]

    def options(self) -> SegmentationConfig:
        return segmentation_options(self.method.value, self.denoise.value, self.strength.value, self.t1.value,
                                    self.t2.value, self.min_vox.value, self.split.value, self.depth.value,
                                    self.split_method.value)

    def _maybe_preview(self, *_):
        if self.live.value:
            self.preview()

    def preview(self, *_):
        layer = self.image.value
        if layer is None:
            return None
        image = np.asarray(layer.data)
        if image.ndim == 4:  # a field time series: use the current step
            image = image[int(self.viewer.dims.current_step[0])]
        phases, particles = segment_stage(image, self.options(), _spacing(layer))
        for name, data in (("phases (preview)", phases), ("particles (preview)", particles)):
            if name in self.viewer.layers:
                self.viewer.layers[name].data = data
            else:
                self.viewer.add_labels(data, name=name, scale=layer.scale[-3:], opacity=0.5)
        return phases, particles

    def save_config(self, *_):
        layer = self.image.value
        src = getattr(getattr(layer, "source", None), "path", None) if layer is not None else None
        return write_segmentation_config(self.config_path.value, self.options(), src,
                                         _spacing(layer) if layer is not None else None)


@magic_factory(column={"choices": lambda w: _feature_columns(w)}, call_button="Colour")
def colour_particles_widget(particles: napari.layers.Labels, column: str = "von_mises_max_MPa",  # noqa: F821
                            colormap: str = "inferno"):
    """Colour every particle by one column of particles.csv (its layer's features)."""
    colour_by(particles, column, colormap)


def _feature_columns(w) -> list[str]:
    try:
        layer = w.parent["particles"].value if w.parent is not None else None
    except (KeyError, AttributeError):
        layer = None
    if layer is None or layer.features is None or len(layer.features) == 0:
        return ["von_mises_max_MPa"]
    return [c for c in layer.features.columns if np.issubdtype(layer.features[c].dtype, np.number)]


def colour_by(layer, column: str, colormap: str = "inferno") -> dict:
    """Set a Labels layer's colours from a numeric feature column; returns {label: rgba}."""
    import matplotlib

    feats = layer.features
    ids = np.asarray(feats["index"], np.int64)
    vals = np.asarray(feats[column], float)
    lo, hi = np.nanmin(vals), np.nanmax(vals)
    norm = (vals - lo) / (hi - lo) if hi > lo else np.zeros_like(vals)
    rgba = matplotlib.colormaps[colormap](np.nan_to_num(norm, nan=0.0))
    colours = {int(i): tuple(c) for i, c in zip(ids, rgba)}
    colours[0] = (0, 0, 0, 0)
    colours[None] = (0.5, 0.5, 0.5, 1.0)
    layer.colormap = colours
    return colours


@magic_factory(call_button="Show")
def particle_inspector_widget(viewer: napari.viewer.Viewer, particles: napari.layers.Labels,  # noqa: F821
                              particle_id: int = 1) -> str:
    """Show one particle's row and move the camera to it."""
    return inspect_particle(viewer, particles, particle_id)


def inspect_particle(viewer, layer, particle_id: int) -> str:
    """Select a particle, centre the camera on it and return its row as text."""
    feats = layer.features
    layer.selected_label = int(particle_id)
    rows = feats[feats["index"] == particle_id]
    if len(rows) == 0:
        return f"particle {particle_id} has no row (not meshed or not a particle)"
    row = rows.iloc[0]
    viewer.camera.center = (float(row["centroid_z_um"]), float(row["centroid_y_um"]), float(row["centroid_x_um"]))
    return "\n".join(f"{k}: {v}" for k, v in row.items())


@magic_factory(call_button="Save edits")
def save_edits_widget(phases: napari.layers.Labels, particles: napari.layers.Labels):  # noqa: F821
    """Save the edited labels into the results folder; the next `tomomech run` uses them."""
    out = particles.metadata.get("results_dir")
    if not out:
        raise ValueError("the particles layer does not come from a results folder: open one first")
    return save_edits(out, phases.data, particles.data, _spacing(particles))
