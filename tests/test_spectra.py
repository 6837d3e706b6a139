"""Tests for xsim.physics.spectra: SpekPy units, HVLs against SpekPy and AAPM TG-195, Beer-Lambert
filtration, file round trips and input errors."""
import math

import matplotlib
import numpy as np
import pytest
import spekpy

from xsim.checks import XsimInputError
from xsim.physics import spectra
from xsim.physics.materials import material
from xsim.physics.spectra import Spectrum

matplotlib.use("Agg")


def _spek(kvp, anode_angle_deg, al_mm):
    """The SpekPy model ``Spectrum.tungsten`` builds (NIST attenuation data, 1 mAs, 100 cm)."""
    return spekpy.Spek(kvp=kvp, th=anode_angle_deg, dk=0.5, mu_data_source="nist").filter("Al", al_mm)


# ------------------------------------------------------------------------------------------------
# SpekPy units: get_spectrum() is photons cm^-2 keV^-1 at z = 100 cm for mas = 1 (SpekPy docstrings
# of Spek.__init__ and Spek.get_spectrum; get_flu() in photons cm^-2, get_kerma(norm=True) in uGy
# per mAs). Same spectrum, so these agree to rounding.
def test_tungsten_units_match_spekpy_fluence_mean_energy_and_kerma():
    s = Spectrum.tungsten(80, {"Al": 2.5}, anode_angle_deg=12)
    spek = _spek(80, 12, 2.5)
    assert s.total_fluence * 100.0 == pytest.approx(spek.get_flu(), rel=1e-12)  # per mm^2 -> cm^2
    assert s.mean_energy_keV == pytest.approx(spek.get_emean(), rel=1e-12)
    # Both use NIST SRD 126 mu_en/rho of air (xsim's nodes agree with it to 0.05 %), but SpekPy
    # log-log interpolates the coarse SRD 126 grid, up to 3.3 % high between nodes (70 keV) against
    # xsim's fine grid; weighted over a spectrum that is below 1 %.
    assert s.air_kerma_per_mas_uGy() == pytest.approx(spek.get_kerma(norm=True), rel=0.01)
    assert s.energies_keV[0] >= 1.0 and s.energies_keV[-1] < 80.0
    assert np.allclose(np.diff(s.energies_keV), 0.5)


def test_air_kerma_follows_inverse_square():
    s = Spectrum.tungsten(100, {"Al": 3.0})
    assert s.air_kerma_per_mas_uGy(2000.0) == pytest.approx(s.air_kerma_per_mas_uGy() / 4.0, rel=1e-12)


def test_air_kerma_of_a_line_is_fluence_times_energy_times_mu_en():
    # K = phi E mu_en/rho: 1 photon/mm^2 = 100 /cm^2; 60 keV = 60 * 1.602176634e-16 J; cm^2/g -> cm^2/kg.
    s = Spectrum.monoenergetic(60.0, fluence=1.0)
    expected_uGy = 100.0 * 60.0 * 1.602176634e-16 * material("air").mu_en_over_rho(60.0) * 1000.0 * 1e6
    assert s.air_kerma_per_mas_uGy() == pytest.approx(expected_uGy, rel=1e-12)


def test_spekpy_calls_are_cached():
    spectra._spekpy_spectrum.cache_clear()
    a = Spectrum.tungsten(70, {"Al": 2.0})
    b = Spectrum.tungsten(70.0, {"aluminium": 2.0})
    assert spectra._spekpy_spectrum.cache_info().hits == 1
    np.testing.assert_array_equal(a.fluence, b.fluence)


# ------------------------------------------------------------------------------------------------
# HVL against SpekPy's own air-kerma HVL (same spectrum, NIST tables). SpekPy log-log interpolates
# the coarse NIST grids (Al nodes at 50, 60, 80, 100 keV): its Al mu/rho is up to 1.7 % high near
# 70 keV and its air mu_en/rho up to 3.3 %; xsim's tables are fine-grained, so HVLs may differ by up
# to ~2 %.
@pytest.mark.parametrize("kvp", [80, 120])
def test_hvl_agrees_with_spekpy(kvp):
    s = Spectrum.tungsten(kvp, {"Al": 2.5}, anode_angle_deg=12)
    spek = _spek(kvp, 12, 2.5)
    assert s.hvl_mm("Al") == pytest.approx(spek.get_hvl1(), rel=0.02)
    assert s.hvl_mm("Al", order=2) == pytest.approx(spek.get_hvl2(), rel=0.02)
    assert s.hvl_mm("Al", order=2) > s.hvl_mm("Al")  # beam hardening


