"""Conforming tetrahedral meshes of a label image with CGAL (pygalmesh, optional, GPL-3).

Each tetrahedron carries the phase and particle of the CGAL subdomain it lies in; void is
not meshed. Box faces of CGAL meshes are flat only to about 0.02 voxel, so the box
conditions select boundary nodes with a tolerance (:func:`solvers.physics.box_faces`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from solvers.mesh.smooth import smooth_surfaces
from solvers.mesh.tet import FACE_CORNERS, TetMesh, _volumes, radius_ratio
from solvers.mesh.upsample import smooth_upsample
from solvers.mesh.voxel import ACTIVE, ELECTROLYTE, solid_body
from tomomech.errors import ConfigError, MeshError

log = logging.getLogger(__name__)

#: relative tolerance of the meshed volume of each phase against its voxel volume
PHASE_VOLUME_RTOL = 0.05


def conforming_tet_mesh(phases, particles, spacing_m, *, max_cell_size_voxels: float = 1.0,
                        electrolyte_cell_size_voxels: float | None = None,
                        interface_cell_size_voxels: float | None = None, interface_shell_voxels: float = 2.0,
                        smooth_iterations: int = 0, upsample: int = 1, upsample_sigma_voxels: float = 1.0,
                        max_facet_distance_voxels: float = 0.25, lloyd: bool = False, odt: bool = False,
                        perturb: bool = False, exude: bool = True, seed: int = 0) -> TetMesh:
    """Mesh the electrolyte and every particle with conforming linear tetrahedra.

    Only the largest face-connected solid body is meshed, as on voxel meshes
    (:func:`solvers.mesh.voxel.solid_body`).

    Parameters
    ----------
    phases, particles : (Z, Y, X) label arrays
    spacing_m : 3 floats, metres
    max_cell_size_voxels : float
        CGAL's maximal cell circumradius, in voxels of the smallest spacing
        (in the particles, and in the electrolyte unless given apart).
    electrolyte_cell_size_voxels : float, optional
        Per-phase sizing: the maximal cell circumradius in the electrolyte
        (coarser electrolyte cells save elements where no delamination is judged).
    interface_cell_size_voxels : float, optional
        Maximal cell circumradius within ``interface_shell_voxels`` of the AP|SE interface, on both
        sides. The interface tractions that decide delamination come from the cells next to it: the
        shell stress of a swelling sphere falls as r^-3, which linear tetrahedra resolve only with
        small cells, and the nodal tractions of a coarse particle side spread around their mean. On a
        sphere of radius 4 voxels, 0.35 voxel within 1.5 voxels of the interface moves the
        delamination onset as far as 0.35 voxel in the whole particle does (to -4.2 % against
        -4.1 % of PHYSICS.md 3(d)), while the particle cores and the electrolyte away from
        particles keep ``max_cell_size_voxels``.
    interface_shell_voxels : float
        Depth of those shells on each side, voxels (Euclidean distance to the nearest voxel of the
        other phase).
    upsample : int
        1: mesh the label image as it is (its surfaces follow the voxel staircase). 2 or more: mesh
        :func:`solvers.mesh.upsample.smooth_upsample` of it, ``upsample`` times finer, whose surfaces
        follow smoothed phase indicators with each phase's volume kept (memory: upsample^3 labels).
    upsample_sigma_voxels : float
        The Gaussian width of that smoothing, voxels.
    smooth_iterations : int
        Taubin lambda|mu steps on the material surfaces after meshing
        (:func:`solvers.mesh.smooth.smooth_surfaces`); 0 keeps the surfaces on the voxel staircase.
    max_facet_distance_voxels : float
        Maximal distance of a surface facet to the labelled surface, in voxels.
    lloyd, odt, perturb, exude : bool
        CGAL optimisers. exude (on by default) removes slivers; odt raises the
        smallest angles further at about 3x the meshing time. perturb is off by
        default: CGAL runs it under a time limit, so its meshes differ from run
        to run (measured: 60 451 vs 60 460 cells on the same 24^3 image).
    seed : int
        CGAL's random seed: with perturb off, the same seed gives the same mesh.

    Returns
    -------
    TetMesh (``cell_voxel`` is the voxel containing each centroid)

    Raises
    ------
    ConfigError if pygalmesh is not installed; MeshError if a particle vanishes or a phase
    volume differs from its voxel volume by more than :data:`PHASE_VOLUME_RTOL`.
    """
    try:
        import pygalmesh
    except ImportError as exc:
        raise ConfigError("mesh.kind = 'conforming-tet' needs pygalmesh (pip install 'tomomech[mesh]', with "
                          "apt libcgal-dev libeigen3-dev; `make test` builds it)") from exc
    phases, particles, removed = solid_body(phases, particles)
    sp = np.asarray(spacing_m, float)
    h = float(sp.min())
    f = int(upsample)
    mesh_phases, mesh_particles = (phases, particles) if f == 1 else smooth_upsample(
        phases, particles, f, upsample_sigma_voxels, spacing=sp)
    labels = np.where(mesh_phases == ELECTROLYTE, 1,
                      np.where(mesh_phases == ACTIVE, mesh_particles.astype(np.int32) + 1, 0))
    if labels.max() > np.iinfo(np.uint16).max:
        raise MeshError("more than 65 534 particles: crop the volume for conforming meshing")
    size = float(max_cell_size_voxels)
    if electrolyte_cell_size_voxels is not None:  # subdomain 1 is the electrolyte, the particles take the default
        size = {1: float(electrolyte_cell_size_voxels), "default": size}
    n_lab = int(labels.max())  # 1 electrolyte, 2..n_lab the particles
    shell_of = None  # subdomain -> the subdomain it was split from (the interface shells)
    if interface_cell_size_voxels is not None:
        # the interface shells are subdomains of their own with their own cell size: the electrolyte
        # within interface_shell_voxels of a particle (n_lab + 1), and the same depth of every particle
        # next to the electrolyte (its label + n_lab); CGAL meshes their inner boundaries as internal
        # surfaces, and the shells take their subdomain's tags back after meshing
        if 2 * n_lab > np.iinfo(np.uint16).max:
            raise MeshError("more than 32 766 particles with interface_cell_size_voxels: crop the volume "
                            "for conforming meshing")
        depth = float(interface_shell_voxels)
        scale = sp / h / f
        near_ap = ndi.distance_transform_edt(mesh_phases != ACTIVE, sampling=scale) <= depth
        se_shell = (mesh_phases == ELECTROLYTE) & near_ap
        del near_ap
        near_se = ndi.distance_transform_edt(mesh_phases != ELECTROLYTE, sampling=scale) <= depth
        ap_shell = (mesh_phases == ACTIVE) & near_se
        del near_se
        labels = np.where(se_shell, n_lab + 1, np.where(ap_shell, labels + n_lab, labels))
        del se_shell, ap_shell
        shell_of = np.arange(2 * n_lab + 1)
        shell_of[n_lab + 1] = 1
        shell_of[n_lab + 2:] -= n_lab
        fine = float(interface_cell_size_voxels)
        size = {**{lab: fine for lab in range(n_lab + 1, 2 * n_lab + 1)},
                **(size if isinstance(size, dict) else {"default": size})}
    if perturb:
        log.warning("mesh.perturb = true: CGAL perturbs under a time limit, so the mesh is not reproducible")
    # CGAL works in voxel units (its tolerances do not like micrometres in metres); scale back after
    # pygalmesh.generate_from_array writes its INR image without closing (or flushing) the file: write it here
    with tempfile.TemporaryDirectory() as tmp, _quiet_stdio():  # the sizing path prints whatever `verbose` says
        inr = Path(tmp) / "labels.inr"
        _write_inr(labels.astype(np.uint16), sp / h / f, inr)
        m = pygalmesh.generate_from_inr(
            str(inr), lloyd=lloyd, odt=odt, perturb=perturb, exude=exude, max_cell_circumradius=size,
            max_facet_distance=float(max_facet_distance_voxels), verbose=False, seed=seed)
    tets = m.get_cells_type("tetra").astype(np.int64)
    ref = np.asarray(m.get_cell_data("medit:ref", "tetra")).astype(np.int64)
    used, tets = np.unique(tets, return_inverse=True)
    tets = tets.reshape(-1, 4)
    if tets.size == 0:
        raise MeshError("CGAL returned no tetrahedra: check the labels and the cell size")
    pts = np.asarray(m.points, float)[used] * h
    flip = _volumes(pts[tets][..., ::-1]) < 0
    tets[flip] = tets[flip][:, [0, 2, 1, 3]]
    if shell_of is not None:
        ref = shell_of[ref]
    cell_phase = np.where(ref == 1, ELECTROLYTE, ACTIVE).astype(np.uint8)
    cell_particle = np.where(ref >= 2, ref - 1, 0).astype(np.int32)
    mesh = TetMesh(points=pts, cells=tets, cell_phase=cell_phase, cell_particle=cell_particle,
                   cell_voxel=np.zeros(len(tets), np.int64), shape=phases.shape, spacing=sp,
                   extent=(np.array(phases.shape) - 1 / f) * sp, phases=phases, particles=particles,
                   removed_voxels=removed, kind="conforming-tet")
    if smooth_iterations:
        pts, scale = smooth_surfaces(mesh, ref, smooth_iterations)
        log.info("surface smoothing: %.2f of the displacement applied on average (less where cells would "
                 "degrade)", scale)
        mesh = dataclasses.replace(mesh, points=pts)
    # CGAL's box runs between the outer (fine) voxel centres: voxel i spans [i - 1/2f, i + 1 - 1/2f] voxels
    cen = pts[tets].mean(axis=1)
    ijk = np.clip(np.floor(cen / sp + 0.5 / f).astype(np.int64), 0, np.array(phases.shape) - 1)
    mesh = dataclasses.replace(mesh, cell_voxel=np.ravel_multi_index(tuple(ijk.T), phases.shape))
    report = mesh_quality(mesh, phases, particles)
    log.info("conforming mesh: %d tets, min dihedral %.1f deg, phase volume errors %s", mesh.n_cells,
             report["min_dihedral_deg"], report["phase_volume_rel_error"])
    return dataclasses.replace(mesh, quality=report)


def _write_inr(labels: np.ndarray, voxel_size, path: Path) -> None:
    """A uint16 label image in CGAL's INR format (256-byte header, x fastest), as pygalmesh.save_inr."""
    xdim, ydim, zdim = labels.shape
    header = "\n".join(["#INRIMAGE-4#{", f"XDIM={xdim}", f"YDIM={ydim}", f"ZDIM={zdim}", "VDIM=1",
                        "TYPE=unsigned fixed", "PIXSIZE=16 bits", "CPU=decm", f"VX={voxel_size[0]:f}",
                        f"VY={voxel_size[1]:f}", f"VZ={voxel_size[2]:f}"]) + "\n"
    header += "\n" * (256 - 4 - len(header)) + "##}\n"
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(labels.tobytes(order="F"))


