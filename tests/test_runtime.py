"""Tests of the kernel runtime (xsim/runtime.py, runtime_build.py, runtime_params.py, runtime_selftest.py):
backend selection, the CPU build and its cache, the params mirror and its layout checks, reproducible
fixed-point tallies, the portability header's host mappings, error messages, and the cuda launch path
driven through a stand-in for CuPy that runs the CPU build."""
import ctypes
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
from scipy import stats

from xsim import runtime, runtime_build, runtime_selftest
from xsim.checks import XsimInputError
from xsim.paths import kernels_dir
from xsim.runtime import Kernel, Params, array
from xsim.runtime_selftest import DemoHistogramParams, demo_histogram, portable_check

P_MIN = 1e-3  # chi-square tests fail below this p-value (fixed seeds: the outcome is deterministic)


@pytest.fixture(scope="module", autouse=True)
def kernel_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        cache = tmp_path_factory.mktemp("kernels")
        mp.setenv("XSIM_CACHE_DIR", str(cache))
        yield cache


def demo_reference(n, draws, seed, n_bins, scale):
    """The demo's exact results from the numpy Philox reference of tests/test_rng.py."""
    from test_rng import stream_words, uniform_ref

    u = uniform_ref(stream_words(seed, 0, n, draws)).ravel()
    bins = np.minimum((u * np.float32(n_bins)).astype(np.int64), n_bins - 1)  # float32 product, as in C
    counts = np.bincount(bins, minlength=n_bins).astype(np.uint64)
    return counts, int(np.floor(u.astype(np.float64) * scale + 0.5).astype(np.int64).sum())


def write_kernel(folder, name, body):
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


class FillParams(Params):
    _fields_ = [("out", array(np.float32)), ("value", ctypes.c_float)]


FILL_KERNEL = """\
    #include "xsim_portable.cuh"
    struct FillParams { float* out; float value; };
    __device__ void fill_body(const FillParams& p, uint64_t i) { p.out[i] = p.value; }
    XSIM_KERNEL(fill, FillParams)
"""


# ---------------------------------------------------------------------------------------------------------
# The demo kernel: exact, reproducible, uniform.
def test_demo_histogram_is_exact_uniform_and_thread_count_independent():
    n, draws, seed, scale = 20000, 32, 11, 2.0**32
    one = demo_histogram(n, draws, seed, fixed_scale=scale, threads=1)
    two = demo_histogram(n, draws, seed, fixed_scale=scale, threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    assert one[1] == two[1]
    counts, total = demo_reference(n, draws, seed, 64, scale)
    np.testing.assert_array_equal(one[0], counts)
    assert one[1] == total
    p = stats.chisquare(one[0]).pvalue
    assert p > P_MIN, f"chi-square p = {p:.3g} for {n * draws} draws in 64 bins"


def test_defines_specialise_the_kernel():
    counts, total = demo_histogram(3000, 16, seed=4, n_bins=50, fixed_scale=2.0**20)
    ref_counts, ref_total = demo_reference(3000, 16, 4, 50, 2.0**20)
    assert counts.shape == (50,)
    np.testing.assert_array_equal(counts, ref_counts)
    assert total == ref_total


def test_from_fixed_reads_signed_tallies():
    acc = np.array([-(3 << 30), 5 << 30], np.int64).view(np.uint64)
    np.testing.assert_array_equal(runtime.from_fixed(acc, 2.0**30), [-3.0, 5.0])
    with pytest.raises(XsimInputError, match="uint64 or int64"):
        runtime.from_fixed(np.zeros(2, np.float64), 1.0)


# ---------------------------------------------------------------------------------------------------------
# The portability header's host side.
def test_portable_math_on_the_host():
    n = 1 << 12
    x = np.linspace(1e-3, 1.0, n, dtype=np.float32)
    m, xd = portable_check(x)["math_out"].astype(np.float64), x.astype(np.float64)
    expected = [np.exp(xd), np.log(xd), np.sin(xd), np.cos(xd), xd / 3, 1 / np.sqrt(xd), xd**1.5,
                np.clip(2 * xd - 0.5, 0, 1), np.minimum(xd, 0.5) + 1.0, np.ones(n)]
    for k, ref in enumerate(expected):
        np.testing.assert_allclose(m[:, k], ref, rtol=1e-6, atol=1e-7, err_msg=f"math_out[:, {k}]")


def test_selftest_passes_on_cpu_with_two_threads():
    # Two threads adding to one address: a lost update would break the exact atomic sums.
    assert runtime_selftest.selftest("cpu", threads=2) == {
        "philox_known_answers": True, "histogram_chi_square": True, "atomics_exact": True
    }


# ---------------------------------------------------------------------------------------------------------
# Cache: fresh processes, concurrent compiles, headers in the key.
SCRIPT = """\
import json, os, pathlib, sys, time
from xsim import runtime
from xsim.runtime_selftest import demo_histogram
go = pathlib.Path(sys.argv[1])
go.with_suffix(f".ready{os.getpid()}").touch()
while not go.exists():  # start line, so that concurrent processes compile at the same moment
    time.sleep(0.005)
counts, total = demo_histogram(4000, 8, seed=1)
print(json.dumps({"stats": runtime.cache_stats(), "counts": counts.tolist(), "total": total}))
"""


def run_together(go, envs):
    """Run SCRIPT in one process per environment, released together once all have started."""
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(go)], env=env, stdout=subprocess.PIPE, text=True)
             for env in envs]
    deadline = time.monotonic() + 60
    while len(list(go.parent.glob(f"{go.name}.ready*"))) < len(envs) and time.monotonic() < deadline:
        time.sleep(0.005)
    go.touch()
    return [json.loads(p.communicate(timeout=120)[0]) for p in procs]


