"""Material models and named presets.

Values are the starting values of shared/PHYSICS.md section 4, which is the
project's ledger of sources; each preset also names the literature behind it.
Inputs are in the config's units (GPa, m^2/s, mol/m^3); :meth:`Material.E`
and friends return SI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from solvers.physics.diffusion import FARADAY
from solvers.physics.plasticity import J2Plasticity
from tomomech.errors import ConfigError


@dataclass(frozen=True)
class Material:
    """An isotropic linear-elastic phase, optionally swelling with Li content.

    Attributes
    ----------
    name : str
    E_GPa : float
        Young's modulus, GPa.
    nu : float
        Poisson ratio, in (-1, 0.5).
    D_m2_s : float or None
        Li diffusivity, m^2/s (active materials).
    c_max_mol_m3 : float or None
        Li concentration at theta = 1, mol/m^3.
    volume_change : tuple of (theta, dV/V) pairs or None
        Volume change against theta, linearly interpolated; theta must stay
        inside the table.
    omega_m3_mol : float or None
        Partial molar volume for a linear law ``dV/V = Omega c_max theta``.
    ocp : str, tuple of (theta, U) pairs, or None
        Open-circuit potential against Li/Li+ (V): the name of a published fit
        (:data:`solvers.physics.kinetics.OCP_FITS`) or a table, linearly
        interpolated (active materials, Butler-Volmer kinetics).
    k0_m_s : float or None
        Rate constant of ``i0 = F k0 c_max sqrt(theta (1 - theta))``, m/s.
    alpha_a, alpha_c : float
        Anodic and cathodic transfer coefficients.
    kappa_S_m : float or None
        Ionic conductivity, S/m (electrolytes).
    plasticity : J2Plasticity or None
        Von Mises (visco)plasticity of the phase (:mod:`solvers.physics.plasticity`); None: elastic.
        In a config: a table ``{yield_MPa = ..., hardening_MPa = ..., viscosity_s = ...,
        rate_exponent = ...}`` or the name of a law in :data:`PLASTICITY_PRESETS`.
    source : str
        Where the numbers come from.
    """

    name: str
    E_GPa: float
    nu: float
    D_m2_s: float | None = None
    c_max_mol_m3: float | None = None
    volume_change: tuple[tuple[float, float], ...] | None = None
    omega_m3_mol: float | None = None
    ocp: str | tuple[tuple[float, float], ...] | None = None
    k0_m_s: float | None = None
    alpha_a: float = 0.5
    alpha_c: float = 0.5
    kappa_S_m: float | None = None
    plasticity: J2Plasticity | None = None
    source: str = ""

    def __post_init__(self):
        if not (self.E_GPa > 0 and np.isfinite(self.E_GPa)):
            raise ConfigError(f"material {self.name!r}: E_GPa must be positive, got {self.E_GPa}")
        if not (-1.0 < self.nu < 0.5):
            raise ConfigError(f"material {self.name!r}: nu must lie in (-1, 0.5), got {self.nu}")
        if self.volume_change is not None:
            t = np.asarray(self.volume_change, float)
            if t.ndim != 2 or t.shape[1] != 2 or t.shape[0] < 2:
                raise ConfigError(
                    f"material {self.name!r}: volume_change must be a list of at least two "
                    "[theta, dV/V] pairs"
                )
            if np.any(np.diff(t[:, 0]) <= 0):
                raise ConfigError(f"material {self.name!r}: volume_change theta values must increase")
            if np.any(t[:, 1] <= -1):
                raise ConfigError(f"material {self.name!r}: volume_change dV/V must be above -1")
        if self.ocp is not None:
            from solvers.physics.kinetics import open_circuit

            open_circuit(self.ocp, self.name)  # validates the name or the table
        for k in ("k0_m_s", "kappa_S_m"):
            v = getattr(self, k)
            if v is not None and not (v > 0 and np.isfinite(v)):
                raise ConfigError(f"material {self.name!r}: {k} must be positive, got {v}")
        for k in ("alpha_a", "alpha_c"):
            if not 0.0 < getattr(self, k) < 1.0:
                raise ConfigError(f"material {self.name!r}: {k} must lie in (0, 1), got {getattr(self, k)}")

    @property
    def E(self) -> float:
        """Young's modulus, Pa."""
        return self.E_GPa * 1e9

    @property
    def K(self) -> float:
        """Bulk modulus, Pa."""
        return self.E / (3 * (1 - 2 * self.nu))

    @property
    def G(self) -> float:
        """Shear modulus, Pa."""
        return self.E / (2 * (1 + self.nu))

    @property
    def swells(self) -> bool:
        return self.volume_change is not None or self.omega_m3_mol is not None

    def theta_range(self) -> tuple[float, float]:
        """Range of theta over which the volume-change law is defined."""
        if self.volume_change is not None:
            t = np.asarray(self.volume_change, float)
            return float(t[0, 0]), float(t[-1, 0])
        return 0.0, 1.0

    def relative_volume_change(self, theta, theta_ref: float) -> np.ndarray:
        """dV/V of the state ``theta`` against the stress-free state ``theta_ref``.

        Table: ``(1 + v(theta)) / (1 + v(theta_ref)) - 1``; linear law:
        ``Omega c_max (theta - theta_ref)``. Zero for a material that does
        not swell.
        """
        theta = np.asarray(theta, float)
        if self.volume_change is not None:
            t = np.asarray(self.volume_change, float)
            v = np.interp(theta, t[:, 0], t[:, 1])
            v0 = float(np.interp(theta_ref, t[:, 0], t[:, 1]))
            return (1.0 + v) / (1.0 + v0) - 1.0
        if self.omega_m3_mol is not None:
            if self.c_max_mol_m3 is None:
                raise ConfigError(f"material {self.name!r}: omega_m3_mol needs c_max_mol_m3")
            return self.omega_m3_mol * self.c_max_mol_m3 * (theta - theta_ref)
        return np.zeros_like(theta)

    def partial_molar_volume(self, theta, d: float = 1e-6) -> np.ndarray:
        """Partial molar volume of Li, ``Omega(theta) = (dV/V per mol/m^3)`` at the state ``theta``, m^3/mol.

        ``omega_m3_mol`` for a linear law; for a table, the slope of its volume change per c_max
        at ``theta`` (central difference), relative to the volume at ``theta``.
        """
        if self.c_max_mol_m3 is None:
            raise ConfigError(f"material {self.name!r}: a partial molar volume needs c_max_mol_m3")
        theta = np.asarray(theta, float)
        if self.volume_change is None:
            return np.full_like(theta, self.omega_m3_mol or 0.0)
        # against any reference state r: (v(theta + d) - v(theta - d)) / (1 + v(theta)), r cancels
        up, down = (self.relative_volume_change(theta + s * d, 0.5) for s in (1.0, -1.0))
        here = self.relative_volume_change(theta, 0.5)
        return (up - down) / (2 * d * self.c_max_mol_m3 * (1.0 + here))

    def swelling_strain(self, theta, theta_ref: float) -> np.ndarray:
        """Isotropic chemical strain ``eps* = (dV/V) / 3`` (PHYSICS.md section 1)."""
        return self.relative_volume_change(theta, theta_ref) / 3.0


