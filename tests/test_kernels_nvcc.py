"""The CUDA side of every kernel compiles: each kernels/*.cu with nvcc for sm_80 and sm_90 (both nvcc
passes, `-c`), each header on its own under nvcc, g++ and NVRTC, and each kernel through NVRTC exactly as
the cuda backend gives it to CuPy (same translation unit and options, including the params layout checks
of the shipped mirrors). No GPU is needed. New .cu and .cuh files in kernels/ are picked up automatically;
compile-time constants a kernel reads have `#ifndef` defaults in the file, which these tests compile."""
import ctypes
import glob
import importlib.util
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from xsim.montecarlo import _BatchStatsParams, _BlockMaxParams, _CheckParams, _TransportParams
from xsim.paths import kernels_dir
from xsim.projector import ProjectParams
from xsim.runtime import translation_unit
from xsim.runtime_build import CXX_FLAGS, nvrtc_options
from xsim.runtime_selftest import DemoHistogramParams, PortableCheckParams, RngCheckParams

KERNELS_DIR = kernels_dir().resolve()
KERNELS = sorted(KERNELS_DIR.glob("*.cu"))
HEADERS = sorted(KERNELS_DIR.glob("*.cuh"))
ARCHS = ("80", "90")  # Ampere and Hopper; CUDA 13's nvcc supports sm_75 and newer
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH: CUDA compile checks skipped")
OPTIONS = list(nvrtc_options([KERNELS_DIR], {}, "0" * 64))  # the runtime's own flags, no extra defines


def nvcc_command(source: Path, out: Path) -> list[str]:
    # One call for both architectures (-gencode twice) costs less than two calls.
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    return [NVCC, "-c", *gencode, *OPTIONS, "-x", "cu", str(source), "-o", str(out)]


@pytest.fixture(scope="module")
def nvcc_results(tmp_path_factory):
    """Compile every kernel and every header (in a one-line .cu) with nvcc, in parallel."""
    tmp = tmp_path_factory.mktemp("nvcc")
    jobs = {}
    for path in KERNELS:
        jobs[path.name] = nvcc_command(path, tmp / f"{path.stem}.o")
    for path in HEADERS:
        wrapper = tmp / f"only_{path.stem}.cu"
        wrapper.write_text(f'#include "{path.name}"\n')
        jobs[path.name] = nvcc_command(wrapper, tmp / f"only_{path.stem}.o")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = pool.map(lambda cmd: subprocess.run(cmd, capture_output=True, text=True), jobs.values())
        return dict(zip(jobs, results))


def test_kernels_are_found():
    assert {"demo_histogram.cu", "rng_check.cu", "portable_check.cu"} <= {p.name for p in KERNELS}
    assert {"xsim_portable.cuh", "philox.cuh"} <= {p.name for p in HEADERS}


@needs_nvcc
@pytest.mark.parametrize("path", KERNELS + HEADERS, ids=lambda p: p.name)
def test_nvcc_compiles(path, nvcc_results):
    result = nvcc_results[path.name]
    assert result.returncode == 0, f"{' '.join(result.args)}\n{result.stderr}"
    assert "warning" not in result.stderr.lower(), result.stderr


@pytest.mark.parametrize("path", HEADERS, ids=lambda p: p.name)
def test_header_compiles_alone_on_the_host(path, tmp_path):
    cxx = shutil.which(os.environ.get("CXX", "g++")) or "g++"
    source = tmp_path / "only.cpp"
    source.write_text(f'#include "{path.name}"\n')
    cmd = [cxx, *CXX_FLAGS, "-fopenmp", "-fsyntax-only", "-Wall", "-Wextra", f"-I{KERNELS_DIR}", str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------------------
# NVRTC, the compiler CuPy uses: it has no standard headers, so this is the check that the
# __CUDACC_RTC__ branch of xsim_portable.cuh is complete. libnvrtc comes from the CUDA toolkit or the
# nvidia-cuda-nvrtc wheel; no GPU is needed to compile to PTX.
def _load_nvrtc():
    folders = []
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations if spec else []):
        folders += glob.glob(os.path.join(root, "*", "lib"))
    folders += [os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "lib64")]
    for folder in folders:
        libs = sorted(glob.glob(os.path.join(folder, "libnvrtc.so*")))
        if libs:
            # libnvrtc opens its builtins library by soname: load it first from the same folder.
            for builtins in glob.glob(os.path.join(folder, "libnvrtc-builtins.so*")):
                ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
            return ctypes.CDLL(libs[0])
    return None


NVRTC = _load_nvrtc()
needs_nvrtc = pytest.mark.skipif(
    NVRTC is None, reason="libnvrtc not found (CUDA toolkit or pip install nvidia-cuda-nvrtc): NVRTC checks skipped"
)


def nvrtc_compile(text: str, options: list[str]) -> tuple[int, str]:
    """(status, log) of compiling ``text`` to PTX with NVRTC (status 0 = success)."""
    program = ctypes.c_void_p()
    assert NVRTC.nvrtcCreateProgram(ctypes.byref(program), text.encode(), b"xsim_tu.cu", 0, None, None) == 0
    argv = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
    status = NVRTC.nvrtcCompileProgram(program, len(options), argv)
    size = ctypes.c_size_t()
    NVRTC.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    NVRTC.nvrtcGetProgramLog(program, log)
    NVRTC.nvrtcDestroyProgram(ctypes.byref(program))
    return status, log.value.decode(errors="replace")


@needs_nvrtc
@pytest.mark.parametrize("path", KERNELS + HEADERS, ids=lambda p: p.name)
def test_nvrtc_compiles(path):
    status, log = nvrtc_compile(translation_unit(path), OPTIONS + [f"--gpu-architecture=compute_{ARCHS[0]}"])
    assert status == 0, log


@needs_nvrtc
@pytest.mark.parametrize("source,entry,params", [
    ("demo_histogram.cu", "demo_histogram", DemoHistogramParams),
    ("rng_check.cu", "rng_check", RngCheckParams),
    ("portable_check.cu", "portable_check", PortableCheckParams),
    ("project.cu", "project", ProjectParams),
    ("mc_transport.cu", "mc_transport", _TransportParams),
    ("mc_check.cu", "mc_check", _CheckParams),
    ("mc_batch_stats.cu", "mc_batch_stats", _BatchStatsParams),
    ("mc_block_max.cu", "mc_block_max", _BlockMaxParams),
])
def test_nvrtc_compiles_with_layout_checks(source, entry, params):
    status, log = nvrtc_compile(translation_unit(KERNELS_DIR / source, entry, params),
                                OPTIONS + [f"--gpu-architecture=compute_{ARCHS[0]}"])
    assert status == 0, log