def test_cache_across_processes_and_concurrent_compiles(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "XSIM_CACHE_DIR": str(cache)}
    # Two processes, with 1 and 2 threads, compile the same kernel into an empty cache at once ...
    first = run_together(tmp_path / "go1", [{**env, "XSIM_NUM_THREADS": t} for t in ("1", "2")])
    # ... then a fresh process finds the library and compiles nothing.
    (third,) = run_together(tmp_path / "go2", [env])
    # Both normally compile; the one finishing second replaces the file atomically.
    assert all(r["stats"]["misses"] + r["stats"]["hits"] == 1 for r in first)
    assert sum(r["stats"]["misses"] for r in first) >= 1
    assert third["stats"] == {"hits": 1, "misses": 0, "compile_seconds": 0.0}
    assert first[0]["counts"] == first[1]["counts"] == third["counts"]
    assert first[0]["total"] == first[1]["total"] == third["total"]
    assert [p.name for p in cache.iterdir()] == [next(cache.glob("demo_histogram-*.so")).name]


def test_changing_an_included_header_recompiles(tmp_path):
    header = tmp_path / "fill_value.cuh"
    header.write_text("#define FILL_VALUE 1.5f\n")
    source = write_kernel(tmp_path, "fill_header.cu", FILL_KERNEL.replace("p.value;", "FILL_VALUE;").replace(
        '#include "xsim_portable.cuh"', '#include "xsim_portable.cuh"\n    #include "fill_value.cuh"'))
    out = np.zeros(8, np.float32)
    before = runtime.cache_stats()
    Kernel(source, "fill", FillParams).launch(8, FillParams(out=out, value=0))
    Kernel(source, "fill", FillParams)  # same sources: cache hit
    header.write_text("#define FILL_VALUE 2.5f\n")
    Kernel(source, "fill", FillParams).launch(8, FillParams(out=out, value=0))
    after = runtime.cache_stats()
    assert (after["misses"] - before["misses"], after["hits"] - before["hits"]) == (2, 1)
    np.testing.assert_array_equal(out, 2.5)


