"""Vectorised assembly of small-strain elasticity on voxel hex meshes.

Forms are written as tensor contractions (scikit-fem style); every voxel has
the same geometry, so element matrices depend on the material only and the
global matrix is built directly as a 3x3-block sparse matrix (BSR) from the
27-point node stencil of the regular grid, without a per-element COO copy.
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp

from solvers.fem.elements import Element


def lame(E: float, nu: float) -> tuple[float, float]:
    """Lame constants (lambda, mu) of an isotropic material, units of E."""
    return E * nu / ((1 + nu) * (1 - 2 * nu)), E / (2 * (1 + nu))


def physical_gradients(element: Element, xi: np.ndarray, spacing) -> np.ndarray:
    """Shape-function gradients d N / d(z, y, x) on an axis-aligned cell.

    Parameters
    ----------
    xi : (q, 3) reference points
    spacing : (3,) cell size (z, y, x), metres

    Returns
    -------
    (q, n, 3) ndarray, 1/m
    """
    return element.grad(xi) / np.asarray(spacing, float)[None, None, :]


def elasticity_parts(element: Element, spacing) -> tuple[np.ndarray, np.ndarray]:
    """The two parts of the element stiffness: ``K = lambda * K_lambda + mu * K_mu``.

    Returns
    -------
    K_lambda, K_mu : (n, 3, n, 3) ndarrays, m
    """
    pts, wts = element.quadrature
    dn = physical_gradients(element, pts, spacing)  # (q, n, 3)
    w = wts * float(np.prod(spacing))
    dot = np.einsum("q,qaj,qbj->ab", w, dn, dn)
    outer = np.einsum("q,qai,qbk->aibk", w, dn, dn)
    return outer, np.einsum("ab,ik->aibk", dot, np.eye(3)) + outer.transpose(0, 3, 2, 1)


def elasticity_matrix(element: Element, spacing, E: float, nu: float) -> np.ndarray:
    """Element stiffness of one voxel, as blocks.

    ``K[a, i, b, k] = int dN_a/dx_j C_ijkl dN_b/dx_l dV``.

    Returns
    -------
    (n, 3, n, 3) ndarray, N/m
    """
    k_lam, k_mu = elasticity_parts(element, spacing)
    lam, mu = lame(E, nu)
    return lam * k_lam + mu * k_mu


def gradient_integral(element: Element, spacing) -> np.ndarray:
    """``int dN_a/dx_i dV`` over one voxel, (n, 3) in m^2.

    The nodal force of a uniform isotropic eigenstress ``s`` is ``s * g``.
    """
    pts, wts = element.quadrature
    dn = physical_gradients(element, pts, spacing)
    return np.einsum("q,qai->ai", wts * float(np.prod(spacing)), dn)


_OFFSETS = np.array(list(itertools.product((-1, 0, 1), repeat=3)))  # lexicographic: columns sorted


def assemble_voxel_stiffness(mesh, cell_material: np.ndarray, element_matrices) -> sp.bsr_matrix:
    """Global elasticity stiffness of a voxel mesh as a BSR matrix (3x3 blocks).

    Parameters
    ----------
    mesh : VoxelMesh
    cell_material : (ne,) int
        Index into ``element_matrices`` for every cell.
    element_matrices : sequence of (8, 3, 8, 3) ndarrays
        One element matrix per material (see :func:`elasticity_matrix`).

    Returns
    -------
    scipy.sparse.bsr_matrix of shape (3 nn, 3 nn), node-major dofs
    ``3 * node + component`` with components (z, y, x).

    Notes
    -----
    Memory is the matrix itself (27 blocks of 9 doubles per node, about
    650 bytes per dof) plus the cell material at the 8 corners of every node
    (32 bytes per node); the work scales with the nodes, not the grid.
    """
    Z, Y, X = mesh.shape
    gshape = (Z + 1, Y + 1, X + 1)
    nmat = len(element_matrices)
    kb = np.zeros((nmat + 1, 8, 8, 3, 3))
    for m, ke in enumerate(element_matrices):
        kb[m] = np.asarray(ke).transpose(0, 2, 1, 3)
    mat_grid = np.full(Z * Y * X, nmat, np.int32)
    mat_grid[mesh.cell_voxel] = cell_material
    mat_grid = mat_grid.reshape(Z, Y, X)
    corners = mesh.element.nodes.astype(int)
    node_id = np.full(gshape, -1, np.int64)
    node_id.ravel()[mesh.node_grid] = np.arange(mesh.n_nodes)
    nn = mesh.n_nodes

    def pairs(o):
        return [(a, b) for a in range(8) for b in range(8)
                if np.array_equal(corners[b] - corners[a], o)]

    node_ijk = np.stack(np.unravel_index(mesh.node_grid, gshape), axis=1)
    # material of the cell at corner a of every node (nmat: no cell), (8, nn); the work below scales
    # with the nodes, not the grid, so a few scattered cells of a large grid assemble quickly
    mat_at = np.full((8, nn), nmat, np.int32)
    for a, c in enumerate(corners):
        cell = node_ijk - c
        inside = np.all((cell >= 0) & (cell < (Z, Y, X)), axis=1)
        mat_at[a, inside] = mat_grid[tuple(cell[inside].T)]
    on_at = mat_at < nmat

    # pass 1: which (node, offset) pairs share an element
    valid = np.zeros((27, nn), bool)
    for k, o in enumerate(_OFFSETS):
        for a, _ in pairs(o):
            valid[k] |= on_at[a]
    counts = valid.sum(axis=0)
    indptr = np.zeros(nn + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    nnzb = int(indptr[-1])
    idx_dtype = np.int32 if nnzb < 2**31 - 1 else np.int64
    indices = np.empty(nnzb, idx_dtype)
    data = np.empty((nnzb, 3, 3))
    fill = indptr[:-1].copy()

    # pass 2: the stencil values, one offset at a time
    for k, o in enumerate(_OFFSETS):
        rows = np.flatnonzero(valid[k])
        if rows.size == 0:
            continue
        block = np.zeros((rows.size, 3, 3))
        for a, b in pairs(o):
            block += np.ascontiguousarray(kb[:, a, b]).reshape(-1, 9)[mat_at[a, rows]].reshape(-1, 3, 3)
        nb = node_ijk[rows] + o
        pos = fill[rows]
        indices[pos] = node_id[nb[:, 0], nb[:, 1], nb[:, 2]]
        data[pos] = block
        fill[rows] += 1
    return sp.bsr_matrix((data, indices, indptr.astype(idx_dtype)), shape=(3 * nn, 3 * nn))


def apply_dirichlet(A: sp.bsr_matrix, fixed: np.ndarray, scale: float | None = None) -> sp.bsr_matrix:
    """Homogeneous Dirichlet conditions by zeroing rows and columns.

    Fixed dofs get a unit-scaled diagonal (the mean diagonal of ``A``) so the
    conditioning is not spoiled; the right-hand side must be zero there.

    Parameters
    ----------
    A : bsr_matrix with 3x3 blocks
    fixed : (nn, 3) bool
    scale : float, optional
        Diagonal of the fixed dofs; default the mean diagonal of the free dofs.

    Returns
    -------
    bsr_matrix, modified in place and returned.
    """
    keep = (~fixed).astype(A.data.dtype)
    nb = A.indptr.size - 1
    rows = np.repeat(np.arange(nb), np.diff(A.indptr))
    if scale is not None:
        diag_scale = float(scale)
    else:
        diag_scale = float(np.mean(A.diagonal()[~fixed.ravel()])) if (~fixed).any() else 1.0
    A.data *= keep[rows][:, :, None]
    A.data *= keep[A.indices][:, None, :]
    d = np.flatnonzero(rows == A.indices)
    A.data[d] += np.einsum("bi,ij->bij", fixed[rows[d]].astype(float), np.eye(3)) * diag_scale
    return A


def element_gradients(element: Element, points: np.ndarray, cells: np.ndarray):
    """Physical shape-function gradients and quadrature weights of every cell.

    Parameters
    ----------
    points : (nn, 3) coordinates (z, y, x)
    cells : (ne, n) node indices

    Returns
    -------
    dn : (ne, q, n, 3) gradients, 1/m
    w : (ne, q) weights times |det J|, m^3
    """
    pts, wts = element.quadrature
    ref = element.grad(pts)  # (q, n, 3)
    x = points[cells]  # (ne, n, 3)
    J = np.einsum("eai,qaj->eqij", x, ref)  # dx_i / dxi_j
    Jinv = np.linalg.inv(J)
    dn = np.einsum("qaj,eqji->eqai", ref, Jinv)
    return dn, np.abs(np.linalg.det(J)) * wts[None, :]


def assemble_elasticity(element: Element, points: np.ndarray, cells: np.ndarray, lam: np.ndarray,
                        mu: np.ndarray, *, chunk: int = 100_000) -> sp.csr_matrix:
    """Elasticity stiffness of an unstructured mesh (any element), vectorised COO assembly.

    Parameters
    ----------
    lam, mu : (ne,) Lame constants of every cell, Pa
    chunk : int
        Cells assembled at a time: the COO triplets of a chunk (about 3.5 kB per linear tet,
        24 kB per quadratic tet) are summed into the CSR result before the next, so peak
        memory stays near the size of the matrix (4.8 M voxel-tets at once would need 17 GB).

    Returns
    -------
    csr_matrix (3 nn, 3 nn), dofs ``3 * node + component``.
    """
    N = 3 * points.shape[0]
    n = cells.shape[1]
    out = sp.csr_matrix((N, N))
    for s in range(0, cells.shape[0], chunk):
        c = cells[s:s + chunk]
        dn, w = element_gradients(element, points, c)
        dot = np.einsum("eq,eqaj,eqbj->eab", w, dn, dn)
        outer = np.einsum("eq,eqai,eqbk->eaibk", w, dn, dn)
        la, m = lam[s:s + chunk], mu[s:s + chunk]
        ke = (la[:, None, None, None, None] * outer
              + m[:, None, None, None, None] * (np.einsum("eab,ik->eaibk", dot, np.eye(3))
                                                + outer.transpose(0, 1, 4, 3, 2)))
        dof = (c[:, :, None] * 3 + np.arange(3)).reshape(-1, 3 * n)
        rows = np.repeat(dof, 3 * n, axis=1).ravel()
        cols = np.tile(dof, (1, 3 * n)).ravel()
        out = out + sp.csr_matrix((ke.reshape(-1), (rows, cols)), shape=(N, N))
    return out


def scalar_laplacian(mesh, cell_index: np.ndarray, cells: np.ndarray, n: int, coefficient: float) -> sp.csr_matrix:
    """``K[a, b] = coefficient * int grad N_a . grad N_b dV`` over the given cells, (n, n) CSR.

    Parameters
    ----------
    mesh : VoxelMesh or TetMesh (linear)
    cell_index : (nc,) cells of the mesh to integrate over
    cells : (nc, k) their nodes in the numbering of the result
    n : int
    coefficient : float (S/m for conduction, m^2/s for diffusion)
    """
    dn, w = mesh.gradient_tables(cell_index)  # (1 or nc, q, k, 3), (1 or nc, q)
    lap = np.einsum("eq,eqai,eqbi->eab", w, dn, dn) * coefficient
    k = cells.shape[1]
    rows = np.repeat(cells, k, axis=1).ravel()
    cols = np.tile(cells, (1, k)).ravel()
    vals = np.broadcast_to(lap, (cells.shape[0], k, k)).ravel()
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
