"""Detector: the energy response of a flat-panel X-ray detector (noise, blur and gain come later).

Owns :class:`Detector`: how much signal one photon of energy E, hitting the panel at incidence angle
theta, produces in a pixel. For an energy-integrating scintillator (default: 600 um CsI) the signal is the
mean energy deposited in the sensitive layer,

    w(E, theta) = f * E * (mu_en/mu)(E) * (1 - exp(-mu(E) t / cos theta))            [keV per photon]

(f: fill factor, t: layer thickness, mu: linear attenuation of the layer, mu_en: energy absorption).
``1 - exp(-mu t / cos theta)`` is the Beer-Lambert probability that the photon interacts in the layer
(its quantum, or absorption, efficiency); ``E mu_en/mu`` is the mean energy that stays near the point of
interaction. This is the local-deposition approximation: mu_en (Hubbell & Seltzer, NIST SRD 126, section
3; NISTIR 5632) subtracts the energy carried away by Compton-scattered photons, fluorescence X-rays and
bremsstrahlung, and assumes all of them escape the layer. In CsI, whose K fluorescence (~29-35 keV) is
partly reabsorbed within 0.6 mm, the true deposit lies between this value and ``E * (1 - exp(-mu t))``.
A photon-counting detector counts every interacting photon: w = f * (1 - exp(-mu t / cos theta)).
"""
from __future__ import annotations

import numpy as np

from .checks import XsimInputError, check_positive, check_range, check_type
from .physics.materials import Material, material
from .physics.tables import check_energy

__all__ = ["Detector"]


