"""Tests of the Monte Carlo physics in kernels/mc_physics.cuh, run through kernels/mc_check.cu: the
interaction tables against Material, and the Compton, Rayleigh and alias samplers against their analytic
densities (chi-square on equal-probability bins, fixed seeds)."""
import numpy as np
import pytest
from scipy import stats

from xsim.montecarlo import (ENERGY_RANGE_KEV, HC_KEV_A, PhysicsTables, RegionMajorants, alias_table,
                             electrons_per_gram, pack_voxels, sample_alias, sample_angles)
from xsim.physics import tables
from xsim.physics.materials import material

ELECTRON_KEV = 510.99895
P_MIN = 1e-3  # chi-square p-value threshold (fixed seeds: a failure is reproducible, not bad luck)


def _edges_keV(mat):
    return [e for s in mat.composition for _, e in tables.edges(s) if ENERGY_RANGE_KEV[0] < e < ENERGY_RANGE_KEV[1]]


@pytest.mark.parametrize("name", ["water", "cortical bone", "aluminium", "iodine contrast", "csi"])
def test_tables_match_material_within_half_percent_away_from_edges(name):
    mat = material(name)
    tabs = PhysicsTables([mat])
    e = np.linspace(10.0, 150.0, 2801)
    far = np.ones_like(e, bool)
    for edge in _edges_keV(mat):  # the kernel interpolates linearly across the 0.1 keV step holding the edge
        far &= np.abs(e - edge) > 0.15
    for column, kind in enumerate(["total", "rayleigh", "compton", "photoelectric"]):
        # the kernel's total is the sum of the partials; the tables' total (log-log interpolated on its
        # own) differs from that sum by < 0.1 %
        ref = mat.mu_over_rho(e[far], kind)
        got = tabs.mu_over_rho(0, e[far], column)
        np.testing.assert_allclose(got, ref, rtol=5e-3, err_msg=f"{name} {kind}")


def test_region_majorants_from_the_block_max_kernel_equal_numpys():
    # kernels/mc_block_max.cu takes each block's largest density per material in one pass over the packed
    # voxels; the majorants must be those of the numpy path from the same (rounded) densities, bit for bit.
    # A grid that is no multiple of the block, a material (3) absent from the phantom.
    from xsim.montecarlo import pack_voxels
    rng = np.random.default_rng(5)
    mats = [material("air"), material("water"), material("cortical bone"), material("iodine contrast")]
    index = rng.choice(np.array([0, 1, 2], np.uint8), (19, 13, 10))
    density = (np.array([0.0012, 1.0, 1.9, 1.2])[index] * rng.uniform(0.5, 1.0, index.shape)).astype(np.float32)
    voxels = pack_voxels(index, density)
    rounded = (voxels & np.uint32(0xFFFFFF00)).view(np.float32).reshape(index.shape)
    tabs = PhysicsTables(mats)
    numpy_path = RegionMajorants(index, rounded, tabs, block=4)
    kernel_path = RegionMajorants(index, None, tabs, block=4, voxels=voxels, threads=2)
    assert numpy_path.majorant_per_mm.max() > 0
    np.testing.assert_array_equal(kernel_path.majorant_per_mm, numpy_path.majorant_per_mm)
    np.testing.assert_array_equal(kernel_path.inv_majorant_mm, numpy_path.inv_majorant_mm)