# AAPM TG-195 (Sechopoulos et al., Med Phys 42(10), 2015), Case 1: RQR-8 100 kVp, 11 deg anode,
# HVL 3.950 mm Al, QVL 9.840 mm Al, mean 50.6 keV; RQR-9 120 kVp, 11 deg, HVL 5.010 mm Al, mean
# 56.4 keV (/work/shared/reference/tg195.md). IEC 61267 defines these beam qualities by kVp and HVL,
# so the SpekPy spectrum is filtered to the quality's HVL and the rest of the spectrum is compared.
# Tolerance 1 %: the four TG-195 codes themselves spread by 1.4 % in the kerma ratio at the QVL
# (0.2473-0.2508), and the mean energies are quoted to 0.1 keV.
@pytest.mark.parametrize(
    "kvp, hvl_mm, mean_keV, qvl_mm",
    [(100, 3.950, 50.6, 9.840), (120, 5.010, 56.4, None)],
    ids=["RQR-8", "RQR-9"],
)
def test_rqr_quality_matches_tg195(kvp, hvl_mm, mean_keV, qvl_mm):
    s = Spectrum.tungsten_with_hvl(kvp, hvl_mm, "Al", anode_angle_deg=11)
    assert s.hvl_mm("Al") == pytest.approx(hvl_mm, rel=1e-6)
    assert s.mean_energy_keV == pytest.approx(mean_keV, rel=0.01)
    if qvl_mm is not None:
        assert s.thickness_for_kerma_fraction("Al", 0.25) == pytest.approx(qvl_mm, rel=0.01)


@pytest.mark.xfail(
    strict=True,
    reason="known model difference: SpekPy's tungsten model needs ~3.1 mm Al (not TG-195's 2.708 mm) "
    "to reach RQR-8's HVL; with 2.708 mm its HVL is 3.66 mm, 7 % low. See validation/spectrum_hvl.py.",
)
def test_rqr8_hvl_at_tg195_nominal_filtration():
    s = Spectrum.tungsten(100, {"Al": 2.708}, anode_angle_deg=11)
    assert s.hvl_mm("Al") == pytest.approx(3.950, rel=0.03)


# TG-195 Case 1 monoenergetic beams: HVL 0.2273 cm Al at 30 keV and 1.511 cm at 100 keV, QVL twice
# that. For a line the narrow-beam HVL is ln2 / mu exactly; 1 % covers the aluminium density and
# table differences (NIST mu/rho vs the codes' own data).
@pytest.mark.parametrize("energy_keV, hvl_cm, qvl_cm", [(30.0, 0.2273, 0.4546), (100.0, 1.511, 3.022)])
def test_monoenergetic_hvl_is_ln2_over_mu_and_matches_tg195(energy_keV, hvl_cm, qvl_cm):
    al = material("Al")
    s = Spectrum.monoenergetic(energy_keV)
    mu_per_mm = al.mu_over_rho(energy_keV) * al.density_g_cm3 / 10.0
    assert s.hvl_mm(al) == pytest.approx(math.log(2) / mu_per_mm, rel=1e-9)
    assert s.hvl_mm("Al", order=2) == pytest.approx(s.hvl_mm("Al"), rel=1e-9)
    assert s.hvl_mm("Al") == pytest.approx(10.0 * hvl_cm, rel=0.01)
    assert s.thickness_for_kerma_fraction("Al", 0.25) == pytest.approx(10.0 * qvl_cm, rel=0.01)


def test_mean_energy_of_a_line_is_its_energy():
    assert Spectrum.monoenergetic(56.4, fluence=3.0).mean_energy_keV == pytest.approx(56.4, rel=1e-15)


