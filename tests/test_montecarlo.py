"""Tests of xsim.montecarlo (driver of kernels/mc_transport.cu): fast versions of the validation studies
(narrow-beam transmission, energy bookkeeping, HVL, agreement with the projector), the source's solid-angle
sampling, reproducibility for any thread count, units, and input errors. Sampler tests: test_mc_physics.py."""
import math

import numpy as np
import pytest
from scipy import stats

from xsim.validation import mc_energy_balance, mc_hvl, mc_projector, mc_transmission
from xsim.validation.mc_common import analytic_primary, frontal_camera, slab_phantom
from xsim import phantoms
from xsim.checks import XsimInputError
from xsim.detector import Detector
from xsim.geometry import CArm
from xsim.montecarlo import IMAGE_KINDS, AntiScatterGrid, MCResult, monte_carlo
from xsim.physics.materials import material
from xsim.physics.spectra import Spectrum
from xsim.volume import Phantom


@pytest.fixture(scope="module")
def small_thorax():
    return phantoms.thorax(seed=0, voxel_mm=10.0)


@pytest.fixture(scope="module")
def small_camera():
    return CArm(sdd_mm=1200, sid_mm=800, detector_shape=(32, 32), pixel_mm=12.0).view()


# --- validation studies, fast versions ---------------------------------------------------------------------
@pytest.mark.parametrize("name", mc_transmission.MATERIALS)
@pytest.mark.parametrize("energy_keV", mc_transmission.ENERGIES_KEV)
def test_narrow_beam_transmission_is_exp_minus_mu_x(name, energy_keV):
    # Beer-Lambert with mu from the xsim tables (NIST XCOM-consistent), 3 standard errors
    case = mc_transmission.transmission_case(name, energy_keV, photons=1e5, seed=7)
    assert abs(case["deviation_sigma"]) <= 3.0, case


def test_energy_bookkeeping_closes(small_thorax, small_camera):
    case = mc_energy_balance.balance_case("thorax", small_thorax, small_camera, 5e4,
                                          spectrum=Spectrum.tungsten(120))
    assert abs(case["imbalance"]) < 1e-6
    assert abs(case["deposit_sum_mismatch"]) < 1e-6
    assert case["deposited_eV"] > 0 and case["reached_plane_eV"] > 0 and case["escaped_elsewhere_eV"] > 0


@pytest.mark.parametrize("kvp", mc_hvl.KVPS)
def test_hvl_by_simulation_matches_spectrum_hvl(kvp):
    case = mc_hvl.hvl_case(kvp, photons=1e5, seed=3)
    assert abs(case["deviation"]) <= mc_hvl.TOLERANCE, case


def test_primary_agrees_with_projector():
    row, _ = mc_projector.compare_case("water cylinder 60 keV", phantoms.water_cylinder(200, 200, voxel_mm=10.0),
                                       photons=5e5, energy_keV=60.0)
    assert row["status"] == "PASS", row


def test_primary_agrees_with_projector_on_a_rotated_grid():
    # a CT's voxel axes may be oblique to the world's: the photon's index coordinates where it enters the grid
    # mix all three world coordinates of its entry point (the projector is the reference)
    cylinder = mc_projector.rotated_grid(phantoms.water_cylinder(200, 200, voxel_mm=10.0), 30.0)
    row, _ = mc_projector.compare_case("rotated grid", cylinder, photons=5e5, energy_keV=60.0)
    assert row["status"] == "PASS", row


