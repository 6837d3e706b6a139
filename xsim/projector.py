"""Projector: the polychromatic ray-cast (DRR) image of a phantom, the production path of xsim.

Owns :func:`project` and :class:`Projection`, the Python side of ``kernels/project.cu``, and the ctypes
mirror :class:`VoxelGrid` of the grid struct in ``kernels/xsim_geometry.cuh`` (shared with the Monte Carlo).

Per detector pixel, one ray from the focal spot to the pixel centre (no focal-spot size, no scatter):

    L_m = sum_voxels of material m  density * length                          [g/cm^2]  (Siddon / Amanatides-Woo)
    I   = g * sum_E N(E) w(E, cos) exp(-sum_m (mu/rho)_m(E) L_m)              [keV per pixel per mAs]
    g   = pixel area [mm^2] * cos * (1000 mm / r)^2

N is the spectrum (photons per mAs per mm^2 at 1 m), w the detector response per incident photon
(:meth:`xsim.detector.Detector.response`, with the obliquity of each ray), r the source-pixel distance,
cos the angle between the ray and the panel normal. Outside the voxel grid is vacuum (no air gap).
"""
from __future__ import annotations

import ctypes
import os
import warnings
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from . import device, runtime
from .checks import XsimInputError, check_range, check_type
from .detector import Detector
from .fileio import atomic_path
from .geometry import Camera
from .physics.spectra import Spectrum
from .volume import Phantom, Volume

__all__ = ["MAX_MATERIALS", "Projection", "VoxelGrid", "project", "voxel_grid"]

MAX_MATERIALS = 32  # per-material line integrals live in registers: a larger phantom would spill
_TILE = 16  # PROJECT_TILE in kernels/project.cu


class VoxelGrid(ctypes.Structure):
    """Mirror of ``xsim::VoxelGrid`` (kernels/xsim_geometry.cuh): shape, inverse affine, affine."""

    _fields_ = [
        ("n", ctypes.c_int32 * 3),
        ("reserved", ctypes.c_int32),
        ("world_to_index", ctypes.c_double * 12),
        ("index_to_world", ctypes.c_double * 12),
    ]


def voxel_grid(phantom: Phantom) -> VoxelGrid:
    """The kernel's grid struct for a phantom (shape and its voxel index <-> world mm affine)."""
    affine = np.asarray(phantom.affine, dtype=float)
    inverse = np.linalg.inv(affine)
    grid = VoxelGrid()
    grid.n[:] = [int(n) for n in phantom.shape]
    grid.world_to_index[:] = inverse[:3].ravel().tolist()
    grid.index_to_world[:] = affine[:3].ravel().tolist()
    return grid


class ProjectParams(runtime.Params):
    """Mirror of ``ProjectParams`` in kernels/project.cu."""

    _fields_ = [
        ("grid", VoxelGrid),
        ("material_index", runtime.array(np.uint8, "in")),
        ("density", runtime.array(np.float32, "in")),
        ("mu_over_rho", runtime.array(np.float32, "in")),
        ("fluence", runtime.array(np.float32, "in")),
        ("det_mu_t", runtime.array(np.float32, "in")),
        ("det_signal", runtime.array(np.float32, "in")),
        ("det_count", runtime.array(np.float32, "in")),
        ("line_integrals", runtime.array(np.float32)),
        ("primary", runtime.array(np.float32, optional=True)),
        ("photons", runtime.array(np.float32, optional=True)),
        ("flat_field", runtime.array(np.float32, optional=True)),
        ("source_mm", ctypes.c_double * 3),
        ("origin_mm", ctypes.c_double * 3),
        ("u_step_mm", ctypes.c_double * 3),
        ("v_step_mm", ctypes.c_double * 3),
        ("normal", ctypes.c_double * 3),
        ("pixel_area_mm2", ctypes.c_double),
        ("n_pixels", ctypes.c_uint64),
        ("rows", ctypes.c_uint32),
        ("cols", ctypes.c_uint32),
        ("n_energies", ctypes.c_uint32),
    ]


