"""The solve stage's parts: which mechanics problem a config asks for, and the load states it runs through.

:func:`build_problem` picks one of three problems that share one interface
(``solve``, ``cell_stress``, ``summary``, ``step_record``; the cohesive ones
also ``face_damage``, ``cell_damage``, ``area_fractions``):

========================  ==========================  ===========================================
interface.model           backend (after ``auto``)    problem
========================  ==========================  ===========================================
bonded                    assembled or matrix-free    :class:`~solvers.physics.ElasticProblem`
cohesive                  assembled (any mesh)        :class:`~solvers.physics.CohesiveProblem` (node pairs)
cohesive                  matrix-free (voxel-hex)     :class:`~solvers.physics.cohesive.voxel.VoxelCohesiveProblem`
========================  ==========================  ===========================================

``auto`` resolves the backend by the same rule for both interface models
(:func:`solvers.linalg.resolve_backend` with
:data:`solvers.physics.elasticity.MATRIX_FREE_DOF`).
"""

from __future__ import annotations

import logging

import numpy as np

from pipeline.config import Config, refuse_matrix_free_options

log = logging.getLogger(__name__)


def mechanics_backend(mesh, cfg: Config) -> str:
    """"assembled" or "matrix-free": what ``[solver] backend`` gives for this mesh."""
    from solvers.linalg import resolve_backend
    from solvers.physics.elasticity import MATRIX_FREE_DOF

    return resolve_backend(cfg.solver.backend, 3 * mesh.n_nodes, MATRIX_FREE_DOF,
                           voxels=cfg.mesh.kind == "voxel-hex", device=cfg.solver.device,
                           precision=cfg.solver.precision)


def build_problem(mesh, faces: dict, cfg: Config):
    """The mechanics problem of a run (module table), set up and ready to solve.

    Parameters
    ----------
    mesh : VoxelMesh or TetMesh
    faces : AP|SE faces of the mesh (:func:`pipeline.run.mesh_interface`)

    Raises
    ------
    ConfigError
        Interface options the chosen model does not have, before any solver set-up.
    """
    from solvers.physics import CohesiveLaw, CohesiveProblem, ElasticProblem, default_penalty

    active, electrolyte = cfg.materials.resolve()
    materials = {1: electrolyte, 2: active}
    sv = cfg.solver
    backend = mechanics_backend(mesh, cfg)
    opts = dict(top=cfg.mechanics.top, boundary=cfg.mechanics.faces,
                stack_pressure_Pa=cfg.mechanics.stack_pressure_MPa * 1e6, rtol=sv.rtol,
                maxiter=sv.maxiter, coarse=sv.coarse)
    laws = {code: m.plasticity for code, m in materials.items() if m.plasticity is not None}
    if cfg.interface.model == "bonded":
        elastic = ElasticProblem(mesh, materials, solver=sv.method, aggregation=sv.aggregation, backend=backend,
                                 device=sv.device, precision=sv.precision, **opts)
        if not laws:
            return elastic
        from solvers.physics.inelastic import PlasticProblem

        return PlasticProblem(elastic, laws, rtol=sv.plastic_rtol, maxiter=sv.plastic_maxiter)
    ic = cfg.interface
    h = float(np.min(mesh.spacing))
    k0 = ic.penalty_stiffness * 1e15 or default_penalty(active.E, electrolyte.E, h)
    law = CohesiveLaw(strength_Pa=ic.strength_MPa * 1e6, fracture_energy_J_m2=ic.fracture_energy_J_m2,
                      penalty_Pa_m=k0, mode_mixity=ic.mode_mixity, contact_factor=ic.contact_factor)
    averaging = ic.averaging_voxels * h if cfg.mesh.kind == "voxel-hex" else 0.0
    if backend == "matrix-free":
        from solvers.physics.cohesive.voxel import VoxelCohesiveProblem

        refuse_matrix_free_options(ic)
        return VoxelCohesiveProblem(mesh, materials, faces, law, averaging_length_m=averaging,
                                    traction_tol=ic.traction_tol, max_cuts=ic.max_cuts,
                                    contact_corrections=ic.contact_corrections, device=sv.device,
                                    precision=sv.precision, **opts)
    return CohesiveProblem(mesh, materials, faces, law, averaging_length_m=averaging, nl_rtol=ic.newton_rtol,
                           solver=sv.method, aggregation=sv.aggregation, **opts)


