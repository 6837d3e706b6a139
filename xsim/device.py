"""GPU residency for the cuda backend: device copies that outlive a call, and results that stay on the device.

Owns the cache of device arrays derived from an object that does not change (a :class:`xsim.volume.Phantom`,
whose arrays are read-only, or a table object), so that a phantom is uploaded once and not at every
``project()`` or ``monte_carlo()`` call; and :class:`HostView`, the lazy numpy copy of a device array that a
result object (``Projection``, ``MCResult``) hands out on first access. The CPU backend never comes here.

A cached copy lives as long as the object it was derived from (a weak reference: when the phantom is garbage
collected, its device arrays are released too). The key names what was derived (``"voxels"``, ``"majorants
<tables id>"``...), so one phantom may hold several.
"""
from __future__ import annotations

import threading
import weakref
from typing import Any, Callable

import numpy as np

__all__ = ["HostView", "cached", "clear", "is_device_array", "phantom_arrays", "to_host"]

_lock = threading.Lock()
_cache: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()


def cached(owner: Any, key: str, make: Callable[[], Any]) -> Any:
    """The value stored for ``(owner, key)``, made by ``make()`` on first use and kept until ``owner`` dies.

    ``owner`` must not change after the first call (phantoms freeze their arrays; tables are read-only);
    ``make`` typically uploads or computes device arrays (cupy).
    """
    with _lock:
        entry = _cache.get(owner)
        if entry is not None and key in entry:
            return entry[key]
    value = make()
    with _lock:
        _cache.setdefault(owner, {})[key] = value
    return value


def clear(owner: Any | None = None) -> None:
    """Drop the device copies of ``owner`` (of every object when None), e.g. to free GPU memory."""
    with _lock:
        if owner is None:
            _cache.clear()
        else:
            _cache.pop(owner, None)


def phantom_arrays(phantom: Any) -> tuple[Any, Any]:
    """(material index uint8, density float32 g/cm^3) of a phantom on the GPU, uploaded once per phantom."""
    from .runtime import cupy_module

    def upload():
        cp = cupy_module()
        return (cp.asarray(np.ascontiguousarray(phantom.material_index, dtype=np.uint8)),
                cp.asarray(np.ascontiguousarray(phantom.density_g_cm3, dtype=np.float32)))

    return cached(phantom, "arrays", upload)


def is_device_array(array: Any) -> bool:
    """True for a cupy array or a torch tensor on a GPU (without importing either when it is not loaded)."""
    module = type(array).__module__
    return module.startswith("cupy") or (module.startswith("torch") and bool(getattr(array, "is_cuda", False)))


def to_host(array: Any) -> Any:
    """``array`` as numpy: device arrays are copied to the host, anything else is returned as it is."""
    if not is_device_array(array):
        return array
    return array.get() if type(array).__module__.startswith("cupy") else array.cpu().numpy()


class HostView:
    """A result array that may live on the GPU: ``host()`` copies it to numpy once (on first access) and
    keeps that copy; ``device`` is the array as computed (cupy or a torch tensor on the cuda backend, numpy on
    the cpu)."""

    __slots__ = ("device", "_host")

    def __init__(self, array: Any):
        self.device = array
        self._host = None if is_device_array(array) else array

    def host(self) -> np.ndarray:
        if self._host is None:
            self._host = to_host(self.device)
        return self._host
