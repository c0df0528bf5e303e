"""Pure array functions: image -> phases -> particles -> geometry table.

Nothing here reads files or imports ``solvers`` or ``pipeline``. Arrays are
(z, y, x); spacing is passed explicitly in micrometres.
"""

from segmentation.fov import field_of_view
from segmentation.geometry import face_pairs, particle_geometry
from segmentation.particles import label_particles, remove_small_particles
from segmentation.phases import (
    Phase,
    classify_multiotsu,
    classify_thresholds,
    denoise,
    map_phases,
    multiotsu_thresholds,
)
from segmentation.preprocess import correct_z_drift, remove_rings
from segmentation.synthetic import make_composite

__all__ = [
    "Phase",
    "classify_multiotsu",
    "classify_thresholds",
    "correct_z_drift",
    "denoise",
    "face_pairs",
    "field_of_view",
    "label_particles",
    "make_composite",
    "map_phases",
    "multiotsu_thresholds",
    "particle_geometry",
    "remove_rings",
    "remove_small_particles",
]
