"""Kernel launch parameters: a ctypes mirror of a kernel's C params struct.

Owns :class:`Params` (the base class of every mirror), :func:`array` (declares a pointer field that takes
an array), the binding of array fields to host or device pointers at launch, and the C++ layout checks
that xsim.runtime compiles into every kernel, so that a mirror which drifts from its C struct fails to
compile with a message naming the field instead of corrupting memory.

Example, mirroring ``struct P { uint64_t seed; const float* mu; double* image; uint32_t n; };``::

    class P(Params):
        _fields_ = [("seed", ctypes.c_uint64), ("mu", array(np.float32, "in")),
                    ("image", array(np.float64)), ("n", ctypes.c_uint32)]

    p = P(seed=1, mu=mu_array, image=np.zeros(100), n=100)
"""
from __future__ import annotations

import ctypes
from functools import cache
from typing import Any

import numpy as np

from .checks import XsimInputError, check_choice
from .device import is_device_array
from .runtime_build import ParamsLayoutError

_INTENTS = ("in", "inout")


class _ArrayField(ctypes.c_void_p):
    """Pointer field made by :func:`array`; subclasses carry ``dtype``, ``intent``, ``optional``."""

    dtype: np.dtype
    intent: str
    optional: bool


def array(dtype: Any, intent: str = "inout", optional: bool = False) -> type[ctypes.c_void_p]:
    """Declare an array (pointer) field of a :class:`Params` mirror.

    Parameters
    ----------
    dtype : numpy dtype-like
        Element type; the C field must point to the matching type (float32 -> ``float``, uint64 ->
        ``uint64_t``, ...).
    intent : {"in", "inout"}
        ``"in"``: only read by the kernel; the C field must be ``const T*``. ``"inout"``: written by the
        kernel; the C field must be ``T*``, and on the GPU a numpy array given here is copied back after
        the launch (numpy in, numpy out).
    optional : bool
        Allow ``None`` (a null pointer, which the kernel must test for).
    """
    dt = np.dtype(dtype)
    _numpy_c_type(dt)  # reject dtypes C has no name for, at declaration time
    check_choice("intent", intent, _INTENTS)
    return type(
        f"array_{dt.name}_{intent}",
        (_ArrayField,),
        {"dtype": dt, "intent": intent, "optional": bool(optional)},
    )