_PH = "shared/PHYSICS.md section 4"

#: Named plastic laws (``plasticity = "<name>"`` in a material table). No yield stress of these electrolytes
#: has been measured in a uniaxial test; the values are estimates from nanoindentation hardness or
#: model choices, marked as such, to be swept in a study. LLZO has none: it is brittle (hardness 6-14 GPa,
#: K_IC 0.4-1.5 MPa m^0.5, Ni et al., J. Mater. Sci. 47 (2012) 7978) and cracks long before it could yield.
PLASTICITY_PRESETS: dict[str, J2Plasticity] = {
    "Li6PS5Cl": J2Plasticity(
        300.0, 0.0,
        source="assumption: no measured yield stress of Li6PS5Cl was found; 300 MPa is the low end of "
               "hardness / 3 to hardness / 2 for sulfide SEs of about 1.9 GPa hardness (McGrogan et al., Adv. "
               "Energy Mater. 7 (2017) 1602011, Li2S-P2S5 glass) and the value of PHYSICS.md 3(e); perfectly "
               "plastic. Sweep 50-1000 MPa"),
    "LPS": J2Plasticity(
        900.0, 0.0,
        source="assumption: hardness / 2 of the 70Li2S-30P2S5 glass (about 1.9 GPa, McGrogan et al. 2017; "
               "for E/H near 10 the hardness is 1.5-2 x the yield stress); rate dependence measured by "
               "Herbert et al., J. Mater. Res. 39 (2024) 2856, not parametrised here"),
    "PEO": J2Plasticity(
        0.3, 0.0, viscosity_s=10.0, rate_exponent=1.0,
        source="assumption: PEO-LiTFSI near 60-80 C, E 1-3 MPa (G' 0.4-1 MPa); yield 0.1-0.5 MPa and a "
               "relaxation time of 1-100 s are model choices after Qin et al., Mech. Mater. (2023) 104773 "
               "(elastic-viscoplastic model of PEO electrolytes); sweep them"),
}


