"""Readout chain: flat-field mean/variance against the compound-Poisson + electronic model, the Poisson
sampler, the spectral spread factor, blur, output conventions and input checks."""
import numpy as np
import pytest
from scipy import stats

import xsim
from xsim.checks import XsimInputError
from xsim.detector import Detector
from xsim.projector import project
from xsim.readout import Readout, display, log_image, spectral_spread_factor
from xsim.volume import Phantom

SPECTRUM = xsim.Spectrum.tungsten(80.0, {"Al": 2.5}, bin_keV=1.0)


def _flat_field(shape=(48, 48), pixel_mm=0.6):
    """Expected flat-field signal (keV / mAs) and detected photons (/ mAs) from the projector (empty phantom)."""
    empty = Phantom(np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 2), np.float32), np.eye(4), ["air"])
    camera = xsim.CArm(detector_shape=shape, pixel_mm=pixel_mm).view(0.0, 0.0)
    proj = project(empty, camera, spectrum=SPECTRUM, photons=True)
    return proj.primary.astype(float), proj.photons.astype(float), camera.pixel_mm


@pytest.mark.parametrize("mas, blur_mm, electronic_keV", [(0.002, 0.0, 0.0), (0.002, 0.3, 60.0),
                                                         (0.05, 0.3, 60.0), (1.0, 0.19, 40.0)])
def test_flat_field_mean_and_variance_match_the_model_within_3_percent(mas, blur_mm, electronic_keV):
    # Model (xsim.readout docstring; compound Poisson, Whiting et al., Med. Phys. 33 (2006) 3290):
    # mean = gain S + offset, var = gain^2 (k e_bar S sum(psf^2) + sigma_e^2)
    signal, photons, pixel_mm = _flat_field()
    readout = Readout(blur_sigma_mm=blur_mm, electronic_noise_keV=electronic_keV, gain_adu_per_keV=0.5,
                      offset_adu=100.0)
    k = spectral_spread_factor(SPECTRUM, Detector())
    rng = np.random.default_rng(7)
    frames = np.stack([readout.read(signal * mas, photons * mas, pixel_mm, rng, spread_factor=k)
                       for _ in range(300)]).astype(float)
    inner = (slice(None), slice(6, -6), slice(6, -6))  # away from the PSF's edge extension
    frames = frames[inner]
    s, n = signal[inner[1:]] * mas, photons[inner[1:]] * mas
    model_mean = 0.5 * s + 100.0
    model_var = 0.25 * (k * (s / n) * s * readout.psf_sum_of_squares(pixel_mm) + electronic_keV**2)
    measured_mean = frames.mean(axis=0)
    measured_var = frames.var(axis=0, ddof=1)
    assert np.mean(measured_mean - 100.0) / np.mean(model_mean - 100.0) == pytest.approx(1.0, abs=0.03)
    assert np.mean(measured_var) / np.mean(model_var) == pytest.approx(1.0, abs=0.03)


def test_detected_photons_are_poisson_chi_square():
    # photon-counting detector, no blur or electronic noise: the frame is the Poisson count itself
    mean = 3.7
    readout = Readout.ideal()
    frame = readout.read(np.full(200_000, mean), np.full(200_000, mean), 1.0, np.random.default_rng(3))
    counts = np.bincount(frame.astype(int))
    k = np.arange(12)
    expected = stats.poisson.pmf(k, mean) * frame.size
    observed = counts[:12].astype(float)
    expected[-1] += frame.size * stats.poisson.sf(11, mean)  # last bin: >= 11
    observed[-1] += counts[12:].sum()
    chi2, p = stats.chisquare(observed, expected)
    assert p > 1e-3, (chi2, p)


def test_spectral_spread_factor():
    assert spectral_spread_factor(SPECTRUM, Detector(photon_counting=True)) == 1.0
    assert spectral_spread_factor(xsim.Spectrum.monoenergetic(60.0), Detector()) == pytest.approx(1.0, abs=1e-12)


