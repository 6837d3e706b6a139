"""A stand-in for CuPy that keeps its arrays in host memory and runs "GPU" launches with the CPU build of
the same kernel: the cuda backend's Python side (device caches, batch statistics on device arrays, results
left on the device until read, by-value params) then runs on a machine without a GPU, and must give what
the cpu backend gives, bit for bit. What it cannot test is the CUDA build itself: tests/test_gpu.py does
that wherever a real GPU is present.

Only the parts of CuPy's API that xsim uses are here; a missing one fails loudly (AttributeError).
"""
from __future__ import annotations

import ctypes
import re
import types
from pathlib import Path

import numpy as np

from xsim import runtime_build


class ndarray(np.ndarray):
    """A numpy array that xsim takes for a device array (its class lives in a module named cupy...)."""

    @property
    def data(self):  # cupy's MemoryPointer: only .ptr is used
        return types.SimpleNamespace(ptr=self.ctypes.data)

    def get(self, out=None):
        host = np.array(self, copy=True).view(np.ndarray)
        if out is not None:
            out[...] = host
            return out
        return host


ndarray.__module__ = "cupy._on_cpu"


def _device(array) -> ndarray:
    return np.asarray(array).view(ndarray)


def asarray(array, dtype=None):
    if isinstance(array, ndarray) and (dtype is None or array.dtype == dtype):
        return array
    return _device(np.array(array, dtype=dtype, copy=True))


def ascontiguousarray(array, dtype=None):
    return _device(np.ascontiguousarray(np.asarray(array), dtype=dtype))


def zeros(shape, dtype=float):
    return _device(np.zeros(shape, dtype))


def empty(shape, dtype=float):
    return _device(np.empty(shape, dtype))


def full_like(array, value):
    return _device(np.full_like(np.asarray(array), value))


class _Function:
    """A kernel entry of the CPU build, called the way CuPy calls a __global__ function."""

    def __init__(self, library: ctypes.CDLL, name: str, launches: list):
        self.name = name
        self.ptr = 0
        self.max_threads_per_block = 256
        self.num_regs = 0
        self.local_size_bytes = 0
        self._entry = getattr(library, f"{name}_host", None)
        self._plain = getattr(library, name) if self._entry is None else None
        self._launches = launches

    def __call__(self, grid, block, args):
        if self._entry is None:  # an XSIM_EXPORT_FN check function: (array,)
            self._plain(ctypes.c_void_p(args[0].ctypes.data))
            return
        struct, n = args
        assert isinstance(struct, np.ndarray) and struct.size == 1  # CuPy passes this by value
        assert isinstance(n, np.uint64)
        self._launches.append((grid, block, int(n)))
        self._entry(ctypes.c_void_p(struct.ctypes.data), ctypes.c_uint64(int(n)), ctypes.c_int(2))


class CompileException(Exception):
    pass


def stand_in(multiprocessors: int = 4) -> types.ModuleType:
    """A fresh module to put in ``sys.modules["cupy"]`` (its counters and settings are its own):
    ``RawModule.built`` counts compilations, ``RawModule.launches`` records (grid, block, n) per launch."""
    cupy = types.ModuleType("cupy")

    class RawModule:
        """Compiles the translation unit CuPy would get with the host compiler (its -I and -D options kept)."""

        built = 0
        launches: list = []

        def __init__(self, code: str, options=()):
            assert "-std=c++17" in options and any(o.startswith("-DXSIM_SOURCE_HASH=") for o in options)
            includes = [opt[2:] for opt in options if opt.startswith("-I")]
            defines = dict(re.match(r"-D(\w+)=(.*)", opt).groups() for opt in options if opt.startswith("-D"))
            library = runtime_build.build_cpu(code, "cupy_on_cpu", [Path(d) for d in includes], defines)
            self._library = ctypes.CDLL(str(library))
            RawModule.built += 1

        def get_function(self, name: str) -> _Function:
            return _Function(self._library, name, RawModule.launches)

    stream = types.SimpleNamespace(synchronize=lambda: None)

    class Event:  # host clock "events", enough for benchmarks/gpu_check.py's smoke test
        def record(self):
            import time

            self.t = time.perf_counter()

        def synchronize(self):
            pass

    cupy.__version__ = "stand-in"
    cupy.__dict__.update(
        ndarray=ndarray, asarray=asarray, ascontiguousarray=ascontiguousarray, zeros=zeros, empty=empty,
        full_like=full_like, divide=np.divide, multiply=np.multiply, maximum=np.maximum, sqrt=np.sqrt,
        uint8=np.uint8, uint32=np.uint32, uint64=np.uint64, int64=np.int64, float32=np.float32,
        float64=np.float64, RawModule=RawModule,
        cuda=types.SimpleNamespace(
            Device=lambda: types.SimpleNamespace(attributes={"MultiProcessorCount": multiprocessors}),
            get_current_stream=lambda: stream,
            Event=Event,
            get_elapsed_time=lambda begin, end: 1e3 * (end.t - begin.t),
            compiler=types.SimpleNamespace(CompileException=CompileException),
            driver=types.SimpleNamespace(occupancyMaxActiveBlocksPerMultiprocessor=lambda f, block, smem: 1),
            runtime=types.SimpleNamespace(
                getDeviceCount=lambda: 1, CUDARuntimeError=RuntimeError,
                getDeviceProperties=lambda i: {"name": b"CuPy stand-in (CPU)", "multiProcessorCount": multiprocessors}),
        ),
    )
    return cupy
