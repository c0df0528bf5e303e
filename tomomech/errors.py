"""One exception hierarchy for the whole project.

Every error a user can cause or meet derives from :class:`TomomechError`, so a
caller can catch one type. Messages say what was wrong and what to do.
"""


class TomomechError(Exception):
    """Root of all tomomech errors."""


class InputError(TomomechError, ValueError):
    """An input file or array is missing, unreadable or unusable."""


class ConfigError(InputError):
    """A configuration key is unknown, mistyped or has an impossible value."""


class SegmentationError(TomomechError):
    """Segmentation produced something that cannot be used (e.g. no particles)."""


class MeshError(TomomechError):
    """The geometry cannot be meshed or the mesh cannot be solved on."""


class ConvergenceError(TomomechError, RuntimeError):
    """An iterative solver did not reach its tolerance.

    Attributes
    ----------
    iterations : int
        Iterations performed.
    residual : float
        Relative residual reached.
    """

    def __init__(self, message: str, iterations: int = -1, residual: float = float("nan")):
        super().__init__(message)
        self.iterations = iterations
        self.residual = residual


class MissingExtraError(TomomechError, ImportError):
    """An optional dependency (a pip extra) is needed for this and is not installed."""
