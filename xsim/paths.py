"""Where xsim's shipped data lives: the physics tables and the kernel sources.

Both folders sit at the top of the source tree and ship inside the wheel as the sub-packages
``xsim.physics_data`` and ``xsim.kernels`` (see pyproject.toml), so one lookup works for editable
and regular installs.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def physics_data_dir() -> Path:
    """Folder holding the physics tables (``physics_data/`` of the source tree)."""
    return Path(str(resources.files("xsim.physics_data")))


def kernels_dir() -> Path:
    """Folder holding the CUDA C++ kernel sources (``kernels/`` of the source tree)."""
    return Path(str(resources.files("xsim.kernels")))
