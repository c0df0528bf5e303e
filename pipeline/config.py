"""Run configuration: TOML -> frozen dataclasses, validated before any heavy work.

Each section is a frozen dataclass whose fields have defaults; unknown keys,
wrong types and impossible values raise :class:`~tomomech.errors.ConfigError`
naming the key and the fix. The resolved config is written beside the results.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from solvers.physics.materials import Material, get_material
from tomomech.errors import ConfigError

PHASE_NAMES = ("void", "electrolyte", "active")


def _check_choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key} = {value!r} is not allowed: use one of {', '.join(map(repr, choices))}")


def _check_positive(key: str, value, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key} = {value!r} must be {'>= 0' if allow_zero else '> 0'}")


@dataclass(frozen=True)
class InputConfig:
    """[input]: the stack to read.

    ``path``: a multi-page TIFF or a folder of 2D slices (natural sort; a missing or repeated
    slice number is refused), relative to the config file.
    ``voxel_size_um``: one number (isotropic) or [z, y, x]; overrides the
    file's metadata; required when the file carries none.
    ``crop``: [[z0, z1], [y0, y1], [x0, x1]] half-open voxel ranges.
    """

    path: str = ""
    voxel_size_um: float | list | None = None
    crop: list | None = None

    def __post_init__(self):
        if not self.path:
            raise ConfigError("input.path is required: the TIFF stack or folder of slices to read")
        vs = self.voxel_size_um
        if vs is not None:
            vals = [vs] if isinstance(vs, (int, float)) else list(vs)
            if len(vals) not in (1, 3) or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                                  or not v > 0 for v in vals):
                raise ConfigError(f"input.voxel_size_um = {vs!r}: give one positive number or [z, y, x]")
        if self.crop is not None:
            ok = (isinstance(self.crop, list) and len(self.crop) == 3
                  and all(isinstance(r, list) and len(r) == 2 and all(isinstance(v, int) for v in r)
                          and 0 <= r[0] < r[1] for r in self.crop))
            if not ok:
                raise ConfigError(f"input.crop = {self.crop!r}: use [[z0, z1], [y0, y1], [x0, x1]] "
                                  "with integers 0 <= start < stop")

    def spacing_um(self):
        """Voxel size (z, y, x) from the config, or None."""
        vs = self.voxel_size_um
        if vs is None:
            return None
        return (float(vs),) * 3 if isinstance(vs, (int, float)) else tuple(float(v) for v in vs)


@dataclass(frozen=True)
class SegmentationConfig:
    """[segmentation]: grey values or labels -> phases -> particles.

    ``phase_map`` maps a label value (``method = "labels"``) or an intensity
    class 0, 1, 2 from dark to bright (``multiotsu``/``thresholds``) to
    ``"void" | "electrolyte" | "active"``.

    ``method``: ``"labels"`` (the stack is a label image), ``"multiotsu"`` (three intensity
    classes, thresholds from the histogram inside the field of view) or ``"thresholds"``
    (``thresholds = [t1, t2]`` in grey values). ``denoise``: ``"none" | "median" | "gaussian" |
    "nlmeans"`` before thresholding, with ``denoise_strength`` (voxels). ``min_particle_voxels``:
    smaller active islands go to their neighbouring phase. ``split_touching``: split touching
    particles by a distance-transform watershed whose h-maxima depth is ``split_depth_voxels``.
    ``split_method``: ``"watershed"`` (that h-maxima watershed) or ``"snow"`` (porespy's SNOW
    partitioning: a watershed seeded by the maxima of the blurred distance transform, with saddle
    and nearby peaks trimmed; porespy's defaults r_max = 4 voxels, sigma = 0.4; needs the optional
    ``porespy`` extra). ``split_depth_voxels`` applies to the watershed only.

    Raw-CT corrections before denoising (grey values only, both off by default):
    ``correct_drift`` maps every slice's 5th and 95th grey-value percentiles (inside the field of
    view, smoothed along z by a quadratic fit over ``drift_window_slices``; 0: each slice on its own)
    onto the stack's, removing a slow drift of
    brightness along z; ``remove_rings`` subtracts ring artifacts around the slice centre (the
    stack's radial profile less its running median over ``ring_width_voxels``).
    """

    method: str = "multiotsu"
    phase_map: dict = field(default_factory=lambda: {"0": "void", "1": "electrolyte", "2": "active"})
    thresholds: list | None = None
    denoise: str = "none"
    denoise_strength: float = 1.0
    min_particle_voxels: int = 20
    split_touching: bool = True
    split_depth_voxels: float = 1.0
    split_method: str = "watershed"
    correct_drift: bool = False
    drift_window_slices: int = 21
    remove_rings: bool = False
    ring_width_voxels: int = 9

    def __post_init__(self):
        _check_positive("segmentation.drift_window_slices", self.drift_window_slices, allow_zero=True)
        if self.ring_width_voxels < 3:
            raise ConfigError(f"segmentation.ring_width_voxels = {self.ring_width_voxels}: use at least 3 "
                              "(wider than the rings, narrower than the radial trends to keep)")
        if (self.correct_drift or self.remove_rings) and self.method == "labels":
            raise ConfigError("segmentation.correct_drift and remove_rings act on grey values: method = 'labels' "
                              "reads a label image; use 'multiotsu' or 'thresholds'")
        _check_choice("segmentation.method", self.method, ("labels", "multiotsu", "thresholds"))
        _check_choice("segmentation.split_method", self.split_method, ("watershed", "snow"))
        _check_choice("segmentation.denoise", self.denoise, ("none", "median", "gaussian", "nlmeans"))
        if self.method == "thresholds" and not self.thresholds:
            raise ConfigError("segmentation.method = 'thresholds' needs segmentation.thresholds = [t1, t2]")
        for k, v in self.phase_map.items():
            try:
                int(k)
            except ValueError:
                raise ConfigError(f"segmentation.phase_map key {k!r} must be an integer value") from None
            if v not in PHASE_NAMES:
                raise ConfigError(f"segmentation.phase_map.{k} = {v!r}: use one of {PHASE_NAMES}")
        if "active" not in self.phase_map.values():
            raise ConfigError("segmentation.phase_map maps nothing to 'active'")
        _check_positive("segmentation.min_particle_voxels", self.min_particle_voxels, allow_zero=True)
        _check_positive("segmentation.split_depth_voxels", self.split_depth_voxels)
        _check_positive("segmentation.denoise_strength", self.denoise_strength)

    def int_phase_map(self) -> dict[int, str]:
        return {int(k): v for k, v in self.phase_map.items()}


MESH_KINDS = ("voxel-hex", "voxel-tet", "conforming-tet")


@dataclass(frozen=True)
class MeshConfig:
    """[mesh]: the finite-element mesh of the (coarsened) label image.

    ``kind``: ``"voxel-hex"`` (one trilinear hex per solid voxel), ``"voxel-tet"``
    (each solid voxel split into 6 linear tetrahedra) or ``"conforming-tet"``
    (CGAL through pygalmesh: linear tetrahedra that follow the particle
    surfaces; needs the ``mesh`` extra). ``coarsen``: merge coarsen^3 voxels
    into one before meshing. ``order``: 1 (linear) or 2 (quadratic tetrahedra, a node on every
    edge: about 8x the unknowns of the linear tets, much more accurate per cell; the Li
    diffusion runs on their corners). ``vtu`` / ``msh``: also write mesh.vtu (ParaView)
    and mesh.msh (Gmsh 4.1: phase as physical tag, particle as geometrical tag).

    Conforming meshes only: ``cell_size_voxels`` (largest cell circumradius in
    the particles, voxels), ``electrolyte_cell_size_voxels`` (the same in the
    electrolyte; 0 = as in the particles), ``interface_cell_size_voxels`` (the same in
    the electrolyte within ``interface_shell_voxels`` of a particle, where the shell stress
    of a swelling particle is steepest; 0 = no shell), ``facet_distance_voxels`` (largest
    distance of a surface facet to the labelled surface), the CGAL optimisers
    ``lloyd``, ``odt``, ``perturb`` (not reproducible: CGAL runs it under a
    time limit), ``exude``, and ``seed``. ``upsample``: mesh the labels drawn that many times
    finer along phase indicators smoothed by ``upsample_sigma_voxels`` (volumes kept; memory x
    upsample^3). ``smooth_surface_iterations``: Taubin steps that take the surfaces off the voxel
    staircase (0: none; 20 is a good start).
    """

    kind: str = "voxel-hex"
    coarsen: int = 1
    order: int = 1
    vtu: bool = False
    msh: bool = False
    cell_size_voxels: float = 1.0
    electrolyte_cell_size_voxels: float = 0.0
    interface_cell_size_voxels: float = 0.0
    interface_shell_voxels: float = 2.0
    upsample: int = 1
    upsample_sigma_voxels: float = 1.0
    smooth_surface_iterations: int = 0
    facet_distance_voxels: float = 0.25
    lloyd: bool = False
    odt: bool = False
    perturb: bool = False
    exude: bool = True
    seed: int = 0

    def __post_init__(self):
        _check_choice("mesh.kind", self.kind, MESH_KINDS)
        _check_positive("mesh.coarsen", self.coarsen)
        _check_choice("mesh.order", self.order, (1, 2))
        if self.order == 2 and self.kind == "voxel-hex":
            raise ConfigError("mesh.order = 2 (quadratic elements) needs mesh.kind = 'voxel-tet' or 'conforming-tet'")
        _check_positive("mesh.cell_size_voxels", self.cell_size_voxels)
        _check_positive("mesh.electrolyte_cell_size_voxels", self.electrolyte_cell_size_voxels, allow_zero=True)
        _check_positive("mesh.interface_cell_size_voxels", self.interface_cell_size_voxels, allow_zero=True)
        _check_positive("mesh.interface_shell_voxels", self.interface_shell_voxels)
        _check_positive("mesh.smooth_surface_iterations", self.smooth_surface_iterations, allow_zero=True)
        _check_positive("mesh.upsample", self.upsample)
        _check_positive("mesh.upsample_sigma_voxels", self.upsample_sigma_voxels)
        _check_positive("mesh.facet_distance_voxels", self.facet_distance_voxels)
        _check_positive("mesh.seed", self.seed, allow_zero=True)
        if self.kind == "conforming-tet":
            try:
                import pygalmesh  # noqa: F401
            except ImportError:
                raise ConfigError("mesh.kind = 'conforming-tet' needs pygalmesh: pip install 'tomomech[mesh]' "
                                  "(with apt libcgal-dev libeigen3-dev), or run `make deps`, which builds it "
                                  "once (about 6 min)") from None

    def conforming_options(self) -> dict:
        """Keyword arguments of :func:`solvers.mesh.conforming.conforming_tet_mesh`."""
        return dict(max_cell_size_voxels=self.cell_size_voxels,
                    electrolyte_cell_size_voxels=self.electrolyte_cell_size_voxels or None,
                    interface_cell_size_voxels=self.interface_cell_size_voxels or None,
                    interface_shell_voxels=self.interface_shell_voxels,
                    smooth_iterations=self.smooth_surface_iterations, upsample=self.upsample,
                    upsample_sigma_voxels=self.upsample_sigma_voxels,
                    max_facet_distance_voxels=self.facet_distance_voxels, lloyd=self.lloyd, odt=self.odt,
                    perturb=self.perturb, exude=self.exude, seed=self.seed)


@dataclass(frozen=True)
class MaterialsConfig:
    """[materials]: ``active`` and ``electrolyte``, each a preset name (``tomomech materials``
    lists them with their sources) or an inline table, e.g. ``{ E_GPa = 140, nu = 0.3,
    volume_change = [[0.2, -0.05], [1, 0]] }``; an inline table may set ``base = "NMC811"`` and
    override fields of that preset."""

    active: str | dict = "NMC811"
    electrolyte: str | dict = "Li6PS5Cl"

    def __post_init__(self):
        self.resolve()  # validates

    def resolve(self) -> tuple[Material, Material]:
        return get_material(self.active, "materials.active"), get_material(self.electrolyte, "materials.electrolyte")

    @property
    def plastic(self) -> bool:
        """True when a phase has a plasticity law."""
        return any(m.plasticity is not None for m in self.resolve())


@dataclass(frozen=True)
class MechanicsConfig:
    """[mechanics]: box conditions.

    ``top``: the top face ``free``, ``fixed`` (a roller) or under ``stack_pressure`` with
    ``stack_pressure_MPa`` (compressive). ``faces``: any box face (``z_min``, ``z_max``,
    ``y_min``, ``y_max``, ``x_min``, ``x_max``) set to ``roller`` (normal displacement held; the
    default of all but the top),
    ``fixed`` (all of it held) or ``free``, e.g. ``faces = {x_max = "free", y_max = "free"}``
    for a crop at the sample's corner. A run is refused only if the faces the solid touches
    leave a rigid motion free; the error names it.
    """

    top: str = "free"
    stack_pressure_MPa: float = 0.0
    faces: dict = field(default_factory=dict)

    def __post_init__(self):
        from solvers.physics.elasticity import face_conditions

        face_conditions(self.top, self.faces)
        _check_choice("mechanics.top", self.top, ("free", "fixed", "stack_pressure"))
        _check_positive("mechanics.stack_pressure_MPa", self.stack_pressure_MPa, allow_zero=True)
        if self.top == "stack_pressure" and self.stack_pressure_MPa == 0:
            raise ConfigError("mechanics.top = 'stack_pressure' needs mechanics.stack_pressure_MPa > 0")


@dataclass(frozen=True)
class InterfaceConfig:
    """[interface]: the AP|SE interface, ``model = "bonded"`` (default) or ``"cohesive"``
    (faces can open: damage, contact, loss of Li flux).

    Cohesive (PHYSICS.md section 1): bilinear traction-separation law with
    ``strength_MPa`` (normal strength; shear strength = strength / mode_mixity),
    ``fracture_energy_J_m2`` (G_c), ``penalty_stiffness`` in GPa/um (1e15 Pa/m;
    0 = auto: 100 x the harmonic mean of the two Young's moduli / voxel size) and
    ``mode_mixity`` (weight of the tangential opening). AP|SE adhesion has not
    been measured: the defaults (100 MPa, 1 J/m^2) are placeholders to sweep.
    ``averaging_voxels``: on voxel-hex meshes the law sees the opening averaged
    over this length (a Gaussian, in voxels) along the particle's interface,
    which cancels the staircase corners' pattern (0 = local law; a sphere's
    delamination onset is then 15-24 % early instead of 7 %; 1.5 is the
    validated value). Tet meshes always use the local law.
    ``newton_rtol``: Newton stops at this residual relative to the largest
    load so far (at most 1e-4). 1e-5 instead of the default 1e-6 gave the
    same debonded fraction at every written step of the 24^3 benchmark
    charge (theta within 1e-4) in 20 % less time.
    ``contact_factor``: the normal contact stiffness of a debonded face as a
    fraction of the penalty (1 = the full penalty; in [0.1, 1]). 0.1 ran the
    24^3 benchmark charge in 0.76x the time, the debonded fraction within
    0.004 at every written step; a closed debonded face then yields
    ``|t_n| / (0.1 K0)`` into the particle (about 1 nm at 1 GPa on 0.4 um voxels).
    ``newton_rtol`` and ``contact_factor`` belong to the assembled model (node pairs);
    the matrix-free model (a cohesive band of electrolyte voxels, contact without a
    penalty) refuses them.

    The matrix-free model steps the damage by IMPL-EX increments: ``traction_tol`` is the
    largest change of interface traction an increment may imply, as a fraction of the
    strength (larger increments are halved), down to ``1 / 2^max_cuts`` of a step;
    ``contact_corrections``: how many times an increment whose solution changed the contact
    state is solved again (0: the new state enters the next increment). ``max_cuts = 0`` and
    ``contact_corrections = 0`` solve once per step (pure IMPL-EX: about 10x faster once
    damage spreads, the final debonded fraction of the 24^3 benchmark charge within 0.006
    of the run with half the step; see docs/performance.md).
    """

    model: str = "bonded"
    strength_MPa: float = 100.0
    fracture_energy_J_m2: float = 1.0
    penalty_stiffness: float = 0.0
    mode_mixity: float = 1.0
    averaging_voxels: float = 1.5
    newton_rtol: float = 1e-6
    contact_factor: float = 1.0
    traction_tol: float = 0.05
    max_cuts: int = 4
    contact_corrections: int = 4

    def __post_init__(self):
        _check_choice("interface.model", self.model, ("bonded", "cohesive"))
        _check_positive("interface.averaging_voxels", self.averaging_voxels, allow_zero=True)
        _check_positive("interface.strength_MPa", self.strength_MPa)
        _check_positive("interface.fracture_energy_J_m2", self.fracture_energy_J_m2)
        _check_positive("interface.penalty_stiffness", self.penalty_stiffness, allow_zero=True)
        _check_positive("interface.mode_mixity", self.mode_mixity)
        if not 0 < self.newton_rtol <= 1e-4:
            raise ConfigError(f"interface.newton_rtol = {self.newton_rtol!r} must lie in (0, 1e-4]: looser, the "
                              "damage of a step is not converged (1e-5 was measured to give the answer of 1e-6)")
        if not 0.1 <= self.contact_factor <= 1:
            raise ConfigError(f"interface.contact_factor = {self.contact_factor!r} must lie in [0.1, 1]: softer "
                              "contact lets debonded faces sink into the particles and changes the debonded "
                              "fraction (0.01: by 0.017 on the 16^3 benchmark charge)")
        if not 0 < self.traction_tol < 1:
            raise ConfigError(f"interface.traction_tol = {self.traction_tol!r} must lie in (0, 1): a fraction of the "
                              "strength")
        if not 0 <= self.max_cuts <= 12:
            raise ConfigError(f"interface.max_cuts = {self.max_cuts!r} must lie in [0, 12] (increments of "
                              "1 / 2^max_cuts of a step)")
        if not 0 <= self.contact_corrections <= 10:
            raise ConfigError(f"interface.contact_corrections = {self.contact_corrections!r} must lie in [0, 10]")

    def assembled_only(self) -> list[str]:
        """Options set away from their defaults that only the assembled (node-pair) model has."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return [k for k in ("newton_rtol", "contact_factor") if getattr(self, k) != defaults[k]]


@dataclass(frozen=True)
class CyclingConfig:
    """[cycling]: what the active phase goes through.

    ``mode = "swell"``: static; theta goes uniformly from ``soc_start`` (the
    stress-free reference) to ``soc_end`` in ``steps`` equal increments.
    ``mode = "galvanostatic"``: Li diffusion in the particles at a constant
    current that passes the window ``soc_start -> soc_end`` in ``1 / c_rate``
    hours through the bonded AP|SE area; ``soc_end < soc_start`` is a charge
    (particles delithiate and shrink). ``cycles`` half-cycles alternate charge
    and discharge; ``steps`` time steps per half-cycle, or ``dt_s``;
    ``output_every`` writes every n-th step (and the last);
    ``stress_assisted`` adds the hydrostatic-stress term to the flux.
    ``mode``: ``"swell"`` or ``"galvanostatic"``; ``c_rate`` in 1/h; ``temperature_K`` for the
    diffusivity and the stress term.
    """

    mode: str = "swell"
    soc_start: float = 1.0
    soc_end: float = 0.22
    steps: int = 1
    c_rate: float = 1.0
    cycles: int = 1
    dt_s: float | None = None
    output_every: int = 1
    stress_assisted: bool = False
    temperature_K: float = 298.15

    def __post_init__(self):
        _check_choice("cycling.mode", self.mode, ("swell", "galvanostatic"))
        for k in ("soc_start", "soc_end"):
            v = getattr(self, k)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"cycling.{k} = {v!r} must lie in [0, 1] (theta = c / c_max)")
        if self.mode == "galvanostatic" and self.soc_start == self.soc_end:
            raise ConfigError("cycling.soc_start equals soc_end: a galvanostatic run needs a window")
        for k in ("steps", "c_rate", "cycles", "output_every", "dt_s", "temperature_K"):
            _check_positive(f"cycling.{k}", getattr(self, k))

    def steps_per_half_cycle(self) -> int:
        """Time steps per half-cycle (from ``dt_s`` when given)."""
        if self.dt_s is not None:
            return max(1, int(round(3600.0 / self.c_rate / self.dt_s)))
        return self.steps


