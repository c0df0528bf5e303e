"""The describe stage: phases, particles -> microstructure.json (descriptors of the segmented composite).

``microstructure.json`` holds:

- ``scalars``: one number per descriptor (these become study.csv columns);
- ``representative_volume``: phase fractions of cubic tiles against the tile edge;
- ``distributions``: particle equivalent diameters, local thickness of every phase, chord
  lengths along z and x (edges in um, volume or length fractions);
- ``two_point_correlation`` of the active phase;
- ``transport``: the electrolyte's conductivity ratio and tortuosity factor per axis, with the
  solver's iterations and flux mismatch;
- ``particles``: per particle id, its equivalent diameter and whether it has an ionic path to
  the separator face;
- ``needs_porespy``: the descriptors left out because porespy is absent or switched off;
- ``timings_s`` per descriptor.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict

import numpy as np

from segmentation import descriptors as D
from segmentation.geometry import ionic_paths
from segmentation.phases import Phase
from solvers.physics.tortuosity import transport

log = logging.getLogger(__name__)

FILE = "microstructure.json"
PORESPY_DESCRIPTORS = ("local_thickness", "chord_lengths", "two_point_correlation")


@contextlib.contextmanager
def _timed(times: dict, name: str):
    """Record the wall time of the block under ``name``."""
    t0 = time.perf_counter()
    yield
    times[name] = round(time.perf_counter() - t0, 3)


def describe_stage(phases: np.ndarray, particles: np.ndarray, spacing_um, dc) -> dict:
    """Every descriptor of a segmented composite. Pure (no files).

    Parameters
    ----------
    phases : (Z, Y, X) uint8 phase codes
    particles : (Z, Y, X) int32 particle labels
    spacing_um : (3,) voxel size, um
    dc : DescribeConfig

    Returns
    -------
    dict, JSON-serialisable (the content of ``microstructure.json``).
    """
    from segmentation.porespy_compat import available

    D.check_phases(phases)
    sp = np.asarray(spacing_um, float)
    times: dict[str, float] = {}
    scalars: dict[str, float] = {}
    out: dict = {"shape": list(phases.shape), "voxel_size_um": sp.tolist(),
                 "box_um": (np.asarray(phases.shape) * sp).tolist(), "config": asdict(dc)}

    with _timed(times, "phase_fractions"):
        scalars.update({f"{k}_fraction": v for k, v in D.phase_fractions(phases).items()})
        out["representative_volume"] = D.representative_volume(phases)
    with _timed(times, "interface_areas"):
        scalars.update(D.interface_areas(phases, sp))
    with _timed(times, "ionic_paths"):
        connected, path = ionic_paths(phases, particles)
        n = int(path.size)
        vol = np.bincount(np.asarray(particles).ravel(), minlength=n + 1)[1:] * float(np.prod(sp))
        diam = np.cbrt(6.0 * vol / np.pi)
        scalars.update(electrolyte_connected_fraction=connected, particle_count=n,
                       ionically_isolated_particles=int(np.sum(~path)),
                       ionically_isolated_fraction=float(np.mean(~path)) if n else float("nan"),
                       ionically_isolated_volume_fraction=float(vol[~path].sum() / vol.sum()) if n else float("nan"),
                       particle_eq_diameter_mean_um=float(diam.mean()) if n else float("nan"),
                       particle_eq_diameter_d50_um=float(np.median(diam)) if n else float("nan"))
        out["particles"] = {"particle_id": list(range(1, n + 1)), "eq_diameter_um": diam.tolist(),
                            "ionic_path": path.tolist()}
        dist = {"particle_eq_diameter": D.histogram(diam, dc.bins, weights=vol)}

    se = phases == Phase.ELECTROLYTE
    out["transport"] = {}
    for axis in dc.tortuosity_axes:
        with _timed(times, f"tortuosity_{axis}"):
            t = transport(se, axis, sp, rtol=dc.tortuosity_rtol)
        out["transport"][axis] = asdict(t)
        scalars[f"electrolyte_tortuosity_{axis}"] = t.tortuosity
        scalars[f"electrolyte_conductivity_ratio_{axis}"] = t.conductivity_ratio
        scalars[f"electrolyte_percolating_fraction_{axis}"] = t.percolating_fraction

    use_porespy = dc.porespy and available()
    out["needs_porespy"] = [] if use_porespy else list(PORESPY_DESCRIPTORS)
    if not use_porespy:
        why = "describe.porespy = false" if not dc.porespy else "porespy is not installed"
        log.warning("microstructure: %s, so %s are left out (pip install 'tomomech[porespy]')", why,
                    ", ".join(PORESPY_DESCRIPTORS))
    else:
        iso, h = D.isotropic(phases, sp)
        with _timed(times, "local_thickness"):
            for name, code in D.PHASES.items():
                lt = D.local_thickness(iso == code, h, dc.bins)
                dist[f"{name}_local_thickness"] = {k: lt[k] for k in ("edges_um", "fraction")}
                for k in ("mean_um", "d50_um"):
                    scalars[f"{name}_local_thickness_{k}"] = lt[k]
        with _timed(times, "chord_lengths"):
            for name, code in D.PHASES.items():
                for axis in ("z", "x"):
                    ch = D.chord_lengths(iso == code, "zyx".index(axis), h, dc.bins)
                    dist[f"{name}_chords_{axis}"] = {k: ch[k] for k in ("edges_um", "fraction")}
                    scalars[f"{name}_chord_mean_{axis}_um"] = ch["mean_um"]
        with _timed(times, "two_point_correlation"):
            out["two_point_correlation"] = D.two_point_correlation(iso == Phase.ACTIVE, h)
    out["distributions"] = dist
    out["scalars"] = {k: (float(v) if not isinstance(v, int) else v) for k, v in scalars.items()}
    out["timings_s"] = times
    log.info("microstructure: %s", ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    return out
