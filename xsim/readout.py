"""Readout: what a flat-panel detector makes of the expected signal (quantum noise, blur, electronic
noise, gain and offset) and the output conventions (raw, transmission, log, display).

:mod:`xsim.detector` owns the *energy response* (mean keV deposited per incident photon); this module
owns the *readout chain* that turns the expected per-pixel signal into one noisy frame:

1. Quantum noise, compound Poisson (Whiting et al., "Properties of preprocessed sinogram data in x-ray
   computed tomography", Med. Phys. 33 (2006) 3290; DeepDRR, Unberath et al., MICCAI 2018, also draws
   Poisson photon counts). The number of detected (interacting)
   photons in a pixel is Poisson, ``N ~ Poisson(n)``, with ``n`` = expected detected photons. Each
   photon deposits a random energy ``e`` whose mean is ``e_bar = S / n`` (S: expected signal in keV).
   The energy-integrated signal ``sum_{i<=N} e_i`` has mean ``S`` and variance ``n <e^2>``:

       Var = S * e_bar * k,    k = <e^2> / <e>^2  (spectral spread of the deposited energies)

   k is computed once per spectrum from the *unattenuated* beam incident on the panel (its detected
   spectrum ``Phi(E) eta(E)``, deposit per interaction ``w(E) / eta(E)``); beam hardening behind the
   patient narrows the spectrum, so there k slightly overestimates the variance. Swank (conversion) noise
   of the scintillator is not modelled. We draw ``N`` exactly (Poisson) and the spread of the sum of
   energies given N as a Gaussian of variance ``N (k - 1) e_bar^2``:  ``signal = e_bar (N + sqrt((k-1) N) z)``.
   A photon-counting detector has ``e = 1`` count, ``k = 1``: pure Poisson.
2. Blur: the scintillator spreads each photon's light, so the quantum noise is blurred with the signal:
   a Gaussian PSF of standard deviation ``blur_sigma_mm`` (MTF(f) = exp(-2 pi^2 sigma^2 f^2)). It
   reduces the white quantum variance by ``sum_ij psf_ij^2`` and correlates neighbouring pixels.
3. Electronic noise: additive Gaussian of standard deviation ``electronic_noise_keV`` per pixel
   (in keV-equivalent signal: divide by the mean deposit per photon, ~30-50 keV, for photon units),
   added after the blur (it arises in the readout electronics, pixel by pixel).
4. Gain and offset: ``raw = gain_adu_per_keV * signal + offset_adu`` (ADU).

Flat-field model (what ``validation/noise_statistics.py`` checks), for expected flat signal S:
``mean(raw) = gain S + offset`` and ``var(raw) = gain^2 (k e_bar S sum psf^2 + sigma_e^2)``.

Output conventions (all float32, from one raw frame):
``raw`` (ADU); ``transmission = (raw - offset) / (gain * flat)`` with ``flat`` the expected (noise-free)
flat-field signal, i.e. a gain/offset/flat-field corrected image; ``log = -ln(transmission)`` (the
line-integral-like image); ``display`` a windowed 0-1 image in the fluoroscopy look (dense = dark).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from .checks import XsimInputError, check_choice, check_range, check_type
from .detector import Detector
from .physics.spectra import Spectrum

__all__ = ["Readout", "spectral_spread_factor", "display", "log_image"]

# Gaussian PSF sigma with MTF 0.5 at 1 cycle/mm (sigma = sqrt(ln 2 / 2) / pi mm), the order of an
# indirect CsI:Tl panel; set it from your detector's measured MTF.
_DEFAULT_BLUR_SIGMA_MM = 0.19
# About one detected photon of fluoroscopic energy (~40 keV deposit) per pixel: flat panels have an
# additive noise of the order of one X-ray quantum at fluoroscopic doses.
_DEFAULT_ELECTRONIC_NOISE_KEV = 40.0
_MIN_TRANSMISSION = 1e-6  # floor before the logarithm (a pixel may read <= 0 after electronic noise)


def spectral_spread_factor(spectrum: Spectrum, detector: Detector) -> float:
    """k = <e^2> / <e>^2 of the energy deposited per detected photon, for the unattenuated beam.

    Detected spectrum ``Phi(E) eta(E)`` (``eta``: absorption efficiency), deposit per detected photon
    ``e(E) = w(E) / eta(E)`` (``w``: :meth:`Detector.response`) at normal incidence. 1 for a
    photon-counting detector (compound Poisson statistics, Whiting et al. 2006).
    """
    check_type("spectrum", spectrum, Spectrum)
    check_type("detector", detector, Detector)
    if detector.photon_counting:
        return 1.0
    keep = spectrum.fluence > 0
    energies, fluence = spectrum.energies_keV[keep], spectrum.fluence[keep]
    eta = np.asarray(detector.absorption_efficiency(energies), dtype=float)
    deposit = np.asarray(detector.response(energies), dtype=float) / np.maximum(eta, 1e-300)
    p = fluence * eta
    mean = np.sum(p * deposit) / np.sum(p)
    return float(np.sum(p * deposit**2) / np.sum(p) / mean**2)


class Readout:
    """Detector readout chain: quantum noise, blur, electronic noise, gain and offset.

    Parameters
    ----------
    blur_sigma_mm : float
        Standard deviation of the Gaussian PSF at the detector, mm, >= 0 (0: no blur). Default 0.19
        (MTF 0.5 at 1 cycle/mm).
    electronic_noise_keV : float
        Standard deviation of the additive electronic noise per pixel, in keV of deposited energy (counts
        for a photon-counting detector), >= 0. Default 40.
    gain_adu_per_keV : float
        Conversion gain, ADU per keV (per count), > 0. Default 1.
    offset_adu : float
        Dark offset, ADU. Default 0.
    """

    def __init__(self, blur_sigma_mm: float = _DEFAULT_BLUR_SIGMA_MM,
                 electronic_noise_keV: float = _DEFAULT_ELECTRONIC_NOISE_KEV,
                 gain_adu_per_keV: float = 1.0, offset_adu: float = 0.0):
        self.blur_sigma_mm = float(check_range("blur_sigma_mm", blur_sigma_mm, 0.0, 10.0, unit="mm"))
        self.electronic_noise_keV = float(check_range("electronic_noise_keV", electronic_noise_keV, 0.0,
                                                      unit="keV"))
        self.gain_adu_per_keV = float(check_range("gain_adu_per_keV", gain_adu_per_keV, 0.0,
                                                  low_inclusive=False))
        self.offset_adu = float(check_range("offset_adu", offset_adu))

    @classmethod
    def ideal(cls) -> Readout:
        """No blur, no electronic noise, unit gain, zero offset (quantum noise only, when noise is on)."""
        return cls(blur_sigma_mm=0.0, electronic_noise_keV=0.0)

    def to_dict(self) -> dict:
        """The parameters, for the settings saved with every image."""
        return {"blur_sigma_mm": self.blur_sigma_mm, "electronic_noise_keV": self.electronic_noise_keV,
                "gain_adu_per_keV": self.gain_adu_per_keV, "offset_adu": self.offset_adu}

    def sigma_px(self, pixel_mm) -> tuple[float, float]:
        """PSF standard deviation in pixels along (rows, cols) for the detector pixel size (row, col) mm."""
        row_mm, col_mm = (float(p) for p in np.broadcast_to(np.asarray(pixel_mm, dtype=float), (2,)))
        return self.blur_sigma_mm / row_mm, self.blur_sigma_mm / col_mm

    def blur(self, image: np.ndarray, pixel_mm) -> np.ndarray:
        """Apply the PSF (edges: nearest-pixel extension, i.e. the panel continues as at its border)."""
        if self.blur_sigma_mm == 0.0:
            return image
        return gaussian_filter(image, self.sigma_px(pixel_mm), mode="nearest", truncate=4.0)

    def psf_sum_of_squares(self, pixel_mm) -> float:
        """``sum psf^2`` of the discrete PSF: the factor by which blur reduces white-noise variance."""
        if self.blur_sigma_mm == 0.0:
            return 1.0
        sy, sx = self.sigma_px(pixel_mm)
        half = int(4.0 * max(sy, sx) + 1) + 1
        delta = np.zeros((2 * half + 1, 2 * half + 1))
        delta[half, half] = 1.0
        return float(np.sum(gaussian_filter(delta, (sy, sx), mode="constant", truncate=4.0) ** 2))

    def read(self, signal_keV: np.ndarray, photons: np.ndarray, pixel_mm, rng: np.random.Generator | None,
             spread_factor: float = 1.0, noise: bool = True) -> np.ndarray:
        """One raw frame (ADU, float32) from the expected signal and detected photons of each pixel.

        Parameters
        ----------
        signal_keV : ndarray (rows, cols)
            Expected signal per pixel for the whole exposure, keV (counts for photon counting).
        photons : ndarray (rows, cols)
            Expected detected photons per pixel for the whole exposure.
        pixel_mm : float or (float, float)
            Detector pixel size (row, col), mm, for the PSF.
        rng : numpy.random.Generator or None
            Source of the noise; required when ``noise``.
        spread_factor : float
            k = <e^2>/<e>^2 (:func:`spectral_spread_factor`), >= 1.
        noise : bool
            Draw quantum and electronic noise; False gives the expected (blurred) frame.
        """
        signal = np.asarray(signal_keV, dtype=np.float64)
        n_mean = np.asarray(photons, dtype=np.float64)
        if signal.shape != n_mean.shape:
            raise XsimInputError(f"signal_keV {signal.shape} and photons {n_mean.shape} must have one shape")
        check_range("spread_factor", spread_factor, 1.0 - 1e-9)
        if noise:
            if rng is None:
                raise XsimInputError("rng must be a numpy Generator when noise=True")
            e_bar = np.divide(signal, n_mean, out=np.zeros_like(signal), where=n_mean > 0)
            counts = rng.poisson(n_mean).astype(np.float64)
            if spread_factor > 1.0:
                counts += np.sqrt((spread_factor - 1.0) * counts) * rng.standard_normal(counts.shape)
            signal = e_bar * counts
        signal = self.blur(signal, pixel_mm)
        if noise and self.electronic_noise_keV > 0.0:
            signal = signal + self.electronic_noise_keV * rng.standard_normal(signal.shape)
        return (self.gain_adu_per_keV * signal + self.offset_adu).astype(np.float32)

    def read_on_device(self, signal_keV: Any, photons: Any, pixel_mm, generator: Any,
                       spread_factor: float = 1.0, noise: bool = True) -> Any:
        """:meth:`read` for torch tensors on a GPU (the cuda backend's rendering): the same chain in float64
        on the device, returning a float32 tensor there.

        The random numbers come from ``generator`` (a ``torch.Generator`` on that device): same seed, same
        frame on the GPU, but not the frame :meth:`read` draws from a numpy generator with that seed. The PSF
        is :meth:`blur`'s (scipy's sampled Gaussian, radius ``int(4 sigma + 0.5)``, nearest-pixel edges).
        """
        import torch

        signal = signal_keV.double()
        n_mean = photons.double()
        if signal.shape != n_mean.shape:
            raise XsimInputError(f"signal_keV {tuple(signal.shape)} and photons {tuple(n_mean.shape)} must have "
                                 "one shape")
        check_range("spread_factor", spread_factor, 1.0 - 1e-9)
        if noise:
            if generator is None:
                raise XsimInputError("generator must be a torch.Generator when noise=True")
            e_bar = torch.where(n_mean > 0, signal / torch.where(n_mean > 0, n_mean, 1.0), 0.0)
            counts = torch.poisson(n_mean, generator=generator)
            if spread_factor > 1.0:
                counts = counts + torch.sqrt((spread_factor - 1.0) * counts) * torch.randn(
                    counts.shape, generator=generator, dtype=counts.dtype, device=counts.device)
            signal = e_bar * counts
        signal = self._blur_device(signal, pixel_mm)
        if noise and self.electronic_noise_keV > 0.0:
            signal = signal + self.electronic_noise_keV * torch.randn(
                signal.shape, generator=generator, dtype=signal.dtype, device=signal.device)
        return (self.gain_adu_per_keV * signal + self.offset_adu).float()

    def _blur_device(self, image: Any, pixel_mm) -> Any:
        """:meth:`blur` of a torch tensor (..., rows, cols): the separable sampled Gaussian of
        scipy.ndimage.gaussian_filter (truncate 4), rows then columns, edges extended."""
        import torch
        import torch.nn.functional as F

        if self.blur_sigma_mm == 0.0:
            return image
        shape = image.shape
        x = image.reshape(-1, 1, *shape[-2:])
        for axis, sigma in enumerate(self.sigma_px(pixel_mm)):
            radius = int(4.0 * sigma + 0.5)
            offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
            weights = torch.exp(-0.5 / sigma**2 * offsets**2)
            weights = weights / weights.sum()
            if axis == 0:
                x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), weights.view(1, 1, -1, 1))
            else:
                x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), weights.view(1, 1, 1, -1))
        return x.reshape(shape)

    def transmission(self, raw: np.ndarray, flat_keV: np.ndarray) -> np.ndarray:
        """Gain/offset/flat-field corrected image: ``(raw - offset) / (gain * flat_keV)``, float32."""
        flat = self.gain_adu_per_keV * np.asarray(flat_keV, dtype=np.float64)
        return ((np.asarray(raw, dtype=np.float64) - self.offset_adu) / flat).astype(np.float32)

    def __repr__(self) -> str:
        return "Readout(" + ", ".join(f"{k}={v:g}" for k, v in self.to_dict().items()) + ")"


def log_image(transmission: np.ndarray) -> np.ndarray:
    """``-ln(transmission)``, float32, with transmission floored at 1e-6 (noise can push it to <= 0)."""
    t = np.maximum(np.asarray(transmission, dtype=np.float64), _MIN_TRANSMISSION)
    return (-np.log(t)).astype(np.float32)


def display(transmission: np.ndarray, look: str = "fluoro", percentiles=(1.0, 99.0),
            gamma: float = 1.0) -> np.ndarray:
    """A windowed image in [0, 1] for viewing, float32.

    The window spans the given percentiles of ``-ln(transmission)`` over the pixels behind the patient
    (transmission < 0.9, so the direct beam does not set the window; all pixels if there are too few).

    Parameters
    ----------
    transmission : ndarray
        Flat-field corrected image (:attr:`Rendering.transmission`).
    look : {"fluoro", "radiograph"}
        ``"fluoro"``: more attenuation is darker (contrast-filled vessels, bone and metal dark on a bright
        background, as on a fluoroscopy monitor); ``"radiograph"``: inverted (bone white).
    percentiles : (float, float)
        Lower and upper window percentiles of the log image, in [0, 100].
    gamma : float
        Power applied to the windowed attenuation before the look, > 0.
    """
    check_choice("look", look, ("fluoro", "radiograph"))
    lo_p, hi_p = (float(p) for p in percentiles)
    check_range("percentiles", [lo_p, hi_p], 0.0, 100.0)
    check_range("gamma", gamma, 0.0, low_inclusive=False)
    att = log_image(transmission)
    body = att[np.asarray(transmission) < 0.9]
    sample = body if body.size >= 0.02 * att.size else att.ravel()
    lo, hi = np.percentile(sample, [lo_p, hi_p])
    windowed = np.clip((att - lo) / max(hi - lo, 1e-12), 0.0, 1.0) ** gamma
    out = 1.0 - windowed if look == "fluoro" else windowed
    return out.astype(np.float32)