# ---------------------------------------------------------------------------------------------------------
# The params mirror.
def test_params_mirror_checks_arrays_and_launch_inputs(tmp_path):
    kernel = Kernel(write_kernel(tmp_path, "fill.cu", FILL_KERNEL), "fill", FillParams, threads=2)
    out = np.zeros(1000, np.float32)
    kernel.launch(1000, FillParams(out=out, value=3.0))
    np.testing.assert_array_equal(out, 3.0)
    expected = "FillParams.out must be a C-contiguous array of float32, got dtype float64"
    with pytest.raises(XsimInputError, match=expected):
        FillParams(out=np.zeros(4))
    with pytest.raises(XsimInputError, match="non-contiguous"):
        FillParams(out=np.zeros(8, np.float32)[::2])
    read_only = np.zeros(4, np.float32)
    read_only.flags.writeable = False
    with pytest.raises(XsimInputError, match="read-only"):
        FillParams(out=read_only)
    with pytest.raises(XsimInputError, match="not optional"):
        FillParams(out=None)
    with pytest.raises(XsimInputError, match="FillParams.out is not set"):
        kernel.launch(4, FillParams(value=1.0))
    with pytest.raises(XsimInputError, match="must be a FillParams instance"):
        kernel.launch(4, DemoHistogramParams())
    with pytest.raises(XsimInputError, match="n must be an integer"):
        kernel.launch(-1, FillParams(out=out))
    with pytest.raises(XsimInputError, match="threads must be a positive integer"):
        kernel.launch(4, FillParams(out=out), threads=0)
    with pytest.raises(XsimInputError, match="params must be a subclass of xsim.runtime.Params"):
        Kernel(tmp_path / "fill.cu", "fill", dict)
    with pytest.raises(XsimInputError, match="intent must be one of"):
        array(np.float32, intent="out")
    with pytest.raises(XsimInputError, match="array dtype must be"):
        array(np.complex64)


def test_optional_array_is_a_null_pointer(tmp_path):
    source = write_kernel(tmp_path, "maybe.cu", """\
        #include "xsim_portable.cuh"
        struct MaybeParams { float* out; float* extra; };
        __device__ void maybe_body(const MaybeParams& p, uint64_t i) {
            p.out[i] = p.extra ? 1.0f : -1.0f;
            if (p.extra) p.extra[i] = 2.0f;
        }
        XSIM_KERNEL(maybe, MaybeParams)
    """)

    class MaybeParams(Params):
        _fields_ = [("out", array(np.float32)), ("extra", array(np.float32, optional=True))]

    kernel, out, extra = Kernel(source, "maybe", MaybeParams), np.zeros(5, np.float32), np.zeros(5, np.float32)
    kernel.launch(5, MaybeParams(out=out))
    np.testing.assert_array_equal(out, -1.0)
    kernel.launch(5, MaybeParams(out=out, extra=extra))
    np.testing.assert_array_equal(out, 1.0)
    np.testing.assert_array_equal(extra, 2.0)


def test_mirror_with_wrong_type_fails_to_compile(tmp_path):
    class WrongType(Params):
        _fields_ = [("out", array(np.float64)), ("value", ctypes.c_float)]

    with pytest.raises(runtime.KernelCompileError, match=r"WrongType.out is double\* in Python"):
        Kernel(write_kernel(tmp_path, "fill.cu", FILL_KERNEL), "fill", WrongType)


def test_mirror_with_wrong_field_order_is_rejected(tmp_path):
    source = write_kernel(tmp_path, "pair.cu", """\
        #include "xsim_portable.cuh"
        struct PairParams { float a; float b; float* out; };
        __device__ void pair_body(const PairParams& p, uint64_t i) { p.out[i] = p.a - p.b; }
        XSIM_KERNEL(pair, PairParams)
    """)

    class Swapped(Params):
        _fields_ = [("b", ctypes.c_float), ("a", ctypes.c_float), ("out", array(np.float32))]

    expected = "b at byte 0 in Python, 4 in C; a at byte 4 in Python, 0 in C"
    with pytest.raises(runtime.ParamsLayoutError, match=expected):
        Kernel(source, "pair", Swapped)


# ---------------------------------------------------------------------------------------------------------
# Errors a user can meet.
def test_compile_error_shows_file_and_line(tmp_path):
    source = write_kernel(tmp_path, "broken.cu", FILL_KERNEL.replace("= p.value;", "= undefined_name;"))
    with pytest.raises(runtime.KernelCompileError) as err:
        Kernel(source, "fill", FillParams)
    assert f"{source}:3:" in str(err.value) and "undefined_name" in str(err.value)


def test_missing_entry_or_source_is_reported(tmp_path):
    source = write_kernel(tmp_path, "fill.cu", FILL_KERNEL)
    with pytest.raises(runtime.KernelCompileError, match="no_such_entry_params_t"):
        Kernel(source, "no_such_entry", FillParams)
    with pytest.raises(XsimInputError, match="source must be a kernel file name"):
        Kernel("no_such_kernel.cu", "fill", FillParams)


