"""Materials (xsim.physics.materials): NIST agreement, mixture rule, library, formulas, errors."""
from __future__ import annotations

import numpy as np
import pytest

from xsim.checks import XsimInputError
from xsim.physics import tables
from xsim.physics.materials import Material, list_materials, material
from xsim.validation import attenuation_vs_nist as nist

# Reference values: NIST XCOM / SRD 126 mu/rho and SRD 126 mu_en/rho (Hubbell & Seltzer, "Tables of X-Ray
# Mass Attenuation Coefficients and Mass Energy-Absorption Coefficients"), kept once, with their sources, in
# the validation study that reports the same comparison.
ENERGIES_KEV = np.array(nist.MU_ENERGIES_KEV)
NIST_MU_RHO = nist.NIST_MU_RHO
MU_EN_ENERGIES_KEV = np.array(nist.MU_EN_ENERGIES_KEV)
NIST_MU_EN_RHO = nist.NIST_MU_EN_RHO


@pytest.mark.parametrize("name", NIST_MU_RHO)
def test_mu_over_rho_matches_nist(name):
    ours = material(name).mu_over_rho(ENERGIES_KEV)
    dev = ours / np.array(NIST_MU_RHO[name]) - 1.0
    worst = int(np.argmax(np.abs(dev)))
    print(f"\n{name}: worst deviation from NIST {100 * dev[worst]:+.2f} % at "
          f"{ENERGIES_KEV[worst]:g} keV")
    assert np.all(np.abs(dev) < 0.02)


@pytest.mark.parametrize("name", NIST_MU_EN_RHO)
def test_mu_en_over_rho_matches_nist(name):
    ours = material(name).mu_en_over_rho(MU_EN_ENERGIES_KEV)
    dev = ours / np.array(NIST_MU_EN_RHO[name]) - 1.0
    print(f"\nmu_en/rho {name} vs NIST SRD 126: " + ", ".join(
        f"{e:g} keV {100 * d:+.2f} %" for e, d in zip(MU_EN_ENERGIES_KEV, dev)))
    assert np.all(np.abs(dev) < 0.02)


def test_mu_en_is_below_mu_and_above_photoelectric_share():
    # mu_en <= mu_tr <= mu - coherent, for any material and energy.
    e = np.geomspace(1.0, 200.0, 50)
    for name in ("water", "cortical bone", "iodine", "lead"):
        m = material(name)
        assert np.all(m.mu_en_over_rho(e) <= m.mu_over_rho(e) - m.mu_over_rho(e, "rayleigh"))


def test_formula_water_equals_library_water():
    lib = material("water")
    formula = Material.from_formula("w", "H2O", 1.0)
    e = np.geomspace(1.0, 200.0, 40)
    np.testing.assert_allclose(formula.mu_over_rho(e), lib.mu_over_rho(e), rtol=1e-3)
    assert formula.composition["H"] == pytest.approx(0.111894, rel=1e-3)


def test_mixture_equals_element_level_sum():
    water, bone = material("water"), material("cortical bone")
    mix = Material.mixture("70/30", {"water": 0.7, bone: 0.3}, density_g_cm3=1.3)
    e = np.array([15.0, 33.2, 50.0, 88.1, 140.0])
    expected = np.zeros_like(e)
    fractions = {}
    for m, f in ((water, 0.7), (bone, 0.3)):
        for sym, w in m.composition.items():
            fractions[sym] = fractions.get(sym, 0.0) + f * w
    for sym, w in fractions.items():
        expected += w * tables.mu_over_rho_element(sym, e)
    np.testing.assert_allclose(mix.mu_over_rho(e), expected, rtol=1e-12)
    np.testing.assert_allclose(mix.mu_over_rho(e),
                               0.7 * water.mu_over_rho(e) + 0.3 * bone.mu_over_rho(e), rtol=1e-12)
    assert mix.density == 1.3


def test_iodine_contrast_is_water_plus_10_mg_per_ml_iodine():
    # mu (1/mm) of the solution = mu(1 g/cm^3 water) + mu(0.010 g/cm^3 iodine).
    contrast = material("iodine contrast")
    e = np.array([30.0, 33.2, 40.0, 60.0])
    expected = (material("water").mu_per_mm(e, density_g_cm3=1.0)
                + material("iodine").mu_per_mm(e, density_g_cm3=0.010))
    np.testing.assert_allclose(contrast.mu_per_mm(e), expected, rtol=1e-9)


def test_formula_parser():
    hap = Material.from_formula("hydroxyapatite", "Ca10(PO4)6(OH)2", 3.16)
    a = tables.atomic_weight
    molar = 10 * a("Ca") + 6 * (a("P") + 4 * a("O")) + 2 * (a("O") + a("H"))
    assert hap.composition["Ca"] == pytest.approx(10 * a("Ca") / molar, rel=1e-12)
    assert hap.composition["O"] == pytest.approx(26 * a("O") / molar, rel=1e-12)
    csi = Material.from_formula("csi", "CsI", 4.51)
    assert csi.composition == pytest.approx(material("CsI").composition, rel=1e-9)
    assert Material.from_formula("x", "H0.5He0.5", 1.0).composition["H"] == pytest.approx(
        a("H") / (a("H") + a("He")))
    for bad in ("H2O)", "(H2O", "Xy2", "h2o", "2H"):
        with pytest.raises(XsimInputError, match="formula"):
            Material.from_formula("bad", bad, 1.0)