class Detector:
    """Energy response of a flat-panel detector's sensitive layer.

    Parameters
    ----------
    material : str or Material
        Sensitive layer (scintillator or direct converter); a name from :func:`xsim.material` or a
        :class:`Material`. Default ``"CsI"`` (bulk density 4.51 g/cm^3).
    thickness_mm : float
        Layer thickness in mm, > 0. Default 0.6.
    packing_fraction : float
        Mass of the layer relative to the bulk material, in (0, 1]: columnar CsI fills about 75-80 % of
        its volume. The effective density is ``packing_fraction * material.density_g_cm3``. Default 1.
    fill_factor : float
        Fraction of the pixel area that is sensitive, in (0, 1]; scales the signal. Default 1.
    photon_counting : bool
        Count interacting photons (signal in counts) instead of integrating their energy (signal in keV).

    Notes
    -----
    The response ignores the layer's lateral spread (blur) and the statistics of the conversion (Swank
    noise); those belong to the noise model.
    """

    def __init__(self, material: str | Material = "CsI", thickness_mm: float = 0.6,
                 packing_fraction: float = 1.0, fill_factor: float = 1.0, photon_counting: bool = False):
        self.material = _as_material(material)
        self.thickness_mm = float(check_positive("thickness_mm", thickness_mm, unit="mm"))
        self.packing_fraction = float(check_range("packing_fraction", packing_fraction, 0.0, 1.0,
                                                  low_inclusive=False))
        self.fill_factor = float(check_range("fill_factor", fill_factor, 0.0, 1.0, low_inclusive=False))
        self.photon_counting = bool(check_type("photon_counting", photon_counting, (bool, np.bool_)))
        self.is_ideal = False

    @classmethod
    def ideal(cls, photon_counting: bool = False) -> Detector:
        """A perfect detector: absorbs every photon and keeps all its energy.

        ``energy_weight_keV(E) = E`` (a perfect energy integrator) or, with ``photon_counting=True``,
        one count per incident photon. Obliquity changes nothing.
        """
        det = cls(photon_counting=photon_counting)  # fill factor 1
        det.is_ideal = True
        return det

    # -- coefficients ----------------------------------------------------------------------------------
    def mu_per_mm(self, energy_keV) -> float | np.ndarray:
        """Linear attenuation coefficient of the layer in 1/mm: ``(mu/rho) * packing * rho / 10``.

        Infinite for the ideal detector.
        """
        if self.is_ideal:
            return _out(np.full(np.shape(check_energy(energy_keV)), np.inf))
        rho = self.packing_fraction * self.material.density_g_cm3
        return self.material.mu_over_rho(energy_keV) * rho / 10.0

    def absorption_efficiency(self, energy_keV, cos_incidence=1.0) -> float | np.ndarray:
        """Quantum (absorption) efficiency: probability that a photon interacts in the layer.

        ``1 - exp(-mu t / cos_incidence)`` (Beer-Lambert along the oblique path through the layer).

        Parameters
        ----------
        energy_keV : float or array_like
            Photon energy in keV, within the physics tables' range [1, 200].
        cos_incidence : float or array_like
            Cosine of the angle between the photon direction and the panel normal, in (0, 1];
            broadcast against ``energy_keV``.
        """
        cos = _check_cos(cos_incidence)
        e = np.asarray(check_energy(energy_keV), dtype=float)
        if self.is_ideal:
            return _out(np.ones(np.broadcast(e, cos).shape))
        # -expm1 keeps the thin-layer limit (mu t << 1) exact to rounding
        return _out(-np.expm1(-self.mu_per_mm(e) * self.thickness_mm / cos))

    def energy_weight_keV(self, energy_keV, cos_incidence=1.0) -> float | np.ndarray:
        """Mean energy deposited per incident photon, keV (see the module docstring for the approximation).

        ``fill_factor * E * (mu_en/mu)(E) * (1 - exp(-mu t / cos_incidence))``; ``E`` for the ideal detector.
        """
        cos = _check_cos(cos_incidence)
        e = np.asarray(check_energy(energy_keV), dtype=float)
        if self.is_ideal:
            return _out(e * np.ones(np.broadcast(e, cos).shape))
        ratio = self.material.mu_en_over_rho(e) / self.material.mu_over_rho(e)
        return _out(self.fill_factor * e * ratio * self.absorption_efficiency(e, cos))

    def response(self, energy_keV, cos_incidence=1.0) -> float | np.ndarray:
        """Signal per incident photon: keV (energy integrating) or counts (``photon_counting``)."""
        if self.photon_counting:
            return self.fill_factor * self.absorption_efficiency(energy_keV, cos_incidence)
        return self.energy_weight_keV(energy_keV, cos_incidence)

    def kernel_tables(self, energies_keV) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-energy-bin factors from which a kernel rebuilds the response at any obliquity.

        Returns ``(mu_t, signal_per_interaction, count_per_interaction)``, float32 arrays: the response is
        ``signal_per_interaction * (1 - exp(-mu_t / cos))`` and the detected photons
        ``count_per_interaction * (1 - exp(-mu_t / cos))``. ``mu_t`` is +inf for the ideal detector.
        """
        e = np.atleast_1d(np.asarray(check_energy(energies_keV), dtype=float))
        mu_t = self.mu_per_mm(e) * self.thickness_mm
        count = np.full_like(e, self.fill_factor)
        if self.photon_counting:
            signal = count
        elif self.is_ideal:
            signal = e.copy()
        else:
            signal = self.fill_factor * e * self.material.mu_en_over_rho(e) / self.material.mu_over_rho(e)
        return tuple(np.ascontiguousarray(a, dtype=np.float32) for a in (mu_t, signal, count))

    @property
    def unit(self) -> str:
        """Unit of :meth:`response`: ``"keV"`` or ``"counts"``."""
        return "counts" if self.photon_counting else "keV"

    def __repr__(self) -> str:
        mode = "photon_counting" if self.photon_counting else "energy_integrating"
        if self.is_ideal:
            return f"Detector.ideal({mode})"
        return (f"Detector({self.material.name!r}, thickness_mm={self.thickness_mm:g}, packing_fraction="
                f"{self.packing_fraction:g}, fill_factor={self.fill_factor:g}, {mode})")


def _as_material(value) -> Material:
    if isinstance(value, Material):
        return value
    if isinstance(value, str):
        return material(value)
    raise XsimInputError(f"material must be a material name or a Material, got {type(value).__name__} {value!r}")


def _check_cos(cos_incidence) -> np.ndarray:
    check_range("cos_incidence", cos_incidence, 0.0, 1.0, low_inclusive=False)
    return np.asarray(cos_incidence, dtype=float)


def _out(values) -> float | np.ndarray:
    """A float for a 0-d result, else the array."""
    values = np.asarray(values, dtype=float)
    return float(values) if values.ndim == 0 else values
