"""The cuda backend (xsim.device, and the cuda paths of xsim.montecarlo, xsim.projector, xsim.rendering).

Two parts:
- everywhere: the cuda backend's Python side with CuPy emulated on the CPU (tests/cupy_on_cpu.py: host arrays,
  launches run by the CPU build of each kernel) must give what the cpu backend gives, bit for bit, keep the
  phantom's device copies between calls and leave results on the device until they are read;
- where CuPy sees a GPU (skipped elsewhere, e.g. in CI): the CUDA builds against the CPU builds. Bit for bit
  where the arithmetic is the same IEEE operations (Philox streams, fixed-point sums, the projector's line
  integrals, built without fused multiply-adds); within statistics for the Monte Carlo, whose histories diverge
  where the GPU's libm rounds differently (chi-square, xsim.montecarlo.consistency); docs/decisions.md.
"""
import numpy as np
import pytest

from xsim import device, montecarlo, phantoms, projector, runtime, runtime_selftest
from xsim.geometry import CArm
from xsim.montecarlo import IMAGE_KINDS, consistency, monte_carlo
from xsim.physics.spectra import Spectrum
from xsim.projector import project
from xsim.rendering import render, render_views


def _clear_kernel_caches():
    for cached in (montecarlo._kernel, projector._kernel, runtime_selftest._kernel):
        cached.cache_clear()
    device.clear()


@pytest.fixture
def emulated(monkeypatch):
    """backend="cuda" runs with CuPy emulated on the CPU."""
    import sys

    import cupy_on_cpu

    _clear_kernel_caches()
    fake = cupy_on_cpu.stand_in()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    yield fake
    _clear_kernel_caches()  # no emulated kernel may serve a later test as a real CUDA one


@pytest.fixture(scope="module")
def thorax():
    return phantoms.thorax(seed=0, voxel_mm=10.0)


@pytest.fixture(scope="module")
def camera():
    return CArm(sdd_mm=1200, sid_mm=800, detector_shape=(32, 32), pixel_mm=12.0).view(lao_deg=20)


# --- the cuda backend's Python side, emulated ---------------------------------------------------------------
def test_monte_carlo_cuda_path_gives_the_cpu_tallies_and_keeps_the_phantom_on_the_device(emulated, thorax,
                                                                                          camera):
    kw = dict(spectrum=Spectrum.tungsten(80), photons=30011, seed=3, batches=3, progress=False)
    cpu = monte_carlo(thorax, camera, backend="cpu", **kw)
    gpu = monte_carlo(thorax, camera, backend="cuda", **kw)
    assert gpu.settings["backend"] == "cuda"
    assert device.is_device_array(gpu._energy_deposit.device)  # the dose map waits on the device
    for kind in IMAGE_KINDS:
        assert np.array_equal(getattr(cpu, kind), getattr(gpu, kind))
        assert np.array_equal(getattr(cpu, f"{kind}_std"), getattr(gpu, f"{kind}_std"))
    assert np.array_equal(cpu.energy_deposit, gpu.energy_deposit)
    assert np.array_equal(cpu.energy_deposit_std, gpu.energy_deposit_std)
    assert cpu.energy_balance_eV == gpu.energy_balance_eV
    # a second call reuses the packed voxels, majorants and tables: nothing is uploaded or compiled again
    voxels = device.cached(thorax, "mc voxels", lambda: pytest.fail("the voxels were not kept"))
    built = emulated.RawModule.built
    again = monte_carlo(thorax, camera, backend="cuda", **kw)
    assert emulated.RawModule.built == built
    assert device.cached(thorax, "mc voxels", lambda: None) is voxels
    assert np.array_equal(again.primary, gpu.primary)


def test_projector_cuda_path_gives_the_cpu_images(emulated, thorax, camera):
    spectrum = Spectrum.tungsten(80)
    cpu = project(thorax, camera, spectrum=spectrum, backend="cpu", photons=True)
    gpu = project(thorax, camera, spectrum=spectrum, backend="cuda", photons=True)
    assert device.is_device_array(gpu.device["primary"]) and isinstance(gpu.primary, np.ndarray)
    for name in ("primary", "flat_field", "photons"):
        assert np.array_equal(getattr(cpu, name), getattr(gpu, name))
    for name, image in cpu.line_integrals.items():
        assert np.array_equal(image, gpu.line_integrals[name])
    arrays = device.phantom_arrays(thorax)
    project(thorax, camera, spectrum=spectrum, backend="cuda")
    assert device.phantom_arrays(thorax)[0] is arrays[0]  # uploaded once


def test_render_views_is_render_per_view_on_either_path(emulated, thorax):
    cams = [CArm(sdd_mm=1200, sid_mm=800, detector_shape=(32, 32), pixel_mm=12.0).view(lao_deg=a)
            for a in (-20, 0, 25)]
    kw = dict(spectrum=Spectrum.tungsten(80), mas=0.5, scatter="cnn", seed=4)
    views = render_views(thorax, cams, backend="cuda", **kw)
    for k, cam in enumerate(cams):
        one = render(thorax, cam, backend="cpu", **{**kw, "seed": 4 + k})
        assert views[k].settings["seed"] == 4 + k
        for name in ("image", "primary", "scatter", "flat_field"):
            np.testing.assert_allclose(getattr(views[k], name), getattr(one, name), rtol=1e-6, atol=1e-6)