def test_no_compiler_says_what_to_install(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    with pytest.raises(runtime.BackendUnavailableError, match=r"\$CXX.*apt install g\+\+.*backend='cuda'"):
        Kernel("demo_histogram.cu", "demo_histogram", DemoHistogramParams, backend="cpu")
    monkeypatch.delenv("CXX")
    monkeypatch.setenv("PATH", "")
    with pytest.raises(runtime.BackendUnavailableError, match=r"No C\+\+ compiler found.*apt install g\+\+"):
        Kernel("demo_histogram.cu", "demo_histogram", DemoHistogramParams, backend="cpu")


def _compiler_without(folder, flag, message):
    """A g++ wrapper that fails with `message` on any command line containing `flag` (its path)."""
    fake = folder / f"no{flag}-g++"
    fake.write_text(f'#!/bin/sh\ncase "$*" in *{flag}*) echo "{message}" >&2; exit 1;; esac\nexec g++ "$@"\n')
    fake.chmod(0o755)
    return str(fake)


def test_openmp_fallback_warns_once_and_gives_identical_results(monkeypatch, tmp_path):
    reference = demo_histogram(5000, 8, seed=2)

    def load(defines):
        return Kernel("demo_histogram.cu", "demo_histogram", DemoHistogramParams, defines=defines)

    # (1) forced by the environment variable
    monkeypatch.setenv("XSIM_OPENMP", "0")
    monkeypatch.setattr(runtime_build, "_warned", set())
    with pytest.warns(RuntimeWarning, match="OpenMP disabled by XSIM_OPENMP=0; CPU kernels run on one thread"):
        kernel = load({})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load({"DEMO_NBINS": 64})  # no second warning
    counts, total = np.zeros(64, np.uint64), np.zeros(1, np.uint64)
    kernel.launch(5000, DemoHistogramParams(seed=2, counts=counts, sum_fixed=total, fixed_scale=2.0**32,
                                            draws_per_thread=8), threads=2)
    np.testing.assert_array_equal(counts, reference[0])
    assert int(total[0]) == reference[1]
    # (2) a compiler that cannot build OpenMP code is detected by the probe
    monkeypatch.delenv("XSIM_OPENMP")
    monkeypatch.setenv("CXX", _compiler_without(tmp_path, "-fopenmp", "fake: no OpenMP here"))
    with pytest.warns(RuntimeWarning, match=r"cannot build OpenMP code \(fake: no OpenMP here\).*one thread"):
        load({})


def test_march_native_setting_and_fallback(monkeypatch, tmp_path):
    # auto (default): native exactly when the compiler accepts it, and what it resolves to keys the cache
    monkeypatch.delenv("XSIM_MARCH_NATIVE", raising=False)
    cxx = tuple(runtime_build.find_cxx())
    target, _ = runtime_build._native_target(cxx)
    assert ("-march=native" in runtime_build.cpu_build_flags()) == bool(target)
    if target:
        assert "#define __" in target  # the compiler's predefined macros for the native target
    monkeypatch.setenv("XSIM_MARCH_NATIVE", "0")
    assert "-march=native" not in runtime_build.cpu_build_flags()
    monkeypatch.setenv("XSIM_MARCH_NATIVE", "off")
    with pytest.raises(XsimInputError, match="XSIM_MARCH_NATIVE must be auto, 0 or 1, got 'off'"):
        runtime_build.cpu_build_flags()
    # a compiler that rejects -march=native: auto builds without it (and kernels run), 1 says why it cannot
    monkeypatch.setenv("CXX", _compiler_without(tmp_path, "-march=native", "fake: unknown arch"))
    monkeypatch.setenv("XSIM_MARCH_NATIVE", "1")
    with pytest.raises(runtime_build.KernelCompileError, match=r"rejects -march=native \(fake: unknown arch\)"):
        runtime_build.cpu_build_flags()
    monkeypatch.delenv("XSIM_MARCH_NATIVE")
    assert "-march=native" not in runtime_build.cpu_build_flags()
    counts, total = np.zeros(64, np.uint64), np.zeros(1, np.uint64)
    monkeypatch.setenv("XSIM_CACHE_DIR", str(tmp_path / "cache"))
    Kernel("demo_histogram.cu", "demo_histogram", DemoHistogramParams, defines={"DEMO_NBINS": 64}).launch(
        100, DemoHistogramParams(seed=2, counts=counts, sum_fixed=total, fixed_scale=2.0**32, draws_per_thread=8))
    assert counts.sum() == 800


def test_backend_selection(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail, whatever is installed
    assert runtime.select_backend("auto") == "cpu"
    monkeypatch.setenv("XSIM_BACKEND", "cpu")
    assert runtime.select_backend() == "cpu"
    monkeypatch.setenv("XSIM_BACKEND", "gpu")
    with pytest.raises(XsimInputError, match="environment variable XSIM_BACKEND"):
        runtime.select_backend()
    with pytest.raises(XsimInputError, match="did you mean 'cuda'"):
        runtime.select_backend("cudaa")
    with pytest.raises(runtime.BackendUnavailableError, match=r"pip install 'xsim\[gpu\]'"):
        runtime.select_backend("cuda")
    with pytest.raises(runtime.BackendUnavailableError, match=r"pip install 'xsim\[gpu\]'"):
        Kernel("demo_histogram.cu", "demo_histogram", DemoHistogramParams, backend="cuda")


def test_threads_setting(monkeypatch):
    monkeypatch.setenv("XSIM_NUM_THREADS", "3")
    assert runtime.default_threads() == 3
    monkeypatch.setenv("XSIM_NUM_THREADS", "many")
    with pytest.raises(XsimInputError, match="XSIM_NUM_THREADS must be a positive integer"):
        runtime.default_threads()


# ---------------------------------------------------------------------------------------------------------
# The cuda launch path, with a stand-in for CuPy (tests/cupy_on_cpu.py): "device" arrays live in host memory,
# and RawModule builds the translation unit it is given with the host compiler (parsing back the -I/-D
# options), so the struct-by-value launch, pointer binding, uploads and copy-back run for real.
@pytest.fixture
def fake_cupy(monkeypatch):
    import cupy_on_cpu

    fake = cupy_on_cpu.stand_in(multiprocessors=2)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    yield fake
    runtime_selftest._kernel.cache_clear()  # drop kernels bound to the stand-in
    from xsim import device, montecarlo, projector

    montecarlo._kernel.cache_clear()
    projector._kernel.cache_clear()
    device.clear()


def test_cuda_path_with_stand_in_cupy(fake_cupy):
    assert runtime.select_backend("auto") == "cuda"
    kernel = Kernel("demo_histogram.cu", "demo_histogram", DemoHistogramParams, backend="cuda")
    reference = demo_histogram(70000, 4, seed=8, backend="cpu")
    # numpy in, numpy out: uploaded, launched, copied back in place
    counts, total = np.zeros(64, np.uint64), np.zeros(1, np.uint64)
    kernel.launch(70000, DemoHistogramParams(seed=8, counts=counts, sum_fixed=total, fixed_scale=2.0**32,
                                             draws_per_thread=4))
    np.testing.assert_array_equal(counts, reference[0])
    assert int(total[0]) == reference[1]
    assert fake_cupy.RawModule.launches[-1] == ((min(-(-70000 // 256), 64),), (256,), 70000)
    # device arrays are used in place
    d_counts, d_total = fake_cupy.zeros(64, np.uint64), fake_cupy.zeros(1, np.uint64)
    kernel.launch(70000, DemoHistogramParams(seed=8, counts=d_counts, sum_fixed=d_total, fixed_scale=2.0**32,
                                             draws_per_thread=4))
    np.testing.assert_array_equal(d_counts.get(), reference[0])
    # cupy arrays are refused by the cpu backend
    with pytest.raises(XsimInputError, match="the cpu backend takes numpy arrays"):
        Kernel("demo_histogram.cu", "demo_histogram", DemoHistogramParams, backend="cpu").launch(
            1, DemoHistogramParams(counts=d_counts, sum_fixed=d_total))
    # and the whole selftest, including the GPU-vs-CPU comparison
    results = runtime_selftest.selftest("cuda")
    assert all(results.values()) and "same_as_cpu" in results


def test_cuda_without_device_is_reported(fake_cupy, monkeypatch):
    monkeypatch.setattr(fake_cupy.cuda.runtime, "getDeviceCount", lambda: 0)
    with pytest.raises(runtime.BackendUnavailableError, match="finds no CUDA device.*nvidia-smi"):
        runtime.select_backend("cuda")
    assert runtime.select_backend("auto") == "cpu"


def test_kernels_dir_ships_the_runtime_files():
    names = {p.name for p in kernels_dir().iterdir()}
    assert {"xsim_portable.cuh", "philox.cuh", "demo_histogram.cu", "rng_check.cu", "portable_check.cu",
            "README.md", "__init__.py"} <= names
