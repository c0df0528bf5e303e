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

The traction-separation law (damage, contact, ``G_c`` per area) is
:class:`~solvers.physics.cohesive.law.CohesiveLaw`; its module docstring states it.

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
from functools import partial

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from solvers.fem.assembly import apply_dirichlet, assemble_voxel_stiffness, elasticity_matrix
from solvers.mesh.voxel import ACTIVE, VoxelMesh
from solvers.physics.cohesive.amg import (
    PRECONDITIONER_DROP,
    STIFF_PAIR_RATIO,
    PairBasis,
    _block_diagonal,
    _block_positions,
    _drop_weak_blocks,
    stiff_pairs,
)
from solvers.physics.cohesive.averaging import fluctuation_springs, opening_averaging
from solvers.physics.cohesive.geometry import AreaFractions, CohesiveInterface, split_interface
from solvers.physics.cohesive.law import CohesiveLaw
from solvers.physics.elasticity import ElasticProblem
from solvers.physics.materials import Material
from tomomech.errors import ConfigError, ConvergenceError, MeshError

log = logging.getLogger(__name__)

#: step reductions of the Newton line search before a load sub-step is cut
MAX_BACKTRACKS = 12
#: a load sub-step cut this many times (1/8 of the step) gets SNAP_FACTOR times the Newton iterations
SNAP_CUTS = 3
SNAP_FACTOR = 4
#: largest multiple of the Newton step the line search tries when the energy keeps falling
MAX_EXPANSION = 16.0
#: largest change of a fluctuation spring's stiffness fraction left for the next load increment
STAGGER_TOL = 0.05


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


class CohesiveProblem(AreaFractions, ElasticProblem):
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
        self.faces = faces
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

    def cell_damage(self) -> np.ndarray:
        """(ne,) damage on the cells: the largest over the AP|SE faces of every particle cell."""
        faces, mesh = self.faces, self.bonded_mesh
        if "ap_cell" in faces:
            cell = np.asarray(faces["ap_cell"], np.int64)
        else:  # voxel hexes: faces name their voxels
            cell = mesh.voxel_cell[faces["ap_voxel"]]
        out = np.zeros(mesh.n_cells)
        np.maximum.at(out, cell, self.face_damage())
        return out

    def summary(self) -> dict:
        """The interface model and its stepping, for summary.json."""
        h = self.history
        return {"model": "cohesive", "formulation": "node pairs (assembled)", "penalty_Pa_m": self.law.penalty_Pa_m,
                "delta_0_m": self.law.delta_0, "delta_f_m": self.law.delta_f,
                "preconditioner_rebuilds": self.rebuilds, "step_cuts": int(sum(r["cuts"] for r in h)),
                "averaging_length_m": self.averaging_length_m, "newton_rtol": self.nl_rtol,
                "contact_factor": self.law.contact_factor,
                "stagger_rounds": int(sum(r["stagger_rounds"] for r in h))}

    def step_record(self, since: int) -> dict:
        """Counts of the solves after history entry ``since`` (one step's worth), for the step summary."""
        return {"nonlinear_iterations": int(sum(r["nonlinear_iterations"] for r in self.history[since:]))}


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