# ------------------------------------------------------------------------------------------------
def test_filtered_is_beer_lambert():
    water = material("water")
    s = Spectrum.monoenergetic(60.0, fluence=2.0).filtered("water", 100.0)
    expected = 2.0 * math.exp(-water.mu_over_rho(60.0) * water.density_g_cm3 * 10.0)  # 100 mm = 10 cm
    assert s.fluence[0] == pytest.approx(expected, rel=1e-12)
    assert s.energies_keV[0] == 60.0


def test_filtering_twice_equals_filtering_once_with_the_sum():
    s = Spectrum.tungsten(90, {"Al": 2.5})
    twice = s.filtered("Al", 1.5).filtered(material("Al"), 2.0)
    once = s.filtered("Al", 3.5)
    np.testing.assert_allclose(twice.fluence, once.fluence, rtol=1e-12, atol=0)
    assert s.filtered("Cu", 0.0).total_fluence == s.total_fluence


def test_normalized_sums_to_one_and_keeps_the_shape():
    s = Spectrum.tungsten(80)
    n = s.normalized()
    assert n.total_fluence == pytest.approx(1.0, rel=1e-12)
    assert n.mean_energy_keV == pytest.approx(s.mean_energy_keV, rel=1e-12)


def test_resampled_conserves_photons():
    s = Spectrum.tungsten(120, {"Al": 2.5})
    np.testing.assert_allclose(s.resampled(0.5).fluence, s.fluence, rtol=1e-12)  # same grid: identity
    coarse = s.resampled(2.0)
    assert np.allclose(np.diff(coarse.energies_keV), 2.0)
    assert coarse.total_fluence == pytest.approx(s.total_fluence, rel=1e-12)
    # Each photon moves by at most half the old plus half the new bin width.
    assert abs(coarse.mean_energy_keV - s.mean_energy_keV) <= 1.25
    line = Spectrum.monoenergetic(60.2, fluence=5.0).resampled(1.0)
    assert line.energies_keV.tolist() == [60.5] and line.fluence.tolist() == [5.0]


def test_plot_returns_axes():
    ax = Spectrum.tungsten(80).plot(label="80 kVp")
    assert ax.get_xlabel() == "energy (keV)"
    assert Spectrum.monoenergetic(30.0).plot(ax=ax) is ax


# ------------------------------------------------------------------------------------------------
def test_file_round_trip_is_exact(tmp_path):
    s = Spectrum.tungsten(100, {"Al": 2.5, "Cu": 0.1}, anode_angle_deg=10)
    path = tmp_path / "w100.csv"
    s.to_file(path)
    back = Spectrum.from_file(path)
    np.testing.assert_array_equal(back.energies_keV, s.energies_keV)
    np.testing.assert_array_equal(back.fluence, s.fluence)
    assert back.kvp == 100.0 and back.description == s.description
    assert [p.name for p in tmp_path.iterdir()] == ["w100.csv"]  # no temporary left behind
    line = tmp_path / "line.csv"
    Spectrum.monoenergetic(30.0).to_file(line)
    assert Spectrum.from_file(line).kvp is None


