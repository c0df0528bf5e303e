"""Corrections of raw CT grey values before thresholding: intensity drift along z and ring artifacts.

Both are optional (``[segmentation] correct_drift``, ``remove_rings``) and leave the grey-value
scale of the stack as it was: they only remove the slow change of brightness from slice to slice,
and the concentric rings that a miscalibrated detector pixel draws around the rotation axis.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy import ndimage as ndi

from tomomech.errors import InputError

log = logging.getLogger(__name__)


def correct_z_drift(image: np.ndarray, inside: np.ndarray | None = None, window_slices: int = 0,
                    percentiles=(5.0, 95.0)) -> np.ndarray:
    """Remove a slow drift of brightness and contrast along z.

    Every slice's ``percentiles`` (over the field of view) are mapped onto those of the whole stack
    by an affine grey-value map. With ``window_slices > 1`` the slices' percentiles are first smoothed
    along z by a quadratic Savitzky-Golay filter of that window (``scipy.signal.savgol_filter``, which
    keeps linear and quadratic drifts whole up to the end slices; a window longer than the stack fits
    one quadratic), so that only the drift is corrected and a slice that holds more of a bright phase
    keeps its own histogram.

    Parameters
    ----------
    image : (Z, Y, X) grey values
    inside : (Y, X) bool, optional
        The field of view (:func:`segmentation.field_of_view`); the outside is left unchanged.
    window_slices : int
        Smoothing window of the slice statistics along z, in slices (0 or 1: every slice matched on its own).
    percentiles : (low, high)

    Returns
    -------
    (Z, Y, X) float32, the corrected grey values
    """
    img = np.asarray(image, np.float32)
    if img.ndim != 3 or img.shape[0] < 2:
        raise InputError(f"drift correction needs a 3D stack of at least two slices, got shape {img.shape}")
    values = img if inside is None else img[:, inside]
    lo, hi = np.percentile(values.reshape(img.shape[0], -1), percentiles, axis=1)  # (Z,) each
    if window_slices > 1:
        lo, hi = (_smooth_trend(v, int(window_slices)) for v in (lo, hi))
    glo, ghi = np.percentile(values, percentiles)
    spread = np.where(hi - lo > 0, hi - lo, 1.0)
    scale = ((ghi - glo) / spread).astype(np.float32)
    out = (img - lo[:, None, None].astype(np.float32)) * scale[:, None, None] + np.float32(glo)
    if inside is not None:
        out[:, ~inside] = img[:, ~inside]
    log.info("z drift: slice %g-th percentiles ranged %.4g-%.4g, now %.4g", percentiles[1], hi.min(), hi.max(), ghi)
    return out


def _smooth_trend(v: np.ndarray, window: int) -> np.ndarray:
    """A slow trend of ``v`` along z: quadratic Savitzky-Golay over ``window`` slices, one quadratic if longer."""
    from scipy.signal import savgol_filter

    if window >= v.size:
        z = np.arange(v.size)
        return np.polyval(np.polyfit(z, v, min(2, v.size - 1)), z)
    return savgol_filter(v, window + 1 - window % 2, 2, mode="interp")


def remove_rings(image: np.ndarray, centre=None, width_voxels: int = 9, angles: int = 360) -> np.ndarray:
    """Remove ring artifacts: concentric circles of constant grey offset around the rotation axis.

    Every slice goes to polar coordinates (``skimage.transform.warp_polar``, 4 samples per voxel along
    the radius); the radial profile is the median over the angles of all slices (a detector pixel draws
    its ring at the same radius in every slice); the rings are what a running median of ``width_voxels``
    along the radius (``scipy.ndimage.median_filter``) removes from that profile; they are subtracted at
    every pixel's radius. Structures that are not round about the axis average out over the angles
    and the slices, and stay.

    Parameters
    ----------
    image : (Z, Y, X) grey values
    centre : (y, x) of the rotation axis, voxels; default the slice centre
    width_voxels : int
        Radial window of the running median: wider than the rings, narrower than the radial trends to keep.
    angles : int
        Angular samples of the polar transform.

    Returns
    -------
    (Z, Y, X) float32
    """
    from skimage.transform import warp_polar

    img = np.asarray(image, np.float32)
    if img.ndim != 3:
        raise InputError(f"ring removal needs a 3D stack, got shape {img.shape}")
    if width_voxels < 3:
        raise InputError(f"segmentation.ring_width_voxels = {width_voxels}: use at least 3 (wider than the rings)")
    _, ny, nx = img.shape
    cy, cx = ((ny - 1) / 2, (nx - 1) / 2) if centre is None else centre
    yy, xx = np.indices((ny, nx))
    r = np.hypot(yy - cy, xx - cx)
    rmax = int(np.ceil(r.max())) + 1
    sub = 4  # radial samples per voxel: a ring one voxel wide is resolved
    shape = (angles, sub * rmax)
    polar = warp_polar(np.moveaxis(img, 0, -1), center=(cy, cx), radius=rmax, output_shape=shape, channel_axis=-1,
                       order=1)  # (angles, radius, Z)
    # beyond the inscribed circle part of every circle lies outside the slice: only samples inside count
    seen = warp_polar(np.ones((ny, nx)), center=(cy, cx), radius=rmax, output_shape=shape, order=0) > 0.5
    polar = np.where(seen[..., None], polar, np.nan)
    # one radial profile for the stack: a detector pixel draws its ring in every slice, and the median over
    # the angles of all slices leaves far less of the sample's own texture than that of one slice
    with warnings.catch_warnings():  # radii past the slice's corners have no sample at all
        warnings.simplefilter("ignore", RuntimeWarning)
        profile = np.nanmedian(np.moveaxis(polar, 2, 1).reshape(-1, polar.shape[1]), axis=0)  # (radius,)
    profile = np.where(np.isnan(profile), np.nanmedian(img), profile)  # radii no pixel reaches
    rings = profile - ndi.median_filter(profile, size=sub * width_voxels, mode="nearest")
    out = img - np.interp(r * sub, np.arange(rings.size), rings).astype(np.float32)[None]
    log.info("rings removed: largest ring offset %.4g (grey values)", float(np.abs(rings).max()))
    return out
