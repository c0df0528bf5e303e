"""Cohesive AP|SE interface: bilinear traction-separation with damage and contact.

PHYSICS.md section 1, "AP|SE interface". The nodes shared by active and
electrolyte cells are duplicated (the electrolyte keeps the original node,
the active phase gets a copy); each AP|SE voxel face becomes a zero-thickness
interface element with nodal (Lobatto) integration: its four integration
points sit on the four node pairs of its corners, each with a quarter of the
face area and the face's smoothed normal (not the face axis: staircase faces
would otherwise open at the wrong load). One point at the face centre was
tried and rejected: it leaves the hourglass patterns of the corner jumps
unresisted, and the traction at 0.6 % shrinkage then spread from -175 to
+214 MPa (nodal: -50 to +185 MPa, median 65 MPa in both).

The law (Ortiz-Pandolfi form). Opening ``delta = u_SE - u_AP``, normal part
``delta_n = delta . n`` (``n`` from the particle into the electrolyte),
tangential part ``delta_t``; effective opening
``lambda = sqrt(<delta_n>^2 + beta^2 |delta_t|^2)`` with the mode mixity
``beta``. Free energy per area
``psi = (1 - d) K0 lambda^2 / 2 + k_c <-delta_n>^2 / 2``, so

- tension: ``t = (1 - d) K0 (delta_n n + beta^2 delta_t)``;
- contact (``delta_n < 0``): the normal stiffness is
  ``k_c = (s + (1 - s) c) K0`` with ``s = max(1 - d, residual)`` committed
  before the load increment and ``c`` the law's ``contact_factor`` (1 by
  default: the full penalty whatever the damage), so faces never
  interpenetrate beyond ``|t_n| / (c K0)``;
- damage ``d = max over history of g(lambda)``,
  ``g = delta_f (lambda - delta_0) / (lambda (delta_f - delta_0))`` clipped
  to [0, 1], with ``delta_0 = sigma_c / K0`` and ``delta_f = 2 G_c / sigma_c``:
  the effective traction ``(1 - d) K0 lambda`` rises to ``sigma_c`` and falls
  linearly to zero at ``delta_f``; the work of full separation is ``G_c`` per
  area in any mode mix. Damage never decreases.

Averaged opening (voxel hexes; ``averaging_length_m`` > 0). On a staircase
the nodal openings carry a corner pattern (the steps shear, and openings
spread 0.3-2.9x their median), so the local law damages a sphere's
interface 15-24 % before the 3(d) load. The law then acts on the opening
averaged over about a voxel, ``delta_bar = W delta`` (:func:`opening_averaging`:
row-stochastic, symmetric in the area measure), and the rest of the energy,
``K0 <delta, (I - W^2) delta>_A / 2``, is a network of springs between node
pairs (:func:`fluctuation_springs`) that soften with the damage of their
weaker end. Undamaged this is exactly the local law's ``K0 |delta|^2 / 2``
(bonded results unchanged); a debonded staircase carries nothing; the form
is positive semi-definite for any damage. The springs take the damage
committed before a load increment (one increment late: springs softened by
the current damage are not a potential, and Newton stalls at the snap-through,
measured). Solving an increment again until the springs stop changing
(``max_stagger``) changed the debonded fraction of the 16^3 40-step charge by
at most 0.013 (0 at the end) for 2.6x the time, so it is off by default.
Damaged points keep a contact penalty on their own opening. Measured onset
(half the interface damaged) -6.8 / -7.1 % of 3(d) at R = 4 / 6 voxels
(-7.6 / -8.0 % with the springs converged at every increment).
Newton's CG runs on the exact tangent (products with ``W``); its AMG is built
from that tangent assembled (:meth:`CohesiveProblem._nonlocal_matrix`).

The nonlinear equations are solved by Newton's method with the consistent
tangent. With the history frozen at the start of a load increment the law
derives from an incremental potential (:meth:`CohesiveProblem.point_energy`),
so the total potential is a merit function: every Newton step is shortened
until it decreases (Armijo) or lengthened while it keeps decreasing, and no
opening moves by more than ``delta_f`` in one iteration. Where CG cannot solve
the tangent (unstable softening makes it indefinite) the positive definite
secant matrix gives the direction. A load increment that does not converge in
``nl_maxiter`` iterations is halved (down to 1/2^``max_cuts``, then
ConvergenceError); one that converges easily doubles the next. Small
sub-steps get more iterations: where a debonding patch is larger than the
cohesive length ``E G_c / sigma_c^2`` the interface snaps open at a fixed
load, and Newton needs 15-20 iterations to cross to the debonded state
whatever the increment. The AMG hierarchy or factorisation of an earlier matrix
preconditions CG and is rebuilt when the iterations double.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

from solvers.fem.assembly import apply_dirichlet, assemble_voxel_stiffness, elasticity_matrix
from solvers.mesh.voxel import ACTIVE, ELECTROLYTE, VoxelMesh
from solvers.physics.elasticity import ElasticProblem
from solvers.physics.materials import Material
from tomomech.errors import ConfigError, ConvergenceError, MeshError

log = logging.getLogger(__name__)

#: floor of |n . e_axis| in the projected area of a staircase face (faces almost along the normal)
MIN_COS = 0.05
#: penalty stiffness K0 = PENALTY_FACTOR * E_harmonic / voxel size when not given
PENALTY_FACTOR = 100.0
#: step reductions of the Newton line search before a load sub-step is cut
MAX_BACKTRACKS = 12
#: a load sub-step cut this many times (1/8 of the step) gets SNAP_FACTOR times the Newton iterations
SNAP_CUTS = 3
SNAP_FACTOR = 4
#: largest multiple of the Newton step the line search tries when the energy keeps falling
MAX_EXPANSION = 16.0
#: scaling sweeps that make the opening averaging row-stochastic and symmetric in the area measure
SINKHORN_ITERATIONS = 50
#: pair blocks of the assembled nonlocal tangent below this fraction of their diagonals' geometric mean
#: are moved onto the diagonals in the preconditioner's matrix (0: keep all)
PRECONDITIONER_DROP = 0.01
#: the preconditioner works in (mean, jump) coordinates on the node pairs whose interface coupling is
#: stiffer than this multiple of their bulk diagonal (the penalty makes undamaged pairs about 100x stiffer:
#: AMG on the split matrix then took 62 CG iterations where the bonded one takes 18; in pair coordinates 17)
STIFF_PAIR_RATIO = 1.0
#: largest change of a fluctuation spring's stiffness fraction left for the next load increment
STAGGER_TOL = 0.05
#: support of the opening averaging, in averaging lengths (the Gaussian weight there is 4 %)
AVERAGING_CUTOFF = 2.5


@dataclass(frozen=True)
class CohesiveLaw:
    """Bilinear traction-separation law with contact.

    Attributes
    ----------
    strength_Pa : float
        Normal strength ``sigma_c`` (the shear strength is ``sigma_c / beta``).
    fracture_energy_J_m2 : float
        ``G_c``, work of full separation per area.
    penalty_Pa_m : float
        ``K0``, interface stiffness before onset and normal contact penalty, Pa/m.
    mode_mixity : float
        ``beta`` > 0, weight of the tangential opening in the effective opening.
    residual : float
        Stiffness fraction kept by fully damaged faces in tension (``1 - d``
        is never below this), so that a particle that debonds all round is
        not a free rigid body. Its traction is reported in the docs' limits.
    contact_factor : float
        In (0, 1]: the normal contact stiffness of a fully debonded face as a
        fraction of ``K0`` (a face of committed stiffness fraction ``s`` gets
        ``(s + (1 - s) c) K0``, so undamaged faces keep ``K0``). 0.1 ran the
        24^3 benchmark charge in 0.76x the time with the debonded fraction
        within 0.004 at every written step (the stiff contact of debonded node
        pairs with free slip is what CG struggles with); 0.01 changed the
        16^3 answer by 0.017.
    """

    strength_Pa: float = 100e6
    fracture_energy_J_m2: float = 1.0
    penalty_Pa_m: float = 1e18
    mode_mixity: float = 1.0
    residual: float = 1e-6
    contact_factor: float = 1.0

    def __post_init__(self):
        for name in ("strength_Pa", "fracture_energy_J_m2", "penalty_Pa_m", "mode_mixity"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ConfigError(f"cohesive law {name} = {v!r} must be a positive number")
        if not 0 < self.contact_factor <= 1:
            raise ConfigError(f"cohesive law contact_factor = {self.contact_factor!r} must be in (0, 1]")
        if not 0 <= self.residual < 1:
            raise ConfigError(f"cohesive law residual = {self.residual!r} must be in [0, 1)")
        if self.delta_f <= self.delta_0:
            raise ConfigError(
                f"interface.fracture_energy_J_m2 = {self.fracture_energy_J_m2:g} is below the elastic energy "
                f"at onset sigma_c^2 / (2 K0) = {self.strength_Pa**2 / (2 * self.penalty_Pa_m):.3g} J/m^2: "
                "raise the fracture energy or the penalty stiffness")

    @property
    def delta_0(self) -> float:
        """Effective opening at onset, m."""
        return self.strength_Pa / self.penalty_Pa_m

    @property
    def delta_f(self) -> float:
        """Effective opening at full separation, m."""
        return 2.0 * self.fracture_energy_J_m2 / self.strength_Pa

    @property
    def residual_onset(self) -> float:
        """Effective opening beyond which the residual stiffness carries more than the softening line, m."""
        d0, df = self.delta_0, self.delta_f
        return df / (1.0 + self.residual * (df - d0) / d0)

    def envelope_energy(self, lam: np.ndarray) -> np.ndarray:
        """Work per area of a monotonic effective opening from 0 to ``lam``, J/m^2.

        The integral of the envelope traction ``max(1 - g, residual) K0 s``:
        elastic to ``delta_0``, the softening line to :attr:`residual_onset`,
        then the residual stiffness.
        """
        lam = np.asarray(lam, float)
        k0, d0, df, sc = self.penalty_Pa_m, self.delta_0, self.delta_f, self.strength_Pa
        s_r = self.residual_onset

        def soft(s):  # integral of the softening line from delta_0 to s
            return sc / (df - d0) * (df * (s - d0) - 0.5 * (s**2 - d0**2))

        e_soft = 0.5 * k0 * d0**2 + soft(np.clip(lam, d0, s_r))
        e_res = 0.5 * self.residual * k0 * (np.maximum(lam, s_r) ** 2 - s_r**2)
        return np.where(lam <= d0, 0.5 * k0 * lam**2, e_soft + e_res)

    def damage(self, lam: np.ndarray) -> np.ndarray:
        """Damage ``g(lambda)`` of a monotonic effective opening (no history), in [0, 1]."""
        lam = np.asarray(lam, float)
        d0, df = self.delta_0, self.delta_f
        with np.errstate(divide="ignore", invalid="ignore"):
            g = df * (lam - d0) / (lam * (df - d0))
        return np.clip(np.where(lam > d0, g, 0.0), 0.0, 1.0)


def default_penalty(E_active_Pa: float, E_electrolyte_Pa: float, voxel_size_m: float) -> float:
    """``K0 = 100 E_h / h`` (Pa/m), with ``E_h`` the harmonic mean of the two moduli.

    The interface then adds the compliance of a 1/100-voxel layer: the bonded
    results change by well under 1 % for particles a few voxels across.
    """
    e_h = 2.0 / (1.0 / E_active_Pa + 1.0 / E_electrolyte_Pa)
    return PENALTY_FACTOR * e_h / voxel_size_m


@dataclass(frozen=True)
class CohesiveInterface:
    """Cohesive interface of a mesh whose AP|SE nodes were duplicated.

    One integration point on every corner of every AP|SE face (face-major
    order): four on a voxel face, three on a triangle.

    Attributes
    ----------
    pair_se, pair_ap : (npair,) int
        The electrolyte-side and active-side node of each duplicated node.
    face_pairs : (nf, k) int
        Node pair of each face corner (= of each integration point), k = 4 or 3.
    point_area : (npt,) float, m^2
        1/k of the face area projected normal to the smoothed normal.
    point_normal : (npt, 3) unit normals from the particle into the electrolyte
    """

    pair_se: np.ndarray
    pair_ap: np.ndarray
    face_pairs: np.ndarray
    point_area: np.ndarray
    point_normal: np.ndarray

    @property
    def n_points(self) -> int:
        return int(self.face_pairs.size)

    @property
    def point_pair(self) -> np.ndarray:
        return self.face_pairs.ravel()

    @property
    def pair_selection(self) -> sp.csr_matrix:
        """(npt, npair) 0/1 matrix taking pair values to their integration points."""
        npt, npair = self.n_points, self.pair_se.size
        return sp.csr_matrix((np.ones(npt), (np.arange(npt), self.point_pair)), shape=(npt, npair))

    @property
    def points_per_face(self) -> int:
        return int(self.face_pairs.shape[1])

    def face_mean(self, point_values: np.ndarray) -> np.ndarray:
        """Mean over the integration points of every face, (nf,)."""
        return np.asarray(point_values, float).reshape(self.n_faces, self.points_per_face).mean(axis=1)

    @property
    def n_faces(self) -> int:
        return int(self.face_pairs.shape[0])

    @property
    def face_area(self) -> np.ndarray:
        """Projected area of every face (the sum of its points), (nf,) in m^2."""
        return self.point_area.reshape(self.n_faces, self.points_per_face).sum(axis=1)


#: the earlier name, when only voxel faces existed
VoxelInterface = CohesiveInterface


def split_interface(mesh, faces: Mapping) -> tuple:
    """Duplicate the nodes shared by active and electrolyte cells.

    Parameters
    ----------
    mesh : VoxelMesh or TetMesh (bonded: nodes shared by all cells)
    faces : AP|SE faces of :func:`solvers.fields.interface_faces` (voxel meshes: ``ap_voxel``,
        ``se_voxel``, ``axis``, ``area``, ``normal``) or :func:`solvers.fields.tet_interface_faces`
        (tetrahedra: ``nodes``, ``area``, ``normal``)

    Returns
    -------
    split : VoxelMesh or TetMesh
        Same cells; active cells use the copies. A voxel mesh's ``node_grid``
        (a tet mesh's ``node_origin``) repeats the original of a duplicated
        node, so ``points``, box faces and diffusion nodes still work.
    ap_node : (nn,) int
        Node of ``split`` that the active cells use for every node of ``mesh``.
    interface : CohesiveInterface
    """
    phase = mesh.cell_phase
    on_ap = np.zeros(mesh.n_nodes, bool)
    on_se = np.zeros(mesh.n_nodes, bool)
    on_ap[mesh.cells[phase == ACTIVE].ravel()] = True
    on_se[mesh.cells[phase == ELECTROLYTE].ravel()] = True
    dup = np.flatnonzero(on_ap & on_se)
    ap_node = np.arange(mesh.n_nodes)
    ap_node[dup] = mesh.n_nodes + np.arange(dup.size)
    cells = np.where((phase == ACTIVE)[:, None], ap_node[mesh.cells], mesh.cells)
    pair_of = np.full(mesh.n_nodes, -1, np.int64)
    pair_of[dup] = np.arange(dup.size)
    normal = np.asarray(faces["normal"], float)
    nf = normal.shape[0]
    if isinstance(mesh, VoxelMesh):
        split = dataclasses.replace(mesh, cells=cells,
                                    node_grid=np.concatenate([mesh.node_grid, mesh.node_grid[dup]]))
        face_nodes = _voxel_face_nodes(mesh, faces)
        axis = np.asarray(faces["axis"])
        cos = np.abs(normal[np.arange(nf), axis])
    else:
        origin = np.arange(mesh.n_nodes) if mesh.node_origin is None else mesh.node_origin
        split = dataclasses.replace(mesh, cells=cells, points=np.concatenate([mesh.points, mesh.points[dup]]),
                                    node_origin=np.concatenate([origin, origin[dup]]))
        face_nodes = np.asarray(faces["nodes"], np.int64)
        p = mesh.points[face_nodes]
        geo = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
        cos = np.abs(np.einsum("fi,fi->f", geo, normal)) / np.linalg.norm(geo, axis=1)
    face_pairs = pair_of[face_nodes]
    if (face_pairs < 0).any():
        raise MeshError("an AP|SE face has a corner that is not shared by both phases; the faces do not "
                        "belong to this mesh")
    # a staircase face stands in for the part of the smooth surface it projects onto: its area
    # normal to the smoothed normal is area * |n . n_face| (the sum over a voxelised sphere is its
    # true surface, where the face areas overcount it by about 1.5x and would spread the traction);
    # conforming triangles keep their own normals, so cos = 1 there
    k = face_nodes.shape[1]
    area = np.repeat(np.asarray(faces["area"], float) * np.maximum(cos, MIN_COS) / k, k)
    iface = CohesiveInterface(pair_se=dup, pair_ap=ap_node[dup], face_pairs=face_pairs, point_area=area,
                              point_normal=np.repeat(normal, k, axis=0))
    return split, ap_node, iface


def _voxel_face_nodes(mesh: VoxelMesh, faces: Mapping) -> np.ndarray:
    """The four mesh nodes of every AP|SE voxel face: corners of the AP voxel on the SE side, (nf, 4)."""
    node_id = np.full(np.prod([s + 1 for s in mesh.shape]), -1, np.int64)
    node_id[mesh.node_grid] = np.arange(mesh.n_nodes)
    ap_vox = np.asarray(faces["ap_voxel"])
    se_vox = np.asarray(faces["se_voxel"])
    axis = np.asarray(faces["axis"])
    ijk = np.stack(np.unravel_index(ap_vox, mesh.shape), axis=1)
    side = (se_vox > ap_vox).astype(int)
    corners = mesh.element.nodes.astype(int)
    gshape = tuple(s + 1 for s in mesh.shape)
    face_nodes = np.empty((ap_vox.size, 4), np.int64)
    for ax in range(3):
        for s in (0, 1):
            sel = np.flatnonzero((axis == ax) & (side == s))
            local = corners[corners[:, ax] == s]  # (4, 3)
            g = ijk[sel][:, None, :] + local[None]
            face_nodes[sel] = node_id[np.ravel_multi_index(tuple(g.transpose(2, 0, 1)), gshape)]
    return face_nodes


def _split_stiffness(mesh: VoxelMesh, n_split: int, ap_node: np.ndarray, materials,
                     phase_codes, cell_material) -> sp.bsr_matrix:
    """Bulk stiffness on the split nodes: electrolyte and active parts assembled apart, then relabelled."""
    kes = [elasticity_matrix(mesh.element, mesh.spacing, materials[p].E, materials[p].nu) for p in phase_codes]
    rows, cols, data = [], [], []
    for is_ap in (False, True):
        sel = (mesh.cell_phase == ACTIVE) == is_ap
        if not sel.any():
            continue
        part = dataclasses.replace(mesh, cells=mesh.cells[sel], cell_voxel=mesh.cell_voxel[sel])
        K = assemble_voxel_stiffness(part, cell_material[sel], kes)
        r = np.repeat(np.arange(mesh.n_nodes), np.diff(K.indptr))
        c = K.indices.astype(np.int64)
        if is_ap:
            r, c = ap_node[r], ap_node[c]
        rows.append(r)
        cols.append(c)
        data.append(K.data)
        del K
    return _bsr_from_blocks(np.concatenate(rows), np.concatenate(cols), np.concatenate(data), n_split)


def _bsr_from_blocks(rows, cols, blocks, n) -> sp.bsr_matrix:
    """BSR matrix (3x3 blocks) from unique (row, col) block coordinates."""
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    idx = np.int32 if indptr[-1] < 2**31 - 1 else np.int64
    return sp.bsr_matrix((blocks[order], cols[order].astype(idx), indptr.astype(idx)), shape=(3 * n, 3 * n))


class CohesiveProblem(ElasticProblem):
    """Elasticity with a cohesive AP|SE interface on a voxel-hex or tetrahedral mesh.

    Same loads, box conditions and stress recovery as :class:`ElasticProblem`
    (on the split mesh); :meth:`solve` solves the nonlinear interface and
    commits the new damage.

    Parameters
    ----------
    mesh : VoxelMesh or TetMesh (bonded)
    materials : mapping phase code -> Material
    faces : AP|SE faces (:func:`solvers.fields.interface_faces` or :func:`solvers.fields.tet_interface_faces`)
    law : CohesiveLaw
    nl_rtol : float
        Relative residual of the nonlinear equations, ``||r|| / ||f||``.
    nl_maxiter : int
        Newton iterations per load increment before it is halved. A sub-step
        of 1/2^``SNAP_CUTS`` of the step or less gets ``SNAP_FACTOR`` times as
        many: an unstable debonding (snap-through) does not get easier with a
        smaller increment, it needs more iterations to cross.
    max_cuts : int
        Smallest increment 1/2^max_cuts of a step before a ConvergenceError.
    rebuild_after : int
        CG iterations above which (and above twice those of the first solve
        after the last rebuild) the preconditioner is rebuilt from the current matrix.
    easy_iterations : int
        An increment converged within this many iterations doubles the next one.
    linear_maxiter : int
        CG iterations of one Newton correction before the preconditioner is rebuilt.
    averaging_length_m : float
        Length ``ell`` of the Gaussian that averages the opening vector over
        the particle's interface before the law sees it (0: local law).
        See :func:`opening_averaging`; the rest of the opening (its
        fluctuation about that average) is held by springs between node
        pairs that soften with the damage of their weaker end
        (:func:`fluctuation_springs`).
    max_stagger : int
        With an averaged opening, the springs use the damage committed before
        a load increment; with ``max_stagger > 0`` an increment that softens a
        spring by more than ``STAGGER_TOL`` is solved again with the new
        damage, at most this many times. 0 (default): the softening waits for
        the next increment.
    **kwargs : passed to ElasticProblem (top, stack_pressure_Pa, solver, rtol, ...)

    Attributes
    ----------
    kappa : (npt,) committed largest effective opening of every integration point, m
    bonded_mesh : the mesh before splitting
    ap_node : (nn_bonded,) active-side node of every bonded node
    history : list of dict per solve (iterations, cuts, linear iterations, seconds)
    """

    #: a cohesive run spends its time in AMG-CG (thousands of iterations): two block Gauss-Seidel sweeps
    #: per level instead of four make the run 26 % cheaper per iteration for 14 % more of them (16^3 charge)
    SMOOTHER = "forward-backward"

    def __init__(self, mesh, materials: Mapping[int, Material], faces: Mapping, law: CohesiveLaw,
                 *, nl_rtol: float = 1e-6, nl_maxiter: int = 12, max_cuts: int = 10, rebuild_after: int = 30,
                 easy_iterations: int = 4, linear_maxiter: int = 300, averaging_length_m: float = 0.0,
                 max_stagger: int = 0,
                 **kwargs):
        if kwargs.get("backend", "assembled") != "assembled":
            raise ConfigError("interface.model = 'cohesive' needs solver.backend = 'assembled' (the matrix-free "
                              "multigrid covers bonded voxel meshes only)")
        if mesh.element.name not in ("hexahedron", "tetra"):
            raise ConfigError("interface.model = 'cohesive' needs linear elements (voxel-hex, or tets with "
                              "mesh.order = 1): its interface elements have one point per face corner")
        if np.asarray(faces["area"]).size == 0:
            raise MeshError("interface.model = 'cohesive' but the mesh has no AP|SE face")
        if kwargs.get("solver", "auto") == "auto":
            # the preconditioner is rebuilt as damage grows: SuperLU takes 2 s per factorisation at
            # 10k dof (14^3 sample), AMG 0.1 s; the whole run was 3.4x faster with AMG
            kwargs["solver"] = "amg"
        self.law = law
        self.nl_rtol = float(nl_rtol)
        self.nl_maxiter = int(nl_maxiter)
        self.max_cuts = int(max_cuts)
        self.bonded_mesh = mesh
        split, self.ap_node, self.interface = split_interface(mesh, faces)
        self.interface_particle = np.asarray(faces["particle"], np.int64)
        self.kappa = np.zeros(self.interface.n_points)
        self.averaging_length_m = float(averaging_length_m)
        self.max_stagger = int(max_stagger)
        if not (np.isfinite(self.averaging_length_m) and self.averaging_length_m >= 0):
            raise ConfigError(f"cohesive averaging length {averaging_length_m!r} m must be >= 0")
        self._W = None  # (npt, npt) averaging of the opening vector; None: local law
        if self.averaging_length_m > 0:
            k = self.interface.points_per_face
            self._W = opening_averaging(mesh.points[self.interface.pair_se][self.interface.point_pair],
                                        self.interface.point_normal, self.interface.point_area,
                                        np.repeat(self.interface_particle, k), self.averaging_length_m)
            self._springs = fluctuation_springs(self._W, self.interface)
        it = self.interface
        self._pair_area = np.bincount(it.point_pair, weights=it.point_area, minlength=it.pair_se.size)
        self._pair_point = np.zeros(it.pair_se.size, np.int64)  # one point of every pair
        self._pair_point[it.point_pair] = np.arange(it.n_points)
        self._fluct_for = None  # (kappa_old, springs matrix) of the last history seen
        self._state = None  # (law matrices, openings, history) of the last Newton direction (averaged law)
        self._nonlocal_ops = None  # (B, P, D) of _nonlocal_matrix, built on first use
        self.history: list[dict] = []
        self.rebuild_after = int(rebuild_after)
        self.easy_iterations = int(easy_iterations)
        self.linear_maxiter = int(linear_maxiter)
        self.rebuilds = 0
        self._fresh_its = 0  # CG iterations of the first solve after the last setup
        self._cg_rate = None  # CG iterations per residual decade of the first solve after a setup or refresh
        self._last_cg = None  # (iterations, residual decades, seconds per iteration) of the last CG solve
        self._refresh_s = 0.0  # seconds the last refresh of the finest AMG level took
        self._f_scale = 0.0
        self._eps_prev = np.zeros(mesh.n_cells)
        self._u_prev = None
        self._last_increment = None  # (eigenstrain change, displacement change) of the last solve
        super().__init__(split, materials, **kwargs)

    # ElasticProblem builds the matrix through this hook
    def _assemble(self) -> sp.bsr_matrix:
        if self.structured:  # the voxel stencil cannot see duplicated nodes: assemble the two sides apart
            K = _split_stiffness(self.bonded_mesh, self.mesh.n_nodes, self.ap_node, self.materials,
                                 self.phase_codes, self.cell_material)
        else:  # unstructured assembly works on the split cells as they are
            K = super()._assemble()
        it = self.interface
        si, ai = it.pair_se, it.pair_ap
        # the bulk blocks plus zero (se, ap) and (ap, se) blocks; remember where every interface block lives
        nb = K.indptr.size - 1
        rows = np.concatenate([np.repeat(np.arange(nb), np.diff(K.indptr)), si, ai])
        cols = np.concatenate([K.indices.astype(np.int64), ai, si])
        blocks = np.concatenate([K.data, np.zeros((2 * si.size, 3, 3))])
        del K
        A = _bsr_from_blocks(rows, cols, blocks, self.mesh.n_nodes)
        self._blocks = {"ss": (si, si), "aa": (ai, ai), "sa": (si, ai), "as": (ai, si)}
        self._pos = {k: _block_positions(A, r, c) for k, (r, c) in self._blocks.items()}
        return A

    def _finish_matrix(self, A: sp.bsr_matrix) -> sp.bsr_matrix:
        """Bulk matrix with Dirichlet rows kept aside; the undamaged interface added for the preconditioner."""
        A = apply_dirichlet(A, self.fixed)
        self._bulk_data = A.data.copy()  # the bulk part, kept for the residual and for rewriting interface blocks
        keep = (~self.fixed).astype(float)
        it = self.interface
        self._mask = {k: keep[r][:, :, None] * keep[c][:, None, :] for k, (r, c) in self._blocks.items()}
        self._A = A
        self._Kb = sp.bsr_matrix((self._bulk_data, A.indices, A.indptr), shape=A.shape)
        self._set_interface(self.law_state(np.zeros((it.n_points, 3)), self.kappa, tangent=False)[1])
        # the preconditioner keeps its own copy: AMG smooths with the matrix it was built from, and a
        # finest level that changed under a fixed hierarchy is no longer a positive definite preconditioner
        return A.copy()

    # --- the interface law -------------------------------------------------
    def openings(self, u: np.ndarray) -> np.ndarray:
        """Opening ``u_SE - u_AP`` at every integration point, (npt, 3) in m."""
        return self._pair_openings(u)[self.interface.point_pair]

    @property
    def damage(self) -> np.ndarray:
        """Committed damage of every integration point, (npt,)."""
        return self.law.damage(self.kappa)

    def law_state(self, delta: np.ndarray, kappa_old: np.ndarray, *, tangent: bool = True):
        """Tractions, tangent (or secant) matrices and history for openings ``delta`` (npt, 3).

        Returns
        -------
        t : (npt, 3) traction on the electrolyte side, Pa (tension positive along n)
        K : (npt, 3, 3) consistent tangent ``d t / d delta``, or with ``tangent=False``
            the secant ``t = K delta``; Pa/m
        kappa : (npt,) largest effective opening so far, m
        """
        law = self.law
        n = self.interface.point_normal
        beta2 = law.mode_mixity**2
        dn = np.einsum("pi,pi->p", delta, n)
        dt = delta - dn[:, None] * n
        pos = np.maximum(dn, 0.0)
        lam = np.sqrt(pos**2 + beta2 * np.einsum("pi,pi->p", dt, dt))
        kappa = np.maximum(kappa_old, lam)
        d = law.damage(kappa)
        soft = np.maximum(1.0 - d, law.residual)
        nn = np.einsum("pi,pj->pij", n, n)
        kn = np.where(dn < 0.0, self._contact_fraction(self._softening(kappa_old)), soft)
        K = law.penalty_Pa_m * (kn[:, None, None] * nn + (soft * beta2)[:, None, None] * (np.eye(3)[None] - nn))
        t = np.einsum("pij,pj->pi", K, delta)
        if tangent:  # softening points that open further: add (T' lam - T) / lam^3 v v^T
            load = (lam >= kappa_old) & (lam > law.delta_0) & (lam < law.residual_onset)
            if load.any():
                v = pos[load, None] * n[load] + beta2 * dt[load]
                lm = lam[load]
                T = (1.0 - d[load]) * law.penalty_Pa_m * lm
                dT = -law.strength_Pa / (law.delta_f - law.delta_0)
                K[load] += ((dT * lm - T) / lm**3)[:, None, None] * np.einsum("pi,pj->pij", v, v)
        return t, K, kappa

    def point_energy(self, delta: np.ndarray, kappa_old: np.ndarray) -> np.ndarray:
        """Incremental potential per area of every point for openings ``delta`` (npt, 3), J/m^2.

        With the history ``kappa_old`` frozen, the tractions of
        :meth:`law_state` are the gradient of this potential: unloading and
        reloading below ``kappa_old`` is linear with the committed damage,
        beyond it the envelope is followed. Contact adds ``K0 <-delta_n>^2 / 2``.
        """
        law = self.law
        n = self.interface.point_normal
        dn = np.einsum("pi,pi->p", delta, n)
        dt = delta - dn[:, None] * n
        lam = np.sqrt(np.maximum(dn, 0.0) ** 2 + law.mode_mixity**2 * np.einsum("pi,pi->p", dt, dt))
        soft = np.maximum(1.0 - law.damage(kappa_old), law.residual)
        below = 0.5 * soft * law.penalty_Pa_m * np.minimum(lam, kappa_old) ** 2
        beyond = law.envelope_energy(np.maximum(lam, kappa_old)) - law.envelope_energy(kappa_old)
        return below + beyond + 0.5 * law.penalty_Pa_m * self._contact_fraction(soft) * np.minimum(dn, 0.0) ** 2

    def tractions(self, u: np.ndarray) -> np.ndarray:
        """Traction on the electrolyte side for the committed history, (npt, 3) in Pa.

        With an averaged opening: the interface force on each point over its
        area (a pair's fluctuation force shared among its points by area).
        """
        delta = self.openings(u)
        forces = self.interface_forces(delta, self.kappa, tangent=False)[0]
        if self._W is None:
            return forces
        pp = self.interface.point_pair
        fluct = self._fluctuation(self.kappa) @ delta[self._pair_point]
        return forces + fluct[pp] / self._pair_area[pp, None]

    def interface_forces(self, delta: np.ndarray, kappa_old: np.ndarray, *, tangent: bool = True):
        """Law tractions, law matrices and history for the local openings ``delta`` (npt, 3).

        Local law: the law at every point. Averaged opening (``averaging_length_m``
        > 0): the law acts on ``delta_bar = W delta``; the returned tractions
        are the gradient of the point part of :meth:`interface_energy` over the
        point areas (``W^T (A t(delta_bar)) / A`` plus the contact of damaged
        points); the fluctuation springs (:meth:`_fluctuation`) come on top.

        Returns
        -------
        t : (npt, 3) traction on the electrolyte side, Pa
        K : (npt, 3, 3) law tangent (or secant), Pa/m, at the law's openings (``delta_bar`` when averaged)
        kappa : (npt,) largest effective opening of the law so far, m
        """
        if self._W is None:
            return self.law_state(delta, kappa_old, tangent=tangent)
        area = self.interface.point_area[:, None]
        t, K, kappa = self.law_state(self._W @ delta, kappa_old, tangent=tangent)
        contact = np.einsum("pij,pj->pi", self._local_contact(kappa_old, delta), delta)
        return self._W.T @ (area * t) / area + contact, K, kappa

    def interface_energy(self, delta: np.ndarray, kappa_old: np.ndarray) -> np.ndarray:
        """Point part of the incremental potential per area for local openings ``delta`` (npt, 3), J/m^2.

        Local law: :meth:`point_energy`. Averaged opening: the law's potential
        of ``delta_bar = W delta`` plus the contact penalty of the damaged
        share ``1 - s`` of every point on its own opening (the springs of the
        fluctuation are :meth:`_fluctuation`, a quadratic form).
        """
        if self._W is None:
            return self.point_energy(delta, kappa_old)
        dn = np.einsum("pi,pi->p", delta, self.interface.point_normal)
        return (self.point_energy(self._W @ delta, kappa_old)
                + 0.5 * self._damaged_contact(kappa_old) * np.minimum(dn, 0.0) ** 2)

    def _contact_fraction(self, s: np.ndarray) -> np.ndarray:
        """Normal contact stiffness over ``K0`` for stiffness fractions ``s``: ``s + (1 - s) c`` (``c`` the
        law's contact_factor), written ``1 - (1 - c)(1 - s)``: exactly 1 at the default ``c = 1``."""
        return 1.0 - (1.0 - self.law.contact_factor) * (1.0 - s)

    def _damaged_contact(self, kappa_old: np.ndarray) -> np.ndarray:
        """Contact stiffness of the damaged share of every point on its own opening, ``c (1 - s) K0``, (npt,) Pa/m."""
        return self.law.penalty_Pa_m * self.law.contact_factor * (1.0 - self._softening(kappa_old))

    def _softening(self, kappa_old: np.ndarray) -> np.ndarray:
        """Committed stiffness fraction ``s = max(1 - d, residual)`` of every point, (npt,)."""
        return np.maximum(1.0 - self.law.damage(kappa_old), self.law.residual)

    def _local_contact(self, kappa_old: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """Contact stiffness of the damaged share on each point's own opening, (npt, 3, 3) in Pa/m.

        ``K0 (1 - s) n n^T`` where ``delta . n < 0``: a point whose neighbours
        hold its smooth opening open cannot be pushed into the particle.
        """
        n = self.interface.point_normal
        dn = np.einsum("pi,pi->p", delta, n)
        k = self._damaged_contact(kappa_old) * (dn < 0.0)
        return k[:, None, None] * np.einsum("pi,pj->pij", n, n)

    def _fluctuation(self, kappa_old: np.ndarray) -> sp.csr_matrix:
        """Springs that hold the opening's fluctuation about its average, (npair, npair) in N/m.

        ``sum_springs K0 c_ij min(s_i, s_j) |J_i - J_j|^2 / 2`` over node pairs
        ``i, j`` (``J`` their openings), with ``c = B^T diag(A) B - diag``,
        ``B = W P`` (``P`` the point -> pair selection) and ``s`` the committed
        stiffness fraction of a pair (area mean of its points). Undamaged
        (``s = 1``) this is ``K0 <delta, (I - W^2) delta>_A / 2``, so that with
        the law's ``K0 |delta_bar|^2 / 2`` the energy is the local law's
        exactly; a spring softens with the more damaged of its two ends, so
        a debonded staircase carries nothing, and the form stays positive
        semi-definite for any damage.
        """
        if self._fluct_for is not None and self._fluct_for[0] is kappa_old:
            return self._fluct_for[1]
        i, j, c = self._springs
        s = self._pair_softening(kappa_old)
        w = self.law.penalty_Pa_m * c * np.minimum(s[i], s[j])
        n = s.size
        L = sp.csr_matrix((np.concatenate([-w, -w]), (np.concatenate([i, j]), np.concatenate([j, i]))),
                          shape=(n, n))
        L = (L + sp.diags(-np.asarray(L.sum(axis=1)).ravel())).tocsr()
        self._fluct_for = (kappa_old, L)
        return L

    def _pair_softening(self, kappa: np.ndarray) -> np.ndarray:
        """Stiffness fraction of every node pair: the area mean of its points' ``s``, (npair,)."""
        it = self.interface
        # a node pair that is no face's corner (particles touching along an edge) has no area: s = 1
        weighted = np.bincount(it.point_pair, weights=it.point_area * self._softening(kappa),
                               minlength=it.pair_se.size)
        return np.divide(weighted, self._pair_area, out=np.ones_like(weighted), where=self._pair_area > 0)

    def _pair_openings(self, u: np.ndarray) -> np.ndarray:
        """Opening ``u_SE - u_AP`` of every node pair, (npair, 3) in m."""
        u = np.asarray(u).reshape(-1, 3)
        return u[self.interface.pair_se] - u[self.interface.pair_ap]

    def _interface_operator(self, K_points: np.ndarray, delta: np.ndarray, kappa_old: np.ndarray):
        """Tangent of bulk + averaged-opening interface as a LinearOperator (Dirichlet rows as identity)."""
        keep = (~self.fixed).ravel().astype(float)
        it = self.interface
        area = it.point_area[:, None]
        W, L = self._W, self._fluctuation(kappa_old)
        contact = self._local_contact(kappa_old, delta)

        def matvec(x):
            x = np.ravel(x)
            J = self._pair_openings(keep * x)
            d = J[it.point_pair]
            y = W.T @ (area * np.einsum("pij,pj->pi", K_points, W @ d)) + area * np.einsum("pij,pj->pi", contact, d)
            return self._Kb @ x + keep * self._scatter_pairs(_sum_pairs(it, y) + L @ J)

        return spla.LinearOperator(self._A.shape, matvec=matvec, dtype=float)

    def _nonlocal_matrix(self, K_points: np.ndarray, delta: np.ndarray, kappa_old: np.ndarray,
                         drop: float = PRECONDITIONER_DROP) -> sp.bsr_matrix:
        """The tangent of :meth:`_interface_operator` assembled (Dirichlet rows as identity), 3x3 BSR.

        ``K_b + D^T (B^T A K B + P^T A K_c P + L) D`` with ``D`` the pair
        openings of the free dofs, ``B = W P``; assembled only to build the
        preconditioner (its couplings reach twice the averaging support), so
        pair blocks weaker than ``drop`` times their diagonals are moved onto
        the diagonals (:func:`_drop_weak_blocks`): at ``drop = 0.01`` the 24^3
        charge's matrix keeps the bulk's size (1.8x without dropping) and the
        16^3 charge takes the same CG iterations in 0.74x the time (0.05: 1.7x
        the iterations).
        """
        if self._nonlocal_ops is None:
            it = self.interface
            npair, nn = it.pair_se.size, self.mesh.n_nodes
            P = it.pair_selection
            keep = (~self.fixed).ravel().astype(float)
            pairs = np.arange(npair)
            Dn = sp.csr_matrix((np.r_[np.ones(npair), -np.ones(npair)], (np.r_[pairs, pairs],
                                np.r_[it.pair_se, it.pair_ap])), shape=(npair, nn))
            eye = sp.identity(3, format="csr")
            self._nonlocal_ops = (sp.kron(self._W @ P, eye, format="csr"), sp.kron(P, eye, format="csr"),
                                  (sp.kron(Dn, eye, format="csr") @ sp.diags(keep)).tocsr())
        B3, P3, D3 = self._nonlocal_ops
        a = self.interface.point_area[:, None, None]
        law = _block_diagonal(a * K_points)
        contact = _block_diagonal(a * self._local_contact(kappa_old, delta))
        G = B3.T @ law @ B3 + P3.T @ contact @ P3 + sp.kron(self._fluctuation(kappa_old), sp.identity(3), format="csr")
        if drop > 0:
            G = _drop_weak_blocks(G, drop)
        A = self._Kb + D3.T @ G @ D3
        return sp.bsr_matrix(A, blocksize=(3, 3))

    def _scatter(self, point_forces: np.ndarray) -> np.ndarray:
        """Point forces on the SE side (npt, 3) -> nodal vector (+ on SE nodes, - on AP nodes)."""
        return self._scatter_pairs(_sum_pairs(self.interface, point_forces))

    def _scatter_pairs(self, pair_forces: np.ndarray) -> np.ndarray:
        """Pair forces on the SE side (npair, 3) -> nodal vector (+ on SE nodes, - on AP nodes)."""
        it = self.interface
        f = np.zeros((self.mesh.n_nodes, 3))
        f[it.pair_se] += pair_forces
        f[it.pair_ap] -= pair_forces
        return f.ravel()

    def _set_interface(self, K_points: np.ndarray, data: np.ndarray | None = None) -> None:
        """Bulk + area-weighted interface blocks at the interface positions of ``data`` (default the matrix).

        Only the interface blocks change (each position belongs to one pair
        and one kind of block), so the rest of the data is not touched.
        """
        it = self.interface
        Kp = _sum_pairs(it, (K_points * it.point_area[:, None, None]).reshape(-1, 9)).reshape(-1, 3, 3)
        data = self._A.data if data is None else data
        for key, sign in (("ss", 1.0), ("aa", 1.0), ("sa", -1.0), ("as", -1.0)):
            pos = self._pos[key]
            data[pos] = self._bulk_data[pos] + sign * Kp * self._mask[key]

    # --- solving -----------------------------------------------------------
    def solve(self, eigenstrain: np.ndarray, x0: np.ndarray | None = None) -> np.ndarray:
        """Equilibrium for the cell eigenstrains; commits the damage. Returns u (nn, 3), m.

        Newton starts from the last solution plus the last solve's
        displacement change scaled by how far the eigenstrain moves along
        the last change (a secant predictor, at most 2x, none when the load
        turns back): on the 24^3 40-step charge 154 -> 144 Newton and
        4,699 -> 4,113 CG iterations.

        The load goes from the last solved eigenstrain to this one in
        sub-steps: a sub-step whose Newton iterations fail is halved, one
        that converges within ``easy_iterations`` doubles the next.
        """
        t0 = time.perf_counter()
        eps = np.asarray(eigenstrain, float)
        eps_prev, u = self._eps_prev, (self._u_prev if x0 is None else np.ravel(x0))
        if self._last_increment is not None and u is not None:
            d_eps_old, d_u_old = self._last_increment
            denom = float(d_eps_old @ d_eps_old)
            beta = float((eps - eps_prev) @ d_eps_old) / denom if denom > 0 else 0.0
            if beta > 0:
                u = u + min(beta, 2.0) * d_u_old
        record = {"nonlinear_iterations": 0, "linear_iterations": 0, "cuts": 0, "substeps": 0,
                  "secant_directions": 0, "stagger_rounds": 0}
        s_done, ds, rounds = 0.0, 1.0, 0
        while s_done < 1.0 - 1e-12:
            s = min(1.0, s_done + ds)
            maxiter = self.nl_maxiter * (SNAP_FACTOR if ds <= 2.0**-SNAP_CUTS else 1)
            try:
                u_new, kappa, its = self._solve_increment(eps_prev + s * (eps - eps_prev), u, record, maxiter)
            except _NotConverged as exc:
                record["cuts"] += 1
                ds /= 2.0
                if ds < 2.0**-self.max_cuts:
                    raise ConvergenceError(
                        f"cohesive interface did not converge on a sub-step of 1/2^{self.max_cuts} of the load "
                        f"step ({exc}; load fraction {s_done:.4f} of the step reached): use more time steps "
                        "([cycling] steps) or a tougher interface (fracture_energy_J_m2)",
                        iterations=record["nonlinear_iterations"]) from None
                continue
            stale = rounds < self.max_stagger and self._stale_springs(kappa)
            self.kappa = kappa
            u = u_new
            if stale:
                # the fluctuation springs softened with the new damage: solve the same load again
                rounds += 1
                record["stagger_rounds"] += 1
                continue
            s_done, rounds = s, 0
            record["substeps"] += 1
            if its <= self.easy_iterations:
                ds *= 2.0
        if self._u_prev is not None:
            self._last_increment = (eps - self._eps_prev, u - self._u_prev)
        self._eps_prev, self._u_prev = eps.copy(), u.copy()
        record["seconds"] = time.perf_counter() - t0
        self.history.append(record)
        damaged, debonded = self.area_fractions()
        log.info("cohesive solve %d: %d Newton iterations, %d CG, %d cuts, %.1f s; interface damaged %.1f %%, "
                 "debonded %.1f %% (of its area)", len(self.history), record["nonlinear_iterations"],
                 record["linear_iterations"], record["cuts"], record["seconds"], 100 * damaged, 100 * debonded)
        return u.reshape(-1, 3)

    def _stale_springs(self, kappa: np.ndarray) -> bool:
        """True when the committed damage ``kappa`` softens a fluctuation spring by more than STAGGER_TOL."""
        if self._W is None:
            return False
        i, j, _ = self._springs
        old, new = self._pair_softening(self.kappa), self._pair_softening(kappa)
        return bool(np.abs(np.minimum(old[i], old[j]) - np.minimum(new[i], new[j])).max(initial=0.0) > STAGGER_TOL)

    def _solve_increment(self, eps: np.ndarray, u0, record: dict, maxiter: int):
        """Newton with an energy line search for one load; returns (u, kappa, iterations).

        The direction solves the consistent tangent; where CG cannot solve
        it (an indefinite tangent: unstable softening) the secant matrix,
        positive definite, gives the direction. :func:`energy_line_search`
        picks the step length on the incremental potential
        (:meth:`point_energy`); no decrease raises _NotConverged.
        """
        f = self.load(eps)
        # relative to the largest load so far: an unloaded state (f = 0) still has a scale
        self._f_scale = max(self._f_scale, float(np.linalg.norm(f)))
        fnorm = max(self._f_scale, 1e-300)
        kappa_old = self.kappa
        area = self.interface.point_area[:, None]
        L = None if self._W is None else self._fluctuation(kappa_old)
        u = np.zeros_like(f) if u0 is None else np.asarray(u0, float).ravel().copy()
        fixed = self.fixed.ravel()
        res = np.inf
        for it in range(maxiter + 1):
            delta = self.openings(u)
            t, K, kappa = self.interface_forces(delta, kappa_old)
            Ku = self._Kb @ u
            if L is not None:  # the fluctuation springs are quadratic: they go with the bulk
                Ku += self._scatter_pairs(L @ self._pair_openings(u))
            r = Ku + self._scatter(t * area) - f
            r[fixed] = 0.0
            res = float(np.linalg.norm(r)) / fnorm
            log.debug("newton %d: residual %.2e, points past onset %d", it, res,
                      int((kappa > self.law.delta_0).sum()))
            if res < self.nl_rtol:
                return u, kappa, it
            if it == maxiter:
                break
            record["nonlinear_iterations"] += 1
            # inexact Newton (forcing term proportional to the residual: superlinear near the solution)
            lin_rtol = min(1e-2, max(self.solver.rtol, 0.1 * self.nl_rtol / res, 0.1 * res))
            du = self._direction(r, K, u, kappa_old, lin_rtol, record)
            slope = float(r @ du)
            if slope >= 0.0:  # not a descent direction: the tangent was indefinite after all
                record["secant_directions"] += 1
                du = self._direction(r, None, u, kappa_old, lin_rtol, record)
                slope = float(r @ du)
            # energy change along the step, without cancellation: dPi(a) = a du.(Ku - f) + a^2/2 du.K du + A dpsi
            Kdu = self._Kb @ du
            if L is not None:
                Kdu += self._scatter_pairs(L @ self._pair_openings(du))
            g1, g2 = float(du @ (Ku - f)), float(du @ Kdu)
            psi0 = self.interface_energy(delta, kappa_old)
            ddelta = self.openings(du)
            # trust region: no opening moves by more than delta_f in one iteration (a tangent that is nearly
            # singular, e.g. a particle debonding all round, would otherwise throw it far in one step)
            alpha_max = self.law.delta_f / max(float(np.abs(ddelta).max()), 1e-300)
            change = partial(self._energy_change, delta, ddelta, psi0, g1, g2, kappa_old)
            alpha = energy_line_search(change, slope, alpha_max)
            if alpha == 0.0:
                raise _NotConverged(f"no energy decrease along the Newton direction at residual {res:.2e}")
            log.debug("newton %d: step length %.3g", it, alpha)
            u += alpha * du
        raise _NotConverged(f"Newton residual {res:.2e} after {maxiter} iterations")

    def _energy_change(self, delta, ddelta, psi0, g1: float, g2: float, kappa_old, alpha: float) -> float:
        """Change of the incremental potential along a Newton step of length ``alpha``, J.

        ``g1 = du . (K u - f)`` and ``g2 = du . K du`` carry the bulk part and
        the fluctuation springs (exact: they are quadratic); the rest of the
        interface is evaluated point by point.
        """
        dpsi = self.interface_energy(delta + alpha * ddelta, kappa_old) - psi0
        return alpha * g1 + 0.5 * alpha**2 * g2 + float(dpsi @ self.interface.point_area)

    def _direction(self, r: np.ndarray, K_points: np.ndarray | None, u: np.ndarray, kappa_old: np.ndarray,
                   rtol: float, record: dict) -> np.ndarray:
        """Newton correction ``-A^{-1} r`` for the tangent ``K_points`` (None: the secant matrix).

        CG on the current matrix, preconditioned by the AMG / factorisation of
        an earlier one; the preconditioner is rebuilt from the current matrix
        when the last solve took more than twice the iterations of the first
        solve after the last rebuild (damage moved the matrix away from it),
        and when CG fails; in between its finest level takes the current matrix
        when the last solve's extra iterations cost more than that refresh
        did (:meth:`_refresh_pays`). A tangent that CG still cannot solve falls back to
        the secant matrix; a secant that fails raises _NotConverged.
        """
        secant = K_points is None
        delta = self.openings(u)
        if secant:
            K_points = self.interface_forces(delta, kappa_old, tangent=False)[1]
        if self._W is None:
            self._set_interface(K_points)
        else:  # the preconditioner is built from the assembled nonlocal tangent of this state
            self._state = (K_points, delta, kappa_old)
        last_its = 0 if self._last_cg is None else self._last_cg[0]
        if last_its > max(2 * self._fresh_its, self.rebuild_after):
            self._rebuild_preconditioner()
        elif self.solver.method == "amg" and self._refresh_pays():
            # damage changes the matrix locally: the smoother takes the current matrix, the coarse grids stay
            t0 = time.perf_counter()
            self.solver.refresh_fine(self._A if self._W is None else self._nonlocal_matrix(*self._state))
            self._refresh_s = time.perf_counter() - t0
            self._cg_rate = None
        # averaged opening: CG on the exact tangent (products with W); the AMG comes from it assembled
        op = self._A if self._W is None else self._interface_operator(K_points, delta, kappa_old)
        for attempt in range(2):
            try:
                du = self.solver.solve(-r, A=op, rtol=rtol, maxiter=self.linear_maxiter)
            except ConvergenceError as exc:
                if attempt == 0:
                    self._rebuild_preconditioner()
                    continue
                if secant:
                    raise _NotConverged(str(exc)) from None
                log.info("cohesive: CG cannot solve the tangent (unstable softening); secant direction")
                record["secant_directions"] += 1
                return self._direction(r, None, u, kappa_old, rtol, record)
            its = int(self.solver.stats.iterations[-1])
            record["linear_iterations"] += its
            if self._fresh_its == 0:
                self._fresh_its = its
            decades = max(-np.log10(rtol), 1.0)  # of residual reduction asked for
            self._last_cg = (its, decades, self.solver.stats.solve_s[-1] / max(its, 1))
            if self._cg_rate is None:
                self._cg_rate = its / decades
            return du
        raise AssertionError("unreachable")

    def _rebuild_preconditioner(self) -> None:
        """Rebuild the factorisation / AMG hierarchy from the current matrix (own copy)."""
        A = self._A.copy() if self._state is None else self._nonlocal_matrix(*self._state)
        self.solver.rebuild(A, basis=self._preconditioner_basis(A))
        self.rebuilds += 1
        self._fresh_its = 0
        self._last_cg = None
        self._cg_rate = None

    def _refresh_pays(self) -> bool:
        """True when the last CG solve spent more time over the rate right after the last setup or refresh
        (iterations per decade of residual) than a refresh of the finest level took (any growth, before
        the first refresh): at 24^3 a refresh costs a few CG iterations, at 48^3 about fifteen."""
        if self._cg_rate is None or self._last_cg is None:
            return False
        its, decades, seconds = self._last_cg
        return (its - self._cg_rate * decades) * seconds > self._refresh_s

    def _preconditioner_basis(self, A: sp.bsr_matrix):
        """The AMG's (mean, jump) coordinates on the pairs whose coupling in ``A`` is stiff (:class:`PairBasis`)."""
        it = self.interface
        stiff = stiff_pairs(A, it.pair_se, it.pair_ap, STIFF_PAIR_RATIO, self.fixed)
        log.debug("preconditioner: %d of %d node pairs in (mean, jump) coordinates", int(stiff.sum()), stiff.size)
        return PairBasis(it.pair_se[stiff], it.pair_ap[stiff], self.mesh.n_nodes)

    # --- reductions ----------------------------------------------------------
    def face_damage(self, damage: np.ndarray | None = None) -> np.ndarray:
        """Damage of every AP|SE face: the mean of its points (4 on voxel faces, 3 on triangles), (nf,)."""
        return self.interface.face_mean(self.damage if damage is None else damage)

    def area_fractions(self, face_damage: np.ndarray | None = None) -> tuple[float, float]:
        """Shares of the AP|SE area on damaged faces (d > 0) and on debonded faces (d = 1).

        ``face_damage`` (nf,) defaults to :meth:`face_damage` of the committed history.
        """
        fd = self.face_damage() if face_damage is None else face_damage
        area = self.interface.face_area
        return float(area[fd > 0].sum() / area.sum()), float(area[fd >= 1].sum() / area.sum())


def opening_averaging(points: np.ndarray, normal: np.ndarray, area: np.ndarray, particle: np.ndarray,
                      length_m: float, cutoff: float = AVERAGING_CUTOFF) -> sp.csr_matrix:
    """Averaging of interface-point values over a particle's interface, (npt, npt) sparse.

    ``W = diag(c) k diag(A c)`` with the kernel
    ``k_ij = exp(-r^2 / (2 ell^2)) max(n_i . n_j, 0)`` (``k_ii = 1``) between
    points of the same particle within ``cutoff * ell`` (``r`` their
    distance, ``A`` point areas, ``n`` smoothed normals: the two sides of a
    thin feature are not averaged together), ``c`` from ``SINKHORN_ITERATIONS``
    sweeps of symmetric Sinkhorn scaling, and what the sweeps leave of each
    row sum's distance to one put on the diagonal. Rows sum to one (a uniform opening is kept) and
    ``A_i W_ij = A_j W_ji``, so ``sum A |W x|^2 <= sum A |x|^2``: the smooth
    part never holds more energy than the opening it comes from.

    On a voxel staircase the opening of a face is the smooth opening plus a
    corner pattern: the steps shear (tangential openings of 0.2-0.3x the 3(d)
    normal opening on R = 4-8 spheres) and the nodal openings spread from
    0.3 to 2.9x their median. Averaging the opening vector over about a
    voxel cancels the pattern and keeps the smooth part.

    Parameters
    ----------
    points : (npt, 3) point positions, m
    normal : (npt, 3) unit normals
    area : (npt,) point areas, m^2
    particle : (npt,) particle label of every point
    length_m : float, ``ell`` > 0, m
    cutoff : float, support radius in units of ``ell``
    """
    pairs = cKDTree(points).query_pairs(cutoff * length_m, output_type="ndarray")
    n = points.shape[0]
    i, j = np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])
    r2 = np.einsum("pi,pi->p", points[i] - points[j], points[i] - points[j])
    k = (np.exp(-0.5 * r2 / length_m**2) * np.maximum(np.einsum("pi,pi->p", normal[i], normal[j]), 0.0)
         * (particle[i] == particle[j]))
    K = sp.csr_matrix((np.concatenate([k, np.ones(n)]), (np.concatenate([i, np.arange(n)]),
                                                        np.concatenate([j, np.arange(n)]))), shape=(n, n))
    K.eliminate_zeros()
    # symmetric Sinkhorn scaling: c_i sum_j k_ij A_j c_j = 1, so W = diag(c) K diag(A c) is row-stochastic
    # and A-self-adjoint; what the iterations leave of the row sums goes on the diagonal
    c = 1.0 / np.sqrt(K @ area)
    for _ in range(SINKHORN_ITERATIONS):
        c = np.sqrt(c / (K @ (area * c)))
    W = (sp.diags(c) @ K @ sp.diags(area * c)).tocsr()
    return W + sp.diags(1.0 - np.asarray(W.sum(axis=1)).ravel())


def energy_line_search(change, slope: float, alpha_max: float = np.inf, c1: float = 1e-4) -> float:
    """Step length along a descent direction that lowers the merit function, 0.0 if none is found.

    Parameters
    ----------
    change : callable
        ``change(alpha)``, the merit function's change from ``alpha = 0``; cheap to evaluate.
    slope : float
        Its derivative at 0 (negative).
    alpha_max : float
        Largest step allowed (trust region).
    c1 : float
        Sufficient decrease (Armijo) constant.

    Notes
    -----
    Starts from the Newton step ``min(1, alpha_max)``. When it decreases the
    merit function enough, doubles it while the function keeps falling (up to
    ``MAX_EXPANSION`` and ``alpha_max``): near a snap-through, where the
    softening interface makes the energy much flatter than the tangent says,
    the minimum along the direction lies several Newton steps away and full
    steps would only creep towards it (a 24^3 charge stalled so at a relative
    residual of 3e-5, gaining 5 % per iteration). Otherwise backtracks by
    safeguarded quadratic interpolation (to between 1/10 and 1/2 of the last
    trial), at most ``MAX_BACKTRACKS`` times.
    """
    alpha = min(1.0, alpha_max)
    value = change(alpha)
    if value <= c1 * alpha * slope:
        top = min(MAX_EXPANSION, alpha_max)
        while 2.0 * alpha <= top:
            trial = change(2.0 * alpha)
            if not trial < value:
                break
            alpha, value = 2.0 * alpha, trial
        return alpha
    for _ in range(MAX_BACKTRACKS):
        # minimiser of the parabola through value(0) = 0, slope and value(alpha)
        curv = value - slope * alpha
        trial = -slope * alpha**2 / (2.0 * curv) if curv > 0 else 0.5 * alpha
        alpha = min(max(trial, 0.1 * alpha), 0.5 * alpha)
        value = change(alpha)
        if value <= c1 * alpha * slope:
            return alpha
    return 0.0


class _NotConverged(Exception):
    """Newton did not converge on a (sub)step: cut it."""


def _sum_pairs(iface: CohesiveInterface, corner_values: np.ndarray) -> np.ndarray:
    """Sum values given per integration point (npt, k) onto the node pairs, (npair, k)."""
    idx = iface.face_pairs.ravel()
    return np.stack([np.bincount(idx, weights=corner_values[:, i], minlength=iface.pair_se.size)
                     for i in range(corner_values.shape[1])], axis=1)


def _block_positions(A: sp.bsr_matrix, rows: np.ndarray, cols: np.ndarray, missing: str = "raise") -> np.ndarray:
    """Index into ``A.data`` of the blocks (rows[i], cols[i]); ``missing="mark"``: -1 where there is none."""
    # blocks are sorted by (row, column): one binary search over a global (row, column) key
    nb = A.indptr.size - 1
    key = np.repeat(np.arange(nb, dtype=np.int64), np.diff(A.indptr)) * nb + A.indices
    want = rows.astype(np.int64) * nb + cols
    pos = np.minimum(np.searchsorted(key, want), key.size - 1)
    found = key[pos] == want
    if missing == "mark":
        return np.where(found, pos, -1)
    if not found.all():
        raise RuntimeError("interface block missing from the matrix pattern")
    return pos


def debonded_patches(face_pairs: np.ndarray, debonded: np.ndarray, particle: np.ndarray, area: np.ndarray,
                     n_particles: int) -> np.ndarray:
    """Area of the largest connected debonded patch of every particle, (n_particles,).

    Faces are connected when they share a corner node pair.

    Parameters
    ----------
    face_pairs : (nf, 4) or (nf, 3) int, node pair of every face corner
    debonded : (nf,) bool
    particle : (nf,) int
    area : (nf,) float
    """
    out = np.zeros(n_particles)
    f = np.flatnonzero(debonded)
    if f.size == 0:
        return out
    nodes = face_pairs[f]
    _, nidx = np.unique(nodes.ravel(), return_inverse=True)
    nidx = nidx.reshape(nodes.shape)
    nn = int(nidx.max()) + 1
    m = f.size
    k = nodes.shape[1]
    rows = np.repeat(np.arange(m), k)
    g = sp.csr_matrix((np.ones(k * m), (rows, m + nidx.ravel())), shape=(m + nn, m + nn))
    _, comp = csgraph.connected_components(g, directed=False)
    comp_f = comp[:m]
    # a patch belongs to one particle: split components by particle
    key = comp_f.astype(np.int64) * (n_particles + 1) + particle[f]
    uk, inv = np.unique(key, return_inverse=True)
    patch_area = np.bincount(inv, weights=area[f])
    np.maximum.at(out, uk % (n_particles + 1), patch_area)
    return out


def fluctuation_springs(W: sp.csr_matrix, iface: CohesiveInterface) -> tuple:
    """Springs between node pairs that hold the opening's fluctuation about its average.

    With ``P`` the (npt, npair) selection of every point's pair and
    ``B = W P``, ``C = B^T diag(A) B`` has row sums equal to the pair areas
    (``W`` is row-stochastic and A-self-adjoint), so
    ``sum_{i<j} C_ij |J_i - J_j|^2 = <delta, (I - W^2) delta>_A`` for the
    point openings ``delta = P J``: the energy the averaged law does not see.

    Returns
    -------
    i, j : (ns,) int, pair indices with i < j
    c : (ns,) float, spring areas ``C_ij``, m^2
    """
    P = iface.pair_selection
    B = (W @ P).tocsr()
    C = sp.triu(B.T @ sp.diags(iface.point_area) @ B, k=1).tocoo()
    keep = C.data > 0
    return C.row[keep].astype(np.int64), C.col[keep].astype(np.int64), C.data[keep]


def _block_diagonal(blocks: np.ndarray) -> sp.csr_matrix:
    """Block-diagonal sparse matrix of (n, 3, 3) blocks, (3n, 3n)."""
    n = blocks.shape[0]
    return sp.bsr_matrix((blocks, np.arange(n), np.arange(n + 1)), shape=(3 * n, 3 * n)).tocsr()


def _drop_weak_blocks(G: sp.spmatrix, tau: float) -> sp.csr_matrix:
    """Drop the 3x3 off-diagonal blocks with ``|G_ij| < tau sqrt(|G_ii| |G_jj|)`` (Frobenius norms).

    Each dropped block's norm goes onto both diagonal blocks (times the
    identity), so the result minus ``G`` is positive semi-definite: a
    positive definite ``G`` stays so.
    """
    Gb = sp.bsr_matrix(G, blocksize=(3, 3))
    Gb.sort_indices()
    nb = Gb.shape[0] // 3
    rows = np.repeat(np.arange(nb), np.diff(Gb.indptr))
    cols = Gb.indices.astype(np.int64)
    norm = np.sqrt(np.einsum("kij,kij->k", Gb.data, Gb.data))
    on_diag = rows == cols
    dnorm = np.zeros(nb)
    dnorm[rows[on_diag]] = norm[on_diag]
    weak = ~on_diag & (norm < tau * np.sqrt(dnorm[rows] * dnorm[cols]))
    comp = np.bincount(rows[weak], weights=norm[weak], minlength=nb)
    data = Gb.data.copy()
    data[on_diag] += comp[rows[on_diag]][:, None, None] * np.eye(3)
    keep = ~weak
    out = sp.bsr_matrix((data[keep], cols[keep], np.r_[0, np.cumsum(np.bincount(rows[keep], minlength=nb))]),
                        shape=Gb.shape)
    return out.tocsr()


@dataclasses.dataclass(frozen=True)
class PairBasis:
    """(mean, jump) coordinates on node pairs, for the preconditioner (:meth:`LinearSolver.rebuild`).

    ``T`` maps the mean ``m`` (stored at the SE node) and the jump ``j``
    (stored at the AP node) to ``u_SE = m - j / 2``, ``u_AP = m + j / 2``;
    every other node keeps its displacement. A stiff interface spring then
    acts on the jump alone (block Gauss-Seidel removes it at once: it has no
    coarse-grid part, as ``T^-1`` of a rigid-body mode has no jump) and the
    means see the bonded stiffness. Undamaged 24^3 cohesive matrix, CG to
    1e-8: 62 AMG-CG iterations on the split nodes, 17 in these coordinates
    (bonded: 18). Each SE and AP node may belong to one pair only.

    Attributes
    ----------
    se, ap : (np,) int
        The pairs' SE and AP node indices.
    n_nodes : int
    """

    se: np.ndarray
    ap: np.ndarray
    n_nodes: int

    #: (SE, AP) rows of each map, acting on the pair's (SE-slot, AP-slot) values
    T = ((1.0, -0.5), (1.0, 0.5))
    T_TRANSPOSE = ((1.0, 1.0), (-0.5, 0.5))
    T_INVERSE = ((0.5, 0.5), (-1.0, 1.0))

    def _mix(self, v: np.ndarray, m) -> np.ndarray:
        """Apply the 2x2 map ``m`` on every pair's (SE, AP) nodes; (3 nn,) or (3 nn, k)."""
        w = np.asarray(v).reshape(self.n_nodes, 3, -1)
        out = w.copy()
        s, a = w[self.se], w[self.ap]
        out[self.se] = m[0][0] * s + m[0][1] * a
        out[self.ap] = m[1][0] * s + m[1][1] * a
        return out.reshape(np.shape(v))

    def apply(self, y: np.ndarray) -> np.ndarray:
        """``T y``: pair coordinates -> displacements."""
        return self._mix(y, self.T)

    def apply_t(self, r: np.ndarray) -> np.ndarray:
        """``T^T r``: forces -> pair coordinates."""
        return self._mix(r, self.T_TRANSPOSE)

    def inverse(self, u: np.ndarray) -> np.ndarray:
        """``T^-1 u``: displacements -> pair coordinates (mean, jump)."""
        return self._mix(u, self.T_INVERSE)

    def matrix(self) -> sp.csr_matrix:
        """``T`` as a sparse (3 nn, 3 nn) matrix."""
        n = self.n_nodes
        (ss, sa), (as_, aa) = self.T
        diag = np.ones(n)
        diag[self.se], diag[self.ap] = ss, aa
        rows = np.r_[np.arange(n), self.se, self.ap]
        cols = np.r_[np.arange(n), self.ap, self.se]
        vals = np.r_[diag, np.full(self.se.size, sa), np.full(self.se.size, as_)]
        return sp.kron(sp.csr_matrix((vals, (rows, cols)), shape=(n, n)), sp.identity(3), format="csr")

    def galerkin(self, A: sp.spmatrix) -> sp.bsr_matrix:
        """``T^T A T`` (3x3 BSR; block products, no scalar copy of ``A``)."""
        T = sp.bsr_matrix(self.matrix(), blocksize=(3, 3))
        A = A if sp.isspmatrix_bsr(A) and A.blocksize == (3, 3) else sp.bsr_matrix(A, blocksize=(3, 3))
        out = sp.bsr_matrix(T.T.tobsr(blocksize=(3, 3)) @ A @ T, blocksize=(3, 3))
        out.sort_indices()
        return out


def stiff_pairs(A: sp.spmatrix, se: np.ndarray, ap: np.ndarray, ratio: float,
                fixed: np.ndarray | None = None) -> np.ndarray:
    """Node pairs whose interface coupling in ``A`` is stiffer than ``ratio`` times their bulk, (np,) bool.

    The coupling is ``S = -A[se, ap]`` (3x3, symmetrised); a pair is stiff
    when the smallest eigenvalue of ``S`` exceeds ``ratio`` times the largest
    of the bulk block ``A[i, i] - S`` on either side. Components fixed on
    either node (``fixed``, (nn, 3) bool: Dirichlet rows carry no coupling)
    count as stiff. Pairs that share a node with another pair are left out
    (:class:`PairBasis` needs disjoint pairs).
    """
    A = A if sp.isspmatrix_bsr(A) and A.blocksize == (3, 3) else sp.bsr_matrix(A, blocksize=(3, 3))
    A.sort_indices()

    def blocks(rows, cols):  # (np, 3, 3) blocks A[rows[k], cols[k]], zero where the pattern has none
        pos = _block_positions(A, rows, cols, missing="mark")
        return np.where((pos >= 0)[:, None, None], A.data[pos], 0.0)

    S = -blocks(se, ap)
    S = 0.5 * (S + S.transpose(0, 2, 1))
    bulk = np.minimum(np.linalg.eigvalsh(blocks(se, se) - S)[:, -1], np.linalg.eigvalsh(blocks(ap, ap) - S)[:, -1])
    if fixed is not None:
        either = (fixed[se] | fixed[ap]).astype(float)
        S = S + either[:, :, None] * np.eye(3) * (ratio + 1.0) * bulk[:, None, None]
    stiff = np.linalg.eigvalsh(S)[:, 0] > ratio * bulk
    for nodes in (se, ap):
        stiff &= np.bincount(nodes, minlength=int(nodes.max(initial=0)) + 1)[nodes] == 1
    return stiff