def test_from_file_reads_whitespace_columns_and_comments(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("# measured\n\n20.0   1.5\n30.0\t2.5\n")
    s = Spectrum.from_file(path)
    assert s.energies_keV.tolist() == [20.0, 30.0] and s.fluence.tolist() == [1.5, 2.5]
    assert s.mean_energy_keV == pytest.approx((20 * 1.5 + 30 * 2.5) / 4.0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("10, 1\n20, abc\n", r"fluence must be a number, got 'abc' \(in .*bad.csv, line 2\)"),
        ("10, 1\n20, -1\n", r"fluence must lie in \[0, inf\).*got -1.*line 2"),
        ("# header\n10\n", r"expected 2 columns.*got 1.*line 2"),
        ("10, 1\n5, 1\n", r"energy_keV must increase.*line 2"),
        ("0.5, 1\n", r"energy_keV must lie in \[1, 200\] keV, got 0.5.*line 1"),
        ("# nothing\n", r"holds no photons"),
    ],
    ids=["non-numeric", "negative", "one-column", "decreasing", "energy-range", "empty"],
)
def test_bad_files_name_file_line_and_value(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(XsimInputError, match=message):
        Spectrum.from_file(path)


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: Spectrum.tungsten(30), r"kvp must lie in \[40, 150\] kV, got 30"),
        (lambda: Spectrum.tungsten(160), r"kvp must lie in \[40, 150\] kV, got 160"),
        (lambda: Spectrum.tungsten(80, {"unobtainium": 1.0}), r"filtration_mm material must be one of"),
        (lambda: Spectrum.tungsten(80, {"Al": -1.0}), r"filtration_mm\['Al'\] must lie in \[0, inf\) mm"),
        (lambda: Spectrum.tungsten(80, anode_angle_deg=45), r"anode_angle_deg must lie in \[5, 30\] deg"),
        (lambda: Spectrum.monoenergetic(0.5), r"energy_keV must lie in \[1, 200\] keV, got 0.5"),
        (lambda: Spectrum.monoenergetic(250.0), r"energy_keV must lie in \[1, 200\] keV, got 250"),
        (lambda: Spectrum.monoenergetic(60.0).filtered("Al", -2.0), r"thickness_mm must lie in \[0, inf\)"),
        (lambda: Spectrum.monoenergetic(60.0).hvl_mm("Al", order=3), r"order must be one of 1, 2"),
        (lambda: Spectrum.tungsten_with_hvl(80, 0.01), r"hvl_mm=0.01 mm is below the HVL of the unfiltered"),
        (lambda: Spectrum([10.0, 5.0], [1.0, 1.0]), r"energies_keV must be strictly increasing"),
    ],
    ids=["kvp-low", "kvp-high", "filter-name", "filter-negative", "anode-angle", "mono-low", "mono-high",
         "thickness", "hvl-order", "hvl-target", "decreasing"],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(XsimInputError, match=message):
        call()


def test_unknown_filter_suggests_close_name():
    with pytest.raises(XsimInputError, match=r"did you mean 'Al'"):
        Spectrum.tungsten(80, {"Alu": 1.0})


def test_spekpy_spectra_are_cached_on_disk(monkeypatch, tmp_path):
    # Each process (dataset worker, CLI call) would otherwise pay SpekPy's import and model (~1 s): the
    # spectrum is stored under the cache folder, found again by a fresh process (lru cache cleared), and
    # recomputed when the file does not load.
    monkeypatch.setenv("XSIM_CACHE_DIR", str(tmp_path))
    spectra._spekpy_spectrum.cache_clear()
    first = Spectrum.tungsten(70.0, {"Al": 3.0}, bin_keV=1.0)
    files = list((tmp_path / "spectra").glob("tungsten-*.npz"))
    assert len(files) == 1

    def no_spekpy(*args):
        raise AssertionError("SpekPy called although the spectrum is cached")

    monkeypatch.setattr(spectra, "_spekpy_model", no_spekpy)
    spectra._spekpy_spectrum.cache_clear()
    again = Spectrum.tungsten(70.0, {"Al": 3.0}, bin_keV=1.0)
    np.testing.assert_array_equal(again.fluence, first.fluence)
    np.testing.assert_array_equal(again.energies_keV, first.energies_keV)
    # another filtration is another file; a damaged file is recomputed and replaced
    monkeypatch.undo()
    monkeypatch.setenv("XSIM_CACHE_DIR", str(tmp_path))
    intact = files[0].read_bytes()
    for damage in (b"not an npz file", b"", intact[: len(intact) // 2]):  # garbage, empty, truncated
        files[0].write_bytes(damage)
        spectra._spekpy_spectrum.cache_clear()
        repaired = Spectrum.tungsten(70.0, {"Al": 3.0}, bin_keV=1.0)
        np.testing.assert_array_equal(repaired.fluence, first.fluence)
        assert files[0].read_bytes() == intact
    Spectrum.tungsten(70.0, {"Al": 2.0}, bin_keV=1.0)
    assert len(list((tmp_path / "spectra").glob("tungsten-*.npz"))) == 2
    spectra._spekpy_spectrum.cache_clear()