# --- source, units, tallies --------------------------------------------------------------------------------
def test_flat_field_is_uniform_in_solid_angle_and_in_projector_units():
    """No attenuation (zero density): photons per pixel follow the pixels' solid angles (chi-square, ideal
    counting detector), and with the CsI detector the image equals the analytic
    (1000/r)^2 cos A w(E, cos) per unit fluence."""
    cam = frontal_camera(1000.0, (8, 8), 60.0)  # 48 cm wide at 1 m: cos theta down to 0.83
    empty = slab_phantom("water", 10.0, size_mm=40.0, gap_mm=300.0, sdd_mm=1000.0, density_g_cm3=0.0)
    kw = dict(energy_keV=50.0, photons=4e5, seed=1, batches=10, progress=False)
    r = monte_carlo(empty, cam, detector=Detector.ideal(photon_counting=True), **kw)
    counts = r.primary / r.settings["photons_per_history"]
    # every photon reaches the detector, but for float rounding at the field's edge (~1e-6 mm / 480 mm)
    np.testing.assert_allclose(counts.sum(), r.photons, rtol=1e-5)
    solid_angle = analytic_primary(cam, 50.0, Detector.ideal(photon_counting=True), 0.0, 10.0)
    expected_counts = solid_angle.ravel() / solid_angle.sum() * counts.sum()
    assert stats.chisquare(counts.ravel(), expected_counts).pvalue > 1e-3
    assert not r.scatter.any()
    det = Detector()
    r = monte_carlo(empty, cam, detector=det, **kw)
    expected = analytic_primary(cam, 50.0, det, 0.0, 10.0)
    # 5e-3: the pixel-centre values above approximate the pixel integrals of 1/r^2 cos (60 mm pixels at 1 m)
    assert r.primary.sum() == pytest.approx(expected.sum(), rel=5e-3)


def test_thread_count_does_not_change_any_bit(small_thorax, small_camera):
    kw = dict(spectrum=Spectrum.tungsten(80), photons=3e4, seed=5, batches=3, progress=False, backend="cpu")
    one = monte_carlo(small_thorax, small_camera, threads=1, **kw)
    two = monte_carlo(small_thorax, small_camera, threads=2, **kw)
    for kind in IMAGE_KINDS:
        assert np.array_equal(getattr(one, kind), getattr(two, kind))
        assert np.array_equal(getattr(one, f"{kind}_std"), getattr(two, f"{kind}_std"))
    assert np.array_equal(one.energy_deposit, two.energy_deposit)
    assert one.energy_balance_eV == two.energy_balance_eV
    other = monte_carlo(small_thorax, small_camera, threads=2, **{**kw, "seed": 6})
    assert not np.array_equal(one.primary, other.primary)


def test_interleaved_histories_do_not_change_any_bit(small_thorax, small_camera):
    # On the host each thread keeps MC_INTERLEAVE histories in flight (kernels/mc_transport.cu) and, with
    # AVX-512, walks their flights 16 at a time in vector lanes; every photon still draws from its own stream
    # and each lane makes the scalar walk's float operations, so the build running one history at a time (the
    # GPU's way) must give the same tallies bit for bit. A photon count that is no multiple of the group, a
    # grid and an air world exercise every phase of the state machine; the default build (vector walk where
    # the CPU has AVX-512), with a vector walk of one block per round, the scalar walk over 16 lanes, and another
    # interleave depth and group size; and the GPU's build, persistent slots that each run photons one after
    # another through one loop of the phases (with few slots; and with Philox blocks computed by a call and the
    # walks cut after each block crossing, to go on in the next pass).
    from xsim import montecarlo

    kw = dict(spectrum=Spectrum.tungsten(80), photons=20011, seed=7, batches=2, progress=False, backend="cpu",
              threads=2, world_material="air", grid=AntiScatterGrid(ratio=8, strips_per_cm=60))

    def run(**defines):
        with montecarlo._transport_build(**defines):
            return monte_carlo(small_thorax, small_camera, **kw)

    one = run(MC_INTERLEAVE=1)
    assert one.multiple.sum() > 0 and one.rayleigh.sum() > 0
    for defines in ({}, {"MC_WALK_STEPS": 1}, {"MC_INTERLEAVE": 16, "MC_SCALAR_WALK": 1},
                    {"MC_INTERLEAVE": 3, "MC_GROUP": 50}, {"MC_PERSISTENT": 1, "XSIM_HOST_SLOTS": 37},
                    {"MC_PERSISTENT": 1, "XSIM_PHILOX_BLOCKS": 1, "XSIM_PHILOX_NOINLINE": 1,
                     "MC_CUDA_WALK_CROSSINGS": 1}):
        other = run(**defines)
        for kind in IMAGE_KINDS:
            assert np.array_equal(getattr(one, kind), getattr(other, kind))
        assert np.array_equal(one.energy_deposit, other.energy_deposit)
        assert one.energy_balance_eV == other.energy_balance_eV


