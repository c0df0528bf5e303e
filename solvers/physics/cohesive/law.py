"""The bilinear traction-separation law shared by both cohesive formulations (PHYSICS.md section 1).

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

The node-pair model (:mod:`.nodepair`) applies it at the corners of every AP|SE face; the band
model (:mod:`.band`) in the electrolyte voxels along the particles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tomomech.errors import ConfigError

#: penalty stiffness K0 = PENALTY_FACTOR * E_harmonic / voxel size when not given
PENALTY_FACTOR = 100.0


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