@dataclass(frozen=True)
class ElectrochemistryConfig:
    """[electrochemistry]: how a galvanostatic current is shared among the AP|SE faces.

    ``kinetics = "uniform"`` (PHYSICS.md section 1: one flux density over the bonded area) or
    ``"butler-volmer"`` (section 5: the ionic potential in the electrolyte with the separator
    at z = top as the Li-metal reference, Butler-Volmer current on every bonded face with an
    ionic path, one solid potential = the cell voltage). Butler-Volmer takes ``ocp``,
    ``k0_m_s``, ``alpha_a``, ``alpha_c`` from the active material and ``kappa_S_m`` from the
    electrolyte ([materials]; presets NMC811 and Li6PS5Cl have them, inline tables may set
    them). ``newton_rtol``: the current balance's tolerance (fraction of the applied current);
    ``step_rtol``: a step's diffusion-kinetics iteration stops when no face's surface theta
    changes by more; ``step_maxiter``: its iterations before the time step is cut (3 halvings,
    then the run stops with advice). ``voltage_max_V`` / ``voltage_min_V``: a charge / discharge
    half-cycle ends at the step that passes it (the window ``soc_start -> soc_end`` is then not
    passed in full, as in a cell that reaches its cut-off). ``stress_coupled_ocp``: the
    open-circuit potential becomes ``U(theta) + Omega sigma_h / F`` (``Omega``: the active
    material's partial molar volume, from ``omega_m3_mol`` or the slope of its volume-change
    table; ``sigma_h``: the particle's hydrostatic stress at the interface from the step before);
    off by default.
    """

    kinetics: str = "uniform"
    stress_coupled_ocp: bool = False
    newton_rtol: float = 1e-10
    step_rtol: float = 1e-6
    step_maxiter: int = 60
    voltage_max_V: float = 4.4
    voltage_min_V: float = 2.5

    def __post_init__(self):
        _check_choice("electrochemistry.kinetics", self.kinetics, ("uniform", "butler-volmer"))
        for k in ("newton_rtol", "step_rtol"):
            if not 0 < getattr(self, k) < 1:
                raise ConfigError(f"electrochemistry.{k} = {getattr(self, k)!r} must lie in (0, 1)")
        _check_positive("electrochemistry.step_maxiter", self.step_maxiter)
        if not 0 < self.voltage_min_V < self.voltage_max_V:
            raise ConfigError(f"electrochemistry.voltage_min_V = {self.voltage_min_V} and voltage_max_V = "
                              f"{self.voltage_max_V} must satisfy 0 < min < max")

    def check(self, active: Material, electrolyte: Material, cycling: CyclingConfig) -> None:
        """Refuse a Butler-Volmer run that lacks data or starts where the kinetics vanish."""
        if self.kinetics == "uniform":
            if self.stress_coupled_ocp:
                raise ConfigError("electrochemistry.stress_coupled_ocp needs kinetics = 'butler-volmer' (the uniform "
                                  "rule has no open-circuit potential)")
            return
        if cycling.mode != "galvanostatic":
            raise ConfigError("electrochemistry.kinetics = 'butler-volmer' needs cycling.mode = 'galvanostatic'")
        for m, keys, sec in ((active, ("ocp", "k0_m_s"), "active"), (electrolyte, ("kappa_S_m",), "electrolyte")):
            for k in keys:
                if getattr(m, k) is None:
                    raise ConfigError(f"electrochemistry.kinetics = 'butler-volmer' needs {k} in materials.{sec} "
                                      f"({m.name}); use a preset that has it (NMC811, Li6PS5Cl) or add it")
        if not 0.0 < cycling.soc_start < 1.0:
            raise ConfigError(f"cycling.soc_start = {cycling.soc_start}: the exchange current vanishes at theta = 0 "
                              "and 1, so Butler-Volmer kinetics cannot start there; start inside, e.g. 0.95")