def test_march_native_does_not_change_any_bit(monkeypatch, tmp_path, small_thorax, small_camera):
    # -march=native (default when the compiler accepts it) must change speed only: -ffp-contract=off and no
    # fast-math keep the vector units to the scalar build's IEEE operations (docs/decisions.md)
    from xsim import montecarlo

    kw = dict(spectrum=Spectrum.tungsten(80), photons=2e4, seed=5, batches=2, progress=False, backend="cpu",
              threads=2, world_material="air")
    results = []
    for setting in ("0", "auto"):
        monkeypatch.setenv("XSIM_MARCH_NATIVE", setting)
        monkeypatch.setenv("XSIM_CACHE_DIR", str(tmp_path / setting))
        montecarlo._kernel.cache_clear()  # the kernel is built again under this setting
        results.append(monte_carlo(small_thorax, small_camera, **kw))
    montecarlo._kernel.cache_clear()
    plain, native = results
    for kind in IMAGE_KINDS:
        assert np.array_equal(getattr(plain, kind), getattr(native, kind))
    assert np.array_equal(plain.energy_deposit, native.energy_deposit)
    assert plain.energy_balance_eV == native.energy_balance_eV


def test_scatter_tallies_and_uncertainties(small_thorax, small_camera):
    r = monte_carlo(small_thorax, small_camera, spectrum=Spectrum.tungsten(100), photons=5e4, seed=2,
                    batches=5, progress=False)
    for kind in IMAGE_KINDS:
        assert getattr(r, kind).shape == (32, 32) and getattr(r, kind).sum() > 0
        assert (getattr(r, f"{kind}_std") >= 0).all()
    np.testing.assert_allclose(r.scatter, r.compton + r.rayleigh + r.multiple)
    assert r.energy_deposit.shape == small_thorax.shape and r.energy_deposit_std.shape == small_thorax.shape
    assert r.energy_deposit.sum() == pytest.approx(r.energy_balance_eV["deposited"], rel=1e-9)
    assert r.settings["histories"] == 50_000 and r.settings["seed"] == 2


# --- input errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("photons", [0, -5, 1.5, float("nan"), "1e6", True])
def test_bad_photon_counts_are_refused(small_thorax, small_camera, photons):
    with pytest.raises(XsimInputError, match="photons"):
        monte_carlo(small_thorax, small_camera, energy_keV=60.0, photons=photons, progress=False)


def test_beam_errors(small_thorax, small_camera):
    with pytest.raises(XsimInputError, match="exactly one"):
        monte_carlo(small_thorax, small_camera, photons=10, progress=False)
    with pytest.raises(XsimInputError, match="energy_keV"):
        monte_carlo(small_thorax, small_camera, energy_keV=180.0, photons=10, progress=False)
    high = Spectrum([60.0, 170.0], [1.0, 1.0])
    with pytest.raises(XsimInputError, match=r"cover \[1, 150\] keV"):
        monte_carlo(small_thorax, small_camera, spectrum=high, photons=10, progress=False)


def test_geometry_errors(small_thorax):
    away = CArm(sdd_mm=1200, sid_mm=800, detector_shape=(8, 8), pixel_mm=1.0).view(isocenter_mm=(900, 0, 0))
    with pytest.raises(XsimInputError, match="misses the phantom"):
        monte_carlo(small_thorax, away, energy_keV=60.0, photons=10, progress=False)
    close = CArm(sdd_mm=300, sid_mm=200, detector_shape=(8, 8), pixel_mm=1.0).view()
    with pytest.raises(XsimInputError, match="beyond the detector plane"):
        monte_carlo(small_thorax, close, energy_keV=60.0, photons=10, progress=False)


