"""Building kernels: the C++ compiler, the compiled-kernel cache, and the compiler options of both targets.

Owns compiler discovery (``$CXX``, else g++, c++, clang++), the OpenMP probe and its single-thread
fallback, the cache key (a SHA-256 of the kernel source, every header it includes through ``#include
"..."`` (recursively), the flags and ``-D`` defines, the compiler's version string and this runtime's ABI
number), the atomic write of shared libraries into the cache, and the NVRTC options for the GPU.

Cache folder: ``$XSIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/xsim/kernels``, else ``~/.cache/xsim/kernels``.
Libraries are written under a temporary name and moved into place with ``os.replace``, so processes
compiling the same kernel at once never see a partial file. Deleting the folder is always safe.

Environment: ``XSIM_MARCH_NATIVE`` (``auto``, the default: ``-march=native`` when the compiler accepts it;
``1``: required; ``0``: off; the target it resolves to is part of the cache key, so a cache shared by
different machines holds one library per CPU type);
``XSIM_OPENMP=0`` builds without OpenMP (one thread), as happens automatically, with a warning, when the
compiler cannot build OpenMP code.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

from .checks import XsimInputError
from .paths import cache_dir

log = logging.getLogger("xsim.runtime")

# Bump when the generated wrapper, the entry conventions or the flags change meaning: old libraries in
# users' caches then stop matching instead of being loaded with the wrong ABI.
RUNTIME_ABI = 1

# -fno-math-errno lets sqrt inline (no errno to set); -ffp-contract=off keeps a*b+c as two roundings, so
# results do not change with XSIM_MARCH_NATIVE (FMA units) and fixed-point tallies match the GPU's.
CXX_FLAGS = ("-std=c++17", "-O3", "-fno-math-errno", "-ffp-contract=off", "-fPIC", "-shared")
NVRTC_FLAGS = ("-std=c++17",)

_stats = {"hits": 0, "misses": 0, "compile_seconds": 0.0}
_warned: set[str] = set()


class KernelCompileError(RuntimeError):
    """A kernel failed to compile; the message holds the command and the compiler's file:line output."""