@dataclass(frozen=True)
class SolverConfig:
    """[solver]: linear solver ``method = "auto" | "direct" | "amg"``, ``rtol``, ``maxiter``,
    ``aggregation = "auto" | "smoothed" | "plain"`` (AMG variant; auto: plain above 3 M dof
    to save memory); ``backend = "assembled" | "matrix-free" | "auto"`` (matrix-free: no global
    matrix, voxel-hex meshes only; mechanics by geometric multigrid, bonded or cohesive interfaces,
    diffusion by Jacobi-CG; auto: the mechanics above 150 k unknowns, the diffusion above 100 k
    nodes, or both when the device or precision ask for it), ``device = "cpu" | "gpu"`` and
    ``precision = "float64" | "mixed"`` for the matrix-free backend; ``coarse = "trilinear" | "split"``,
    the matrix-free multigrid's coarse spaces (split: coarse nodes split per connected piece of
    solid, an open cohesive band counts as a gap; CPU only; it halves the iterations on raw-CT
    segmentations and on an open band at 48^3, but at 96^3 its assembled coarse levels cost more
    than they save: docs/performance.md). ``plastic_rtol`` and ``plastic_maxiter``: a load step
    with (visco)plastic phases (a material's ``plasticity``) iterates until its equilibrium
    residual is below ``plastic_rtol`` of the swelling load, at most ``plastic_maxiter`` times."""

    method: str = "auto"
    rtol: float = 1e-8
    maxiter: int = 1000
    aggregation: str = "auto"
    backend: str = "auto"
    device: str = "cpu"
    precision: str = "float64"
    coarse: str = "trilinear"
    plastic_rtol: float = 1e-6
    plastic_maxiter: int = 200

    def __post_init__(self):
        _check_choice("solver.method", self.method, ("auto", "direct", "amg"))
        if not 0 < self.plastic_rtol < 1:
            raise ConfigError(f"solver.plastic_rtol = {self.plastic_rtol!r} must lie in (0, 1)")
        _check_positive("solver.plastic_maxiter", self.plastic_maxiter)
        _check_choice("solver.coarse", self.coarse, ("trilinear", "split"))
        if self.coarse == "split" and self.device == "gpu":
            raise ConfigError("solver.coarse = 'split' runs on the CPU (its coarse levels are scipy sparse "
                              "matrices): use coarse = 'trilinear' with device = 'gpu'")
        _check_choice("solver.aggregation", self.aggregation, ("auto", "smoothed", "plain"))
        _check_choice("solver.backend", self.backend, ("assembled", "matrix-free", "auto"))
        _check_choice("solver.device", self.device, ("cpu", "gpu"))
        _check_choice("solver.precision", self.precision, ("float64", "mixed"))
        if self.backend == "assembled" and (self.device != "cpu" or self.precision != "float64"):
            raise ConfigError("solver.device = 'gpu' and solver.precision = 'mixed' need "
                              "solver.backend = 'matrix-free'")
        if not 0 < self.rtol < 1:
            raise ConfigError(f"solver.rtol = {self.rtol!r} must lie in (0, 1)")
        _check_positive("solver.maxiter", self.maxiter)


