"""The check kernels shipped with the runtime, and :func:`selftest`, which runs them on any backend.

Owns the Python side of ``kernels/demo_histogram.cu`` (also the template for new kernels),
``kernels/rng_check.cu`` (Philox draws) and ``kernels/portable_check.cu`` (portability helpers). The tests
use these wrappers on the CPU; on a user's GPU, ``selftest("cuda")`` runs the same known-answer and
statistical checks on the device.
"""
from __future__ import annotations

import ctypes
from functools import cache

import numpy as np

from .checks import check_choice, check_range
from .runtime import BackendUnavailableError, Kernel, Params, array, select_backend


class DemoHistogramParams(Params):
    """Mirror of ``DemoHistogramParams`` in kernels/demo_histogram.cu."""

    _fields_ = [
        ("seed", ctypes.c_uint64),
        ("counts", array(np.uint64)),
        ("sum_fixed", array(np.uint64)),
        ("fixed_scale", ctypes.c_double),
        ("draws_per_thread", ctypes.c_uint32),
    ]


class RngCheckParams(Params):
    """Mirror of ``RngCheckParams`` in kernels/rng_check.cu."""

    _fields_ = [
        ("seed", ctypes.c_uint64),
        ("first_stream", ctypes.c_uint64),
        ("first_block", ctypes.c_uint64),
        ("out", array(np.float64)),
        ("draws", ctypes.c_uint32),
        ("kind", ctypes.c_uint32),
    ]


class PortableCheckParams(Params):
    """Mirror of ``PortableCheckParams`` in kernels/portable_check.cu."""

    _fields_ = [
        ("x", array(np.float32, "in")),
        ("math_out", array(np.float32)),
        ("sum_f32", array(np.float32)),
        ("sum_f64", array(np.float64)),
        ("sum_i32", array(np.int32)),
        ("sum_u32", array(np.uint32)),
        ("sum_i64", array(np.int64)),
        ("sum_u64", array(np.uint64)),
        ("sum_fixed", array(np.uint64)),
        ("fixed_scale", ctypes.c_double),
    ]


# Values of RngKind in kernels/rng_check.cu.
RNG_KINDS = {
    "u32": 0,
    "uniform": 1,
    "uniform_pos": 2,
    "uniform_double": 3,
    "uniform_double_pos": 4,
    "exponential": 5,
    "exponential_double": 6,
    "normal": 7,
    "normal_double": 8,
}

# Philox4x32-10 known answers, (counter, key, output), from the Random123 distribution's kat_vectors
# (Salmon et al., SC'11).
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@cache
def _kernel(source: str, entry: str, params: type[Params], backend: str, defines: tuple = ()) -> Kernel:
    return Kernel(source, entry, params, defines=dict(defines), backend=backend)


def demo_histogram(
    n: int,
    draws_per_thread: int,
    seed: int,
    n_bins: int = 64,
    fixed_scale: float = 2.0**32,
    backend: str | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, int]:
    """Histogram of ``n * draws_per_thread`` Philox uniforms in [0, 1) and their fixed-point sum.

    Returns ``(counts, sum_fixed)``: uint64 counts per bin and the exact integer sum of
    ``round(u * fixed_scale)`` over all draws.
    """
    check_range("n_bins", n_bins, 1, 2**20)
    kernel = _kernel("demo_histogram.cu", "demo_histogram", DemoHistogramParams, select_backend(backend),
                     (("DEMO_NBINS", int(n_bins)),))
    counts = np.zeros(n_bins, np.uint64)
    total = np.zeros(1, np.uint64)
    params = DemoHistogramParams(
        seed=seed, counts=counts, sum_fixed=total, fixed_scale=fixed_scale, draws_per_thread=draws_per_thread
    )
    kernel.launch(n, params, threads=threads)
    return counts, int(total.view(np.int64)[0])


