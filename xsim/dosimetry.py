"""Air kerma: scoring it with the Monte Carlo and converting tallies to uGy.

Owns :class:`AirKermaDetector` (a detector stand-in for :func:`xsim.monte_carlo` whose per-photon signal is
the photon's contribution to the air kerma on a planar scoring surface), :func:`mc_air_kerma_uGy` (the
kerma map of such a run, uGy per mAs or per unit fluence), :func:`air_kerma_uGy` (the unit conversion) and
:func:`incident_air_kerma_uGy` (kerma of the unattenuated beam at a point: entrance kerma, dose per mAs).

Air kerma from the fluence spectrum (ICRU 85, 2011, eq. 4.13; IAEA TRS-457, 2007, section 2.2)::

    K = integral Phi_E(E) E (mu_en/rho)_air(E) dE

Fluence on a planar scoring surface. The fluence in a thin slab of thickness dt and area A is its track
length per volume; a photon crossing at angle theta to the normal leaves a track dt / cos(theta), so it adds
1 / (A cos theta) to the fluence (Attix, *Introduction to Radiological Physics*, 1986, section 1.III). Each
photon crossing a pixel of area A thus adds ``E (mu_en/rho)_air(E) / (A cos theta)`` to its kerma.

How the Monte Carlo kernel expresses 1/cos. Its detector signal per photon is
``s(E) (1 - exp(-mu_t(E) / cos))`` (kernels/mc_detector.cuh). :class:`AirKermaDetector` gives a thin layer,
``mu_t = tau`` (constant, 1e-3) and ``s(E) = E (mu_en/rho)_air(E) / (1 - exp(-tau))``, so that

    signal = E (mu_en/rho)_air(E) (1 - exp(-tau / cos)) / (1 - exp(-tau))
           = E (mu_en/rho)_air(E) / cos x [1 - (tau / 2)(1/cos - 1) + O(tau^2)],

exact at normal incidence, within 5e-4 (1/cos - 1) at any other angle (5e-5 at 25 degrees). The kernel
computes ``1 - expf(-x)`` in float32: its rounding adds < 6e-8 / tau = 6e-5 relative. At grazing incidence
the thin layer saturates (signal at most ~1/tau times the normal one) instead of diverging like 1/cos.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .checks import XsimInputError, check_positive, check_range, check_type
from .geometry import Camera
from .physics.materials import Material, material
from .physics.spectra import Spectrum
from .physics.tables import check_energy

__all__ = ["KEV_PER_G_TO_UGY", "AirKermaDetector", "air_kerma_uGy", "incident_air_kerma_uGy", "mc_air_kerma_uGy"]

KEV_PER_G_TO_UGY = 1.602176634e-16 / 1e-3 * 1e6  # 1 keV/g in uGy: J per keV (SI 2019) / kg per g x uGy per Gy
THIN_LAYER_MU_T = 1e-3  # tau above: small for obliquity (5e-4 (1/cos - 1)), large for float32 rounding (6e-5)


class AirKermaDetector:
    """Detector stand-in for :func:`xsim.monte_carlo` scoring air kerma on the detector plane.

    Per photon crossing a pixel: ``E (mu_en/rho)_air(E) / cos(theta)`` in keV cm^2/g (see the module
    docstring for the derivation and the thin-layer form the kernel evaluates). The Monte Carlo images are
    then in keV cm^2/g per pixel per mAs (tube spectrum) or per unit fluence (monoenergetic); divided by the
    pixel area they are air kerma (:func:`mc_air_kerma_uGy`). Photons of every history kind count (primary and
    scatter), as in a free-in-air measurement.

    Parameters
    ----------
    air : str or Material
        The material whose mass energy-absorption coefficient defines the kerma; default ``"air"``
        (``"tg195 air"`` for the TG-195 cases).
    """

    unit = "keV cm^2/g"
    photon_counting = False
    is_ideal = False

    def __init__(self, air: str | Material = "air"):
        self.air = material(air) if isinstance(air, str) else check_type("air", air, Material)

    def kerma_factor(self, energy_keV) -> float | np.ndarray:
        """Fluence-to-kerma factor ``E (mu_en/rho)_air(E)``, keV cm^2/g (kerma in keV/g per photon/cm^2)."""
        e = np.asarray(check_energy(energy_keV), dtype=float)
        out = e * self.air.mu_en_over_rho(e)
        return float(out) if out.ndim == 0 else out

    def response(self, energy_keV, cos_incidence=1.0) -> float | np.ndarray:
        """Signal per photon as the kernel computes it (thin-layer form of ``E (mu_en/rho) / cos``), keV cm^2/g."""
        check_range("cos_incidence", cos_incidence, 0.0, 1.0, low_inclusive=False)
        cos = np.asarray(cos_incidence, dtype=float)
        tau = THIN_LAYER_MU_T
        out = self.kerma_factor(energy_keV) * np.expm1(-tau / cos) / np.expm1(-tau)
        return float(out) if np.ndim(out) == 0 else out

    def kernel_tables(self, energies_keV) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(mu_t, signal_per_interaction, count_per_interaction)`` as in
        :meth:`xsim.detector.Detector.kernel_tables`: the response is ``signal (1 - exp(-mu_t / cos))``."""
        e = np.atleast_1d(np.asarray(check_energy(energies_keV), dtype=float))
        tau = THIN_LAYER_MU_T
        mu_t = np.full(e.shape, tau)
        signal = self.kerma_factor(e) / -np.expm1(-tau)
        count = np.full(e.shape, 1.0 / -np.expm1(-tau))  # one per photon at normal incidence
        return tuple(np.ascontiguousarray(a, dtype=np.float32) for a in (mu_t, signal, count))

    def __repr__(self) -> str:
        return f"AirKermaDetector({self.air.name!r})"