@dataclass(frozen=True)
class StatisticsConfig:
    """[statistics]: ``shell_voxels`` (the particles' shells: local void fraction, plastic zone) and
    ``normal_smoothing_voxels`` (Gaussian width of the interface normals)."""

    shell_voxels: float = 3.0
    normal_smoothing_voxels: float = 1.5

    def __post_init__(self):
        _check_positive("statistics.shell_voxels", self.shell_voxels)
        _check_positive("statistics.normal_smoothing_voxels", self.normal_smoothing_voxels)


@dataclass(frozen=True)
class DescribeConfig:
    """[describe]: microstructure descriptors (``microstructure.json``, report section, study columns).

    ``enabled``: run the describe stage inside ``tomomech run`` (``tomomech describe`` runs it
    alone). ``tortuosity_axes``: the axes along which the electrolyte's conductivity ratio and
    tortuosity factor are solved (``"z"`` is through the electrode, separator at the top);
    ``tortuosity_rtol`` is the relative residual of those solves. ``bins``: bins of the size
    and chord-length distributions. ``porespy``: use porespy (the optional ``[porespy]``
    extra) for local thickness, chord lengths and the two-point correlation; without it (or
    with ``false``) those are left out and ``microstructure.json`` says so.
    """

    enabled: bool = True
    tortuosity_axes: list = field(default_factory=lambda: ["z", "y", "x"])
    tortuosity_rtol: float = 1e-6
    bins: int = 25
    porespy: bool = True

    def __post_init__(self):
        axes = list(self.tortuosity_axes)
        for a in axes:
            _check_choice("describe.tortuosity_axes entry", a, ("z", "y", "x"))
        if len(set(axes)) != len(axes):
            raise ConfigError(f"describe.tortuosity_axes = {axes!r} names an axis twice")
        if not 0 < self.tortuosity_rtol < 1e-2:
            raise ConfigError(f"describe.tortuosity_rtol = {self.tortuosity_rtol!r} must lie in (0, 0.01)")
        if self.bins < 2:
            raise ConfigError(f"describe.bins = {self.bins!r} must be at least 2")