def test_region_majorants_bound_every_voxel_at_every_energy():
    rng = np.random.default_rng(4)
    mats = [material("air"), material("water"), material("cortical bone"), material("iodine contrast")]
    index = rng.integers(0, 4, (13, 9, 11)).astype(np.uint8)
    index[:8] = np.where(index[:8] >= 2, 1, index[:8])  # blocks of air and water only
    density = (np.array([0.0012, 1.0, 1.9, 1.2])[index] * rng.uniform(0.5, 1.0, index.shape)).astype(np.float32)
    tabs = PhysicsTables(mats)
    maj = RegionMajorants(index, density, tabs, block=4)
    table = np.moveaxis(maj.majorant_per_mm.reshape((-1,) + maj.blocks), 0, -1)  # [bin][block] -> [block][bin]
    e = np.geomspace(1.0, 150.0, 3000)
    bins = np.clip(((np.log(e) - maj.log_e_min) * maj.inv_log_width).astype(int), 0, table.shape[-1] - 1)
    mu_per_rho = np.stack([tabs.mu_over_rho(m, e) / 10.0 for m in range(4)])  # kernel interpolation, 1/mm
    i, j, k = np.indices(index.shape).reshape(3, -1)
    for v in range(i.size):
        mu = density[i[v], j[v], k[v]] * mu_per_rho[index[i[v], j[v], k[v]]]
        bound = table[i[v] // 4, j[v] // 4, k[v] // 4, bins]
        assert (bound * (1 + 1e-6) >= mu).all()
    # and the bound is useful: a block of air and water stays within the bin width of water
    assert table[0, 0, 0, bins[np.searchsorted(e, 60.0)]] < 1.1 * mu_per_rho[1, np.searchsorted(e, 60.0)] * 1.0


def _chi_square_p(samples, cdf_x, cdf, n_bins=50):
    """p-value of the samples against a tabulated CDF, on n_bins equal-probability bins."""
    edges = np.interp(np.linspace(0, 1, n_bins + 1), cdf, cdf_x)
    edges[0], edges[-1] = -np.inf, np.inf
    counts = np.histogram(samples, edges)[0]
    return stats.chisquare(counts).pvalue


def _cdf_of(pdf, cos):
    c = np.concatenate(([0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(cos))))
    return c / c[-1]


def _klein_nishina(energy_keV, cos):
    """KN d(sigma)/d(Omega) up to a constant: tau^2 (tau + 1/tau - sin^2) (Klein & Nishina 1929)."""
    tau = 1.0 / (1.0 + energy_keV / ELECTRON_KEV * (1.0 - cos))
    return tau**2 * (tau + 1.0 / tau - (1.0 - cos**2))


def _x_of(energy_keV, cos):
    return energy_keV / HC_KEV_A * np.sqrt((1.0 - cos) / 2.0)


@pytest.mark.parametrize("name,energy_keV", [("water", 20.0), ("water", 60.0), ("cortical bone", 100.0),
                                             ("lead", 140.0)])
def test_compton_angles_follow_klein_nishina_times_s(name, energy_keV):
    mat = material(name)
    cos, scattered = sample_angles(mat, energy_keV, "compton", 200_000, seed=11)
    grid = np.linspace(-1.0, 1.0, 20001)
    pdf = _klein_nishina(energy_keV, grid) * mat.scattering_function(_x_of(energy_keV, grid))
    assert _chi_square_p(cos, grid, _cdf_of(pdf, grid)) > P_MIN
    # Compton formula E' = E / (1 + (E / m c^2)(1 - cos)) for every draw
    expect = energy_keV / (1.0 + energy_keV / ELECTRON_KEV * (1.0 - cos.astype(float)))
    np.testing.assert_allclose(scattered, expect, rtol=2e-5)


def test_compton_s_correction_matters():
    """At 20 keV in water S(x) suppresses forward scattering: the sampler must not be plain KN."""
    mat = material("water")
    cos, _ = sample_angles(mat, 20.0, "compton", 200_000, seed=3)
    grid = np.linspace(-1.0, 1.0, 20001)
    assert _chi_square_p(cos, grid, _cdf_of(_klein_nishina(20.0, grid), grid)) < 1e-6


@pytest.mark.parametrize("name,energy_keV", [("water", 20.0), ("water", 60.0), ("cortical bone", 100.0),
                                             ("lead", 140.0)])
def test_rayleigh_angles_follow_thomson_times_f_squared(name, energy_keV):
    mat = material(name)
    cos, _ = sample_angles(mat, energy_keV, "rayleigh", 200_000, seed=12)
    grid = 1.0 - np.geomspace(1e-7, 2.0, 40001)[::-1]  # dense near cos = 1, where F^2 peaks
    grid = np.concatenate((grid, [1.0]))
    pdf = 0.5 * (1.0 + grid**2) * mat.form_factor_squared(_x_of(energy_keV, grid))
    assert _chi_square_p(cos, grid, _cdf_of(pdf, grid)) > P_MIN


def test_s_table_is_normalised_to_electrons_per_gram():
    mat = material("water")
    # S(x) -> Z at large x (Hubbell et al. 1975): per gram, N_A sum w Z / A
    assert mat.scattering_function(20.0) == pytest.approx(electrons_per_gram(mat), rel=1e-3)
    assert electrons_per_gram(mat) == pytest.approx(3.343e23, rel=1e-3)  # water: 10 electrons / 18.015 g/mol


def test_alias_table_reproduces_the_weights_exactly():
    w = np.array([0.0, 3.0, 1.0, 0.5, 10.0, 2.5])
    prob, alias = alias_table(w)
    n = len(w)
    got = prob.astype(float) / n
    for j in range(n):
        got[alias[j]] += (1.0 - prob[j]) / n
    np.testing.assert_allclose(got, w / w.sum(), atol=1e-7)


def test_alias_sampler_chi_square():
    w = np.random.default_rng(5).uniform(0.0, 1.0, 40)
    draws = sample_alias(w, 400_000, seed=9)
    counts = np.bincount(draws, minlength=len(w))
    assert stats.chisquare(counts, w / w.sum() * len(draws)).pvalue > P_MIN


def test_voxel_packing_keeps_the_index_and_the_density_to_1p5e_5():
    rng = np.random.default_rng(2)
    index = rng.integers(0, 256, 1000).astype(np.uint8)
    density = np.concatenate([[0.0, 0.0012, 1.0, 19.3], rng.uniform(0.0, 20.0, 996)]).astype(np.float32)
    words = pack_voxels(index, density)
    assert np.array_equal(words & 0xFF, index)
    back = (words & np.uint32(0xFFFFFF00)).view(np.float32)
    np.testing.assert_allclose(back, density, rtol=2.0**-16, atol=0)
