"""tomomech: tomography of solid-state cathodes to chemo-mechanical answers.

This tiny package holds what every layer shares and nothing else: the version
and the exception hierarchy. ``segmentation`` and ``solvers`` never import
each other or ``pipeline`` (see shared/DESIGN.md); they all import this.
"""

from tomomech.errors import (
    ConfigError,
    ConvergenceError,
    InputError,
    MeshError,
    SegmentationError,
    TomomechError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ConvergenceError",
    "InputError",
    "MeshError",
    "SegmentationError",
    "TomomechError",
    "__version__",
]
