"""The closed forms used by the validation tests reproduce the numbers quoted in PHYSICS.md."""

from tests.validation.closed_forms import eshelby_pressure, shell_pressure


def test_physics_md_examples():
    """The numbers quoted in PHYSICS.md (a) and (b) (tolerance 1 MPa on their rounding)."""
    eps = -0.05 / 3
    assert abs(-eshelby_pressure(eps, 140e9, 0.3, 22e9, 0.3) / 1e6 - 514) < 1
    for phi, free, fixed in ((0.3, 315, 994), (0.5, 208, 1514), (0.7, 116, 2380)):
        assert abs(-shell_pressure(eps, phi, 140e9, 0.3, 22e9, 0.3, "free") / 1e6 - free) < 1
        assert abs(-shell_pressure(eps, phi, 140e9, 0.3, 22e9, 0.3, "fixed") / 1e6 - fixed) < 1.5
