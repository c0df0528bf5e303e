"""Misfit sphere on voxel-hex meshes against PHYSICS.md 3(a) and 3(b).

A cube with rollers on five faces and a free top confines the particle
between the free-shell and fixed-shell closed forms (phi = particle volume
fraction); the staircase adds a first-order error concentrated in the voxels
next to the interface, so interior means are compared with the closed forms.

The box has no closed form of its own. At phi = 0.06-0.08 its particle pressure is the mean of the
free- and fixed-shell pressures to 1.5 % (``test_box_pressure_is_the_mean_of_the_shell_bounds`` in
test_cohesive.py, conforming quadratic tets), so the stiff-particle series sits in boxes of 4 R
(phi = 0.066) and is held to that mean. The rule is a low-phi one: in the boxes of 2.5 R used before
(phi = 0.27) the same tets put the box 6 % below the mean, inside a free/fixed band of 330-930 MPa wide
enough to let a 40 % error in the swelling through.

The sphere is centred in the box, so the planes x = L/2 and y = L/2 are planes of mirror symmetry and
rollers on them are exact: the solves run on the quarter box (axes y, x halved; z keeps its bottom roller
and free top) and the stress is mirrored back onto the full voxel grid (a 64^3 box for the cost of
64 x 32 x 32; :func:`test_quarter_box_equals_full_box` checks the mirror).
"""

import numpy as np
import pytest
from scipy import ndimage as ndi

from solvers import fields
from solvers.mesh import voxel_hex_mesh
from solvers.physics import ElasticProblem, Material
from tests.validation.closed_forms import eshelby_pressure, shell_pressure

DV = -0.05  # particle shrinks by 5 % in volume (charge)
EPS = DV / 3
H = 1e-6


def sphere(R, n):
    z, y, x = np.indices((n, n, n)) + 0.5
    r = np.sqrt((z - n / 2) ** 2 + (y - n / 2) ** 2 + (x - n / 2) ** 2)
    ph = np.where(r < R, 2, 1).astype(np.uint8)
    return ph, (ph == 2).astype(np.int32)


def voxel_stress(ph, pa, Ep, Em, top):
    """(n^3, 3, 3) cell stress of the box, in voxel order (no void: every voxel is a cell)."""
    mesh = voxel_hex_mesh(ph, pa, [H] * 3)
    assert mesh.n_cells == ph.size
    prob = ElasticProblem(mesh, {1: Material("m", Em, 0.3), 2: Material("p", Ep, 0.3)}, top=top)
    eps = np.where(mesh.cell_phase == 2, EPS, 0.0)
    sig = np.empty((ph.size, 3, 3))
    sig[mesh.cell_voxel] = prob.cell_stress(prob.solve(eps), eps)
    return sig


def quarter_stress(ph, pa, Ep, Em, top):
    """The stress of the full box from its quarter y, x >= n/2, mirrored across y = n/2 and x = n/2.

    Mirroring axis a maps voxel k to n - 1 - k and flips the sign of the shear components sigma_ab,
    b != a: sigma' = M sigma M with M = diag(1, s_y, s_x), s = -1 on the mirrored side.
    """
    n, h = ph.shape[1], ph.shape[1] // 2
    assert ph.shape == (n, n, n) and n % 2 == 0
    sq = voxel_stress(ph[:, h:, h:], pa[:, h:, h:], Ep, Em, top).reshape(n, h, h, 3, 3)
    k = np.arange(n)
    src = np.where(k >= h, k - h, h - 1 - k)
    s = np.where(k >= h, 1.0, -1.0)
    M = np.ones((n, n, 3))
    M[:, :, 1], M[:, :, 2] = s[:, None], s[None, :]
    sig = sq[:, src][:, :, src] * M[None, :, :, :, None] * M[None, :, :, None, :]
    return sig.reshape(-1, 3, 3)


def solve_sphere(R, n, Ep, Em=22.0, top="free"):
    ph, pa = sphere(R, n)
    sig = quarter_stress(ph, pa, Ep, Em, top)
    hyd = fields.hydrostatic(sig)
    inside = ph.ravel() == 2
    depth = ndi.distance_transform_edt(ph == 2).ravel()
    faces = fields.interface_faces(ph, pa, [H] * 3)
    tn = fields.normal_traction(sig[faces["ap_voxel"]], sig[faces["se_voxel"]], faces["normal"])
    # axis normals for comparison: the face axis, pointing from AP into SE
    axis_n = np.zeros_like(faces["normal"])
    axis_n[np.arange(len(tn)), faces["axis"]] = np.sign(faces["se_voxel"] - faces["ap_voxel"])
    tn_axis = fields.normal_traction(sig[faces["ap_voxel"]], sig[faces["se_voxel"]], axis_n)
    return {
        "phi": float(inside.mean()),
        "mean_all": float(hyd[inside].mean()),
        "mean_interior": float(hyd[inside & (depth > 2)].mean()),
        "median_tn": float(np.median(tn)),
        "median_tn_axis": float(np.median(tn_axis)),
    }


def bounds(phi, Ep, Em=22.0):
    """Particle hydrostatic stress (= -p, tension positive) for the free and fixed outer shell."""
    lo = -shell_pressure(EPS, phi, Ep * 1e9, 0.3, Em * 1e9, 0.3, "free")
    hi = -shell_pressure(EPS, phi, Ep * 1e9, 0.3, Em * 1e9, 0.3, "fixed")
    return lo, hi