def test_material_index_beyond_the_materials_is_refused(small_camera):
    ph = phantoms.water_cylinder(100, 100, voxel_mm=10.0)
    ph.material_index.flags.writeable = True  # phantoms are read-only: corrupted on purpose after construction
    ph.material_index[0, 0, 0] = len(ph.materials)
    with pytest.raises(XsimInputError, match="material_index"):
        monte_carlo(ph, small_camera, energy_keV=60.0, photons=10, progress=False)


def test_other_argument_errors(small_thorax, small_camera):
    with pytest.raises(XsimInputError, match="batches"):
        monte_carlo(small_thorax, small_camera, energy_keV=60.0, photons=10, batches=20, progress=False)
    with pytest.raises(XsimInputError, match="seed"):
        monte_carlo(small_thorax, small_camera, energy_keV=60.0, photons=10, seed=-1, progress=False)
    with pytest.raises(XsimInputError, match="detector"):
        monte_carlo(small_thorax, small_camera, energy_keV=60.0, photons=10, detector="CsI", progress=False)


# --- files, command, progress ------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path, small_thorax, small_camera):
    r = monte_carlo(small_thorax, small_camera, energy_keV=60.0, photons=2e4, seed=4, batches=2, progress=False)
    path = r.save(tmp_path / "run.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]  # no temporary left behind
    back = MCResult.load(path)
    for kind in IMAGE_KINDS:
        assert np.array_equal(getattr(back, kind), getattr(r, kind))
        assert np.array_equal(getattr(back, f"{kind}_std"), getattr(r, f"{kind}_std"))
    assert np.array_equal(back.energy_deposit, r.energy_deposit)
    assert back.settings == r.settings and back.energy_balance_eV == r.energy_balance_eV
    assert (back.photons, back.seed) == (r.photons, r.seed)
    np.testing.assert_allclose(back.camera.matrix, r.camera.matrix)
    for key in ("source", "materials", "histories", "seed", "xsim_version", "phantom_affine"):
        assert key in back.settings


def test_load_refuses_other_files(tmp_path, small_thorax):
    with pytest.raises(XsimInputError, match="does not exist"):
        MCResult.load(tmp_path / "missing.h5")
    small_thorax.save(tmp_path / "phantom.h5")
    with pytest.raises(XsimInputError, match="xsim.MCResult"):
        MCResult.load(tmp_path / "phantom.h5")


def test_interrupt_after_a_batch_returns_the_finished_batches(monkeypatch, small_thorax, small_camera):
    from xsim import montecarlo
    calls = {"n": 0}
    real = montecarlo._BatchAccumulator.add

    def add_then_interrupt(self, *args):
        real(self, *args)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(montecarlo._BatchAccumulator, "add", add_then_interrupt)
    with pytest.warns(UserWarning, match="interrupted"):
        r = monte_carlo(small_thorax, small_camera, energy_keV=60.0, photons=4e3, batches=4, progress=False)
    assert r.photons == 2000 and r.settings["interrupted"] and r.settings["batches"] == 2


# --- anti-scatter grid and focal spot ----------------------------------------------------------------------
def _flat_field_runs(grid, **kw):
    cam = frontal_camera(1000.0, (6, 12), 25.0)  # +-150 mm across u at 1 m: tan up to 0.14
    empty = slab_phantom("water", 10.0, size_mm=40.0, gap_mm=300.0, sdd_mm=1000.0, density_g_cm3=0.0)
    args = dict(energy_keV=60.0, photons=2e5, seed=3, batches=4, progress=False,
                detector=Detector.ideal(photon_counting=True), **kw)
    return cam, monte_carlo(empty, cam, **args), monte_carlo(empty, cam, grid=grid, **args)


def _assert_grid_weights(bare, with_grid, expected):
    """The grid draws a random entry offset per photon: compare per pixel, in standard errors (the gridded
    image's batch error, which holds the photon-count noise common to both runs and the grid's own)."""
    target = bare.primary * expected
    sigma = np.maximum(with_grid.primary_std, 1e-3 * target.max())
    z = (with_grid.primary - target) / sigma
    assert np.abs(z).max() < 4.5, z
    assert with_grid.primary.sum() == pytest.approx(target.sum(), rel=4 * np.sqrt((sigma**2).sum()) / target.sum())


def test_focused_grid_passes_primary_with_its_primary_transmission():
    grid = AntiScatterGrid(ratio=10, strips_per_cm=60, strip_thickness_mm=0.036, interspace="aluminium")
    cam, bare, with_grid = _flat_field_runs(grid)
    # same seed: the same photons, only weighted by the grid. Focused on the source, every primary photon runs
    # along the strips: mean T = D/P exp(-mu_Al h / cos) + d/P exp(-mu_Pb h / cos)
    pos, dirs = cam.pixel_rays()
    cos = dirs @ cam.detector_frame().normal
    mu_al, mu_pb = material("aluminium").mu_per_mm(60.0), material("lead").mu_per_mm(60.0)
    expected = (grid.open_fraction * np.exp(-mu_al * grid.height_mm / cos)
                + (1 - grid.open_fraction) * np.exp(-mu_pb * grid.height_mm / cos))
    np.testing.assert_allclose(grid.transmission(60.0, 0.0, cos), expected, rtol=1e-6)
    _assert_grid_weights(bare, with_grid, expected)


def test_parallel_grid_cuts_off_oblique_primary():
    grid = AntiScatterGrid(ratio=6, strips_per_cm=40, strip_thickness_mm=0.05, interspace=None,
                           focal_distance_mm=math.inf)
    cam, bare, with_grid = _flat_field_runs(grid)
    pos, dirs = cam.pixel_rays()
    n = cam.detector_frame().normal
    across = cam.detector_frame().u_step_mm / np.linalg.norm(cam.detector_frame().u_step_mm)
    cos = dirs @ n
    tan = (dirs @ across) / cos
    expected = grid.transmission(60.0, tan, cos)
    # the model's limit with opaque strips is the geometric grid: D/P max(0, 1 - r |tan|); 50 um tungsten at
    # 20 keV (mu = 127/mm) still lets through the strip corners, tan / (mu P) ~ 0.3 % per strip edge
    opaque = AntiScatterGrid(ratio=6, strips_per_cm=40, strip_thickness_mm=0.05, strip_material="tungsten",
                             interspace=None, focal_distance_mm=math.inf)
    geometric = grid.open_fraction * np.clip(1.0 - grid.ratio * np.abs(tan), 0.0, 1.0)
    np.testing.assert_allclose(opaque.transmission(20.0, tan, cos), geometric, atol=1e-2)
    # the mean over a pixel is the centre value where the model is linear in tan (away from the cut-off)
    inside = np.abs(tan) * grid.ratio < 0.9
    _assert_grid_weights(bare, with_grid, np.where(inside, expected, np.nan))


def test_grid_lowers_the_scatter_to_primary_ratio():
    from xsim.validation import mc_scatter_study
    bare = mc_scatter_study.scatter_case(80.0, 150.0, photons=6e4, seed=2)
    gridded = mc_scatter_study.scatter_case(80.0, 150.0, photons=6e4, seed=2, grid=AntiScatterGrid())
    assert gridded["spr"] < 0.5 * bare["spr"]


@pytest.mark.parametrize("shape", ["uniform", "gaussian"])
def test_finite_focal_spot_blurs_an_edge_into_its_profile(shape):
    """Knife edge (2 mm lead, face at x = 0) half way, magnification 2: the edge's shadow is the spot's
    cumulative profile, penumbra = spot x (M - 1)."""
    lead, thickness = material("lead"), 2.0
    affine = np.diag([100.0, thickness, 100.0, 1.0])
    affine[:3, 3] = [-50.0, 0.0, 0.0]  # voxel 0 spans x in [-100, 0] (lead), voxel 1 x in [0, 100] (empty)
    edge = Phantom(np.zeros((2, 1, 1), np.uint8), np.array([[[lead.density_g_cm3]], [[0.0]]], np.float32), affine,
                   [lead])
    cam = CArm(sdd_mm=1000, sid_mm=500, detector_shape=(1, 24), pixel_mm=(4.0, 0.25)).view()
    det = Detector.ideal(photon_counting=True)
    r = monte_carlo(edge, cam, energy_keV=60.0, photons=3e5, seed=8, batches=10, detector=det,
                    focal_spot_mm=2.0, focal_spot_shape=shape, progress=False)
    flat = analytic_primary(cam, 60.0, det, 0.0, 0.0)[0]
    # Expected: spot offset a (along x; the source is at x = 0, y = 500) to detector point x (y = -500): the ray
    # clears the lead if it is at x > 0 on both faces y = +-thickness/2, i.e. a + (x - a) f > 0 for
    # f = (500 -+ thickness/2) / 1000; averaged over the spot profile and over each pixel's width
    a = np.linspace(-3.0, 3.0, 6001)
    if shape == "uniform":
        weight = (np.abs(a) <= 1.0).astype(float)
    else:
        weight = stats.norm.pdf(a, scale=2.0 / 2.3548200450309493)  # FWHM 2 mm
    centres = cam.pixel_rays()[0][0, :, 0]
    x = centres[:, None] + np.linspace(-0.125, 0.125, 11)[None, :]
    clear = np.ones(x.shape + a.shape, bool)
    for f in ((500 - thickness / 2) / 1000, (500 + thickness / 2) / 1000):
        clear &= a + (x[..., None] - a) * f > 0
    expected = (clear * weight).sum(-1).mean(-1) / weight.sum()
    z = (r.primary[0] / flat - expected) / np.maximum(r.primary_std[0] / flat, 1e-3)
    assert np.abs(z).max() < 4.0, z


def test_progress_bar_counts_batches(capsys, small_thorax, small_camera):
    monte_carlo(small_thorax, small_camera, energy_keV=60.0, photons=3000, batches=3, progress=True)
    err = capsys.readouterr().err
    assert "monte_carlo batches" in err and "/3" in err


def test_batch_statistics_match_the_textbook_formula():
    from xsim.montecarlo import _BatchAccumulator
    rng = np.random.default_rng(0)
    sizes = [100, 101, 100, 99, 100]
    means = [rng.normal(5.0, 1.0, 3) for _ in sizes]
    acc = _BatchAccumulator()
    for n, x in zip(sizes, means):
        acc.add(n, x.copy())
    (mean, sem), = acc.results()
    w = np.array(sizes) / sum(sizes)
    x = np.array(means)
    expect_mean = (w[:, None] * x).sum(0)
    b = len(sizes)
    expect_sem = np.sqrt(b / (b - 1) * (w[:, None] ** 2 * (x - expect_mean) ** 2).sum(0))
    np.testing.assert_allclose(mean, expect_mean, rtol=1e-12)
    np.testing.assert_allclose(sem, expect_sem, rtol=1e-9)
    # equal sizes: the usual standard error of the mean of the batch means
    acc = _BatchAccumulator()
    for x in means:
        acc.add(100, x.copy())
    np.testing.assert_allclose(acc.results()[0][1], np.std(means, axis=0, ddof=1) / np.sqrt(b), rtol=1e-9)


def test_fixed_point_batches_fold_like_the_float_path():
    # kernels/mc_batch_stats.cu repeats the float path's operations in its order: the same bits, and the
    # kernel's tally array is cleared for the next batch
    from xsim.montecarlo import _BatchAccumulator, _FixedTally
    rng = np.random.default_rng(1)
    sizes = [1000, 1001, 999]
    raws = [rng.integers(-2**40, 2**50, (3, 5, 7)).astype(np.int64).view(np.uint64) for _ in sizes]
    for raw in raws:  # empty voxels, which the kernel skips
        raw[rng.random(raw.shape) < 0.4] = 0
    fixed, plain = _BatchAccumulator(threads=2), _BatchAccumulator()
    numpy_fixed = _BatchAccumulator(cpu_kernel=False)  # the cuda backend's path (no host compiler needed)
    for n, raw in zip(sizes, raws):
        plain.add(n, raw.view(np.int64) * (0.37 / n))
        for acc in (fixed, numpy_fixed):
            tally = raw.copy()
            acc.add(n, _FixedTally(tally, 0.37 / n))
            assert not tally.any()
    expected = plain.results()
    for acc in (fixed, numpy_fixed):
        for (m1, e1), (m2, e2) in zip(acc.results(), expected):
            np.testing.assert_array_equal(m1, m2)
            np.testing.assert_array_equal(e1, e2)
    with pytest.raises(RuntimeError, match="once"):
        fixed.results()


# --- world material ----------------------------------------------------------------------------------------
def test_air_world_attenuates_and_scatters():
    """Narrow beam through 1 m of air (an air slab phantom inside an air world): primary = exp(-mu_air r)."""
    air = material("air")
    cam = frontal_camera(1000.0, (1, 1), 4.0)
    phantom = slab_phantom(air, 20.0, size_mm=40.0, gap_mm=300.0, sdd_mm=1000.0)
    det = Detector.ideal(photon_counting=True)
    r = monte_carlo(phantom, cam, energy_keV=30.0, photons=4e5, seed=6, batches=10, detector=det,
                    world_material="air", progress=False)
    flat = analytic_primary(cam, 30.0, det, 0.0, 0.0)[0, 0]
    expected = np.exp(-air.mu_per_mm(30.0) * 1000.0)  # ~0.958 (NIST: mu/rho(air, 30 keV) = 0.354 cm^2/g)
    assert abs(r.primary[0, 0] / flat - expected) < 3 * r.primary_std[0, 0] / flat
    b = r.energy_balance_eV
    assert b["deposited_world"] > 0
    out = b["deposited"] + b["reached_plane"] + b["escaped_elsewhere"] + b["deposited_world"]
    assert out == pytest.approx(b["incident"], rel=1e-9)
    assert r.settings["world"].startswith("air")


def test_air_world_scatter_reaches_the_detector():
    cam = frontal_camera(1000.0, (8, 8), 40.0)
    empty = slab_phantom("water", 10.0, size_mm=40.0, gap_mm=300.0, sdd_mm=1000.0, density_g_cm3=0.0)
    kw = dict(energy_keV=60.0, photons=5e4, seed=1, batches=2, progress=False)
    assert not monte_carlo(empty, cam, **kw).scatter.any()
    air = monte_carlo(empty, cam, world_material="air", **kw)
    assert air.compton.sum() > 0 and air.rayleigh.sum() > 0
    assert air.energy_deposit.sum() == 0  # the phantom is empty: the air's share is energy_balance_eV


def test_images_without_the_deposit_tally_are_identical(tmp_path, small_thorax, small_camera):
    kw = dict(spectrum=Spectrum.tungsten(80), photons=2e4, seed=9, batches=2, progress=False)
    full = monte_carlo(small_thorax, small_camera, **kw)
    images_only = monte_carlo(small_thorax, small_camera, tally_deposit=False, **kw)
    assert images_only.energy_deposit is None and images_only.energy_deposit_std is None
    for kind in IMAGE_KINDS:
        assert np.array_equal(getattr(full, kind), getattr(images_only, kind))
    assert images_only.energy_balance_eV == full.energy_balance_eV
    back = MCResult.load(images_only.save(tmp_path / "images.h5"))
    assert back.energy_deposit is None and np.array_equal(back.primary, images_only.primary)
