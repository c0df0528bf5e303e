"""porespy, imported lazily and kept from changing the process.

porespy 3.2 has two import-time side effects that a library must not have: it
configures the root logger (a handler and a level of its own) and calls
``np.seterr(divide='ignore', invalid='ignore')`` for the whole process, which
would hide divisions by zero in every later solve. :func:`porespy` imports it
inside a context that restores both on exit, and raises a
:class:`~tomomech.errors.MissingExtraError` naming the extra when it is not
installed.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import numpy as np

from tomomech.errors import MissingExtraError

INSTALL = "pip install 'tomomech[porespy]'"


def available() -> bool:
    """Whether porespy can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("porespy") is not None


@contextlib.contextmanager
def porespy() -> Iterator:
    """The porespy module, inside a context that undoes its process-wide settings.

    Yields
    ------
    module
        ``porespy``.

    Raises
    ------
    MissingExtraError
        porespy is not installed.

    Examples
    --------
    >>> with porespy() as ps:  # doctest: +SKIP
    ...     lt = ps.filters.local_thickness(im)
    """
    if not available():
        raise MissingExtraError(f"this needs porespy, an optional extra: {INSTALL}")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    err = np.geterr()
    known = set(logging.Logger.manager.loggerDict)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            import porespy as ps

            ps.settings.tqdm["disable"] = True  # no progress bars on stderr
            with np.errstate(divide="ignore", invalid="ignore"):  # what porespy's functions assume
                yield ps
    finally:
        np.seterr(**err)
        root.handlers[:] = handlers
        root.setLevel(level)
        # porespy's own loggers may have been given handlers: keep only what was there before
        for name, lg in logging.Logger.manager.loggerDict.items():
            if isinstance(lg, logging.Logger) and name.split(".")[0] == "porespy" and name not in known:
                lg.handlers[:] = []
                lg.propagate = True