def test_persistent_kernels_launch_the_resident_grid(emulated):
    kernel = montecarlo._transport_kernel("cuda")
    attrs = kernel.cuda_attributes()
    assert attrs["persistent"] and attrs["block"] == 256 and attrs["max_blocks"] == 4  # 1 per SM, 4 SMs


def test_device_cache_follows_its_owner():
    class Owner:
        pass

    owner = Owner()
    assert device.cached(owner, "k", lambda: [1]) == [1]
    assert device.cached(owner, "k", lambda: pytest.fail("made twice")) == [1]
    device.clear(owner)
    assert device.cached(owner, "k", lambda: [2]) == [2]
    del owner  # a weak reference: nothing keeps it (or its device arrays) alive
    import gc

    gc.collect()
    assert not any(isinstance(k, Owner) for k in list(device._cache.keys()))


# --- the CUDA builds on a real GPU ---------------------------------------------------------------------------
def _gpu_present() -> bool:
    try:
        runtime.cupy_module()
        return True
    except runtime.BackendUnavailableError:
        return False


def needs_gpu(test):
    return pytest.mark.gpu(pytest.mark.skipif(not _gpu_present(),
                                              reason="no CuPy-visible GPU: the CUDA builds are not run here")(test))


def _tube_spectrum(kvp: float = 80.0) -> Spectrum:
    """A tube-like spectrum made without SpekPy (GPU machines may lack it): Kramers' bremsstrahlung, photons
    per keV ~ (kVp - E) / E (H. A. Kramers, Phil. Mag. 46, 836 (1923)), behind 2.5 mm Al. Any smooth spectrum
    serves a comparison of two builds."""
    energies = np.arange(10.25, kvp, 0.5)
    return Spectrum(energies, 1e5 * (kvp - energies) / energies, kvp=kvp).filtered("Al", 2.5)


@needs_gpu
def test_philox_streams_and_fixed_point_sums_are_the_cpus():
    for kind in ("u32", "uniform", "uniform_pos", "uniform_double"):
        a = runtime_selftest.rng_draws(512, 24, kind, seed=11, backend="cuda")
        b = runtime_selftest.rng_draws(512, 24, kind, seed=11, backend="cpu")
        assert np.array_equal(a, b), kind
    assert runtime_selftest.selftest("cuda")["same_as_cpu"]


@needs_gpu
def test_projector_line_integrals_are_the_cpus_bit_for_bit(thorax, camera):
    spectrum = _tube_spectrum(80.0)
    cpu = project(thorax, camera, spectrum=spectrum, backend="cpu", photons=True)
    gpu = project(thorax, camera, spectrum=spectrum, backend="cuda", photons=True)
    for name, image in cpu.line_integrals.items():
        assert np.array_equal(image, gpu.line_integrals[name]), name
    for name in ("primary", "flat_field", "photons"):  # __expf on the GPU, a polynomial on the CPU
        np.testing.assert_allclose(getattr(gpu, name), getattr(cpu, name), rtol=2e-6)


@needs_gpu
def test_monte_carlo_on_the_gpu_agrees_with_the_cpu_within_statistics(thorax, camera):
    kw = dict(spectrum=_tube_spectrum(80.0), photons=1e6, batches=20, progress=False)
    cpu = monte_carlo(thorax, camera, seed=1, backend="cpu", **kw)
    for seed in (1, 2):  # the same histories (until they diverge), and independent ones
        gpu = monte_carlo(thorax, camera, seed=seed, backend="cuda", **kw)
        for tally, result in consistency(cpu, gpu).items():
            assert result["dof"] > 50 and result["p_value"] > 1e-3, (seed, tally, result)
        for slot in ("incident", "deposited", "reached_plane"):
            assert gpu.energy_balance_eV[slot] == pytest.approx(cpu.energy_balance_eV[slot], rel=0.02)


@needs_gpu
def test_render_on_the_gpu_matches_the_cpu_without_noise(thorax, camera):
    kw = dict(spectrum=_tube_spectrum(80.0), mas=0.5, scatter="cnn", noise=False)
    cpu = render(thorax, camera, backend="cpu", **kw)
    gpu = render(thorax, camera, backend="cuda", **kw)
    np.testing.assert_allclose(gpu.primary, cpu.primary, rtol=2e-6)
    # the network in float32 on the GPU (cuDNN, possibly TF32 convolutions) against the CPU's
    np.testing.assert_allclose(gpu.scatter, cpu.scatter, rtol=1e-2)
    np.testing.assert_allclose(gpu.image, cpu.image, rtol=1e-2)