class ParamsLayoutError(KernelCompileError):
    """A Python params mirror lays out its fields differently from the kernel's C struct."""


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here (no C++ compiler, no CuPy, no CUDA device)."""


def cache_stats() -> dict:
    """Counts of this process: ``hits`` (library found in the cache), ``misses`` (compiled), and
    ``compile_seconds`` spent compiling."""
    return dict(_stats)


def _count(kind: str, seconds: float = 0.0) -> None:
    _stats[kind] += 1
    _stats["compile_seconds"] += seconds


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


# ---------------------------------------------------------------------------------------------------------
# Sources and their headers.
_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)


def included_files(text: str, directory: Path, include_dirs: Iterable[Path]) -> list[Path]:
    """Every file reachable from ``text`` through ``#include "..."``, searched like the compilers do: the
    including file's folder first, then ``include_dirs``. Includes inside ``#if`` count too (safe side);
    ``<...>`` system headers are covered by the compiler version in the cache key."""
    include_dirs = list(include_dirs)
    found: list[Path] = []
    pending = [(text, directory)]
    while pending:
        body, here = pending.pop()
        for name in _INCLUDE.findall(body):
            for folder in (here, *include_dirs):
                path = (folder / name).resolve()
                if path.is_file():
                    if path not in found:
                        found.append(path)
                        pending.append((path.read_text(), path.parent))
                    break
    return found


def source_digest(text: str, directory: Path, include_dirs: Iterable[Path], *extra: str) -> str:
    """SHA-256 of ``text``, of every file it includes (name and content) and of ``extra`` strings."""
    h = hashlib.sha256(f"xsim-runtime-abi-{RUNTIME_ABI}\0".encode())
    for part in (text, *extra):
        h.update(part.encode() + b"\0")
    for path in included_files(text, directory, include_dirs):
        h.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def define_flags(defines: Mapping[str, object]) -> list[str]:
    """``-DNAME=VALUE`` flags, sorted so the cache key does not depend on dict order."""
    flags = []
    for name, value in sorted(defines.items()):
        if not (isinstance(name, str) and name.isidentifier()):
            raise XsimInputError(f"defines keys must be C identifiers, got {name!r}")
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, float, str)):
            raise XsimInputError(f"defines[{name!r}] must be int, float, bool or str, got {value!r}")
        flags.append(f"-D{name}={value}")
    return flags


def nvrtc_options(include_dirs: Iterable[Path], defines: Mapping[str, object], digest: str) -> tuple[str, ...]:
    """Options for NVRTC (and nvcc, which accepts the same spelling). ``XSIM_SOURCE_HASH`` changes with
    any header, so CuPy's own cache (keyed on the code string and options only) cannot serve a stale
    binary."""
    return (
        *NVRTC_FLAGS,
        *(f"-I{d}" for d in include_dirs),
        *define_flags(defines),
        f"-DXSIM_SOURCE_HASH=0x{digest[:16]}ull",
    )


# ---------------------------------------------------------------------------------------------------------
# The C++ compiler.
_NO_COMPILER_HELP = (
    "Install one (Debian/Ubuntu: apt install g++; Fedora: dnf install gcc-c++; conda: conda install -c "
    "conda-forge cxx-compiler) or set $CXX, or use backend='cuda' on a machine with an NVIDIA GPU and CuPy."
)


def find_cxx() -> list[str]:
    """The C++ compiler command: ``$CXX`` (may hold arguments, e.g. ``ccache g++``), else the first of
    g++, c++, clang++ on PATH."""
    env = os.environ.get("CXX", "").strip()
    if env:
        words = shlex.split(env)
        exe = shutil.which(words[0])
        if exe is None:
            raise BackendUnavailableError(
                f"The C++ compiler named by $CXX ({env!r}) was not found. {_NO_COMPILER_HELP}"
            )
        return [exe, *words[1:]]
    for name in ("g++", "c++", "clang++"):
        exe = shutil.which(name)
        if exe:
            return [exe]
    raise BackendUnavailableError(
        f"No C++ compiler found for the cpu backend (looked for $CXX, g++, c++, clang++). {_NO_COMPILER_HELP}"
    )


@cache
def compiler_version(cxx: tuple[str, ...]) -> str:
    """``cxx --version`` output, part of the cache key."""
    result = subprocess.run([*cxx, "--version"], capture_output=True, text=True, check=False)
    return result.stdout + result.stderr


@cache
def _openmp_probe(cxx: tuple[str, ...]) -> str:
    """Empty string when ``cxx`` builds and links OpenMP code, else the compiler's complaint."""
    probe = '#include <omp.h>\nextern "C" int xsim_openmp_probe() { return omp_get_max_threads(); }\n'
    with tempfile.TemporaryDirectory(prefix="xsim-omp-") as tmp:
        src = Path(tmp) / "probe.cpp"
        src.write_text(probe)
        cmd = [*cxx, "-fopenmp", "-shared", "-fPIC", str(src), "-o", str(Path(tmp) / "probe.so")]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return "" if result.returncode == 0 else (result.stderr.strip() or "failed").splitlines()[-1]


def openmp_flags(cxx: list[str]) -> list[str]:
    """``["-fopenmp"]``, or ``[]`` with a one-time warning when OpenMP is disabled or unavailable."""
    if os.environ.get("XSIM_OPENMP", "1").strip() == "0":
        _warn_once("xsim: OpenMP disabled by XSIM_OPENMP=0; CPU kernels run on one thread.")
        return []
    problem = _openmp_probe(tuple(cxx))
    if problem:
        _warn_once(
            f"xsim: the C++ compiler {cxx[0]} cannot build OpenMP code ({problem}); CPU kernels are built "
            "without -fopenmp and run on one thread. Install OpenMP support (GCC: apt install libgomp1; "
            "clang: apt install libomp-dev) or use backend='cuda'."
        )
        return []
    return ["-fopenmp"]