def test_readout_variance_matches_a_photon_by_photon_compound_poisson_simulation():
    # Independent check of k and of the Gaussian spread given N: simulate every detected photon (energy
    # drawn from the detected spectrum Phi(E) eta(E), deposit w(E)/eta(E)) and sum the deposits per trial.
    detector = Detector()
    e = SPECTRUM.energies_keV[SPECTRUM.fluence > 0]
    eta = np.asarray(detector.absorption_efficiency(e))
    deposit = np.asarray(detector.response(e)) / eta
    p = SPECTRUM.fluence[SPECTRUM.fluence > 0] * eta
    rng = np.random.default_rng(5)
    n_mean, trials = 50.0, 40_000
    counts = rng.poisson(n_mean, trials)
    energies = rng.choice(deposit, size=counts.sum(), p=p / p.sum())
    sums = np.add.reduceat(energies, np.r_[0, np.cumsum(counts)[:-1]]) * (counts > 0)
    signal_mean = n_mean * np.sum(p * deposit) / p.sum()
    frame = Readout.ideal().read(np.full(trials, signal_mean), np.full(trials, n_mean), 1.0,
                                 np.random.default_rng(6), spread_factor=spectral_spread_factor(SPECTRUM, detector))
    assert frame.mean() == pytest.approx(sums.mean(), rel=0.005)
    assert frame.var() / sums.var() == pytest.approx(1.0, abs=0.03)  # statistical error ~1 %


def test_same_seed_same_frame_and_noise_free_frame_is_the_expected_signal():
    signal, photons, pixel_mm = _flat_field((16, 16))
    readout = Readout()
    a = readout.read(signal, photons, pixel_mm, np.random.default_rng(1))
    b = readout.read(signal, photons, pixel_mm, np.random.default_rng(1))
    c = readout.read(signal, photons, pixel_mm, np.random.default_rng(2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    clean = Readout(blur_sigma_mm=0.0).read(signal, photons, pixel_mm, None, noise=False)
    np.testing.assert_allclose(clean, signal, rtol=1e-6)


def test_blur_preserves_the_mean_and_spreads_a_point():
    readout = Readout(blur_sigma_mm=1.2)
    point = np.zeros((31, 31))
    point[15, 15] = 1.0
    blurred = readout.blur(point, 0.6)
    assert blurred.sum() == pytest.approx(1.0, rel=1e-9)
    rows = np.arange(31) - 15
    sigma_px = np.sqrt(np.sum(blurred.sum(axis=1) * rows**2))
    assert sigma_px == pytest.approx(2.0, rel=0.02)  # 1.2 mm / 0.6 mm


def test_outputs_transmission_log_display():
    readout = Readout(gain_adu_per_keV=2.0, offset_adu=10.0)
    flat = np.full((4, 4), 100.0)
    raw = 2.0 * np.array([[100.0, 50.0, 25.0, 0.0]] * 4) + 10.0
    t = readout.transmission(raw, flat)
    np.testing.assert_allclose(t[0], [1.0, 0.5, 0.25, 0.0])
    np.testing.assert_allclose(log_image(t)[0, :3], [0.0, np.log(2), np.log(4)], rtol=1e-6)
    fluoro = display(np.tile(np.linspace(0.01, 1.0, 100), (10, 1)))
    assert fluoro[0, 0] < fluoro[0, -2]  # more attenuation is darker
    assert 0.0 <= fluoro.min() and fluoro.max() <= 1.0


def test_bad_readout_inputs():
    with pytest.raises(XsimInputError, match="blur_sigma_mm"):
        Readout(blur_sigma_mm=-1.0)
    with pytest.raises(XsimInputError, match="electronic_noise_keV"):
        Readout(electronic_noise_keV=-5.0)
    with pytest.raises(XsimInputError, match="gain_adu_per_keV"):
        Readout(gain_adu_per_keV=0.0)
    with pytest.raises(XsimInputError, match="rng"):
        Readout().read(np.ones((2, 2)), np.ones((2, 2)), 1.0, None)
    with pytest.raises(XsimInputError, match="look"):
        display(np.ones((2, 2)), look="sepia")
