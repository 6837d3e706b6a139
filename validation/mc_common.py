"""Shared pieces of the Monte Carlo validation studies (no study here): exact-thickness slab phantoms, the
narrow-beam geometry and analytic primary signals."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from xsim.detector import Detector
from xsim.geometry import CArm, Camera
from xsim.physics.materials import Material, material
from xsim.volume import Phantom

DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "results"
NARROW_SDD_MM = 1000.0
NARROW_PIXEL_MM = 4.0  # one 4 mm pixel at 1 m: a 2 mrad beam


def slab_phantom(mat: str | Material, thickness_mm: float, size_mm: float, gap_mm: float, sdd_mm: float,
                 n_lateral: int = 1, density_g_cm3: float | None = None) -> Phantom:
    """A square slab of any exact thickness for :func:`frontal_camera` (source at y = sdd/2, detector plane
    at y = -sdd/2, beam along -y): normal to the beam, its exit face ``gap_mm`` above the detector plane. One
    voxel thick along y (the voxel is as thick as the slab), ``n_lateral`` voxels across ``size_mm``."""
    mat = material(mat) if isinstance(mat, str) else mat
    voxel = size_mm / n_lateral
    affine = np.diag([voxel, thickness_mm, voxel, 1.0])
    affine[:3, 3] = [-(size_mm - voxel) / 2.0, -(sdd_mm / 2.0) + gap_mm + thickness_mm / 2.0, -(size_mm - voxel) / 2.0]
    shape = (n_lateral, 1, n_lateral)
    rho = mat.density_g_cm3 if density_g_cm3 is None else density_g_cm3
    return Phantom(np.zeros(shape, np.uint8), np.full(shape, rho, np.float32), affine, [mat])


def frontal_camera(sdd_mm: float, detector_shape, pixel_mm: float) -> Camera:
    """Frontal view with the isocentre half way: source at y = +sdd/2, detector plane at y = -sdd/2."""
    return CArm(sdd_mm=sdd_mm, sid_mm=sdd_mm / 2.0, detector_shape=detector_shape, pixel_mm=pixel_mm).view()


def narrow_beam_camera() -> Camera:
    return frontal_camera(NARROW_SDD_MM, (1, 1), NARROW_PIXEL_MM)


def analytic_primary(camera: Camera, energy_keV: float, detector: Detector, mu_per_mm: float,
                     thickness_mm: float) -> np.ndarray:
    """Primary signal per pixel for unit fluence (1 photon/mm^2 at 1 m) of a monoenergetic point source
    through a slab normal to the principal axis: (1000/r)^2 cos(theta) A_pixel w(E, cos) exp(-mu t / cos)
    with w = ``detector.response`` (keV or counts),
    evaluated at the pixel centres (exact to < 1e-5 for the pixels used here)."""
    pos, dirs = camera.pixel_rays()
    n = camera.detector_frame().normal
    r2 = ((pos - camera.source_mm) ** 2).sum(-1)
    cos = dirs @ n
    area = float(np.prod(camera.pixel_mm))
    return (1e6 / r2) * cos * area * detector.response(energy_keV, cos) * np.exp(-mu_per_mm * thickness_mm / cos)