class Params(ctypes.Structure):
    """Base class of a kernel's parameter struct mirror (see the module docstring).

    Scalar fields behave as in any ``ctypes.Structure``. Array fields (declared with :func:`array`) take
    numpy arrays (or cupy arrays for the cuda backend), which are checked here and kept alive by the
    instance; they are turned into pointers only when the kernel is launched.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        field = array_fields(type(self)).get(name)
        if field is None:
            super().__setattr__(name, value)
        else:
            self.__dict__.setdefault("_arrays", {})[name] = _check_array(type(self), name, field, value)

    def get_array(self, name: str) -> Any:
        """The array given for the array field ``name`` (None if unset)."""
        return self.__dict__.get("_arrays", {}).get(name)


@cache
def array_fields(cls: type[Params]) -> dict[str, type[_ArrayField]]:
    """The array fields of a mirror, by name."""
    return {f[0]: f[1] for f in cls._fields_ if issubclass(f[1], _ArrayField)}


def _check_array(cls: type, name: str, field: type[_ArrayField], value: Any) -> Any:
    what = f"{cls.__name__}.{name}"
    want = f"a C-contiguous array of {field.dtype.name}"
    if value is None:
        if field.optional:
            return None
        raise XsimInputError(f"{what} must be {want}, got None (the field is not optional)")
    dtype = getattr(value, "dtype", None)
    flags = getattr(value, "flags", None)
    if dtype is None or flags is None or not hasattr(value, "shape"):
        raise XsimInputError(f"{what} must be {want}, got {type(value).__name__}")
    if np.dtype(dtype) != field.dtype:
        raise XsimInputError(
            f"{what} must be {want}, got dtype {np.dtype(dtype).name} "
            f"(convert with .astype(np.{field.dtype.name}))"
        )
    if not flags.c_contiguous:
        raise XsimInputError(f"{what} must be {want}, got a non-contiguous view (use np.ascontiguousarray)")
    if field.intent == "inout" and not getattr(flags, "writeable", True):
        raise XsimInputError(f"{what} is written by the kernel but the array given is read-only")
    return value


def bind(params: Params, backend: str, cupy: Any = None) -> tuple[Params, list, list]:
    """Copy of ``params`` with every array field set to a pointer valid on ``backend``.

    Returns ``(struct, keep_alive, copy_back)``: ``keep_alive`` holds the arrays the pointers refer to
    (they must live until the launch ends); ``copy_back`` lists ``(device_array, numpy_array)`` pairs to
    download after a GPU launch. On the GPU, numpy arrays are uploaded (``cupy.asarray``) and cupy arrays
    used in place; on the CPU only numpy arrays are accepted.
    """
    cls = type(params)
    bound = cls.from_buffer_copy(params)
    keep_alive: list = []
    copy_back: list = []
    for name, field in array_fields(cls).items():
        value = params.get_array(name)
        if value is None:
            if not field.optional:
                raise XsimInputError(
                    f"{cls.__name__}.{name} is not set: give a C-contiguous array of {field.dtype.name}"
                )
            continue  # stays a null pointer
        if backend == "cpu":
            if not isinstance(value, np.ndarray) or is_device_array(value):
                raise XsimInputError(
                    f"{cls.__name__}.{name}: the cpu backend takes numpy arrays, got {type(value).__name__}"
                    " (use .get() to copy a cupy array to the host)"
                )
            address = value.ctypes.data
        elif isinstance(value, cupy.ndarray):
            address = value.data.ptr
        else:
            device = cupy.asarray(value)
            if field.intent == "inout":
                copy_back.append((device, value))
            value = device
            address = device.data.ptr
        keep_alive.append(value)
        # The field is a ctypes.c_void_p at its offset: write the address through a view of those bytes.
        ctypes.c_void_p.from_buffer(bound, getattr(cls, name).offset).value = address
    return bound, keep_alive, copy_back


# ---------------------------------------------------------------------------------------------------------
# C++ names of the field types, for the layout checks.
_SIGNED, _UNSIGNED = "bhilq", "BHILQ"


def _numpy_c_type(dt: np.dtype) -> str:
    names = {("f", 4): "float", ("f", 8): "double", ("b", 1): "bool"}
    if dt.kind in "iu" and dt.itemsize in (1, 2, 4, 8):
        return f"{'u' if dt.kind == 'u' else ''}int{8 * dt.itemsize}_t"
    if (dt.kind, dt.itemsize) in names:
        return names[(dt.kind, dt.itemsize)]
    raise XsimInputError(f"array dtype must be a fixed-width integer, float32, float64 or bool, got {dt}")


def _ctypes_c_type(ftype: type, where: str) -> str | None:
    """C++ type of a ctypes field type; None for a nested structure (checked by size only)."""
    if issubclass(ftype, _ArrayField):
        return ("const " if ftype.intent == "in" else "") + _numpy_c_type(ftype.dtype) + "*"
    if issubclass(ftype, ctypes.Array):
        dims = []
        while issubclass(ftype, ctypes.Array):
            dims.append(f"[{ftype._length_}]")
            ftype = ftype._type_
        element = _ctypes_c_type(ftype, where)
        return None if element is None else element + "".join(dims)
    if issubclass(ftype, ctypes.Structure):
        return None
    code = getattr(ftype, "_type_", None)
    size = ctypes.sizeof(ftype)
    if code in ("f", "d"):
        return "float" if code == "f" else "double"
    if code == "?":
        return "bool"
    if isinstance(code, str) and code in _SIGNED + _UNSIGNED:
        return f"{'u' if code in _UNSIGNED else ''}int{8 * size}_t"
    raise XsimInputError(
        f"{where} has ctypes type {ftype.__name__}; use a fixed-width ctypes type (c_uint32, c_float, ...), "
        "a ctypes array of those, a nested Structure, or xsim.runtime.array(dtype) for a pointer"
    )


def layout_checks(cls: type[Params], c_type: str, function: str) -> str:
    """C++ checks that ``cls`` mirrors the C struct ``c_type``: ``static_assert`` on the total size and on
    every field's type, and the function ``function(uint64_t* out)`` that writes every field's byte offset
    (to compare with :func:`check_offsets` after loading; NVRTC has no constant offsetof)."""
    if not (isinstance(cls, type) and issubclass(cls, Params) and hasattr(cls, "_fields_")):
        raise XsimInputError(f"params must be a subclass of xsim.runtime.Params with _fields_, got {cls!r}")
    lines = [
        f'static_assert(sizeof({c_type}) == {ctypes.sizeof(cls)}, "xsim: the C struct and its Python mirror '
        f'{cls.__name__} (ctypes.sizeof = {ctypes.sizeof(cls)}) differ in size");'
    ]
    offsets = []
    for k, field in enumerate(cls._fields_):
        name, ftype = field[0], field[1]
        where = f"{cls.__name__}.{name}"
        if len(field) > 2:
            raise XsimInputError(f"{where}: bit fields are not supported in kernel params")
        declared = _ctypes_c_type(ftype, where)
        same = (
            f"xsim::same_type<decltype({c_type}::{name}), {declared}>::value"
            if declared
            else f"sizeof({c_type}::{name}) == {ctypes.sizeof(ftype)}"
        )
        lines.append(
            f'static_assert({same}, "xsim: {where} is {declared or ftype.__name__} in Python; '
            f'the C struct declares it differently");'
        )
        offsets.append(f"    out[{k}] = (uint64_t)((const char*)&s.{name} - (const char*)&s);")
    lines.append(f"XSIM_EXPORT_FN {function}(uint64_t* out) {{\n    {c_type} s{{}};")
    lines += offsets
    lines.append("}")
    return "\n".join(lines) + "\n"


def check_offsets(cls: type[Params], measured: list[int]) -> None:
    """Raise ParamsLayoutError unless the C offsets ``measured`` (in field order) equal the mirror's."""
    wrong = [
        f"{name} at byte {getattr(cls, name).offset} in Python, {got} in C"
        for (name, *_), got in zip(cls._fields_, measured)
        if getattr(cls, name).offset != got
    ]
    if wrong:
        raise ParamsLayoutError(
            f"{cls.__name__} does not mirror its C struct (fields in a different order?): " + "; ".join(wrong)
        )