@contextlib.contextmanager
def _quiet_stdio():
    """Send the C++ library's stdout/stderr (file descriptors 1 and 2) to the debug log."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as tmp:
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            if text:
                log.debug("CGAL: %s", text[-2000:])


def dihedral_angles(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """The six dihedral angles of every tetrahedron, degrees, (ne, 6)."""
    x = points[cells]
    n = []
    for k, (a, b, c) in enumerate(FACE_CORNERS):  # the face opposite corner k
        v = np.cross(x[:, b] - x[:, a], x[:, c] - x[:, a])
        toward = x[:, k] - x[:, a]
        v *= np.sign(np.einsum("ei,ei->e", v, toward))[:, None]  # inward normal
        n.append(v / np.linalg.norm(v, axis=1)[:, None])
    out = []
    for i in range(4):
        for j in range(i + 1, 4):
            out.append(180.0 - np.degrees(np.arccos(np.clip(np.einsum("ei,ei->e", n[i], n[j]), -1, 1))))
    return np.stack(out, axis=1)


def mesh_quality(mesh: TetMesh, phases: np.ndarray, particles: np.ndarray) -> dict:
    """Quality report of a tetrahedral mesh against the label image it was made from.

    Returns
    -------
    dict: ``cells``, ``nodes``, ``min_dihedral_deg``, ``p1_dihedral_deg`` (1st percentile of the
    smallest angle of each cell), ``max_dihedral_deg``, ``radius_ratio_min``/``_mean``
    (3 r_in / r_circ, 1 for a regular tetrahedron), ``cells_per_phase`` and
    ``phase_volume_rel_error`` (meshed volume against the voxel volume, per phase).

    Raises
    ------
    MeshError when a particle vanished or a phase volume is off by more than
    :data:`PHASE_VOLUME_RTOL`.
    """
    vox = float(np.prod(mesh.spacing))
    vol = np.abs(mesh.cell_volumes())
    w = np.ones(phases.shape)
    if mesh.kind == "conforming-tet":
        # CGAL's box runs between the outer voxel centres (of the upsampled image, if any): the outer
        # voxels count half (1 - 1/2f)
        inside = 0.5 * (np.asarray(mesh.extent) / np.asarray(mesh.spacing) - (np.array(phases.shape) - 2))
        for ax, n in enumerate(phases.shape):
            sl = [slice(None)] * 3
            for i in (0, n - 1):
                sl[ax] = i
                w[tuple(sl)] *= inside[ax]
    dih = dihedral_angles(mesh.points, mesh.corners)
    rr = radius_ratio(mesh.points, mesh.corners)
    report = {"cells": mesh.n_cells, "nodes": mesh.n_nodes, "min_dihedral_deg": float(dih.min()),
              "p1_dihedral_deg": float(np.percentile(dih.min(axis=1), 1)),
              "max_dihedral_deg": float(dih.max()), "radius_ratio_min": float(rr.min()),
              "radius_ratio_mean": float(rr.mean()), "cells_per_phase": {}, "phase_volume_rel_error": {}}
    for code, name in ((ELECTROLYTE, "electrolyte"), (ACTIVE, "active")):
        target = float(w[phases == code].sum()) * vox
        got = float(vol[mesh.cell_phase == code].sum())
        report["cells_per_phase"][name] = int((mesh.cell_phase == code).sum())
        report["phase_volume_rel_error"][name] = (got - target) / target if target else 0.0
        if target and abs(got - target) > PHASE_VOLUME_RTOL * target:
            raise MeshError(f"the {name} volume of the conforming mesh differs from its voxel volume by "
                            f"{100 * (got - target) / target:+.1f} % (> {100 * PHASE_VOLUME_RTOL:.0f} %): "
                            "lower max_cell_size_voxels or max_facet_distance_voxels")
    present = np.unique(particles[particles > 0])
    meshed = np.unique(mesh.cell_particle[mesh.cell_particle > 0])
    missing = np.setdiff1d(present, meshed)
    if missing.size:
        raise MeshError(f"particles {missing[:10].tolist()} vanished from the conforming mesh: they are too "
                        "small for the cell size; lower max_cell_size_voxels or raise min_particle_voxels")
    return report