# On the GPU without fused multiply-adds: the walk then makes the host build's IEEE operations, and the line
# integrals are the same bits on both backends (tests/test_gpu.py); the exponentials of the energy sum still
# differ by a few ulp (__expf against the host's polynomial).
_CUDA_OPTIONS = ("--fmad=false",)


@cache
def _kernel(n_materials: int, backend: str) -> runtime.Kernel:
    return runtime.Kernel("project.cu", entry="project", params=ProjectParams,
                          defines={"PROJECT_NMAT": n_materials, "PROJECT_TILE": _TILE}, backend=backend,
                          cuda_options=_CUDA_OPTIONS)


@lru_cache(maxsize=64)
def _energy_tables(materials: tuple, energies: bytes, detector_key: str, detector: Detector) -> tuple:
    """The kernel's per-energy tables for these materials, energies (float64 bytes) and detector: (mu/rho
    [material, energy] cm^2/g, detector mu t, signal, count), float32 and read-only. Computing them costs ~5 ms
    per call (a material's mu/rho at 150 energies), more than a GPU projection."""
    e = np.frombuffer(energies, dtype=np.float64)
    mu = np.stack([m.mu_over_rho(e) for m in materials]).astype(np.float32)  # [mat, E]
    out = (np.ascontiguousarray(mu), *(np.ascontiguousarray(t, np.float32) for t in detector.kernel_tables(e)))
    for table in out:
        table.flags.writeable = False
    return out


class Projection:
    """A ray-cast image and what produced it.

    Attributes
    ----------
    primary : ndarray (rows, cols) float32
        Signal per pixel per mAs: keV deposited (energy-integrating detector) or counts
        (photon counting). In monochromatic mode, per unit fluence (1 photon per mm^2 at 1 m).
    line_integrals : dict of str to ndarray (rows, cols) float32
        Density line integral of each material along each pixel's ray, g/cm^2.
    photons : ndarray (rows, cols) float32 or None
        Detected (interacting) photons per pixel per mAs, when requested.
    flat_field : ndarray (rows, cols) float32
        ``primary`` without the object (same source, detector and geometry).
    camera, spectrum, detector
        The inputs.
    object_center_mm : ndarray (3,) or None
        The phantom's centre of mass, world mm (:meth:`xsim.volume.Phantom.center_of_mass_mm`): where the
        scatter CNN takes the air gap from.
    """

    def __init__(self, primary, line_integrals, photons, flat_field, camera, spectrum, detector,
                 object_center_mm=None):
        # numpy arrays, or on the cuda backend cupy arrays that are copied to the host when first read
        self._images = {"primary": device.HostView(primary), "flat_field": device.HostView(flat_field),
                        "photons": None if photons is None else device.HostView(photons)}
        self._line_integrals = {name: device.HostView(image) for name, image in line_integrals.items()}
        self.camera = camera
        self.spectrum = spectrum
        self.detector = detector
        self.object_center_mm = None if object_center_mm is None else np.asarray(object_center_mm, dtype=float)

    @property
    def primary(self) -> np.ndarray:
        return self._images["primary"].host()

    @property
    def flat_field(self) -> np.ndarray:
        return self._images["flat_field"].host()

    @property
    def photons(self) -> np.ndarray | None:
        view = self._images["photons"]
        return None if view is None else view.host()

    @property
    def line_integrals(self) -> dict[str, np.ndarray]:
        return {name: view.host() for name, view in self._line_integrals.items()}

    @property
    def device(self) -> dict:
        """The images where they were computed, without a copy: cupy arrays on the cuda backend (numpy on the
        cpu), keys ``primary``, ``flat_field``, ``photons`` (None unless computed) and ``line_integrals`` (a
        dict by material). For GPU pipelines that continue on the device (``xsim.render``, torch through
        DLPack)."""
        images = {k: None if v is None else v.device for k, v in self._images.items()}
        images["line_integrals"] = {name: view.device for name, view in self._line_integrals.items()}
        return images

    @property
    def transmission(self) -> np.ndarray:
        """``primary / flat_field`` (detector-weighted transmission), float32 (rows, cols)."""
        return (self.primary / self.flat_field).astype(np.float32)

    def to_hdf5(self, path: str | os.PathLike) -> Path:
        """Write the images and what produced them to an HDF5 file (written to a temporary name, then renamed).

        Datasets ``primary``, ``flat_field``, ``photons`` (when computed), ``line_integrals/<material>``,
        ``spectrum/energies_keV`` and ``spectrum/fluence``; attributes ``format``, ``xsim_version``,
        ``camera`` (JSON, :meth:`xsim.geometry.Camera.from_json` reads it back), ``detector``, ``units``.
        """
        import h5py

        from . import __version__

        path = Path(path)
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs.update({"format": "xsim.Projection", "format_version": 1, "xsim_version": __version__,
                            "camera": self.camera.to_json(), "detector": repr(self.detector),
                            "units": f"primary, flat_field: {self.detector.unit} per pixel per mAs; photons: per "
                                     "pixel per mAs; line_integrals: g/cm^2"})
            f["primary"], f["flat_field"] = self.primary, self.flat_field
            if self.photons is not None:
                f["photons"] = self.photons
            for name, image in self.line_integrals.items():
                f[f"line_integrals/{name}"] = image
            f["spectrum/energies_keV"], f["spectrum/fluence"] = self.spectrum.energies_keV, self.spectrum.fluence
        return path

    def __repr__(self) -> str:
        rows, cols = self.primary.shape
        return (f"Projection({rows}x{cols}, materials={list(self.line_integrals)}, spectrum={self.spectrum!r}, "
                f"detector={self.detector!r})")


