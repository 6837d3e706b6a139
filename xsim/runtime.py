"""Kernel runtime: load a single-source kernel (``kernels/*.cu``) for the CPU or an NVIDIA GPU and launch it.

Owns backend selection (``backend="cpu"|"cuda"|"auto"``, environment variable ``XSIM_BACKEND``), the
:class:`Kernel` launcher and the CPU thread count. Building and caching live in ``xsim.runtime_build``,
the params-struct mirror in ``xsim.runtime_params``; the public names of both are re-exported here.
Kernel conventions (one body, two entries, fixed-point tallies) are in ``kernels/README.md``.

Example::

    from xsim import runtime
    from xsim.runtime_selftest import DemoHistogramParams

    k = runtime.Kernel("demo_histogram.cu", entry="demo_histogram", params=DemoHistogramParams,
                       defines={"DEMO_NBINS": 64})
    counts, total = np.zeros(64, np.uint64), np.zeros(1, np.uint64)
    p = DemoHistogramParams(seed=1, counts=counts, sum_fixed=total, fixed_scale=2.0**32,
                            draws_per_thread=16)
    k.launch(100_000, p)              # counts and total are filled in place, on either backend
    mean = runtime.from_fixed(total, 2.0**32)[0] / counts.sum()

CPU: the source is compiled by the system C++ compiler with OpenMP into a cached shared library and
called through ctypes (the GIL is released during the call). GPU: CuPy compiles it with NVRTC
(``cupy.RawModule``; the entries are ``extern "C"``, so no ``name_expressions``); the params struct is
passed *by value* as a kernel argument (CuPy >= 13 passes a size-one numpy array by value, byte for
byte), so both entries read the same struct: the ``__global__`` entry as its parameter, the host entry
through a pointer.
"""
from __future__ import annotations

import ctypes
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .checks import XsimInputError, check_choice, check_range
from .paths import kernels_dir
from .runtime_build import (
    BackendUnavailableError,
    KernelCompileError,
    ParamsLayoutError,
    build_cpu,
    cache_stats,
    nvrtc_options,
    source_digest,
)
from .runtime_params import Params, array, bind, check_offsets, layout_checks

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "Kernel",
    "KernelCompileError",
    "Params",
    "ParamsLayoutError",
    "array",
    "cache_stats",
    "cupy_module",
    "translation_unit",
    "default_threads",
    "from_fixed",
    "select_backend",
]

BACKENDS = ("auto", "cpu", "cuda")
CUDA_BLOCK = 256  # threads per block; the grid-stride loop makes any grid size correct
CUDA_BLOCKS_PER_SM = 32  # enough resident blocks to hide latency; more only adds scheduling


def _cupy() -> Any:
    """The cupy module, or BackendUnavailableError saying what is missing."""
    try:
        import cupy
    except ImportError as err:
        raise BackendUnavailableError(
            f"backend='cuda' needs CuPy, which is not importable ({err}). Install it with "
            "pip install 'xsim[gpu]' (CuPy for CUDA 12), or use backend='cpu'."
        ) from err
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        detail = ""
    except cupy.cuda.runtime.CUDARuntimeError as err:
        count, detail = 0, f" ({err})"
    if count == 0:
        raise BackendUnavailableError(
            f"backend='cuda': CuPy is installed but finds no CUDA device{detail}. Check the NVIDIA driver "
            "(nvidia-smi) and CUDA_VISIBLE_DEVICES, or use backend='cpu'."
        )
    return cupy


def cupy_module() -> Any:
    """The cupy module, for code that handles device arrays on the cuda backend (BackendUnavailableError
    saying what is missing when CuPy or a device is not there)."""
    return _cupy()


def select_backend(backend: str | None = None) -> str:
    """Resolve a backend name to ``"cpu"`` or ``"cuda"``.

    Parameters
    ----------
    backend : {"auto", "cpu", "cuda"} or None
        None reads the environment variable ``XSIM_BACKEND`` (default ``"auto"``). ``"auto"`` is cuda when
        CuPy imports and sees a device, else cpu. ``"cuda"`` raises BackendUnavailableError when it cannot
        run.
    """
    source = None
    if backend is None:
        backend = os.environ.get("XSIM_BACKEND", "auto").strip() or "auto"
        source = "environment variable XSIM_BACKEND"
    check_choice("backend", backend, BACKENDS, source=source)
    if backend == "auto":
        try:
            _cupy()
            return "cuda"
        except BackendUnavailableError:
            return "cpu"
    if backend == "cuda":
        _cupy()
    return backend