#: Named presets. Sources are the literature behind the PHYSICS.md table.
PRESETS: dict[str, Material] = {
    m.name: m
    for m in (
        Material(
            "NMC811", 140.0, 0.3, D_m2_s=4e-15, c_max_mol_m3=63104.0,
            # dV/V against the fully lithiated state; the -5.1 % end point (3.0 -> 4.3 V,
            # theta about 0.22) is from PHYSICS.md; the shape (small change to theta 0.5,
            # collapse at high delithiation) follows the lattice-volume curves of
            # de Biasi et al., J. Phys. Chem. C 121 (2017) 26163 and Koerver et al.,
            # Energy Environ. Sci. 11 (2018) 2142. Intermediate points are approximate.
            volume_change=((0.22, -0.051), (0.3, -0.037), (0.4, -0.024), (0.5, -0.015),
                           (0.6, -0.010), (0.8, -0.004), (1.0, 0.0)),
            # OCP and kinetics: Chen et al., J. Electrochem. Soc. 167 (2020) 080534, as PyBaMM's
            # "Chen2020" set: i0 = m_ref sqrt(c_e c_s (c_max - c_s)), m_ref = 3.42e-6 (A/m^2)(m^3/mol)^1.5,
            # at c_e = 1000 mol/m^3 of the liquid cell it was fitted in: k0 = m_ref sqrt(1000) / F
            ocp="Chen2020-NMC811", k0_m_s=3.42e-6 * 1000**0.5 / FARADAY,
            source=f"{_PH}; E: secondary-particle nanoindentation (199 GPa for dense pellets); "
                   "volume change: de Biasi 2017, Koerver 2018 (shape approximate); OCP and k0: Chen 2020 "
                   "(liquid-electrolyte fit, carried over to the SE interface)",
        ),
        Material("NMC", 140.0, 0.3, D_m2_s=7e-15, c_max_mol_m3=38320.0, omega_m3_mol=1.338e-6,
                 source=f"{_PH}; generic NMC of chemo-mechanical models (about 5.9 % over theta 0..1)"),
        Material("LiCoO2", 191.0, 0.2, D_m2_s=5.4e-15, c_max_mol_m3=49943.0, omega_m3_mol=-7.28e-7,
                 source=f"{_PH}; E of sintered pellets"),
        Material("graphite", 15.0, 0.3, D_m2_s=3.9e-14, c_max_mol_m3=28700.0, omega_m3_mol=3.1e-6,
                 source=f"{_PH}; anode"),
        Material("Li6PS5Cl", 22.0, 0.3, kappa_S_m=0.2,
                 source=f"{_PH}; argyrodite sulfide SE, nu assumed; kappa: 0.2 S/m, the low end of the "
                        "0.2-0.3 S/m of cold-pressed pellets at room temperature (PHYSICS.md section 5)"),
        Material("LPS", 18.5, 0.3,
                 source=f"{_PH}; Li2S-P2S5 glass, Sakuda et al., Sci. Rep. 3 (2013) 2261; nu assumed"),
        Material("LGPS", 37.0, 0.3, source=f"{_PH}; Li10GeP2S12, atomistic value; nu assumed"),
        Material("LLZO", 150.0, 0.26,
                 source=f"{_PH}; cubic garnet, Ni et al., J. Mater. Sci. 47 (2012) 7978"),
        Material("PEO", 0.002, 0.45, source=f"{_PH}; PEO-LiX polymer SE, 1-3 MPa"),
    )
}