def box_reference(phi, Ep, Em=22.0):
    """The box's particle hydrostatic stress: the mean of the free- and fixed-shell values (phi <= 0.08)."""
    return 0.5 * sum(bounds(phi, Ep, Em))


def test_quarter_box_equals_full_box():
    """The quarter model mirrored is the full box's solution (to the solver's rtol 1e-8), shear signs included."""
    ph, pa = sphere(4, 16)
    full = voxel_stress(ph, pa, 140.0, 22.0, "free")
    mirrored = quarter_stress(ph, pa, 140.0, 22.0, "free")
    assert np.abs(full[:, 0, 1]).max() > 1e-2 * np.abs(full).max()  # the shear is there to get wrong
    assert np.abs(mirrored - full).max() <= 1e-6 * np.abs(full).max()


def test_equal_moduli_interior_matches_eshelby():
    """(1) equal moduli, phi < 3 %: interior hydrostatic stress within 1 % of PHYSICS.md (a)."""
    r = solve_sphere(6, 36, Ep=22.0)
    assert r["phi"] < 0.03
    exact = -eshelby_pressure(EPS, 22e9, 0.3, 22e9, 0.3)
    print(f"interior {r['mean_interior'] / 1e6:.1f} MPa, Eshelby {exact / 1e6:.1f} MPa")
    assert abs(r["mean_interior"] / exact - 1) < 0.01


@pytest.fixture(scope="module")
def stiff_series():
    """Stiff particle (140 vs 22 GPa) at radii 4, 8, 16 voxels in boxes of 4 R (phi = 0.068, 0.066, 0.066)."""
    return {R: solve_sphere(R, 4 * R, Ep=140.0) for R in (4, 8, 16)}


def test_stiff_particle_interior_within_shell_bounds(stiff_series):
    """(2) the mean over voxels more than 2 voxels inside lies within 5 % of the box reference (the mean of
    the free/fixed shell values; measured +4.2 % at R = 8, +0.5 % at R = 16), so inside the bounds."""
    for R in (8, 16):
        r = stiff_series[R]
        lo, hi = bounds(r["phi"], 140.0)
        ref = box_reference(r["phi"], 140.0)
        print(f"R={R}: interior {r['mean_interior'] / 1e6:.1f} MPa, box reference {ref / 1e6:.1f} "
              f"({100 * (r['mean_interior'] / ref - 1):+.1f} %) in [{lo / 1e6:.1f}, {hi / 1e6:.1f}]")
        assert r["mean_interior"] == pytest.approx(ref, rel=0.05, abs=0)


def test_stiff_particle_mean_converges_first_order(stiff_series):
    """(2) the all-voxel mean converges at first order in the voxel size (radii 4, 8, 16), to within 5 % of
    the box reference.

    The limit is Richardson's with the known order 1 (the staircase layer is one voxel thick, so its share
    of the particle falls as 1 / R) from the two finest radii; the observed order only checks that the
    series is near the asymptotic range. R = 4 is not quite in it: the order is 0.76 from 4, 8, 16 and
    1.04 from 8, 16, 32 (R = 32 measured off the suite, 534.3 MPa), and the order-1 limits of 8/16 and
    16/32 agree to 0.2 % (514.9 and 515.9 MPa, 3.3 % below the reference); extrapolating with the observed
    0.76 would carry R = 4's pre-asymptotic error into the limit (498 MPa).
    """
    m = [stiff_series[R]["mean_all"] for R in (4, 8, 16)]
    d1, d2 = m[0] - m[1], m[1] - m[2]
    order = np.log2(d1 / d2)
    limit = m[2] - d2  # Richardson extrapolation, order 1, radii 8 and 16
    ref = box_reference(stiff_series[16]["phi"], 140.0)
    print(f"means {np.round(np.array(m) / 1e6, 1)} MPa, observed order {order:.2f}, limit {limit / 1e6:.1f} "
          f"MPa, box reference {ref / 1e6:.1f} ({100 * (limit / ref - 1):+.1f} %)")
    assert 0.7 < order < 1.3
    assert d1 > 0 and d2 > 0  # staircase error is one-signed (above the limit)
    assert limit == pytest.approx(ref, rel=0.05, abs=0)


def test_smoothed_normal_traction_within_bounds(stiff_series):
    """(3) median smoothed-normal interface traction within 5 % of the box reference (measured -1.1 % at
    R = 16); the face-axis normal gives about half of it (why the smoothed normal is used)."""
    r = stiff_series[16]
    lo, hi = bounds(r["phi"], 140.0)
    ref = box_reference(r["phi"], 140.0)
    print(f"median t_n smoothed {r['median_tn'] / 1e6:.1f}, axis {r['median_tn_axis'] / 1e6:.1f} MPa, "
          f"box reference {ref / 1e6:.1f} in [{lo / 1e6:.1f}, {hi / 1e6:.1f}]")
    assert r["median_tn"] == pytest.approx(ref, rel=0.05, abs=0)
    assert r["median_tn_axis"] < 0.75 * r["median_tn"]
