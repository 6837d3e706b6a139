"""Where xsim's files live: the shipped physics tables and kernel sources, and the cache.

Both folders sit at the top of the source tree and ship inside the wheel as the sub-packages
``xsim.physics_data`` and ``xsim.kernels`` (see pyproject.toml), so one lookup works for editable
and regular installs.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def physics_data_dir() -> Path:
    """Folder holding the physics tables (``physics_data/`` of the source tree)."""
    return Path(str(resources.files("xsim.physics_data")))


def kernels_dir() -> Path:
    """Folder holding the CUDA C++ kernel sources (``kernels/`` of the source tree)."""
    return Path(str(resources.files("xsim.kernels")))


def cache_dir() -> Path:
    """xsim's cache folder (created on first use): compiled kernels, and SpekPy spectra in ``spectra/``.

    ``XSIM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/xsim/kernels`` (``~/.cache/xsim/kernels``).
    """
    env = os.environ.get("XSIM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xsim" / "kernels"