def default_threads() -> int:
    """CPU threads for host kernels: ``$XSIM_NUM_THREADS``, else the CPUs this process may run on."""
    env = os.environ.get("XSIM_NUM_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise XsimInputError(f"XSIM_NUM_THREADS must be a positive integer, got {env!r}")
        return int(env)
    if hasattr(os, "sched_getaffinity"):  # respects taskset / cgroup CPU sets, unlike os.cpu_count()
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def from_fixed(acc: Any, scale: float) -> Any:
    """Values of fixed-point tallies (``xsim::atomic_add_fixed``): ``int64(acc) / scale``.

    Parameters
    ----------
    acc : array of uint64 or int64
        Accumulators (numpy or cupy).
    scale : float
        Fixed-point units per unit of the tallied quantity, as given to the kernel.
    """
    check_range("scale", scale, 0.0, None, low_inclusive=False)
    if np.dtype(acc.dtype) not in (np.dtype(np.uint64), np.dtype(np.int64)):
        raise XsimInputError(f"acc must be an array of uint64 or int64, got {acc.dtype}")
    return acc.view(np.int64) / scale


def _resident_blocks(cp: Any, function: Any, block: int) -> int:
    """Blocks of ``block`` threads of ``function`` one multiprocessor holds at once: CUDA's occupancy
    calculator, else (a CuPy without it) the register file's count (64K registers, 2048 threads, 32 blocks per
    multiprocessor on every GPU since Volta; registers allocated in units of 8 per thread)."""
    try:
        return int(cp.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(function.ptr, block, 0))
    except AttributeError:
        registers = -(-max(int(function.num_regs), 1) // 8) * 8
        return min(32, 2048 // block, 65536 // (registers * block))


def _resolve_source(source: str | os.PathLike) -> Path:
    """A bare file name is looked up in the shipped kernels folder; anything with a folder is a path."""
    path = Path(source)
    if path.name == str(source):
        path = kernels_dir() / path
    if not path.is_file():
        raise XsimInputError(
            f"source must be a kernel file name in {kernels_dir()} or a path to a .cu file, got {source!r}"
        )
    return path.resolve()


def translation_unit(source: Path, entry: str | None = None, params: type[Params] | None = None) -> str:
    """The translation unit xsim compiles for either target: the kernel file, then (given ``entry`` and
    ``params``) the checks that ``XSIM_KERNEL(entry, ...)`` exists and that ``params`` mirrors its C
    struct (types at compile time, offsets by ``{entry}_xsim_layout`` at load time). Including the file
    by path keeps compiler messages pointing at its own lines."""
    text = f'// generated by xsim.runtime\n#include "{source}"\n'
    if entry is not None and params is not None:
        text += layout_checks(params, f"{entry}_params_t", f"{entry}_xsim_layout")
    return text


class Kernel:
    """One entry of a kernel source, compiled for one backend, ready to launch.

    Parameters
    ----------
    source : str or path
        File name in the shipped ``kernels/`` folder (e.g. ``"demo_histogram.cu"``) or a path to a .cu file
        elsewhere (its own folder is searched for includes first, then ``kernels/``).
    entry : str
        Name given to ``XSIM_KERNEL(entry, ParamsStruct)`` in the source.
    params : subclass of Params
        Python mirror of the C params struct; checked against it at compile time.
    defines : mapping, optional
        Compile-time constants, passed as ``-DNAME=VALUE`` (each compiled variant is cached separately).
    backend : {"auto", "cpu", "cuda"}, optional
        See :func:`select_backend`; default from ``XSIM_BACKEND``, else auto.
    threads : int, optional
        CPU threads for launches (cpu backend); default :func:`default_threads`.
    persistent : bool
        The source declares its entry with ``XSIM_PERSISTENT_KERNEL(entry, Params, threads, min_blocks)``:
        on the GPU it is launched with ``threads`` per block and exactly the blocks that are resident on the
        device at once (CUDA's occupancy calculator), each thread running many items.
    cuda_options : sequence of str, optional
        Extra NVRTC options for the cuda backend (e.g. ``("--fmad=false",)``: no fused multiply-add, so the
        GPU performs the host build's IEEE operations); part of CuPy's cache key. Ignored on the cpu backend.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        entry: str,
        params: type[Params],
        defines: dict[str, Any] | None = None,
        backend: str | None = None,
        threads: int | None = None,
        persistent: bool = False,
        cuda_options: tuple[str, ...] | list[str] = (),
    ):
        if not (isinstance(entry, str) and entry.isidentifier()):
            raise XsimInputError(f"entry must be a C identifier (the XSIM_KERNEL name), got {entry!r}")
        self.source = _resolve_source(source)
        self.entry = entry
        self.params = params
        self.defines = dict(defines or {})
        self.backend = select_backend(backend)
        self.threads = self._check_threads(threads)
        self.persistent = bool(persistent)
        self.cuda_options = tuple(str(o) for o in cuda_options)
        self.library: Path | None = None  # cpu: the shared library loaded
        text = translation_unit(self.source, entry, params)
        include_dirs = list(dict.fromkeys([self.source.parent, kernels_dir().resolve()]))
        if self.backend == "cpu":
            offsets = self._load_cpu(text, include_dirs)
        else:
            offsets = self._load_cuda(text, include_dirs)
        check_offsets(params, offsets.tolist())

    def _load_cpu(self, text: str, include_dirs: list[Path]) -> np.ndarray:
        """Build (or find in the cache) and load the library; returns the C struct's field offsets."""
        stem, entry = self.source.stem, self.entry
        self.library = build_cpu(text, stem if entry == stem else f"{stem}-{entry}", include_dirs, self.defines)
        library = ctypes.CDLL(str(self.library))
        offsets = np.zeros(len(self.params._fields_), np.uint64)
        getattr(library, f"{entry}_xsim_layout")(offsets.ctypes.data_as(ctypes.c_void_p))
        self._function = getattr(library, f"{entry}_host")
        self._function.argtypes = [ctypes.POINTER(self.params), ctypes.c_uint64, ctypes.c_int]
        self._function.restype = None
        return offsets

    def _load_cuda(self, text: str, include_dirs: list[Path]) -> np.ndarray:
        """Compile with NVRTC through CuPy (which caches the binary); returns the C struct's field offsets."""
        cp = self._cp = _cupy()
        options = (*nvrtc_options(include_dirs, self.defines, source_digest(text, self.source.parent, include_dirs)),
                   *self.cuda_options)
        try:
            module = cp.RawModule(code=text, options=options)
            self._function = module.get_function(self.entry)
        except cp.cuda.compiler.CompileException as err:
            raise KernelCompileError(f"NVRTC failed to compile {self.source} ({self.entry}):\n{err}") from err
        offsets = cp.zeros(len(self.params._fields_), cp.uint64)
        module.get_function(f"{self.entry}_xsim_layout")((1,), (1,), (offsets,))
        multiprocessors = cp.cuda.Device().attributes["MultiProcessorCount"]
        self._block = CUDA_BLOCK
        self._max_blocks = CUDA_BLOCKS_PER_SM * multiprocessors
        if self.persistent:
            # The block size the entry was compiled for (its __launch_bounds__), and the blocks of that size
            # the device holds at once: the grid of persistent threads.
            self._block = int(self._function.max_threads_per_block)
            self._max_blocks = max(1, _resident_blocks(cp, self._function, self._block)) * multiprocessors
        return offsets.get()

    def cuda_attributes(self) -> dict:
        """The compiled entry's resources on the GPU (cuda backend): registers per thread, local memory
        (stack and spills) per thread in bytes, threads per block and blocks per launch."""
        if self.backend != "cuda":
            raise XsimInputError(f"cuda_attributes() needs the cuda backend, this kernel runs on {self.backend}")
        f = self._function
        return {"registers": int(f.num_regs), "local_bytes": int(f.local_size_bytes), "block": self._block,
                "max_blocks": self._max_blocks, "persistent": self.persistent}

    @staticmethod
    def _check_threads(threads: int | None) -> int:
        if threads is None:
            return default_threads()
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise XsimInputError(f"threads must be a positive integer, got {threads!r}")
        return int(threads)

    def launch(self, n: int, params: Params, threads: int | None = None) -> None:
        """Run the body for every index ``i`` in ``[0, n)``.

        Parameters
        ----------
        n : int
            Number of indices (photons, pixels, ...).
        params : instance of the kernel's Params mirror
            Array fields may hold numpy arrays (uploaded to the GPU and, for ``intent="inout"``, copied
            back in place) or, on the cuda backend, cupy arrays (used in place; the launch is then
            asynchronous on CuPy's current stream).
        threads : int, optional
            CPU threads for this launch (default: the kernel's ``threads``).
        """
        if not isinstance(params, self.params):
            raise XsimInputError(
                f"params must be a {self.params.__name__} instance, got {type(params).__name__}"
            )
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n < 2**63:
            raise XsimInputError(f"n must be an integer in [0, 2^63), got {n!r}")
        if n == 0:
            return
        # keep_alive holds the arrays behind the pointers until the call returns (on the GPU, CuPy's
        # stream-ordered memory pool makes releasing them after an asynchronous launch safe).
        if self.backend == "cpu":
            threads = self.threads if threads is None else self._check_threads(threads)
            struct, keep_alive, _ = bind(params, "cpu")
            self._function(ctypes.byref(struct), int(n), threads)
            return
        struct, keep_alive, copy_back = bind(params, "cuda", self._cp)
        by_value = np.frombuffer(bytes(struct), dtype=np.dtype((np.void, ctypes.sizeof(struct))))
        blocks = min(math.ceil(n / self._block), self._max_blocks)
        self._function((blocks,), (self._block,), (by_value, np.uint64(n)))
        for device, host in copy_back:
            device.get(out=host)

    def synchronize(self) -> None:
        """Wait until the launches made on CuPy's current stream have finished (cuda); nothing on the cpu,
        whose launches return when done."""
        if self.backend == "cuda":
            self._cp.cuda.get_current_stream().synchronize()

    def __repr__(self) -> str:
        return f"Kernel({self.source.name!r}, entry={self.entry!r}, backend={self.backend!r})"