def get_material(spec, key: str = "materials") -> Material:
    """A material from a preset name or an inline table.

    Parameters
    ----------
    spec : str or mapping
        Preset name (case-insensitive), or a table with ``E_GPa``, ``nu`` and
        optionally ``D_m2_s``, ``c_max_mol_m3``, ``volume_change``,
        ``omega_m3_mol``, ``name``, and ``base`` (a preset the table
        overrides).
    key : str
        Config key, for error messages.
    """
    if isinstance(spec, Material):
        return spec
    if isinstance(spec, str):
        for name, m in PRESETS.items():
            if name.lower() == spec.lower():
                return m
        raise ConfigError(
            f"{key} = {spec!r} is not a preset; known presets: {', '.join(PRESETS)} "
            "(`tomomech materials` lists them), or give an inline table {E_GPa = ..., nu = ...}"
        )
    if not isinstance(spec, dict):
        raise ConfigError(f"{key} must be a preset name or a table, got {type(spec).__name__}")
    allowed = {"name", "base", "E_GPa", "nu", "D_m2_s", "c_max_mol_m3", "volume_change",
               "omega_m3_mol", "ocp", "k0_m_s", "alpha_a", "alpha_c", "kappa_S_m", "plasticity", "source"}
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(f"{key}: unknown material keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    fields = {}
    if "base" in spec:
        base = get_material(spec["base"], key + ".base")
        fields = {f: getattr(base, f) for f in allowed - {"base"}}
    fields.update({k: v for k, v in spec.items() if k != "base"})
    fields.setdefault("name", f"custom({key})")
    fields.setdefault("source", "inline table in the config")
    for req in ("E_GPa", "nu"):
        if req not in fields:
            raise ConfigError(f"{key}: inline material needs {req}")
    for k in ("E_GPa", "nu", "D_m2_s", "c_max_mol_m3", "omega_m3_mol", "k0_m_s", "alpha_a", "alpha_c", "kappa_S_m"):
        v = fields.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ConfigError(f"{key}.{k} must be a number, got {v!r}")
    for k in ("volume_change", "ocp"):
        if fields.get(k) is not None and not isinstance(fields[k], str):
            try:
                fields[k] = tuple(tuple(float(x) for x in p) for p in fields[k])
            except (TypeError, ValueError):
                raise ConfigError(f"{key}.{k} must be a table of [theta, value] pairs, got {fields[k]!r}") from None
    fields["plasticity"] = plasticity_law(fields.get("plasticity"), key)
    return Material(**fields)


def plasticity_law(spec, key: str = "materials") -> J2Plasticity | None:
    """A plastic law from a preset name (:data:`PLASTICITY_PRESETS`), a table, or None (elastic)."""
    if spec is None or isinstance(spec, J2Plasticity):
        return spec
    if isinstance(spec, str):
        for name, law in PLASTICITY_PRESETS.items():
            if name.lower() == spec.lower():
                return law
        raise ConfigError(f"{key}.plasticity = {spec!r} is not a plastic law; known: {', '.join(PLASTICITY_PRESETS)} "
                          "(LLZO stays elastic), or give a table {yield_MPa = ..., hardening_MPa = ...}")
    if not isinstance(spec, dict):
        raise ConfigError(f"{key}.plasticity must be a law's name or a table {{yield_MPa = ..., hardening_MPa = ...}}, "
                          f"got {spec!r}")
    allowed = {"yield_MPa", "hardening_MPa", "viscosity_s", "rate_exponent", "source"}
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(f"{key}.plasticity: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    if "yield_MPa" not in spec:
        raise ConfigError(f"{key}.plasticity needs yield_MPa")
    return J2Plasticity(**{"source": "inline table in the config", **spec})
