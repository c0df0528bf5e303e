"""Grayscale image -> intensity classes -> phase codes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import IntEnum

import numpy as np
from scipy import ndimage as ndi

from tomomech.errors import InputError, SegmentationError

log = logging.getLogger(__name__)


class Phase(IntEnum):
    """Phase codes used in every phase array (uint8)."""

    VOID = 0
    ELECTROLYTE = 1
    ACTIVE = 2

    @classmethod
    def from_name(cls, name: str) -> Phase:
        """Parse ``"void" | "electrolyte" | "active"`` (case-insensitive)."""
        try:
            return cls[str(name).upper()]
        except KeyError:
            raise InputError(
                f"unknown phase name {name!r}: use one of 'void', 'electrolyte', 'active'"
            ) from None


DENOISE_METHODS = ("none", "median", "gaussian", "nlmeans")


def denoise(image: np.ndarray, method: str = "none", strength: float = 1.0) -> np.ndarray:
    """Denoise a grayscale volume.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Grayscale volume, any real dtype.
    method : {"none", "median", "gaussian", "nlmeans"}
        ``median``: cubic window of ``2*round(strength)+1`` voxels;
        ``gaussian``: sigma of ``strength`` voxels; ``nlmeans``: scikit-image
        non-local means with the noise level estimated from the image and
        ``h = 0.8 * strength * sigma``.
    strength : float
        Filter size in voxels (see above).

    Returns
    -------
    (Z, Y, X) ndarray of float32
    """
    if method not in DENOISE_METHODS:
        raise InputError(f"denoise method {method!r} unknown: use one of {DENOISE_METHODS}")
    img = np.asarray(image, dtype=np.float32)
    if method == "none":
        return img
    if method == "median":
        size = 2 * max(1, int(round(strength))) + 1
        return ndi.median_filter(img, size=size)
    if method == "gaussian":
        return ndi.gaussian_filter(img, sigma=float(strength))
    from skimage.restoration import denoise_nl_means, estimate_sigma

    lo, hi = float(img.min()), float(img.max())
    scaled = (img - lo) / max(hi - lo, 1e-30)
    sigma = float(estimate_sigma(scaled))
    out = denoise_nl_means(
        scaled, h=0.8 * strength * max(sigma, 1e-3), sigma=sigma, patch_size=3,
        patch_distance=3, fast_mode=True,
    )
    return (out * (hi - lo) + lo).astype(np.float32)


def classify_multiotsu(image: np.ndarray, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Split a grayscale volume into intensity classes by multi-Otsu.

    Returns
    -------
    classes : (Z, Y, X) uint8
        0 darkest ... ``classes-1`` brightest.
    thresholds : (classes-1,) float64
    """
    img = np.asarray(image)
    thr = multiotsu_thresholds(img, classes)
    return np.digitize(img, thr).astype(np.uint8), thr


def multiotsu_thresholds(image: np.ndarray, classes: int = 3) -> np.ndarray:
    """The ``classes - 1`` multi-Otsu thresholds of the grey values ``image`` (any shape), float64.

    Raises
    ------
    SegmentationError
        The image has one grey value only.
    """
    from skimage.filters import threshold_multiotsu

    img = np.asarray(image)
    if np.ptp(img) == 0:
        raise SegmentationError(
            "the image has one grey value only: multi-Otsu cannot find classes; "
            "check the input file or use method = 'labels'"
        )
    return np.asarray(threshold_multiotsu(img, classes=classes), dtype=float)


def classify_thresholds(image: np.ndarray, thresholds) -> np.ndarray:
    """Intensity classes from explicit, increasing thresholds.

    A voxel with value ``v`` gets class ``k`` = number of thresholds ``<= v``.
    """
    thr = np.asarray(thresholds, dtype=float)
    if thr.ndim != 1 or thr.size == 0 or np.any(np.diff(thr) <= 0):
        raise InputError(
            f"segmentation.thresholds must be a non-empty increasing list, got {thresholds!r}"
        )
    return np.digitize(np.asarray(image), thr).astype(np.uint8)


def map_phases(classes: np.ndarray, phase_map: Mapping[int, Phase | str]) -> np.ndarray:
    """Map class or label values to phase codes.

    Parameters
    ----------
    classes : (Z, Y, X) integer ndarray
        Intensity classes or an existing label image.
    phase_map : mapping int -> Phase or phase name
        Every value present in ``classes`` must be mapped.

    Returns
    -------
    (Z, Y, X) uint8 phase codes (:class:`Phase`).
    """
    values = np.unique(classes)
    pm = {int(k): Phase.from_name(v) if isinstance(v, str) else Phase(v) for k, v in phase_map.items()}
    missing = [int(v) for v in values if int(v) not in pm]
    if missing:
        raise InputError(
            f"values {missing} occur in the image but not in segmentation.phase_map "
            f"(which maps {sorted(pm)}); add them, e.g. phase_map = {{ {missing[0]} = 'void' }}"
        )
    lut = np.zeros(int(values.max()) + 1, dtype=np.uint8)
    for k, v in pm.items():
        if 0 <= k < lut.size:
            lut[k] = int(v)
    phases = lut[classes.astype(np.int64)]
    if not np.any(phases == Phase.ACTIVE):
        raise SegmentationError(
            "no voxel was mapped to the active phase: check segmentation.phase_map "
            "(which value or class is the bright active material?)"
        )
    return phases