def air_kerma_uGy(signal_keV_cm2_g: Any, pixel_area_mm2: float) -> np.ndarray:
    """Air kerma (uGy) from a summed :class:`AirKermaDetector` signal over a scoring area.

    ``K = sum_photons E (mu_en/rho) / cos / A``: keV cm^2/g divided by the area in cm^2 is keV/g,
    x ``KEV_PER_G_TO_UGY``.

    Parameters
    ----------
    signal_keV_cm2_g : float or array_like
        Summed signal (e.g. a Monte Carlo image, per mAs or per unit fluence).
    pixel_area_mm2 : float
        Scoring area, mm^2, > 0.
    """
    check_positive("pixel_area_mm2", pixel_area_mm2, unit="mm^2")
    return np.asarray(signal_keV_cm2_g, dtype=float) / (pixel_area_mm2 / 100.0) * KEV_PER_G_TO_UGY


def mc_air_kerma_uGy(result: Any) -> tuple[np.ndarray, np.ndarray]:
    """Air-kerma map of a Monte Carlo run scored with :class:`AirKermaDetector`, and its standard error.

    Parameters
    ----------
    result : xsim.montecarlo.MCResult
        Run with ``detector=AirKermaDetector(...)``.

    Returns
    -------
    kerma, kerma_std : numpy.ndarray (rows, cols)
        Air kerma on the detector plane per pixel, uGy per mAs (tube spectrum) or per unit fluence
        (monoenergetic: 1 photon/mm^2 at 1 m); primary and scatter together.
    """
    detector = str(result.settings.get("detector", ""))
    if not detector.startswith("AirKermaDetector"):
        raise XsimInputError(f"result was scored with detector {detector!r}; run monte_carlo with "
                             "detector=xsim.dosimetry.AirKermaDetector() to score air kerma")
    frame = result.camera.detector_frame()
    area = float(np.linalg.norm(np.cross(frame.u_step_mm, frame.v_step_mm)))
    # the four tallies share batches, so their errors are correlated: use the quadrature sum as an estimate
    std = np.sqrt(result.primary_std**2 + result.scatter_std**2)
    return air_kerma_uGy(result.total, area), air_kerma_uGy(std, area)


def incident_air_kerma_uGy(spectrum: Spectrum, camera: Camera, point_mm: Any, mas: float = 1.0) -> float:
    """Air kerma of the unattenuated beam at a point (e.g. the patient's entrance), uGy.

    Inverse square law from the camera's source, in vacuum, no backscatter (ICRU 74 "incident air kerma"):
    ``K = mas x Spectrum.air_kerma_per_mas_uGy(distance)``.

    Parameters
    ----------
    spectrum : Spectrum
        Tube spectrum, photons per mAs per mm^2 at 1 m.
    camera : Camera
        Gives the source position.
    point_mm : (float, float, float)
        World point, mm.
    mas : float
        Tube current-time product, mAs, >= 0.
    """
    check_type("spectrum", spectrum, Spectrum)
    check_type("camera", camera, Camera)
    point = np.asarray(point_mm, dtype=float)
    if point.shape != (3,):
        raise XsimInputError(f"point_mm must be (x, y, z) in mm, got {point_mm!r}")
    check_range("mas", mas, 0.0, None, unit="mAs")
    distance = float(np.linalg.norm(point - np.asarray(camera.source_mm, dtype=float)))
    return float(mas) * spectrum.air_kerma_per_mas_uGy(distance)