@dataclass(frozen=True)
class OutputConfig:
    """[output]: ``dir``, the results folder (relative to the config file; ``-o`` overrides it)."""

    dir: str = "results"


def refuse_matrix_free_options(interface: InterfaceConfig) -> None:
    """ConfigError for interface options that the matrix-free cohesive model does not have."""
    bad = interface.assembled_only()
    if bad:
        raise ConfigError(f"interface.{', interface.'.join(bad)} belong to the assembled cohesive model: the "
                          "matrix-free one (solver.backend = 'matrix-free', or 'auto' on large voxel-hex meshes) "
                          "settles contact without a penalty and steps by IMPL-EX increments (interface."
                          "traction_tol, interface.max_cuts). Remove them, or set solver.backend = 'assembled'")


@dataclass(frozen=True)
class UncertaintyConfig:
    """[uncertainty]: rerun the run under ``samples`` seeded perturbations of its segmentation
    (:mod:`pipeline.uncertainty`; 0: off).

    Thresholds are drawn within the histogram valley around each of the run's thresholds, or
    within +- ``threshold_band`` grey values when it is > 0; the denoise strength, split depth and
    smallest particle are the run's times a factor drawn uniformly from ``[low, high]``
    (``denoise_factor``, ``split_depth_factor``, ``min_particle_factor``). ``seed``: the same seed
    gives the same draws. ``workers``: local dask workers (0: one per core).
    """

    samples: int = 0
    seed: int = 0
    threshold_band: float = 0.0
    denoise_factor: list = field(default_factory=lambda: [0.5, 1.5])
    split_depth_factor: list = field(default_factory=lambda: [0.5, 1.5])
    min_particle_factor: list = field(default_factory=lambda: [0.5, 2.0])
    workers: int = 0

    def __post_init__(self):
        _check_positive("uncertainty.samples", self.samples, allow_zero=True)
        _check_positive("uncertainty.threshold_band", self.threshold_band, allow_zero=True)
        _check_positive("uncertainty.workers", self.workers, allow_zero=True)
        for name in ("denoise_factor", "split_depth_factor", "min_particle_factor"):
            r = getattr(self, name)
            if not (len(r) == 2 and all(isinstance(v, (int, float)) and v > 0 for v in r) and r[0] <= r[1]):
                raise ConfigError(f"uncertainty.{name} = {r!r}: give [low, high] with 0 < low <= high")


