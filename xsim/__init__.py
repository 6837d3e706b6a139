"""xsim: X-ray simulation from CT for machine learning and medical physics.

Public surface (see README.md): materials and spectra (:mod:`xsim.physics`), CT volumes and
phantoms (:mod:`xsim.volume`, :mod:`xsim.phantoms`), C-arm geometry (:mod:`xsim.geometry`), the
projector, the Monte Carlo, the learned scatter model (:mod:`xsim.scatter`, loaded on first use),
rendering and datasets, the kernel runtime (:mod:`xsim.runtime`) and the ``xsim`` command line.
"""
__version__ = "0.1.0"

from . import phantoms
from .checks import XsimInputError
from .detector import Detector
from .dosimetry import AirKermaDetector, incident_air_kerma_uGy, mc_air_kerma_uGy
from .geometry import Camera, CArm
from .montecarlo import AntiScatterGrid, MCResult, monte_carlo
from .physics.calibration import HUCalibration
from .physics.materials import Material, list_materials, material
from .physics.spectra import Spectrum
from .projector import Projection, project
from .readout import Readout
from .rendering import Rendering, render, render_views
from .volume import Phantom, Volume, load_ct

__all__ = [
    "AirKermaDetector",
    "AntiScatterGrid",
    "CArm",
    "Camera",
    "Detector",
    "HUCalibration",
    "MCResult",
    "Material",
    "Phantom",
    "Projection",
    "Readout",
    "Rendering",
    "Spectrum",
    "Volume",
    "XsimInputError",
    "incident_air_kerma_uGy",
    "list_materials",
    "load_ct",
    "material",
    "mc_air_kerma_uGy",
    "monte_carlo",
    "phantoms",
    "project",
    "render",
    "render_views",
]


def __getattr__(name: str):
    # xsim.scatter (the learned scatter CNN) imports torch: load it on first use, not with `import xsim`.
    if name == "scatter":
        import importlib

        return importlib.import_module(".scatter", __name__)
    raise AttributeError(f"module 'xsim' has no attribute {name!r}")