@cache
def _native_target(cxx: tuple[str, ...]) -> tuple[str, str]:
    """(the macros ``cxx -march=native`` predefines, "") — they name the CPU and every ISA extension it
    targets, on any OS and architecture — or ("", the compiler's complaint) when it rejects the flag."""
    with tempfile.TemporaryDirectory(prefix="xsim-native-") as tmp:
        src = Path(tmp) / "empty.cpp"
        src.write_text("")
        cmd = [*cxx, "-march=native", "-dM", "-E", "-x", "c++", str(src)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return "", (result.stderr.strip() or "failed").splitlines()[-1]
    return "\n".join(sorted(result.stdout.splitlines())), ""  # GCC lists them in no fixed order


def _march_flags(cxx: list[str]) -> tuple[list[str], str]:
    """``(["-march=native"], the target it resolves to)`` for the flags and the cache key (a library built for
    one CPU is never loaded on another that shares the cache folder), or ``([], "")``.

    ``XSIM_MARCH_NATIVE``: ``auto`` (default) uses it when the compiler accepts it; ``1`` requires it;
    ``0`` never. The kernels' results do not depend on it (no FMA contraction, no reassociation: the same
    IEEE operations in wider registers); their speed does (the projector walks 8 rays per AVX-512 vector,
    4 per AVX2 vector, else one at a time).
    """
    setting = os.environ.get("XSIM_MARCH_NATIVE", "auto").strip().lower()
    if setting not in ("auto", "0", "1"):
        raise XsimInputError(f"environment variable XSIM_MARCH_NATIVE must be auto, 0 or 1, got {setting!r}")
    if setting == "0":
        return [], ""
    target, problem = _native_target(tuple(cxx))
    if target:
        return ["-march=native"], target
    if setting == "1":
        raise KernelCompileError(f"XSIM_MARCH_NATIVE=1, but the C++ compiler {cxx[0]} rejects -march=native "
                                 f"({problem}); unset it (auto) or set it to 0")
    return [], ""


def _cpu_flags(cxx: list[str]) -> tuple[list[str], str]:
    """(the flags CPU kernels are built with, without includes and defines; the native target for the key)."""
    march, native_target = _march_flags(cxx)
    return [*CXX_FLAGS, *openmp_flags(cxx), *march], native_target


def cpu_build_flags() -> list[str]:
    """The compiler and flags CPU kernels are built with here (without includes and defines)."""
    cxx = find_cxx()
    return [*cxx, *_cpu_flags(cxx)[0]]


def build_cpu(text: str, name: str, include_dirs: list[Path], defines: Mapping[str, object]) -> Path:
    """Shared library compiled from the C++ source ``text`` (whose ``#include "..."`` resolve in
    ``include_dirs``), from the cache when the key matches, else compiled now and stored."""
    cxx = find_cxx()
    flags, native_target = _cpu_flags(cxx)
    flags += [f"-I{d}" for d in include_dirs] + define_flags(defines)
    digest = source_digest(
        text, include_dirs[0], include_dirs, shlex.join(cxx), compiler_version(tuple(cxx)), *flags, native_target
    )
    folder = cache_dir()
    target = folder / f"{name}-{digest[:24]}.so"
    if target.is_file():
        _count("hits")
        return target
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp:
        src = Path(tmp) / f"{name}.cpp"
        src.write_text(text)
        lib = Path(tmp) / f"{name}.so"
        cmd = [*cxx, *flags, "-x", "c++", str(src), "-o", str(lib)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise KernelCompileError(
                f"Compiling kernel {name} failed.\ncommand: {shlex.join(cmd)}\n"
                f"{result.stderr.strip()}\n(the generated {src.name} includes the kernel source, then checks "
                "that the XSIM_KERNEL entry exists and that the Python params mirror matches its C struct)"
            )
        os.replace(lib, target)
    seconds = time.perf_counter() - start
    _count("misses", seconds)
    log.info("compiled %s in %.2f s -> %s", name, seconds, target)
    return target