def kinetic_flux(mesh, faces: dict, cfg: Config):
    """The Butler-Volmer flux rule of a run (``[electrochemistry] kinetics``), or None for the uniform rule.

    ``mesh`` is the meshed sample (not a cohesive problem's split mesh): the electrolyte
    potential lives on its electrolyte cells.
    """
    from solvers.physics.electrochem import KineticFlux
    from solvers.physics.electrolyte import ElectrolyteProblem
    from solvers.physics.kinetics import ButlerVolmer, Kinetics, open_circuit

    ec = cfg.electrochemistry
    if ec.kinetics == "uniform":
        return None
    if cfg.solver.device == "gpu":
        log.info("solver.device = 'gpu': the mechanics and diffusion run on the GPU, the electrolyte potential "
                 "of the Butler-Volmer kinetics on the CPU (assembled)")
    active, electrolyte = cfg.materials.resolve()
    law = ButlerVolmer(active.k0_m_s, active.c_max_mol_m3, alpha_a=active.alpha_a, alpha_c=active.alpha_c,
                       temperature_K=cfg.cycling.temperature_K)
    elec = ElectrolyteProblem(mesh, faces, kappa_S_m=electrolyte.kappa_S_m)
    return KineticFlux(elec, Kinetics(law, open_circuit(active.ocp, active.name), newton_rtol=ec.newton_rtol),
                       rtol=ec.step_rtol, maxiter=ec.step_maxiter, voltage_limits=(ec.voltage_min_V, ec.voltage_max_V),
                       omega=active.partial_molar_volume if ec.stress_coupled_ocp else None)


def load_states(prob, faces: dict, cfg: Config, diffusion_info: dict, kinetics=None):
    """The run's load states (an iterator of :class:`solvers.physics.transient` states) and their number.

    Galvanostatic runs with a cohesive interface put no flux through debonded faces.
    ``diffusion_info`` receives the diffusion solver's statistics; ``kinetics`` is the
    flux rule of :func:`kinetic_flux` (None: uniform).
    """
    from solvers.physics.transient import Galvanostatic, galvanostatic_states, swell_states

    active, _ = cfg.materials.resolve()
    cyc, sv = cfg.cycling, cfg.solver
    if cyc.mode == "swell":
        return swell_states(prob, active, soc_start=cyc.soc_start, soc_end=cyc.soc_end, steps=cyc.steps), cyc.steps
    protocol = Galvanostatic(c_rate=cyc.c_rate, soc_start=cyc.soc_start, soc_end=cyc.soc_end, cycles=cyc.cycles,
                             steps=cyc.steps_per_half_cycle(), stress_assisted=cyc.stress_assisted,
                             temperature_K=cyc.temperature_K)
    bonded = cfg.interface.model == "bonded"
    states = galvanostatic_states(prob, active, faces, protocol, solver=sv.method, backend=sv.backend,
                                  device=sv.device, precision=sv.precision, output_every=cyc.output_every,
                                  stats=diffusion_info, kinetics=kinetics,
                                  flux_mask=None if bonded else (lambda _st: prob.face_damage() < 1.0))
    return states, protocol.steps * cyc.cycles


def step_parts(mesh, geometry: dict, faces: dict, cohesive=None, kinetics=None, plastic=None,
               shell_voxels: float = 3.0) -> list:
    """What optional physics add to every written step: callables ``part(state) -> (columns, entries, cells)``.

    ``columns`` go into the step's particle table, ``entries`` into its summary, ``cells``
    into fields.xdmf. A cohesive problem adds delamination, a Butler-Volmer flux rule the
    electrochemistry, a plastic problem the plastic zones (:mod:`pipeline.stats`;
    ``shell_voxels``: the particles' electrolyte shells, ``[statistics] shell_voxels``).
    """
    from pipeline.stats import (
        interface_damage_summary,
        interface_damage_table,
        kinetics_summary,
        kinetics_table,
        plastic_shells,
        plasticity_summary,
        plasticity_table,
    )

    parts = []
    if plastic is not None:
        from segmentation import Phase

        shell = plastic_shells(mesh, shell_voxels)
        volume = np.abs(mesh.cell_volumes())
        phases = {int(c): Phase(c).name.lower() for c in np.unique(mesh.cell_phase[plastic.cells])}

        def plasticity(_st):
            e = plastic.cell_equivalent_plastic_strain()
            return (plasticity_table(geometry, shell, e, volume),
                    plasticity_summary(mesh.cell_phase, e, volume, phases), {"equivalent_plastic_strain": e})

        parts.append(plasticity)
    if cohesive is not None:
        def delamination(_st):
            fd = cohesive.face_damage()
            return (interface_damage_table(geometry, cohesive, fd), interface_damage_summary(cohesive, fd, mesh),
                    {"interface_damage": cohesive.cell_damage()})

        parts.append(delamination)
    if kinetics is not None:
        def electrochemistry(st):
            return (kinetics_table(geometry, faces, st.electro), kinetics_summary(st.electro, kinetics.elec.point_area),
                    {"phi_e_V": electrolyte_cell_potential(mesh, kinetics.elec, st.electro["phi"])})

        parts.append(electrochemistry)
    return parts


def electrolyte_cell_potential(mesh, elec, phi: np.ndarray) -> np.ndarray:
    """Cell mean of the electrolyte potential (V) on electrolyte cells, NaN on the others and on
    electrolyte without a path to the separator."""
    cells = mesh.linear().cells if hasattr(mesh, "linear") else mesh.cells
    node = np.full(mesh.n_nodes, np.nan)
    node[elec.separator_nodes] = 0.0
    node[elec.free_nodes] = phi
    out = np.full(mesh.n_cells, np.nan)
    se = mesh.cell_phase == 1
    out[se] = node[cells[se]].mean(axis=1)
    return out