def rng_draws(
    n_streams: int,
    draws: int,
    kind: str = "uniform",
    seed: int = 0,
    first_stream: int = 0,
    first_block: int = 0,
    backend: str | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Draws ``[i, k]`` = draw ``k`` of Philox stream ``first_stream + i`` (as float64; 32-bit words and
    floats are exact), for ``kind`` in :data:`RNG_KINDS`."""
    check_choice("kind", kind, RNG_KINDS)
    kernel = _kernel("rng_check.cu", "rng_check", RngCheckParams, select_backend(backend))
    out = np.zeros((n_streams, draws), np.float64)
    params = RngCheckParams(
        seed=seed, first_stream=first_stream, first_block=first_block, out=out, draws=draws,
        kind=RNG_KINDS[kind],
    )
    kernel.launch(n_streams, params, threads=threads)
    return out


def portable_check(x: np.ndarray, fixed_scale: float = 2.0**40, backend: str | None = None,
                   threads: int | None = None) -> dict[str, np.ndarray]:
    """Run kernels/portable_check.cu on the float32 inputs ``x`` (in (0, 1]); returns its outputs by name."""
    kernel = _kernel("portable_check.cu", "portable_check", PortableCheckParams, select_backend(backend))
    x = np.ascontiguousarray(x, dtype=np.float32)
    sums = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "u32": np.uint32, "i64": np.int64,
            "u64": np.uint64, "fixed": np.uint64}
    out = {"math_out": np.zeros((x.size, 10), np.float32), **{f"sum_{k}": np.zeros(1, t) for k, t in sums.items()}}
    kernel.launch(x.size, PortableCheckParams(x=x, fixed_scale=fixed_scale, **out), threads=threads)
    return out


def selftest(backend: str | None = None, p_min: float = 1e-3, threads: int | None = None,
             details: dict | None = None) -> dict[str, bool]:
    """Run the runtime's checks on ``backend`` (with ``threads`` CPU threads) and return ``{check: passed}``.

    Checks: the Philox known-answer vectors; chi-square p-value above ``p_min`` for a 64-bin histogram of
    2^22 uniforms; exact atomic sums of every type (and of a fixed-point tally). On the cuda backend, when
    a C++ compiler is present, also that the GPU's histogram, fixed-point sum and uniforms are identical,
    bit for bit, to the CPU build's, and the projector and the Monte Carlo against their CPU builds
    (:func:`gpu_against_cpu`, whose measured values go to ``details`` when given).
    """
    from scipy import stats  # only here: keeps importing the kernel wrappers light

    backend = select_backend(backend)
    results = {}
    results["philox_known_answers"] = all(
        np.array_equal(
            rng_draws(1, 4, "u32", seed=key[0] | key[1] << 32, first_stream=ctr[0] | ctr[1] << 32,
                      first_block=ctr[2] | ctr[3] << 32, backend=backend, threads=threads)[0],
            expected,
        )
        for ctr, key, expected in PHILOX_KAT
    )
    counts, total = demo_histogram(1 << 16, 64, seed=12345, backend=backend, threads=threads)
    results["histogram_chi_square"] = bool(stats.chisquare(counts).pvalue > p_min)

    n, scale = 1 << 16, 2.0**40
    x = np.linspace(0.01, 1.0, n, dtype=np.float32)
    out = portable_check(x, fixed_scale=scale, backend=backend, threads=threads)
    # to_fixed rounds half up: floor(v * scale + 0.5), exact here because scale is a power of two.
    fixed = np.floor(-x.astype(np.float64) * scale + 0.5).astype(np.int64).sum()
    expected = {"f32": n, "f64": 0.5 * n, "i32": -n, "u32": 3 * n, "i64": -(n << 33), "u64": n * ((1 << 33) + 1)}
    results["atomics_exact"] = all(out[f"sum_{k}"][0] == v for k, v in expected.items()) and bool(
        out["sum_fixed"].view(np.int64)[0] == fixed
    )
    if backend == "cuda":
        try:
            cpu_counts, cpu_total = demo_histogram(1 << 16, 64, seed=12345, backend="cpu")
            same = rng_draws(1000, 16, seed=7, backend="cpu") == rng_draws(1000, 16, seed=7, backend="cuda")
            results["same_as_cpu"] = bool(
                np.array_equal(counts, cpu_counts) and total == cpu_total and same.all()
            )
            results.update(gpu_against_cpu(p_min=p_min, details=details))
        except BackendUnavailableError:
            pass  # no C++ compiler on this GPU machine: nothing to compare with
    return results


def gpu_against_cpu(p_min: float = 1e-3, photons: float = 1e6, details: dict | None = None) -> dict[str, bool]:
    """The production and reference kernels on the GPU against their CPU builds, on a small thorax phantom:
    the projector's line integrals bit for bit (both built without fused multiply-adds) and its images to 2e-6;
    the Monte Carlo's images and dose map within statistics for the same seed (the histories diverge where the
    GPU's libm rounds otherwise; :func:`xsim.montecarlo.consistency`, chi-square p-value above ``p_min``). When
    ``details`` is a dict, it receives the projector's largest relative image difference and the Monte Carlo's
    chi-square figures (``"consistency"``)."""
    from . import phantoms
    from .geometry import CArm
    from .montecarlo import consistency, monte_carlo
    from .physics.spectra import Spectrum
    from .projector import project

    phantom = phantoms.thorax(seed=0, voxel_mm=10.0)
    camera = CArm(sdd_mm=1200, sid_mm=800, detector_shape=(32, 32), pixel_mm=12.0).view(lao_deg=20)
    spectrum = Spectrum.monoenergetic(60.0, fluence=1.0)
    results = {}
    cpu, gpu = (project(phantom, camera, spectrum=spectrum, backend=b) for b in ("cpu", "cuda"))
    results["projector_line_integrals_same_as_cpu"] = all(
        np.array_equal(image, gpu.line_integrals[name]) for name, image in cpu.line_integrals.items())
    results["projector_images_as_cpu"] = bool(np.allclose(gpu.primary, cpu.primary, rtol=2e-6, atol=0))
    kw = dict(energy_keV=60.0, photons=photons, seed=1, batches=20, progress=False)
    runs = [monte_carlo(phantom, camera, backend=b, **kw) for b in ("cpu", "cuda")]
    agreement = consistency(*runs)
    results["monte_carlo_agrees_with_cpu"] = all(r["dof"] > 20 and r["p_value"] > p_min for r in agreement.values())
    if details is not None:
        details["projector_max_relative_difference"] = float(np.max(np.abs(gpu.primary / cpu.primary - 1.0)))
        details["consistency"] = agreement
    return results