def test_library_contents_and_aliases():
    names = list_materials()
    required = ["air", "lung", "adipose", "soft tissue", "muscle", "water", "cortical bone",
                "blood", "iodine contrast", "aluminium", "copper", "titanium", "stainless steel",
                "lead", "csi", "pmma", "iodine", "tungsten", "tg195 air", "tg195 soft tissue",
                "tg195 water", "tg195 pmma", "tg195 aluminium"]
    assert set(required) <= set(names)
    for name in names:
        m = material(name)
        assert sum(m.composition.values()) == pytest.approx(1.0, abs=1e-12)
        assert m.density_g_cm3 > 0 and m.source
    assert material("Al") is material("aluminum") is material("ALUMINIUM")
    assert material("bone").name == "cortical bone"
    assert material("Soft_Tissue").name == "soft tissue"
    assert material("perspex").name == "pmma"
    # ICRU-44 densities (NIST SRD 126 Table 2) and TG-195 definitions (Sechopoulos et al. 2015).
    assert material("cortical bone").density == 1.92
    assert material("soft tissue").density == 1.06
    assert material("tg195 soft tissue").density == 1.03
    assert material("tg195 soft tissue").composition["C"] == pytest.approx(0.256)
    # An element symbol outside the library gives the pure element at its standard density.
    gd = material("Gd")
    assert gd.composition == {"Gd": 1.0} and gd.density == pytest.approx(7.90, rel=0.01)


def test_material_lookup_errors():
    with pytest.raises(XsimInputError, match="unknown material 'watr'.*did you mean 'water'"):
        material("watr")
    with pytest.raises(XsimInputError, match="did you mean 'cortical bone'"):
        material("cortical bones")


def test_input_errors():
    water = material("water")
    with pytest.raises(XsimInputError, match=r"energy_keV must lie in \[1, 200\] keV, got 0\.5"):
        water.mu_over_rho(0.5)
    with pytest.raises(XsimInputError, match="got 300"):
        water.mu_en_over_rho(np.array([20.0, 300.0]))
    with pytest.raises(XsimInputError, match="density_g_cm3"):
        Material.from_mass_fractions("x", {"H": 1.0}, density_g_cm3=-1.0)
    with pytest.raises(XsimInputError, match="density_g_cm3"):
        water.with_density(0.0)
    with pytest.raises(XsimInputError, match="sum to 1.*got 0.9"):
        Material.from_mass_fractions("x", {"H": 0.5, "O": 0.4}, 1.0)
    with pytest.raises(XsimInputError, match="element symbol.*'Xx'"):
        Material.from_mass_fractions("x", {"Xx": 1.0}, 1.0)
    with pytest.raises(XsimInputError, match=">= 0"):
        Material.from_mass_fractions("x", {"H": 1.2, "O": -0.2}, 1.0)
    with pytest.raises(XsimInputError, match="kind.*'photo'"):
        water.mu_over_rho(30.0, kind="photo")
    with pytest.raises(XsimInputError, match="sum to 1"):
        Material.mixture("m", {"water": 0.5, "air": 0.4}, 1.0)


def test_fractions_within_tolerance_are_normalised():
    m = Material.from_mass_fractions("x", {"H": 0.1115, "O": 0.8880}, 1.0)  # sums to 0.9995
    assert sum(m.composition.values()) == pytest.approx(1.0, abs=1e-15)
    assert m.composition["H"] == pytest.approx(0.1115 / 0.9995)


def test_shapes_units_and_tabulate():
    water = material("water")
    assert isinstance(water.mu_over_rho(60.0), float)
    grid = np.full((3, 4), 60.0)
    assert water.mu_over_rho(grid).shape == (3, 4)
    # mu [1/mm] = mu/rho [cm^2/g] * rho [g/cm^3] / 10 [mm/cm]
    assert water.mu_per_mm(60.0) == pytest.approx(water.mu_over_rho(60.0) * 1.0 / 10.0)
    assert water.mu_per_mm(60.0, density_g_cm3=2.0) == pytest.approx(2 * water.mu_per_mm(60.0))
    table = water.tabulate(ENERGIES_KEV)
    assert set(table) == {"total", "rayleigh", "compton", "photoelectric", "mu_en"}
    np.testing.assert_allclose(table["compton"], water.mu_over_rho(ENERGIES_KEV, "compton"))
    np.testing.assert_allclose(table["mu_en"], water.mu_en_over_rho(ENERGIES_KEV))
    assert water.with_density(0.5).density == 0.5
    assert water.with_density(0.5).composition == water.composition
    assert hash(water) == hash(material("water"))


def test_scattering_factors_per_gram():
    water = material("water")
    n_a = 6.02214076e23
    a = tables.atomic_weight
    w = water.composition
    # F(0) = Z: F^2 per gram at x = 0 is N_A sum w_i Z_i^2 / A_i.
    assert water.form_factor_squared(0.0) == pytest.approx(
        n_a * (w["H"] * 1 / a("H") + w["O"] * 64 / a("O")), rel=1e-12)
    # S -> Z at large x: electrons per gram N_A sum w_i Z_i / A_i = 3.343e23 for water.
    assert water.scattering_function(20.0) == pytest.approx(
        n_a * (w["H"] / a("H") + 8 * w["O"] / a("O")), rel=0.01)
    assert water.scattering_function(0.0) == 0.0
