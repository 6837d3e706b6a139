"""Tests of xsim.detector: the energy response of the flat-panel detector."""
import math

import numpy as np
import pytest

from xsim.checks import XsimInputError
from xsim.detector import Detector
from xsim.physics.materials import material

CSI = material("CsI")
ENERGIES_KEV = np.array([20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0])


def test_default_is_600um_bulk_csi():
    det = Detector()
    assert det.material.name == CSI.name and det.thickness_mm == 0.6
    assert det.packing_fraction == 1.0 and det.fill_factor == 1.0 and not det.photon_counting


def test_mu_per_mm_is_density_times_mass_coefficient():
    det = Detector(packing_fraction=0.8)
    expected = CSI.mu_over_rho(ENERGIES_KEV) * 0.8 * CSI.density_g_cm3 / 10.0
    np.testing.assert_allclose(det.mu_per_mm(ENERGIES_KEV), expected, rtol=1e-12)


def test_csi_quantum_efficiency_against_nist_beer_lambert():
    # NIST SRD 126 / XCOM elemental mu/rho at 60 keV (cm^2/g): I 7.579 (Table 3, also in
    # /work/shared/reference/nist_mu_rho.md), Cs 8.250 (XCOM, as shipped in spekpy's nist_mu.dat);
    # CsI mass fractions I 0.48845, Cs 0.51155 (stoichiometry, NIST SRD 126 Table 2), density 4.51 g/cm^3.
    mu_rho_csi = 0.48845 * 7.579 + 0.51155 * 8.250
    qe_nist = 1.0 - math.exp(-mu_rho_csi * 4.51 * 0.06)  # 0.6 mm = 0.06 cm: QE = 0.883
    det = Detector("CsI", thickness_mm=0.6)
    assert det.absorption_efficiency(60.0) == pytest.approx(qe_nist, rel=2e-3)
    assert qe_nist == pytest.approx(0.883, abs=1e-3)


def test_thin_limit_is_e_mu_en_t():
    # mu t << 1: w = E (mu_en/mu)(1 - exp(-mu t)) -> E mu_en t  (first order in t)
    t_mm = 1e-5
    det = Detector(thickness_mm=t_mm)
    mu_en_per_mm = CSI.mu_en_over_rho(ENERGIES_KEV) * CSI.density_g_cm3 / 10.0
    np.testing.assert_allclose(det.energy_weight_keV(ENERGIES_KEV), ENERGIES_KEV * mu_en_per_mm * t_mm,
                               rtol=1e-3)


def test_thick_limit_is_e_mu_en_over_mu():
    det = Detector(thickness_mm=100.0)
    ratio = CSI.mu_en_over_rho(ENERGIES_KEV) / CSI.mu_over_rho(ENERGIES_KEV)
    np.testing.assert_allclose(det.energy_weight_keV(ENERGIES_KEV), ENERGIES_KEV * ratio, rtol=1e-9)
    assert np.all(ratio < 1.0)  # fluorescence and Compton photons escape: the deposit is below E


def test_obliquity_increases_absorption_as_path_over_cos():
    det = Detector()
    cos = np.array([1.0, 0.9, 0.7, 0.5])
    qe = det.absorption_efficiency(80.0, cos)
    assert np.all(np.diff(qe) > 0)
    # an oblique photon sees thickness t / cos: same as a thicker layer at normal incidence
    assert qe[-1] == pytest.approx(Detector(thickness_mm=1.2).absorption_efficiency(80.0), rel=1e-12)


def test_monotonic_in_thickness():
    weights = [Detector(thickness_mm=t).energy_weight_keV(ENERGIES_KEV) for t in (0.1, 0.3, 0.6, 1.0, 2.0)]
    assert np.all(np.diff(np.array(weights), axis=0) > 0)


def test_fill_factor_scales_signal():
    full, half = Detector(), Detector(fill_factor=0.5)
    np.testing.assert_allclose(half.energy_weight_keV(ENERGIES_KEV), 0.5 * full.energy_weight_keV(ENERGIES_KEV),
                               rtol=1e-12)


def test_ideal_detector():
    det = Detector.ideal()
    np.testing.assert_array_equal(det.energy_weight_keV(ENERGIES_KEV, 0.5), ENERGIES_KEV)
    assert det.absorption_efficiency(60.0) == 1.0
    counting = Detector.ideal(photon_counting=True)
    assert counting.response(60.0) == 1.0 and counting.unit == "counts"


def test_photon_counting_response_is_absorption_efficiency():
    det = Detector(photon_counting=True, fill_factor=0.8)
    np.testing.assert_allclose(det.response(ENERGIES_KEV), 0.8 * det.absorption_efficiency(ENERGIES_KEV),
                               rtol=1e-12)


def test_kernel_tables_rebuild_the_response():
    det = Detector()
    mu_t, signal, count = det.kernel_tables(ENERGIES_KEV)
    cos = 0.8
    np.testing.assert_allclose(signal * -np.expm1(-mu_t / cos), det.energy_weight_keV(ENERGIES_KEV, cos),
                               rtol=1e-6)
    np.testing.assert_allclose(count * -np.expm1(-mu_t / cos), det.absorption_efficiency(ENERGIES_KEV, cos),
                               rtol=1e-6)


@pytest.mark.parametrize("kwargs, word", [
    ({"thickness_mm": 0.0}, "thickness_mm"),
    ({"thickness_mm": float("nan")}, "thickness_mm"),
    ({"packing_fraction": 1.5}, "packing_fraction"),
    ({"fill_factor": 0.0}, "fill_factor"),
    ({"material": "unobtainium"}, "unobtainium"),
    ({"material": 3}, "material"),
    ({"photon_counting": "yes"}, "photon_counting"),
])
def test_bad_construction(kwargs, word):
    with pytest.raises(XsimInputError, match=word):
        Detector(**kwargs)


def test_bad_energy_and_angle():
    det = Detector()
    with pytest.raises(XsimInputError, match="energy_keV"):
        det.energy_weight_keV(500.0)
    with pytest.raises(XsimInputError, match="cos_incidence"):
        det.absorption_efficiency(60.0, 0.0)
    with pytest.raises(XsimInputError, match="cos_incidence"):
        det.energy_weight_keV(60.0, 1.2)
