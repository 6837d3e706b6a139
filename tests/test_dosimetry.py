"""Tests of xsim.dosimetry: the air-kerma detector's per-photon signal (E (mu_en/rho)_air / cos on a planar
surface), Monte Carlo air-kerma maps against the inverse-square law (incl. oblique pixels), unit
conversions and input errors."""
import numpy as np
import pytest

from xsim.checks import XsimInputError
from xsim.detector import Detector
from xsim.dosimetry import (
    KEV_PER_G_TO_UGY,
    THIN_LAYER_MU_T,
    AirKermaDetector,
    air_kerma_uGy,
    incident_air_kerma_uGy,
    mc_air_kerma_uGy,
)
from xsim.montecarlo import monte_carlo
from xsim.physics.materials import material
from xsim.physics.spectra import Spectrum
from xsim.validation.mc_common import frontal_camera, slab_phantom


def test_signal_is_kerma_factor_over_cos():
    det = AirKermaDetector()
    e = np.array([20.0, 60.0, 120.0])
    factor = e * material("air").mu_en_over_rho(e)
    # normal incidence: exactly E (mu_en/rho)_air
    np.testing.assert_allclose(det.response(e, 1.0), factor, rtol=1e-12)
    # oblique: 1/cos within the thin-layer bound tau/2 (1/cos - 1) (module docstring)
    for cos in (0.9, 0.7, 0.5):
        bound = THIN_LAYER_MU_T / 2 * (1 / cos - 1)
        np.testing.assert_allclose(det.response(e, cos), factor / cos, rtol=bound)
    # the kernel's form signal (1 - exp(-mu_t / cos)) reproduces response()
    mu_t, signal, _ = det.kernel_tables(e)
    np.testing.assert_allclose(signal * -np.expm1(-mu_t.astype(float) / 0.7), det.response(e, 0.7), rtol=1e-6)


def pixel_mean_inverse_square(camera, n=200):
    """Mean over each pixel of (1000 mm / r)^2 (midpoint rule, n x n points per pixel)."""
    f = camera.detector_frame()
    offsets = (np.arange(n) + 0.5) / n - 0.5
    a, b = np.meshgrid(offsets, offsets, indexing="ij")
    rows, cols = camera.detector_shape
    out = np.empty((rows, cols))
    for v in range(rows):
        for u in range(cols):
            p = f.origin_mm + (u + a[..., None]) * f.u_step_mm + (v + b[..., None]) * f.v_step_mm
            out[v, u] = (1e6 / ((p - camera.source_mm) ** 2).sum(-1)).mean()
    return out


def test_mc_kerma_follows_inverse_square_on_oblique_pixels():
    # Vacuum, a transparent slab: K = K(1 m) (1000/r)^2 per pixel (Spectrum.air_kerma_per_mas_uGy); the corner
    # pixels are hit at ~35 degrees, where scoring without 1/cos would be 18 % low.
    cam = frontal_camera(1000.0, (3, 3), 500.0)
    spectrum = Spectrum.tungsten(80.0, {"Al": 2.5})
    ph = slab_phantom("air", 1.0, 100.0, 400.0, 1000.0, density_g_cm3=0.0)
    r = monte_carlo(ph, cam, spectrum=spectrum, photons=4e5, seed=5, batches=10, detector=AirKermaDetector(),
                    progress=False)
    kerma, std = mc_air_kerma_uGy(r)
    expected = spectrum.air_kerma_per_mas_uGy(1000.0) * pixel_mean_inverse_square(cam)
    assert np.all(np.abs(kerma - expected) <= 3.0 * std + 1e-4 * expected), (kerma / expected, std / kerma)
    assert std.max() / kerma.min() < 0.01


def test_mc_kerma_monoenergetic_units():
    # unit fluence = 1 photon/mm^2 at 1 m = 100 photons/cm^2: K = 100 E (mu_en/rho) keV/g at 1 m
    cam = frontal_camera(1000.0, (1, 1), 10.0)
    ph = slab_phantom("air", 1.0, 20.0, 400.0, 1000.0, density_g_cm3=0.0)
    r = monte_carlo(ph, cam, energy_keV=60.0, photons=1e4, seed=1, batches=4, detector=AirKermaDetector(),
                    progress=False)
    kerma, _ = mc_air_kerma_uGy(r)
    expected = 100.0 * 60.0 * material("air").mu_en_over_rho(60.0) * KEV_PER_G_TO_UGY
    # every photon hits the pixel at cos > 0.99997: only the thin-layer and float32 terms (< 1e-4) remain
    np.testing.assert_allclose(kerma[0, 0], expected, rtol=1e-4)


def test_conversions():
    # 1 keV cm^2/g over 1 cm^2 = 1 keV/g = 1.602176634e-13 Gy (SI 2019 eV)
    assert air_kerma_uGy(1.0, 100.0) == pytest.approx(1.602176634e-7, rel=1e-12)
    spectrum = Spectrum.tungsten(100.0, {"Al": 3.0})
    cam = frontal_camera(1000.0, (4, 4), 1.0)
    point = np.asarray(cam.source_mm) + np.array([0.0, -700.0, 0.0])
    assert incident_air_kerma_uGy(spectrum, cam, point, mas=2.5) == pytest.approx(
        2.5 * spectrum.air_kerma_per_mas_uGy(700.0), rel=1e-12)


def test_input_errors():
    cam = frontal_camera(1000.0, (1, 1), 10.0)
    spectrum = Spectrum.tungsten(80.0, {"Al": 2.5})
    with pytest.raises(XsimInputError, match="point_mm"):
        incident_air_kerma_uGy(spectrum, cam, (0.0, 0.0))
    with pytest.raises(XsimInputError, match="mas"):
        incident_air_kerma_uGy(spectrum, cam, (0.0, 0.0, 0.0), mas=-1.0)
    with pytest.raises(XsimInputError, match="pixel_area_mm2"):
        air_kerma_uGy(1.0, 0.0)
    with pytest.raises(XsimInputError, match="air"):
        AirKermaDetector(air=3)
    ph = slab_phantom("air", 1.0, 20.0, 400.0, 1000.0, density_g_cm3=0.0)
    r = monte_carlo(ph, cam, energy_keV=60.0, photons=100, seed=1, batches=2, detector=Detector(), progress=False)
    with pytest.raises(XsimInputError, match="AirKermaDetector"):
        mc_air_kerma_uGy(r)