def project(phantom: Phantom, camera: Camera, spectrum: Spectrum | None = None, energy_keV: float | None = None,
            detector: Detector | None = None, backend: str = "auto", threads: int | None = None,
            photons: bool = False) -> Projection:
    """Ray-cast image of a phantom: per-material line integrals and the energy-integrated primary.

    Parameters
    ----------
    phantom : Phantom
        Material index and density per voxel, with its voxel -> world (mm, LPS) affine.
        At most ``MAX_MATERIALS`` materials.
    camera : Camera
        Source and detector pose (e.g. ``CArm(...).view(...)``).
    spectrum : Spectrum, optional
        Photons per mAs per mm^2 at 1 m per energy bin (e.g. ``Spectrum.tungsten(80)``).
    energy_keV : float, optional
        Monochromatic mode instead: ``Spectrum.monoenergetic(energy_keV, fluence=1)``. Give exactly one of
        ``spectrum`` and ``energy_keV``: xsim does not pick a tube spectrum for you.
    detector : Detector, optional
        Energy response; default ``Detector()`` (600 um CsI, energy integrating).
    backend : {"auto", "cpu", "cuda"}
        Kernel target (see :func:`xsim.runtime.select_backend`).
    threads : int, optional
        CPU threads (default all the process may use). The result does not depend on it.
    photons : bool
        Also compute the detected photon count image.

    Returns
    -------
    Projection
    """
    if isinstance(phantom, Volume):
        raise XsimInputError("phantom must be a Phantom (materials and densities), got a Volume of HU: "
                             "convert it with volume.to_phantom()")
    check_type("phantom", phantom, Phantom)
    check_type("camera", camera, Camera)
    spectrum = _spectrum(spectrum, energy_keV)
    detector = Detector() if detector is None else check_type("detector", detector, Detector)
    check_type("photons", photons, (bool, np.bool_))
    n_mat = len(phantom.materials)
    if n_mat > MAX_MATERIALS:
        raise XsimInputError(
            f"phantom has {n_mat} materials; the projector supports at most {MAX_MATERIALS} (merge materials "
            "with the same composition, or map rare ones to a close material)")
    backend = runtime.select_backend(backend)
    kernel = _kernel(n_mat, backend)

    # Bins whose fluence is 0 in the kernel's float32 cost time and add exact zeros (e.g. the bins below
    # ~6 keV of a filtered tungsten spectrum, 1e-50 of its peak and less): dropping them changes no bit.
    keep = spectrum.fluence.astype(np.float32) > 0
    energies, fluence = spectrum.energies_keV[keep], spectrum.fluence[keep].astype(np.float32)
    tables = (*_energy_tables(tuple(phantom.materials), np.ascontiguousarray(energies, np.float64).tobytes(),
                              repr(detector), detector), fluence)
    if backend == "cuda":  # the phantom stays on the GPU between calls; the outputs stay there until read
        xp = runtime.cupy_module()
        index, density = device.phantom_arrays(phantom)
        tables = tuple(xp.asarray(t) for t in tables)
    else:
        xp = np
        index = np.ascontiguousarray(phantom.material_index, dtype=np.uint8)
        density = np.ascontiguousarray(phantom.density_g_cm3, dtype=np.float32)
    mu, mu_t, signal, count, fluence = tables

    rows, cols = camera.detector_shape
    frame = camera.detector_frame()
    area_mm2 = float(np.linalg.norm(np.cross(frame.u_step_mm, frame.v_step_mm)))
    n_pix = rows * cols
    line = xp.zeros((n_mat, rows, cols), np.float32)
    primary = xp.zeros((rows, cols), np.float32)
    counts = xp.zeros((rows, cols), np.float32) if photons else None
    flat = xp.zeros((rows, cols), np.float32)
    params = ProjectParams(
        material_index=index, density=density,
        mu_over_rho=mu, fluence=fluence,
        det_mu_t=mu_t, det_signal=signal, det_count=count,
        line_integrals=line, primary=primary, photons=counts, flat_field=flat,
        pixel_area_mm2=area_mm2, n_pixels=n_pix, rows=rows, cols=cols, n_energies=len(energies),
    )
    params.grid = voxel_grid(phantom)
    for name in ("source_mm", "origin_mm", "u_step_mm", "v_step_mm", "normal"):
        value = camera.source_mm if name == "source_mm" else getattr(frame, name)
        getattr(params, name)[:] = [float(x) for x in value]
    n_threads = -(-rows // _TILE) * -(-cols // _TILE) * _TILE**2  # whole tiles (see kernels/project.cu)
    kernel.launch(n_threads, params, threads=threads)

    # (phantom.density_g_cm3.any() reads the whole phantom: only when no ray crossed anything; on the GPU, line.any()
    # would wait for the launch, so it is asked only when the phantom's box does not plainly project into view)
    if (backend == "cpu" or not _box_in_view(phantom, camera)) and not line.any() and phantom.density_g_cm3.any():
        warnings.warn("no ray of the camera crosses the phantom (is it looking away from the volume?): the "
                      "image is the flat field", stacklevel=2)
    names = [m.name for m in phantom.materials]
    return Projection(primary, dict(zip(names, line)), counts, flat, camera, spectrum, detector,
                      object_center_mm=phantom.center_of_mass_mm())


def _box_in_view(phantom: Phantom, camera: Camera) -> bool:
    """True when the phantom's voxel box lies in front of the source and one of its corners projects onto the
    detector (some rays then cross it); False when that is not plainly so."""
    corners = np.array([[i, j, k] for i in (-0.5, phantom.shape[0] - 0.5) for j in (-0.5, phantom.shape[1] - 0.5)
                        for k in (-0.5, phantom.shape[2] - 0.5)])
    world = phantom.voxel_to_world(corners)
    normal = camera.detector_frame().normal
    if ((world - camera.source_mm) @ normal <= 0).any():
        return False
    u, v = camera.project_points(world).T
    rows, cols = camera.detector_shape
    return bool(((u > -0.5) & (u < cols - 0.5) & (v > -0.5) & (v < rows - 0.5)).any())


def _spectrum(spectrum: Spectrum | None, energy_keV: float | None) -> Spectrum:
    if (spectrum is None) == (energy_keV is None):
        raise XsimInputError("give exactly one of spectrum (a Spectrum) and energy_keV (monochromatic mode), "
                             f"got spectrum={spectrum!r}, energy_keV={energy_keV!r}")
    if spectrum is not None:
        check_type("spectrum", spectrum, Spectrum)
        if not np.any(spectrum.fluence > 0):
            raise XsimInputError(f"spectrum {spectrum!r} carries no photons (all fluence bins are zero)")
        return spectrum
    check_range("energy_keV", energy_keV, 1.0, 200.0, unit="keV")
    return Spectrum.monoenergetic(float(energy_keV), fluence=1.0)
