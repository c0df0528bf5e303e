"""The field of view of a reconstructed stack: a cylinder of data with a dead outside."""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage as ndi

log = logging.getLogger(__name__)


def field_of_view(image: np.ndarray, min_fraction: float = 0.01) -> np.ndarray | None:
    """The (y, x) columns that hold data, when the stack has a dead outside; else None.

    A tomographic reconstruction covers a cylinder; the voxels outside it hold one constant
    value (often 0) in every slice. A column is dead when its grey value does not change along
    z and equals the dead value (the most common value of such columns); the dead region is the
    dead columns connected to the slice's border. It is reported only when it holds all four
    corners of the slice and at least ``min_fraction`` of it (a real image has no constant
    columns).

    Parameters
    ----------
    image : (Z, Y, X) grey values

    Returns
    -------
    (Y, X) bool, True inside the field of view, or None when there is no dead outside.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[0] < 2:
        return None
    flat = np.ptp(img, axis=0) == 0
    if not flat[[0, 0, -1, -1], [0, -1, 0, -1]].all():
        return None
    values, counts = np.unique(img[0][flat], return_counts=True)
    dead = flat & (img[0] == values[np.argmax(counts)])
    lab, _ = ndi.label(dead)
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    dead = np.isin(lab, border[border > 0])
    if not dead[[0, 0, -1, -1], [0, -1, 0, -1]].all() or dead.mean() < min_fraction:
        return None
    return ~dead