@dataclass(frozen=True)
class Config:
    """The whole run configuration."""

    input: InputConfig
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    materials: MaterialsConfig = field(default_factory=MaterialsConfig)
    mechanics: MechanicsConfig = field(default_factory=MechanicsConfig)
    interface: InterfaceConfig = field(default_factory=InterfaceConfig)
    cycling: CyclingConfig = field(default_factory=CyclingConfig)
    electrochemistry: ElectrochemistryConfig = field(default_factory=ElectrochemistryConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    statistics: StatisticsConfig = field(default_factory=StatisticsConfig)
    describe: DescribeConfig = field(default_factory=DescribeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    uncertainty: UncertaintyConfig = field(default_factory=UncertaintyConfig)

    def __post_init__(self):
        active, electrolyte = self.materials.resolve()
        self.electrochemistry.check(active, electrolyte, self.cycling)
        if self.interface.model == "cohesive" and self.solver.backend == "matrix-free":
            refuse_matrix_free_options(self.interface)
        if self.interface.model == "cohesive" and self.materials.plastic:
            raise ConfigError("a plastic material (materials.*.plasticity) with interface.model = 'cohesive' is not "
                              "supported yet: run the plastic electrolyte with a bonded interface, or drop the "
                              "plasticity table for a cohesive run")
        if self.interface.model == "cohesive" and self.mesh.order != 1:
            raise ConfigError("interface.model = 'cohesive' needs mesh.order = 1 (its interface elements have one "
                              "point per face corner)")
        if self.mesh.kind != "voxel-hex" and (self.solver.device != "cpu" or self.solver.precision != "float64"):
            raise ConfigError(f"solver.device = {self.solver.device!r} and precision = {self.solver.precision!r} "
                              f"need the matrix-free voxel solver, and mesh.kind = {self.mesh.kind!r} is assembled: "
                              "use mesh.kind = 'voxel-hex', or device = 'cpu' and precision = 'float64'")
        if self.mesh.kind != "voxel-hex" and self.solver.backend == "matrix-free":
            raise ConfigError(f"solver.backend = 'matrix-free' works on voxel-hex meshes only (mesh.kind = "
                              f"{self.mesh.kind!r}): use backend = 'assembled' or 'auto'")
        if self.cycling.mode == "galvanostatic":
            for k in ("D_m2_s", "c_max_mol_m3"):
                if getattr(active, k) is None:
                    raise ConfigError(f"cycling.mode = 'galvanostatic' needs {k} in materials.active "
                                      f"({active.name}); use a preset that has it or add it to the table")
        if self.cycling.stress_assisted and active.omega_m3_mol is None:
            raise ConfigError(f"cycling.stress_assisted needs a partial molar volume: materials.active "
                              f"({active.name}) must use omega_m3_mol (a linear volume-change law)")
        if not active.swells:
            raise ConfigError(f"materials.active = {active.name!r} has no volume-change law: give "
                              "volume_change = [[theta, dV/V], ...] or omega_m3_mol")
        lo, hi = active.theta_range()
        for k in ("soc_start", "soc_end"):
            v = getattr(self.cycling, k)
            if not lo <= v <= hi:
                raise ConfigError(f"cycling.{k} = {v} lies outside the volume-change table of "
                                  f"{active.name} (theta {lo}..{hi}); choose a window inside it")

    def to_dict(self) -> dict:
        return _strip_none(dataclasses.asdict(self))


def _strip_none(d):
    if isinstance(d, dict):
        return {k: _strip_none(v) for k, v in d.items() if v is not None}
    return d


def _type_ok(value, annotation) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (dict, list, str, bool):
        return isinstance(value, annotation)
    return True


def _build(cls, data: dict, section: str):
    if not isinstance(data, dict):
        raise ConfigError(f"[{section}] must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for k, v in data.items():
        if k not in fields:
            close = difflib.get_close_matches(k, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {section}.{k}{hint}; allowed keys: {', '.join(fields)}")
        if not _type_ok(v, hints[k]):
            raise ConfigError(f"{section}.{k} = {v!r} has the wrong type: expected "
                              f"{getattr(hints[k], '__name__', str(hints[k]))}")
    kw = dict(data)
    if cls is SegmentationConfig and "phase_map" in kw:
        kw["phase_map"] = {str(k): v for k, v in kw["phase_map"].items()}
    return cls(**kw)


def config_from_dict(data: dict[str, Any], base_dir: str | Path = ".") -> Config:
    """Validate a config mapping; relative paths are resolved against ``base_dir``."""
    hints = typing.get_type_hints(Config)
    unknown = set(data) - set(hints)
    if unknown:
        k = sorted(unknown)[0]
        close = difflib.get_close_matches(k, hints, n=1)
        hint = f" (did you mean [{close[0]}]?)" if close else ""
        raise ConfigError(f"unknown section [{k}]{hint}; sections: {', '.join(hints)}")
    if "input" not in data:
        raise ConfigError("the config needs an [input] section with path = 'stack.tif'")
    sections = {name: _build(hints[name], dict(data.get(name, {})), name) for name in hints if name in data}
    base = Path(base_dir)
    inp = sections["input"]
    p = Path(inp.path)
    if not p.is_absolute():
        sections["input"] = dataclasses.replace(inp, path=str((base / p).resolve()))
    out = sections.get("output", OutputConfig())
    if not Path(out.dir).is_absolute():
        sections["output"] = dataclasses.replace(out, dir=str((base / out.dir).resolve()))
    return Config(**sections)


def read_toml(path: str | Path, what: str = "file") -> dict:
    """Parse a TOML file, with a ConfigError naming the file when it is missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc


def load_config(path: str | Path, overrides: dict | None = None) -> Config:
    """Read and validate a TOML config file.

    Parameters
    ----------
    path : path of the ``.toml`` file
    overrides : nested mapping merged over the file's content (CLI options)
    """
    path = Path(path)
    data = read_toml(path, "config file")
    for sec, vals in (overrides or {}).items():
        data.setdefault(sec, {}).update(vals)
    return config_from_dict(data, path.parent)


def dump_config(cfg: Config) -> str:
    """The resolved config as TOML text."""
    import tomli_w

    return tomli_w.dumps(cfg.to_dict())


def sections() -> dict[str, type]:
    """The config sections in file order: ``{"input": InputConfig, ...}``."""
    return typing.get_type_hints(Config)


def undocumented_keys() -> list[str]:
    """``section.key`` of every config key its section's docstring does not name in double backquotes."""
    import inspect
    import re

    missing = []
    for name, cls in sections().items():
        doc = inspect.getdoc(cls) or ""
        missing += [f"{name}.{f.name}" for f in dataclasses.fields(cls)
                    if not re.search(rf"``[^`]*\b{re.escape(f.name)}\b[^`]*``", doc)]
    return missing


def reference_markdown() -> str:
    """The config reference (Markdown) generated from the sections' fields, defaults and docstrings,
    so that it cannot drift from what the code accepts."""
    import inspect
    import re

    def default(f):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            return "required"
        return "-" if value is None else f"`{_toml_inline(value)}`"

    out = []
    for name, cls in sections().items():
        doc = re.sub(r"``([^`]*)``", r"`\1`", inspect.getdoc(cls) or "")
        doc = re.sub(r":(?:mod|class|func):`~?([^`]*)`", r"`\1`", doc)
        head, _, body = doc.partition("\n")
        head = head.split(":", 1)[-1].strip()
        out += [f"## `[{name}]`", "", head[:1].upper() + head[1:], "", body.strip(), "",
                "| key | type | default |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            kind = str(f.type).replace("|", "or")
            out.append(f"| `{f.name}` | {kind} | {default(f)} |")
        out.append("")
    return "\n".join(out)


def _toml_inline(value) -> str:
    """One value as TOML writes it (inline)."""
    import tomli_w

    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_inline(v)}" for k, v in value.items()) + " }" if value else "{}"
    return tomli_w.dumps({"v": value}).strip()[4:]
