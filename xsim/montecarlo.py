"""Monte Carlo photon transport, the reference path: primary, scatter and energy-deposition tallies.

Owns :func:`monte_carlo` (the driver of ``kernels/mc_transport.cu``), :class:`MCResult` (images, 3D
energy deposit, uncertainties by batches, HDF5 save/load), :class:`AntiScatterGrid`, the tables the kernel
reads (:class:`PhysicsTables`, :class:`RegionMajorants`), and the sampler checks behind the statistical tests
(:func:`sample_angles`, :func:`sample_alias`); the ``xsim mc`` command calls :func:`monte_carlo`.
Physics model, approximations and units: docs/monte_carlo.md.

Units
-----
Images: the projector's (:func:`xsim.projector.project`) ``.primary`` units: detector signal (keV, or
counts for a photon-counting detector) per pixel per mAs for a tube spectrum, per unit fluence (one
photon per mm^2 at 1 m) for a monoenergetic beam. Energy deposit: eV per emitted photon, where the
emitted photons are those of the collimated field (the solid angle of the detector rectangle).
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import math
import os
import time
import warnings
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from . import runtime
from .checks import XsimInputError, check_positive, check_range, check_type
from .device import HostView, is_device_array, to_host
from .fileio import atomic_path
from .geometry import Camera
from .physics.materials import AVOGADRO_PER_MOL, Material
from .physics.spectra import Spectrum
from .physics import tables as element_tables
from .projector import VoxelGrid, voxel_grid
from .volume import Phantom

__all__ = ["ENERGY_RANGE_KEV", "AntiScatterGrid", "MCResult", "PhysicsTables", "RegionMajorants", "consistency",
           "monte_carlo", "sample_alias", "sample_angles"]

ENERGY_RANGE_KEV = (1.0, 150.0)  # table range: spectra must have no fluence outside it
ENERGY_STEP_KEV = 0.1  # linear grid; interpolation error < 0.1 % above 10 keV away from edges (tested)
X_STEP_PER_A = 0.01  # x = sin(theta/2)/lambda grid for S(x) and the F^2 cumulative, 1/Angstrom
HC_KEV_A = 12.39842  # h c, keV Angstrom (CODATA 2018)
MAX_MATERIALS = 256  # uint8 material index
FIXED_SCALE = 2.0**20  # fixed-point units per keV: a batch's totals stay below 2^63 (see MAX_BATCH_PHOTONS)
MAX_BATCH_PHOTONS = 2**63 / (FIXED_SCALE * ENERGY_RANGE_KEV[1]) / 2  # 2.9e10: half the headroom of a tally
IMAGE_KINDS = ("primary", "compton", "rayleigh", "multiple")
ENERGY_SLOTS = ("incident", "deposited", "reached_plane", "escaped_elsewhere", "deposited_world")
_ENERGY_ROWS, _ENERGY_COLS = 256, 8  # XSIM_MC_ENERGY_ROWS, XSIM_MC_ENERGY_COLS in mc_transport.cu
_IDEAL_MU_T = 1e30  # stands for an infinitely thick detector (inf would make the interpolation NaN)
_FORMAT = "xsim.MCResult"
_FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------------------
# Kernel parameter mirrors
class _Field(ctypes.Structure):
    """Mirror of ``xsim::mc::Field`` in kernels/mc_source.cuh."""

    _fields_ = [
        ("corner_mm", ctypes.c_float * 3),
        ("edge_a_mm", ctypes.c_float * 3),
        ("edge_b_mm", ctypes.c_float * 3),
        ("normal", ctypes.c_float * 3),
        ("inv_cos3_max", ctypes.c_float),
        ("depth_mm", ctypes.c_float),
    ]


class _FocalSpot(ctypes.Structure):
    """Mirror of ``xsim::mc::FocalSpot`` in kernels/mc_source.cuh."""

    _fields_ = [
        ("centre_mm", ctypes.c_float * 3),
        ("axis_a", ctypes.c_float * 3),
        ("axis_b", ctypes.c_float * 3),
        ("size_mm", ctypes.c_float),
        ("kind", ctypes.c_int32),
    ]


class _Grid(ctypes.Structure):
    """Mirror of ``xsim::mc::Grid`` in kernels/mc_detector.cuh."""

    _fields_ = [
        ("enabled", ctypes.c_int32),
        ("focused", ctypes.c_int32),
        ("across", ctypes.c_float * 3),
        ("focus_mm", ctypes.c_float * 3),
        ("height_mm", ctypes.c_float),
        ("period_mm", ctypes.c_float),
        ("strip_mm", ctypes.c_float),
    ]


class _TransportParams(runtime.Params):
    """Mirror of ``McTransportParams`` in kernels/mc_transport.cu."""

    _fields_ = [
        ("seed", ctypes.c_uint64),
        ("first_photon", ctypes.c_uint64),
        ("n_photons", ctypes.c_uint64),
        ("voxels", runtime.array(np.uint32, "in")),
        ("grid", VoxelGrid),
        ("source", _FocalSpot),
        ("field", _Field),
        ("det_origin_mm", ctypes.c_float * 3),
        ("det_dual_u", ctypes.c_float * 3),
        ("det_dual_v", ctypes.c_float * 3),
        ("det_shape", ctypes.c_int32 * 2),
        ("alias_prob", runtime.array(np.float32, "in")),
        ("alias_index", runtime.array(np.int32, "in")),
        ("alias_energy_keV", runtime.array(np.float32, "in")),
        ("n_spectrum", ctypes.c_int32),
        ("e_min_keV", ctypes.c_float),
        ("inv_de_keV", ctypes.c_float),
        ("n_e", ctypes.c_int32),
        ("dx", ctypes.c_float),
        ("inv_dx", ctypes.c_float),
        ("n_x", ctypes.c_int32),
        ("xs", runtime.array(np.float32, "in")),
        ("majorant_per_mm", runtime.array(np.float32, "in")),
        ("inv_majorant_mm", runtime.array(np.float32, "in")),
        ("block", ctypes.c_int32),
        ("blocks", ctypes.c_int32 * 3),
        ("bin_log_e_min", ctypes.c_float),
        ("bin_inv_log_width", ctypes.c_float),
        ("n_bins", ctypes.c_int32),
        ("compton_s", runtime.array(np.float32, "in")),
        ("rayleigh_cum", runtime.array(np.float32, "in")),
        ("det_mu_t", runtime.array(np.float32, "in")),
        ("det_signal", runtime.array(np.float32, "in")),
        ("grid_strips", _Grid),
        ("grid_mu_interspace", runtime.array(np.float32, "in")),
        ("grid_mu_strip", runtime.array(np.float32, "in")),
        ("world_material", ctypes.c_int32),
        ("world_density_g_cm3", ctypes.c_float),
        ("world_centre_mm", ctypes.c_float * 3),
        ("world_radius_mm", ctypes.c_float),
        ("images", runtime.array(np.uint64)),
        ("deposit", runtime.array(np.uint64, optional=True)),
        ("energy", runtime.array(np.uint64)),
        ("fixed_scale", ctypes.c_double),
    ]


class _BatchStatsParams(runtime.Params):
    """Mirror of ``McBatchStatsParams`` in kernels/mc_batch_stats.cu."""

    _fields_ = [
        ("raw", runtime.array(np.uint64)),
        ("s1", runtime.array(np.float64)),
        ("s2", runtime.array(np.float64)),
        ("s3", runtime.array(np.float64)),
        ("per_unit", ctypes.c_double),
        ("photons", ctypes.c_double),
    ]


class _BlockMaxParams(runtime.Params):
    """Mirror of ``McBlockMaxParams`` in kernels/mc_block_max.cu."""

    _fields_ = [
        ("voxels", runtime.array(np.uint32, "in")),
        ("n", ctypes.c_int32 * 3),
        ("block", ctypes.c_int32),
        ("blocks", ctypes.c_int32 * 3),
        ("n_materials", ctypes.c_int32),
        ("rho_max", runtime.array(np.float32)),
    ]


class _CheckParams(runtime.Params):
    """Mirror of ``McCheckParams`` in kernels/mc_check.cu."""

    _fields_ = [
        ("seed", ctypes.c_uint64),
        ("kind", ctypes.c_int32),
        ("energy_keV", ctypes.c_float),
        ("dx", ctypes.c_float),
        ("inv_dx", ctypes.c_float),
        ("n_x", ctypes.c_int32),
        ("table", runtime.array(np.float32, "in")),
        ("alias_index", runtime.array(np.int32, "in", optional=True)),
        ("out", runtime.array(np.float32)),
        ("out_energy_keV", runtime.array(np.float32)),
    ]


@cache
def _kernel(source: str, entry: str, params: type, backend: str, defines: tuple = (),
            persistent: bool = False, cuda_options: tuple = ()) -> runtime.Kernel:
    return runtime.Kernel(source, entry=entry, params=params, backend=backend, defines=dict(defines),
                          persistent=persistent, cuda_options=cuda_options)


def _transport_kernel(backend: str) -> runtime.Kernel:
    """The transport kernel of monte_carlo() on ``backend`` (with the build of :func:`_transport_build`). Its
    CUDA build runs persistent threads (MC_PERSISTENT, kernels/mc_transport.cu) unless MC_PERSISTENT=0."""
    persistent = backend == "cuda" and dict(_transport_defines).get("MC_PERSISTENT", 1) != 0
    return _kernel("mc_transport.cu", "mc_transport", _TransportParams, backend, _transport_defines, persistent,
                   _transport_cuda_options)


# The -D defines, as sorted (name, value) pairs, and the extra NVRTC options monte_carlo() compiles the transport
# kernel with: () is the default build; _transport_build sets others.
_transport_defines: tuple = ()
_transport_cuda_options: tuple = ()


@contextlib.contextmanager
def _transport_build(cuda_options: tuple = (), **defines):
    """Within the block, monte_carlo() runs the transport kernel compiled with these -D defines (e.g.
    ``MC_INTERLEAVE=1``: one history per index, the GPU's way, on the host) and, on the GPU, these extra NVRTC
    options. For the tests and benchmarks that compare the kernel's build variants."""
    global _transport_defines, _transport_cuda_options
    before = _transport_defines, _transport_cuda_options
    _transport_defines, _transport_cuda_options = tuple(sorted(defines.items())), tuple(cuda_options)
    try:
        yield
    finally:
        _transport_defines, _transport_cuda_options = before


# ---------------------------------------------------------------------------------------------------------
# Physics tables
class PhysicsTables:
    """Interaction tables of a list of materials, in the layout kernels/mc_physics.cuh reads.

    Energy grid: linear, ``ENERGY_STEP_KEV`` from 1 to 150 keV; values are the xsim tables' (log-log
    interpolated xraylib data) at the nodes, interpolated linearly in the kernel. Absorption edges fall
    between two nodes, so within one step (0.1 keV) of an edge the kernel's value is a mixture of both
    sides. x grid: ``X_STEP_PER_A`` from 0 to the largest x reached at 150 keV.

    Parameters
    ----------
    materials : sequence of Material
        In phantom index order (at most 256).
    """

    def __init__(self, materials: list[Material]):
        if not 1 <= len(materials) <= MAX_MATERIALS:
            raise XsimInputError(f"materials must hold 1 to {MAX_MATERIALS} materials, got {len(materials)}")
        self.materials = list(materials)
        e_lo, e_hi = ENERGY_RANGE_KEV
        self.n_e = int(round((e_hi - e_lo) / ENERGY_STEP_KEV)) + 1
        self.energies_keV = e_lo + ENERGY_STEP_KEV * np.arange(self.n_e)
        self.n_x = int(math.ceil(e_hi / HC_KEV_A / X_STEP_PER_A)) + 2
        self.x_per_angstrom = X_STEP_PER_A * np.arange(self.n_x)
        xs = np.empty((len(materials), self.n_e, 4))
        s_norm = np.empty((len(materials), self.n_x))
        cum = np.empty((len(materials), self.n_x))
        x2 = self.x_per_angstrom**2
        for m, mat in enumerate(materials):
            t = mat.tabulate(self.energies_keV)
            parts = [t["rayleigh"], t["compton"], t["photoelectric"]]
            xs[m] = np.stack([sum(parts), *parts], axis=-1) / 10.0  # cm^2/g -> 1/mm per g/cm^3
            s_norm[m] = np.minimum(mat.scattering_function(self.x_per_angstrom) / electrons_per_gram(mat), 1.0)
            f2 = mat.form_factor_squared(self.x_per_angstrom)
            f2 = f2 / f2[0]
            cum[m] = np.concatenate(([0.0], np.cumsum(0.5 * (f2[1:] + f2[:-1]) * np.diff(x2))))  # trapezoid
        self.xs = np.ascontiguousarray(xs, dtype=np.float32)
        self.compton_s = np.ascontiguousarray(s_norm, dtype=np.float32)
        self.rayleigh_cum = np.ascontiguousarray(cum, dtype=np.float32)

    def mu_over_rho(self, m: int, energy_keV: Any, column: int = 0) -> np.ndarray:
        """The kernel's linear interpolation of column ``column`` (total, Rayleigh, Compton,
        photoelectric) of material ``m``, in cm^2/g."""
        return np.interp(energy_keV, self.energies_keV, self.xs[m, :, column].astype(float)) * 10.0


@lru_cache(maxsize=8)
def _physics_tables(materials: tuple[Material, ...]) -> PhysicsTables:
    """PhysicsTables of these materials, built once per process (~30 ms for a CT's eight materials); read-only."""
    tabs = PhysicsTables(list(materials))
    for table in (tabs.xs, tabs.compton_s, tabs.rayleigh_cum):
        table.flags.writeable = False
    return tabs


MAJORANT_BINS = 48  # log-spaced energy bins of the region majorants over ENERGY_RANGE_KEV (11 % wide)
BLOCKS_PER_AXIS = 16  # region-majorant blocks: edge = ceil(largest phantom dimension / 16), at least 4 voxels


class RegionMajorants:
    """Woodcock majorants per block of voxels and energy bin (the kernel's ``majorant_per_mm``, stored bin by
    bin: ``majorant_per_mm[bin * n_blocks + block]``, blocks in C order).

    For block b and bin k: max over the block's voxels of rho * (mu/rho)_m(E), E within the bin, in 1/mm,
    i.e. max over materials m of (largest density of m in b) x (largest node value of the kernel's
    interpolated (mu/rho)_m over the bin, nodes straddling the bin included). Linear interpolation between
    nodes never exceeds its nodes, so this bounds the kernel's mu everywhere in the block and bin.

    Parameters
    ----------
    material_index, density_g_cm3 : numpy.ndarray (3D)
        The phantom's voxels (the densities are not needed when ``voxels`` is given).
    tables : PhysicsTables
    block : int, optional
        Block edge in voxels; default ``max(4, ceil(max(shape) / BLOCKS_PER_AXIS))``.
    voxels : numpy.ndarray, optional
        The same voxels packed (:func:`pack_voxels`, whose rounded densities are then the ones used): the
        per-block maxima come from a CPU kernel in one pass (kernels/mc_block_max.cu) instead of numpy.
    threads : int, optional
        CPU threads of that kernel.
    """

    def __init__(self, material_index: np.ndarray, density_g_cm3: np.ndarray | None, tables: PhysicsTables,
                 block: int | None = None, voxels: Any = None, threads: int | None = None):
        shape = np.array(material_index.shape)
        self.block = int(block or max(4, math.ceil(shape.max() / BLOCKS_PER_AXIS)))
        self.blocks = tuple(int(n) for n in -(-shape // self.block))
        e_lo, e_hi = ENERGY_RANGE_KEV
        self.bin_edges_keV = np.geomspace(e_lo, e_hi, MAJORANT_BINS + 1)
        step = ENERGY_STEP_KEV
        per_unit_density = np.empty((len(tables.materials), MAJORANT_BINS))
        for k in range(MAJORANT_BINS):
            lo, hi = self.bin_edges_keV[k], self.bin_edges_keV[k + 1]
            nodes = (tables.energies_keV >= lo - step) & (tables.energies_keV <= hi + step)
            per_unit_density[:, k] = tables.xs[:, nodes, 0].max(axis=1)
        if voxels is None:
            rho_max = self._block_max_numpy(material_index, density_g_cm3, len(tables.materials))
        else:  # the kernel runs where the voxels are: a cupy array on the GPU, else the CPU
            backend = "cuda" if is_device_array(voxels) else "cpu"
            xp = runtime.cupy_module() if backend == "cuda" else np
            rho_max = xp.zeros((int(np.prod(self.blocks)), len(tables.materials)), np.float32)
            params = _BlockMaxParams(voxels=voxels, n=tuple(int(n) for n in shape), block=self.block,
                                     blocks=self.blocks, n_materials=len(tables.materials), rho_max=rho_max)
            _kernel("mc_block_max.cu", "mc_block_max", _BlockMaxParams, backend).launch(rho_max.shape[0], params,
                                                                                           threads=threads)
            rho_max = to_host(rho_max)
        # [bin][block]: a flight reads one bin's row, where neighbouring blocks are neighbours in memory
        majorant = np.zeros((MAJORANT_BINS, rho_max.shape[0]), np.float32)
        for m in np.flatnonzero(rho_max.max(axis=0) > 0):  # the materials present
            np.maximum(majorant, per_unit_density[m][:, None] * rho_max[None, :, m], out=majorant)
        self.majorant_per_mm = np.ascontiguousarray(majorant.reshape(-1), np.float32)
        # 1 / majorant (0 where the majorant is 0), the mean free path of the flights: the IEEE float32
        # division the kernel would do, done once here instead of at every block a flight enters
        inverse = np.zeros_like(self.majorant_per_mm)
        np.divide(np.float32(1.0), self.majorant_per_mm, out=inverse, where=self.majorant_per_mm > 0)
        self.inv_majorant_mm = inverse
        self.log_e_min = math.log(e_lo)
        self.inv_log_width = MAJORANT_BINS / math.log(e_hi / e_lo)

    def _block_max_numpy(self, material_index: np.ndarray, density_g_cm3: np.ndarray, n_materials: int):
        """[block, material] largest density: the voxels regrouped block by block (one copy), then one
        masked maximum per material over each block's row."""
        b = self.block
        pad = [(0, nb * b - n) for nb, n in zip(self.blocks, material_index.shape)]
        blocked_shape = (self.blocks[0], b, self.blocks[1], b, self.blocks[2], b)

        def by_block(a: np.ndarray) -> np.ndarray:
            return np.pad(a, pad).reshape(blocked_shape).transpose(0, 2, 4, 1, 3, 5).reshape(-1, b ** 3)

        rho_blocks = by_block(np.asarray(density_g_cm3, np.float32))
        index_blocks = by_block(material_index)
        rho_max = np.zeros((rho_blocks.shape[0], n_materials), np.float32)
        for m in np.flatnonzero(np.bincount(index_blocks.ravel(), minlength=1)):  # the materials present
            rho_max[:, m] = np.where(index_blocks == m, rho_blocks, np.float32(0.0)).max(axis=1)
        return rho_max


def pack_voxels(material_index: Any, density_g_cm3: Any) -> Any:
    """The kernel's voxel words (``unpack_voxel`` in kernels/mc_physics.cuh): float32 density rounded to
    nearest at 15 mantissa bits (relative error <= 2^-16 = 1.5e-5), material index in the low 8 bits. numpy in,
    numpy out; cupy in, cupy out."""
    xp = runtime.cupy_module() if is_device_array(density_g_cm3) else np
    bits = xp.ascontiguousarray(density_g_cm3, dtype=np.float32).view(np.uint32).ravel()
    rounded = (bits + np.uint32(0x80)) & np.uint32(0xFFFFFF00)
    return rounded | xp.ascontiguousarray(material_index, dtype=np.uint8).ravel().astype(np.uint32)


def _materials_key(materials: Any) -> str:
    """A text that changes with any material's name, density or composition (device cache keys)."""
    return "|".join(f"{m.name}:{m.density_g_cm3!r}:{sorted(m.composition.items())!r}" for m in materials)


def _cuda_inputs(phantom: Phantom, tabs: PhysicsTables) -> tuple[Any, Any, dict]:
    """(packed voxels, region majorants, interaction tables) on the GPU, made at the first call for this phantom
    and these tables and kept on the device (xsim.device) for the next ones: no upload, packing or block scan
    when the same phantom is simulated again."""
    from . import device

    cp = runtime.cupy_module()

    def voxels():
        index, density = device.phantom_arrays(phantom)
        return pack_voxels(index, density)

    def majorants():
        m = RegionMajorants(phantom.material_index, None, tabs, voxels=device.cached(phantom, "mc voxels", voxels))
        m.majorant_per_mm = cp.asarray(m.majorant_per_mm)
        m.inv_majorant_mm = cp.asarray(m.inv_majorant_mm)
        return m

    def tables():
        return {"xs": cp.asarray(tabs.xs.reshape(-1)), "compton_s": cp.asarray(tabs.compton_s.reshape(-1)),
                "rayleigh_cum": cp.asarray(tabs.rayleigh_cum.reshape(-1))}

    return (device.cached(phantom, "mc voxels", voxels),
            device.cached(phantom, "mc majorants " + _materials_key(tabs.materials), majorants),
            device.cached(tabs, "mc tables", tables))


def electrons_per_gram(mat: Material) -> float:
    """N_A sum_i w_i Z_i / A_i: the large-x limit S(inf) of the material's scattering function per gram."""
    return AVOGADRO_PER_MOL * sum(
        w * element_tables.atomic_number(s) / element_tables.atomic_weight(s) for s, w in mat.composition.items()
    )


def alias_table(weights: Any) -> tuple[np.ndarray, np.ndarray]:
    """Walker alias table by Vose's algorithm (M. D. Vose, IEEE TSE 17, 972 (1991)).

    Returns ``(prob, alias)``: bin ``j = floor(u n)`` is kept with probability ``prob[j]``, else replaced
    by ``alias[j]``; the draw then follows ``weights / weights.sum()``.
    """
    p = np.asarray(weights, dtype=float)
    n = p.size
    scaled = p * (n / p.sum())
    prob, alias = np.ones(n), np.arange(n, dtype=np.int32)
    small = [j for j in range(n) if scaled[j] < 1.0]
    large = [j for j in range(n) if scaled[j] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    return prob.astype(np.float32), alias  # leftovers keep prob 1 (rounding)


def sample_alias(weights: Any, n: int, seed: int = 0, backend: str = "cpu") -> np.ndarray:
    """Draw ``n`` bin indices from ``weights`` with the kernel's alias sampler (kernels/mc_check.cu), for tests."""
    prob, alias = alias_table(weights)
    out, unused = np.zeros(n, np.float32), np.zeros(n, np.float32)
    p = _CheckParams(seed=seed, kind=2, energy_keV=0.0, dx=0.0, inv_dx=0.0, n_x=len(prob), table=prob,
                     alias_index=alias, out=out, out_energy_keV=unused)
    _kernel("mc_check.cu", "mc_check", _CheckParams, runtime.select_backend(backend)).launch(n, p)
    return out.astype(np.int64)


def sample_angles(material: Material, energy_keV: float, kind: str, n: int, seed: int = 0,
                  backend: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` scattering angles with the kernel's samplers (kernels/mc_check.cu), for tests.

    Parameters
    ----------
    material : Material
    energy_keV : float
        Photon energy, keV, within ENERGY_RANGE_KEV.
    kind : {"compton", "rayleigh"}
    n : int
        Number of draws.

    Returns
    -------
    cos_theta, scattered_keV : numpy.ndarray (float32)
        Cosines of the polar angle; scattered energies (Compton; zeros for Rayleigh).
    """
    check_range("energy_keV", energy_keV, *ENERGY_RANGE_KEV, unit="keV")
    tabs = PhysicsTables([material])
    table = tabs.compton_s[0] if kind == "compton" else tabs.rayleigh_cum[0]
    out, out_e = np.zeros(n, np.float32), np.zeros(n, np.float32)
    p = _CheckParams(seed=seed, kind={"compton": 0, "rayleigh": 1}[kind], energy_keV=energy_keV,
                     dx=X_STEP_PER_A, inv_dx=1.0 / X_STEP_PER_A, n_x=tabs.n_x,
                     table=np.ascontiguousarray(table), alias_index=None, out=out, out_energy_keV=out_e)
    _kernel("mc_check.cu", "mc_check", _CheckParams, runtime.select_backend(backend)).launch(n, p)
    return out, out_e


# ---------------------------------------------------------------------------------------------------------
# Geometry of the source, field and detector
def _field_geometry(camera: Camera) -> dict:
    """Collimated field (detector rectangle incl. the outer half pixels), its solid angle and the
    detector's dual axes. Pixel axes must be orthogonal (every CArm view is)."""
    f = camera.detector_frame()
    rows, cols = camera.detector_shape
    src = np.asarray(camera.source_mm, dtype=float)
    n = f.normal / np.linalg.norm(f.normal)
    edge_a, edge_b = cols * f.u_step_mm, rows * f.v_step_mm
    la, lb = np.linalg.norm(edge_a), np.linalg.norm(edge_b)
    ea, eb = edge_a / la, edge_b / lb
    if max(abs(ea @ eb), abs(ea @ n), abs(eb @ n)) > 1e-6:
        raise XsimInputError("camera: the Monte Carlo needs orthogonal pixel axes in the detector plane "
                             "(a camera from CArm.view); this camera's axes are skewed")
    corner = f.origin_mm - 0.5 * f.u_step_mm - 0.5 * f.v_step_mm
    depth = float(n @ (f.origin_mm - src))
    if depth <= 0:
        raise XsimInputError(f"camera: the detector plane must lie in front of the source, depth {depth:g} mm")
    foot = src + depth * n
    fa, fb = (foot - corner) @ ea, (foot - corner) @ eb
    # Solid angle of a rectangle seen from height d above a point of its plane: signed sum over its corners
    # of G(x, y) = atan(x y / (d sqrt(d^2 + x^2 + y^2))) (the corner-rectangle formula).
    def g(x, y):
        return math.atan(x * y / (depth * math.sqrt(depth**2 + x * x + y * y)))
    x1, x2, y1, y2 = -fa, la - fa, -fb, lb - fb
    omega = g(x2, y2) - g(x1, y2) - g(x2, y1) + g(x1, y1)
    nearest = corner + np.clip(fa, 0, la) * ea + np.clip(fb, 0, lb) * eb
    cos_max = depth / np.linalg.norm(nearest - src)
    duals = np.linalg.inv(np.stack([f.u_step_mm, f.v_step_mm, n], axis=1))
    return dict(corner=corner, edge_a=edge_a, edge_b=edge_b, normal=n, depth=depth, omega_sr=omega,
                inv_cos3_max=1.0 / cos_max**3, origin=f.origin_mm, dual_u=duals[0], dual_v=duals[1],
                source=src, rows=rows, cols=cols)


def _check_phantom_in_field(phantom: Phantom, camera: Camera, geo: dict) -> None:
    """Clear errors for a phantom behind the detector plane or outside the collimated field."""
    corners = np.array([[i, j, k] for i in (-0.5, phantom.shape[0] - 0.5) for j in (-0.5, phantom.shape[1] - 0.5)
                        for k in (-0.5, phantom.shape[2] - 0.5)])
    world = phantom.voxel_to_world(corners)
    depth = (world - geo["source"]) @ geo["normal"]
    if depth.max() >= geo["depth"]:
        raise XsimInputError(
            f"phantom reaches {depth.max():.1f} mm from the source along the beam, beyond the detector plane at "
            f"{geo['depth']:.1f} mm: the Monte Carlo needs the phantom between the source and the detector")
    if (depth > 0).all():
        uv = camera.project_points(world)
        lo, hi = uv.min(axis=0), uv.max(axis=0)
        rows, cols = camera.detector_shape
        if hi[0] < -0.5 or lo[0] > cols - 0.5 or hi[1] < -0.5 or lo[1] > rows - 0.5:
            raise XsimInputError(
                f"the phantom projects to pixels u in [{lo[0]:.0f}, {hi[0]:.0f}], v in [{lo[1]:.0f}, {hi[1]:.0f}], "
                f"outside the {cols} x {rows} detector: the collimated field misses the phantom")


def _check_photons(photons: Any) -> int:
    if isinstance(photons, bool) or not isinstance(photons, (int, float, np.integer, np.floating)):
        raise XsimInputError(f"photons must be a positive integer, got {photons!r}")
    if not (math.isfinite(photons) and photons >= 1 and float(photons).is_integer()):
        raise XsimInputError(f"photons must be a positive integer (e.g. 1e6), got {photons!r}")
    return int(photons)


def _beam(spectrum: Spectrum | None, energy_keV: float | None) -> tuple[np.ndarray, np.ndarray, float, str]:
    """(energies, weights, total fluence, description) of the beam, checked against the table range."""
    if (spectrum is None) == (energy_keV is None):
        raise XsimInputError("give exactly one of spectrum (a Spectrum) or energy_keV (a monoenergetic beam)")
    if energy_keV is not None:
        check_range("energy_keV", energy_keV, *ENERGY_RANGE_KEV, unit="keV")
        return np.array([float(energy_keV)]), np.array([1.0]), 1.0, f"monoenergetic {float(energy_keV):g} keV"
    check_type("spectrum", spectrum, Spectrum)
    keep = spectrum.fluence > 0
    if not keep.any():
        raise XsimInputError("spectrum has no photons (all fluence bins are zero)")
    e = spectrum.energies_keV[keep]
    lo, hi = ENERGY_RANGE_KEV
    if e.min() < lo or e.max() > hi:
        raise XsimInputError(
            f"spectrum has fluence at {e.min():g}-{e.max():g} keV; the Monte Carlo tables cover [{lo:g}, {hi:g}] keV")
    return e, spectrum.fluence[keep], spectrum.total_fluence, spectrum.description


def _detector_tables(detector: Any, energies_keV: np.ndarray) -> tuple[np.ndarray, np.ndarray, str, str]:
    if detector is None:
        from .detector import Detector
        detector = Detector()
    if not hasattr(detector, "kernel_tables"):
        raise XsimInputError(f"detector must be an xsim.detector.Detector, got {type(detector).__name__}")
    mu_t, signal, _ = detector.kernel_tables(energies_keV)
    mu_t = np.ascontiguousarray(np.minimum(mu_t, _IDEAL_MU_T), np.float32)
    return mu_t, np.ascontiguousarray(signal, np.float32), repr(detector), getattr(detector, "unit", "keV")


# ---------------------------------------------------------------------------------------------------------
# Anti-scatter grid and focal spot
class AntiScatterGrid:
    """A linear anti-scatter grid in front of the detector (kernels/mc_detector.cuh).

    Model of Day & Dance, Phys Med Biol 28, 1429 (1983), with septal penetration: strips of thickness d every
    period P = D + d (interspace width D, height h = r D). A photon crossing the grid with lateral slope
    tan_p across the strips, where the strip walls slope tan_w (toward the focus), moves X = h |tan_p - tan_w|
    across them; entering at a uniform offset x0 in the period, the fraction f(x0) of its path inside strips
    gives T = exp(-(f mu_strip + (1 - f) mu_interspace) h / cos(incidence)), averaged over x0. With opaque
    strips this is D/P max(0, 1 - r |tan_p - tan_w|) times the interspace attenuation. Cover plates are
    ignored.

    Parameters
    ----------
    ratio : float
        Grid ratio r = h / D (strip height over interspace width), > 0.
    strips_per_cm : float
        Strip (line) density, lines per cm, > 0.
    strip_thickness_mm : float
        Strip thickness d, mm, > 0 and below the strip period.
    strip_material : str
        Strip material name (default "lead").
    interspace : str or None
        Interspace material name (e.g. "aluminium"); None for an empty interspace (fibre or air, ignored).
    focal_distance_mm : float or None
        Focus distance: None focuses the grid on the source (the usual, matched case); ``math.inf`` makes a
        parallel grid. Any other value puts the focus at that distance from the detector along the normal
        through the principal point.
    strips_along : {"v", "u"}
        Strips parallel to the detector rows' direction v (default; the grid then selects across u), or to u.
    """

    def __init__(self, ratio: float = 10.0, strips_per_cm: float = 60.0, strip_thickness_mm: float = 0.036,
                 strip_material: str = "lead", interspace: str | None = "aluminium",
                 focal_distance_mm: float | None = None, strips_along: str = "v"):
        from .physics.materials import material

        self.ratio = float(check_positive("ratio", ratio))
        self.strips_per_cm = float(check_positive("strips_per_cm", strips_per_cm, unit="1/cm"))
        self.period_mm = 10.0 / self.strips_per_cm
        self.strip_thickness_mm = float(check_range("strip_thickness_mm", strip_thickness_mm, 0.0, self.period_mm,
                                                    low_inclusive=False, high_inclusive=False, unit="mm"))
        self.interspace_width_mm = self.period_mm - self.strip_thickness_mm
        self.height_mm = self.ratio * self.interspace_width_mm
        self.strip_material = material(strip_material)
        self.interspace = None if interspace is None else material(interspace)
        if focal_distance_mm is not None and focal_distance_mm != math.inf:
            check_positive("focal_distance_mm", focal_distance_mm, unit="mm")
        self.focal_distance_mm = focal_distance_mm
        if strips_along not in ("u", "v"):
            raise XsimInputError(f"strips_along must be 'u' or 'v', got {strips_along!r}")
        self.strips_along = strips_along

    @property
    def open_fraction(self) -> float:
        """D / P: the part of the surface not covered by strips."""
        return self.interspace_width_mm / self.period_mm

    def transmission(self, energy_keV: float, tan_relative: Any = 0.0, cos_incidence: Any = 1.0) -> np.ndarray:
        """The model's mean transmission (see the class docstring), by quadrature over the entry offset.

        Parameters
        ----------
        energy_keV : float
        tan_relative : float or array_like
            tan_p - tan_w: the photon's lateral slope relative to the strip walls where it crosses.
        cos_incidence : float or array_like
            Cosine of the angle between the photon and the grid normal, in (0, 1].
        """
        tan = np.abs(np.asarray(tan_relative, dtype=float))[..., None]
        cos = np.asarray(cos_incidence, dtype=float)[..., None]
        p, d, h = self.period_mm, self.strip_thickness_mm, self.height_mm
        x0 = (np.arange(4000) + 0.5) / 4000 * p

        def cover(x):
            k = np.floor(x / p)
            return k * d + np.minimum(x - k * p, d)

        lateral = h * tan
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(lateral > 1e-6 * p, (cover(x0 + lateral) - cover(x0)) / lateral, (x0 < d) * 1.0)
        mu_i = 0.0 if self.interspace is None else self.interspace.mu_per_mm(energy_keV)
        mu_s = self.strip_material.mu_per_mm(energy_keV)
        return np.exp(-(frac * mu_s + (1.0 - frac) * mu_i) * h / cos).mean(axis=-1)

    def primary_transmission(self, energy_keV: float) -> float:
        """Transmission of a photon travelling along the strips at normal incidence."""
        return float(self.transmission(energy_keV))

    def _kernel_struct(self, geo: dict) -> _Grid:
        across = geo["edge_a"] if self.strips_along == "v" else geo["edge_b"]
        across = across / np.linalg.norm(across)
        focused = self.focal_distance_mm != math.inf
        if self.focal_distance_mm is None:
            focus = geo["source"]
        else:
            principal = geo["source"] + geo["depth"] * geo["normal"]
            focus = principal - (self.focal_distance_mm if focused else 0.0) * geo["normal"]
        return _Grid(enabled=1, focused=int(focused), across=tuple(across), focus_mm=tuple(focus),
                     height_mm=self.height_mm, period_mm=self.period_mm, strip_mm=self.strip_thickness_mm)

    def __repr__(self) -> str:
        inter = "none" if self.interspace is None else self.interspace.name
        focus = "source" if self.focal_distance_mm is None else f"{self.focal_distance_mm:g} mm"
        return (f"AntiScatterGrid(ratio={self.ratio:g}, {self.strips_per_cm:g} lines/cm, {self.strip_material.name} "
                f"strips {self.strip_thickness_mm:g} mm, interspace {inter}, focus {focus}, "
                f"strips along {self.strips_along})")


_SPOT_KINDS = {"point": 0, "gaussian": 1, "uniform": 2}


def _world_material(value: str | Material | None, n_materials: int) -> Material | None:
    if value is None:
        return None
    from .physics.materials import material
    world = material(value) if isinstance(value, str) else check_type("world_material", value, Material)
    if n_materials >= MAX_MATERIALS:
        raise XsimInputError(f"world_material needs a table slot, but the phantom already has {n_materials} "
                             f"materials (at most {MAX_MATERIALS - 1} with a world material)")
    return world


def _world_sphere(geo: dict, phantom: Phantom) -> tuple[np.ndarray, float]:
    """Centre and radius (mm) of the world: a sphere around the source, the detector and the phantom, 10 % wider
    than the farthest of them from the middle of the source-detector axis."""
    centre = geo["source"] + 0.5 * geo["depth"] * geo["normal"]
    corners = [geo["corner"] + a * geo["edge_a"] + b * geo["edge_b"] for a in (0, 1) for b in (0, 1)]
    n = phantom.shape
    box = phantom.voxel_to_world(np.array([[i, j, k] for i in (-0.5, n[0] - 0.5) for j in (-0.5, n[1] - 0.5)
                                           for k in (-0.5, n[2] - 0.5)]))
    points = np.vstack([geo["source"][None], np.array(corners), box])
    return centre, float(1.1 * np.linalg.norm(points - centre, axis=1).max())


def _grid_mu(grid: AntiScatterGrid | None, part: str, energies_keV: np.ndarray) -> np.ndarray:
    """mu (1/mm) of the grid's strip or interspace material on the energy grid (zeros without one)."""
    mat = None if grid is None else getattr(grid, part)
    if mat is None:
        return np.zeros(len(energies_keV), np.float32)
    return np.ascontiguousarray(mat.mu_per_mm(energies_keV), np.float32)


def _field_struct(geo: dict, spot: _FocalSpot) -> _Field:
    # a displaced spot may see the field under a larger cos^3 than the centre does: bound it by 1 then
    inv_cos3_max = geo["inv_cos3_max"] if spot.kind == 0 else 1.0
    return _Field(corner_mm=tuple(geo["corner"]), edge_a_mm=tuple(geo["edge_a"]), edge_b_mm=tuple(geo["edge_b"]),
                  normal=tuple(geo["normal"]), inv_cos3_max=inv_cos3_max, depth_mm=geo["depth"])


def _focal_spot(geo: dict, size_mm: float, shape: str) -> _FocalSpot:
    check_range("focal_spot_mm", size_mm, 0.0, None, unit="mm")
    if shape not in ("gaussian", "uniform"):
        raise XsimInputError(f"focal_spot_shape must be 'gaussian' or 'uniform', got {shape!r}")
    kind = 0 if size_mm == 0 else _SPOT_KINDS[shape]
    a = geo["edge_a"] / np.linalg.norm(geo["edge_a"])
    b = geo["edge_b"] / np.linalg.norm(geo["edge_b"])
    return _FocalSpot(centre_mm=tuple(geo["source"]), axis_a=tuple(a), axis_b=tuple(b), size_mm=float(size_mm),
                      kind=kind)


# ---------------------------------------------------------------------------------------------------------
# Result
class MCResult:
    """Tallies of one Monte Carlo run (see the module docstring for units).

    Attributes
    ----------
    primary, compton, rayleigh, multiple : numpy.ndarray (rows, cols)
        Detector signal of photons that never interacted, interacted once by Compton, once by Rayleigh,
        two or more times; each with ``*_std``, the standard error of the mean from the batches.
    energy_deposit, energy_deposit_std : numpy.ndarray, phantom shape, or None
        Energy deposited per voxel, eV per emitted photon (None when run with ``tally_deposit=False``).
    energy_balance_eV : dict
        Per emitted photon, eV: incident, deposited, reached_plane, escaped_elsewhere.
    photons : int
        Histories simulated (fewer than requested after an interrupt; see ``settings["interrupted"]``).
    seed : int
    run_time_s : float
    settings : dict
        Everything that produced the result (source, geometry, materials, histories, seed, version).
    camera : Camera
    """

    def __init__(self, images: dict, images_std: dict, energy_deposit, energy_deposit_std, energy_balance_eV: dict,
                 photons: int, seed: int, run_time_s: float, settings: dict, camera: Camera):
        for kind in IMAGE_KINDS:
            setattr(self, kind, images[kind])
            setattr(self, f"{kind}_std", images_std[kind])
        # on the cuda backend the dose map stays on the GPU until it is first read (a 256^3 map and its error
        # are 270 MB of float64)
        self._energy_deposit = None if energy_deposit is None else HostView(energy_deposit)
        self._energy_deposit_std = None if energy_deposit_std is None else HostView(energy_deposit_std)
        self.energy_balance_eV = dict(energy_balance_eV)
        self.photons = int(photons)
        self.seed = int(seed)
        self.run_time_s = float(run_time_s)
        self.settings = dict(settings)
        self.camera = camera

    @property
    def energy_deposit(self) -> np.ndarray | None:
        """Energy deposited per voxel, eV per emitted photon (phantom shape), or None when not tallied."""
        return None if self._energy_deposit is None else self._energy_deposit.host()

    @property
    def energy_deposit_std(self) -> np.ndarray | None:
        """Standard error of :attr:`energy_deposit` from the batches, or None when not tallied."""
        return None if self._energy_deposit_std is None else self._energy_deposit_std.host()

    @property
    def scatter(self) -> np.ndarray:
        """All scattered photons: compton + rayleigh + multiple."""
        return self.compton + self.rayleigh + self.multiple

    @property
    def scatter_std(self) -> np.ndarray:
        """Standard error of :attr:`scatter` (the three tallies' batch errors added in quadrature; they are
        correlated through the batches, so this is approximate)."""
        return np.sqrt(self.compton_std**2 + self.rayleigh_std**2 + self.multiple_std**2)

    @property
    def total(self) -> np.ndarray:
        """primary + scatter."""
        return self.primary + self.scatter

    def save(self, path: str | os.PathLike) -> Path:
        """Write to HDF5 (``.h5``), under a temporary name then renamed.

        Attributes (MC-GPU style header): ``format``, ``format_version``, ``settings`` (JSON: source,
        geometry, materials, histories, seed, version, ...), ``camera`` (JSON), ``energy_balance_eV`` (JSON),
        ``photons``, ``seed``, ``run_time_s``. Datasets: ``images/<kind>`` and ``images/<kind>_std`` for kind
        in primary, compton, rayleigh, multiple (float64, rows x cols); ``energy_deposit`` and
        ``energy_deposit_std`` (float64, phantom shape, eV per emitted photon; gzip; absent when not tallied).
        """
        import h5py

        path = Path(path)
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["format"] = _FORMAT
            f.attrs["format_version"] = _FORMAT_VERSION
            f.attrs["settings"] = json.dumps(self.settings)
            f.attrs["camera"] = self.camera.to_json()
            f.attrs["energy_balance_eV"] = json.dumps(self.energy_balance_eV)
            f.attrs["photons"] = self.photons
            f.attrs["seed"] = self.seed
            f.attrs["run_time_s"] = self.run_time_s
            for kind in IMAGE_KINDS:
                f.create_dataset(f"images/{kind}", data=getattr(self, kind))
                f.create_dataset(f"images/{kind}_std", data=getattr(self, f"{kind}_std"))
            if self.energy_deposit is not None:
                f.create_dataset("energy_deposit", data=self.energy_deposit, compression="gzip")
                f.create_dataset("energy_deposit_std", data=self.energy_deposit_std, compression="gzip")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MCResult":
        """Read a result written by :meth:`save`."""
        import h5py

        path = Path(path)
        if not path.is_file():
            raise XsimInputError(f"Monte Carlo result file {path} does not exist")
        with h5py.File(path, "r") as f:
            fmt, version = f.attrs.get("format"), f.attrs.get("format_version")
            if fmt != _FORMAT or version != _FORMAT_VERSION:
                raise XsimInputError(f"{path} is not an {_FORMAT} file of version {_FORMAT_VERSION} (format "
                                     f"{fmt!r}, version {version!r}); write it again with MCResult.save")
            images = {k: f[f"images/{k}"][()] for k in IMAGE_KINDS}
            images_std = {k: f[f"images/{k}_std"][()] for k in IMAGE_KINDS}
            deposit = [f[name][()] if name in f else None for name in ("energy_deposit", "energy_deposit_std")]
            return cls(images, images_std, *deposit,
                       json.loads(f.attrs["energy_balance_eV"]), int(f.attrs["photons"]), int(f.attrs["seed"]),
                       float(f.attrs["run_time_s"]), json.loads(f.attrs["settings"]),
                       Camera.from_json(f.attrs["camera"]))

    def __repr__(self) -> str:
        return (f"MCResult({self.photons:.3g} photons, seed={self.seed}, image {self.primary.shape}, "
                f"deposit {None if self.energy_deposit is None else self.energy_deposit.shape}, "
                f"{self.run_time_s:.1f} s)")


# ---------------------------------------------------------------------------------------------------------
# Driver
def monte_carlo(phantom: Phantom, camera: Camera, spectrum: Spectrum | None = None, energy_keV: float | None = None,
                photons: float = 1e6, seed: int = 0, batches: int = 10, detector: Any = None,
                grid: AntiScatterGrid | None = None, focal_spot_mm: float = 0.0, focal_spot_shape: str = "gaussian",
                world_material: str | Material | None = None, tally_deposit: bool = True, backend: str = "auto",
                threads: int | None = None, progress: bool = True) -> MCResult:
    """Simulate ``photons`` histories from the camera's source through ``phantom`` onto its detector.

    Parameters
    ----------
    phantom : Phantom
        Voxel phantom (material index, density g/cm^3, affine mm). It must lie between the source and the
        detector plane; outside its voxel box photons travel in vacuum (or ``world_material``).
    camera : Camera
        Source position and detector (orthogonal pixel axes). The beam is collimated to the detector.
    spectrum : Spectrum, optional
        Tube spectrum (photons per mAs per mm^2 at 1 m); energies with fluence within [1, 150] keV.
    energy_keV : float, optional
        Monoenergetic beam instead of ``spectrum`` (images per unit fluence: 1 photon/mm^2 at 1 m).
    photons : int
        Histories, >= batches (float values such as 1e6 are accepted when integral).
    seed : int
        Philox key; photon i uses the stream (seed, i).
    batches : int
        Disjoint photon ranges, >= 2 for uncertainties (standard error of the batch means).
    detector : xsim.detector.Detector, optional
        Energy response; default ``Detector()`` (600 um CsI, energy integrating).
    grid : AntiScatterGrid, optional
        Linear anti-scatter grid in front of the detector (default none).
    focal_spot_mm : float
        Focal spot size, mm (0: point source): the FWHM of a gaussian spot, or the side of a uniform square,
        in the plane through the source parallel to the detector. The collimation (field solid angle used
        for the units) is that of the spot's centre.
    focal_spot_shape : {"gaussian", "uniform"}
    world_material : str or Material, optional
        Material filling the world outside the phantom's voxel box (e.g. "air", at the material's own
        density), within a sphere holding the source, the phantom and the detector; default None: vacuum.
        Energy it absorbs is reported as ``energy_balance_eV["deposited_world"]``.
    tally_deposit : bool
        Tally the 3D energy deposit (default). False skips it (``energy_deposit`` is None): faster, and less
        memory, when only the images are wanted (the energy balance is tallied either way).
    backend : {"auto", "cpu", "cuda"}
    threads : int, optional
        CPU threads (of the transport on the cpu backend, and of the batch statistics there); results are
        identical for any thread count.
    progress : bool
        Show a tqdm progress bar over batches.

    Returns
    -------
    MCResult
        On KeyboardInterrupt after at least one finished batch, the result of the finished batches is
        returned with a warning (``settings["interrupted"] = True``); before that, the interrupt propagates.
    """
    start = time.perf_counter()
    check_type("phantom", phantom, Phantom)
    check_type("camera", camera, Camera)
    n_photons = _check_photons(photons)
    check_type("seed", seed, (int, np.integer))
    if not 0 <= seed < 2**64:
        raise XsimInputError(f"seed must be in [0, 2^64), got {seed}")
    check_type("batches", batches, (int, np.integer))
    if not 1 <= batches <= n_photons:
        raise XsimInputError(f"batches must be in [1, photons={n_photons}], got {batches}")
    if n_photons / batches > MAX_BATCH_PHOTONS:
        raise XsimInputError(f"batches={batches} gives {n_photons / batches:.3g} photons per batch; the fixed-point "
                             f"tallies hold {MAX_BATCH_PHOTONS:.3g}: use more batches")
    if grid is not None:
        check_type("grid", grid, AntiScatterGrid)
    energies, weights, fluence_total, beam_text = _beam(spectrum, energy_keV)
    materials = phantom.materials
    if len(materials) > MAX_MATERIALS:
        raise XsimInputError(f"phantom has {len(materials)} materials; the Monte Carlo supports {MAX_MATERIALS}")
    index = np.ascontiguousarray(phantom.material_index, dtype=np.uint8)
    if index.max() >= len(materials):
        raise XsimInputError(f"phantom.material_index holds {int(index.max())}, but only {len(materials)} materials")
    density = np.ascontiguousarray(phantom.density_g_cm3, dtype=np.float32)
    geo = _field_geometry(camera)
    _check_phantom_in_field(phantom, camera, geo)
    backend = runtime.select_backend(backend)

    world = _world_material(world_material, len(materials))
    tabs = _physics_tables(tuple(materials) + ((world,) if world is not None else ()))
    world_centre, world_radius = _world_sphere(geo, phantom)
    if backend == "cpu":
        voxels = pack_voxels(index, density)
        # majorants from the densities the kernel reads (rounded in the packing)
        majorants = RegionMajorants(index, None, tabs, voxels=voxels, threads=threads)
        tables = {"xs": tabs.xs.reshape(-1), "compton_s": tabs.compton_s.reshape(-1),
                  "rayleigh_cum": tabs.rayleigh_cum.reshape(-1)}
        xp = np
    else:  # the phantom's voxels, majorants and the tables stay on the GPU between calls (xsim.device)
        voxels, majorants, tables = _cuda_inputs(phantom, tabs)
        xp = runtime.cupy_module()
    det_mu_t, det_signal, det_text, unit = _detector_tables(detector, tabs.energies_keV)
    prob, alias = alias_table(weights)

    rows, cols = geo["rows"], geo["cols"]
    images_fixed = xp.zeros(4 * rows * cols, np.uint64)
    check_type("tally_deposit", tally_deposit, (bool, np.bool_))
    deposit_fixed = xp.zeros(index.size, np.uint64) if tally_deposit else None
    energy_fixed = xp.zeros(_ENERGY_ROWS * _ENERGY_COLS, np.uint64)
    spot = _focal_spot(geo, focal_spot_mm, focal_spot_shape)
    small = {"alias_prob": prob, "alias_index": alias, "alias_energy_keV": energies.astype(np.float32),
             "det_mu_t": det_mu_t, "det_signal": det_signal,
             "grid_mu_interspace": _grid_mu(grid, "interspace", tabs.energies_keV),
             "grid_mu_strip": _grid_mu(grid, "strip_material", tabs.energies_keV)}
    if xp is not np:  # uploaded once, not at every batch's launch
        small = {name: xp.asarray(value) for name, value in small.items()}
    params = _TransportParams(
        seed=int(seed), first_photon=0, grid=voxel_grid(phantom),
        voxels=voxels,
        source=spot, field=_field_struct(geo, spot), det_origin_mm=tuple(geo["origin"]),
        det_dual_u=tuple(geo["dual_u"]), det_dual_v=tuple(geo["dual_v"]), det_shape=(rows, cols),
        n_spectrum=len(energies),
        e_min_keV=ENERGY_RANGE_KEV[0], inv_de_keV=1.0 / ENERGY_STEP_KEV, n_e=tabs.n_e, dx=X_STEP_PER_A,
        inv_dx=1.0 / X_STEP_PER_A, n_x=tabs.n_x,
        majorant_per_mm=majorants.majorant_per_mm, inv_majorant_mm=majorants.inv_majorant_mm,
        block=majorants.block, blocks=majorants.blocks,
        bin_log_e_min=majorants.log_e_min, bin_inv_log_width=majorants.inv_log_width, n_bins=MAJORANT_BINS,
        grid_strips=_Grid(enabled=0) if grid is None else grid._kernel_struct(geo),
        world_material=-1 if world is None else len(materials),
        world_density_g_cm3=0.0 if world is None else world.density_g_cm3,
        world_centre_mm=tuple(world_centre), world_radius_mm=world_radius,
        images=images_fixed, deposit=deposit_fixed, energy=energy_fixed, fixed_scale=FIXED_SCALE,
        **tables, **small)
    kernel = _transport_kernel(backend)

    # Photons represented by one history: fluence (per mm^2 at 1 m) x 1e6 mm^2/sr x field solid angle.
    field_photons = fluence_total * 1e6 * geo["omega_sr"]
    edges = np.linspace(0, n_photons, batches + 1).round().astype(np.int64)
    acc = _BatchAccumulator(threads)
    interrupted = False
    transport_s = 0.0
    bar = _progress(batches, progress)
    try:
        for b in range(batches):
            n_b = int(edges[b + 1] - edges[b])
            energy_fixed.fill(0)  # (the image and deposit tallies are cleared by acc.add)
            params.first_photon = int(edges[b])
            params.n_photons = n_b
            launched = time.perf_counter()
            kernel.launch(n_b, params, threads=threads)
            kernel.synchronize()
            transport_s += time.perf_counter() - launched
            # per emitted photon: images x photons per history, keV -> eV for the energies
            img = _FixedTally(images_fixed.reshape(4, rows, cols), field_photons / n_b / FIXED_SCALE)
            bal = energy_fixed.view(np.int64).reshape(_ENERGY_ROWS, _ENERGY_COLS).sum(axis=0)[:len(ENERGY_SLOTS)]
            bal = to_host(bal)
            tallies = [img, bal * (1000.0 / n_b / FIXED_SCALE)]
            if tally_deposit:
                tallies.append(_FixedTally(deposit_fixed.reshape(index.shape), 1000.0 / n_b / FIXED_SCALE))
            acc.add(n_b, *tallies)
            bar.update(1)
    except KeyboardInterrupt:
        if acc.photons == 0:
            raise
        interrupted = True
        warnings.warn(f"monte_carlo interrupted: returning the {acc.batches} finished batches "
                      f"({acc.photons} of {n_photons} photons)", stacklevel=2)
    finally:
        bar.close()
    (img, img_std), (bal, _), *deposit = acc.results()
    img, img_std = to_host(img), to_host(img_std)
    dep, dep_std = deposit[0] if deposit else (None, None)  # cuda: left on the device until read (HostView)
    settings = dict(
        format=_FORMAT, format_version=_FORMAT_VERSION, xsim_version=_xsim_version(), kernel="mc_transport.cu",
        backend=backend, source=beam_text, source_mm=geo["source"].tolist(), field_solid_angle_sr=geo["omega_sr"],
        fluence_per_mm2_at_1m=fluence_total, histories_requested=n_photons, histories=acc.photons,
        batches=acc.batches, seed=int(seed), detector=det_text, image_unit=(unit + " per pixel per " +
        ("mAs" if spectrum is not None else "unit fluence (photon/mm^2 at 1 m)")),
        phantom_shape=list(index.shape), phantom_affine=phantom.affine.tolist(),
        materials=[{"name": m.name, "density_g_cm3": m.density_g_cm3, "composition": dict(m.composition)}
                   for m in materials],
        energy_grid_keV=[ENERGY_RANGE_KEV[0], ENERGY_RANGE_KEV[1], ENERGY_STEP_KEV],
        world="vacuum" if world is None else f"{world.name} {world.density_g_cm3:g} g/cm^3",
        focal_spot="point" if spot.kind == 0 else f"{focal_spot_shape} {float(focal_spot_mm):g} mm",
        grid=None if grid is None else repr(grid), interrupted=interrupted)
    settings["photons_per_history"] = field_photons / max(acc.photons, 1)
    settings["transport_time_s"] = transport_s  # in the kernel; run_time_s adds tables, tallies, checks
    images = {k: img[i] for i, k in enumerate(IMAGE_KINDS)}
    images_std = {k: img_std[i] for i, k in enumerate(IMAGE_KINDS)}
    balance = dict(zip(ENERGY_SLOTS, (float(v) for v in bal)))
    return MCResult(images, images_std, dep, dep_std, balance, acc.photons, int(seed),
                    time.perf_counter() - start, settings, camera)


@dataclasses.dataclass
class _FixedTally:
    """A kernel's fixed-point tally of one batch: per-photon values ``raw (as int64) * per_unit``, in the shape
    of ``raw``. _BatchAccumulator.add folds it in and clears ``raw``."""

    raw: np.ndarray  # uint64, two's complement
    per_unit: float  # the per-photon value of one fixed-point unit in this batch (the tally's unit per photon)


class _BatchAccumulator:
    """Mean and standard error of per-photon tallies over batches of sizes n_b (N = sum n_b): the mean is
    sum_b w_b x_b with w_b = n_b / N, its variance B/(B-1) sum_b w_b^2 (x_b - mean)^2 (for equal sizes, the
    usual var(x_b)/B). Kept as running sums of n_b x_b, n_b^2 x_b, n_b^2 x_b^2 and n_b^2. A quantity is a
    float array, or a _FixedTally: folded by kernels/mc_batch_stats.cu in one pass, where its tally lives (a
    cupy tally on the GPU, its sums kept there too; a numpy tally with ``threads`` CPU threads, or by numpy
    when not ``cpu_kernel``: the same operations in the same order, so the same bits)."""

    def __init__(self, threads: int | None = None, cpu_kernel: bool = True):
        self.batches = 0
        self.photons = 0
        self.threads = threads
        self.cpu_kernel = cpu_kernel
        self._sum_n2 = 0.0
        self._sums: list[list[Any]] = []
        self._taken = False

    def add(self, n_b: int, *values: np.ndarray | _FixedTally) -> None:
        if self._taken:
            raise RuntimeError("_BatchAccumulator: results() was taken, its sums are gone")
        if not self._sums:
            self._sums = [[_array_module(v.raw if isinstance(v, _FixedTally) else v).zeros(
                np.shape(v.raw if isinstance(v, _FixedTally) else v)) for _ in range(3)] for v in values]
        for (s1, s2, s3), v in zip(self._sums, values):
            if isinstance(v, _FixedTally):
                on_device = is_device_array(v.raw)
                if on_device or self.cpu_kernel:
                    params = _BatchStatsParams(raw=v.raw.reshape(-1), s1=s1.reshape(-1), s2=s2.reshape(-1),
                                               s3=s3.reshape(-1), per_unit=v.per_unit, photons=float(n_b))
                    _kernel("mc_batch_stats.cu", "mc_batch_stats", _BatchStatsParams,
                            "cuda" if on_device else "cpu").launch(v.raw.size, params, threads=self.threads)
                    continue
                tally, v = v.raw, v.raw.view(np.int64) * v.per_unit
                tally.fill(0)
            scaled = v * n_b  # one temporary per quantity
            s1 += scaled
            scaled *= n_b
            s2 += scaled
            scaled *= v
            s3 += scaled
        self._sum_n2 += float(n_b) ** 2
        self.batches += 1
        self.photons += n_b

    def results(self) -> list[tuple[Any, Any]]:
        """(mean, standard error) per tallied quantity, numpy or cupy like its tally; the error is NaN with a
        single batch. Computed in the running sums' own arrays (the 3D deposit may hold 1e7-1e8 voxels, and
        every new array costs its allocation and page faults): once, after the last batch."""
        if self._taken:
            raise RuntimeError("_BatchAccumulator: results() can be taken once")
        self._taken = True
        out = []
        n, b = float(self.photons), self.batches
        for s1, s2, s3 in self._sums:
            xp = _array_module(s1)
            mean = xp.divide(s1, n, out=s1)
            if b < 2:
                out.append((mean, xp.full_like(mean, np.nan)))
                continue
            # spread = (s3 - 2 mean s2 + mean^2 sum_n2) / n^2
            spread = xp.multiply(mean, s2, out=s2)
            spread *= -2.0
            spread += s3
            square = xp.multiply(mean, mean, out=s3)
            square *= self._sum_n2
            spread += square
            spread *= b / (b - 1) / (n * n)
            xp.maximum(spread, 0.0, out=spread)
            out.append((mean, xp.sqrt(spread, out=spread)))
        return out


def _array_module(array: Any) -> Any:
    """cupy for a cupy array, else numpy."""
    return runtime.cupy_module() if is_device_array(array) else np


def consistency(a: MCResult, b: MCResult, block: int = 4, min_fraction: float = 0.05) -> dict:
    """Whether two Monte Carlo results estimate the same tallies: a chi-square over image pixels and dose voxels.

    Bins are first summed over blocks of ``block`` pixels (``block``^3 voxels), their batch variances added
    (photons in different bins are independent), so that each holds many photons and its batch mean is close to
    normal. Blocks whose mean (a + b) / 2 reaches ``min_fraction`` of the largest block of that tally are
    compared (a choice made on a + b, which is uncorrelated with the difference a - b; a choice on the
    estimated errors would favour blocks whose error came out low). For each, Welch's t = (a - b) /
    sqrt(s_a^2 + s_b^2) with its Welch-Satterthwaite degrees of freedom (B. L. Welch, Biometrika 34, 28 (1947))
    is mapped to the standard normal quantile of the same tail probability, and the squares are summed: a
    chi-square with one degree of freedom per block when a and b estimate the same means. Runs with the same
    seed share their histories until these diverge, which only lowers the sum; a large one means a difference.

    Returns
    -------
    dict
        ``{"images": {...}, "energy_deposit": {...}}`` (the latter when both tallied it), each with ``chi2``,
        ``dof`` (blocks compared), ``chi2_per_dof`` and ``p_value`` (of a chi-square as large or larger).
    """
    from scipy import stats

    def blocks_of(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        shape = [n // block for n in x.shape]
        x = x[tuple(slice(0, n * block) for n in shape)]
        grouped = x.reshape([v for n in shape for v in (n, block)])
        return grouped.sum(axis=tuple(range(1, 2 * x.ndim, 2)))

    def compare(pairs, batches_a, batches_b):
        chi2, dof = 0.0, 0
        for x, sx, y, sy in pairs:
            x, y = blocks_of(x), blocks_of(y)
            va, vb = blocks_of(np.square(sx)), blocks_of(np.square(sy))
            level = 0.5 * (x + y)
            use = (level >= min_fraction * level.max()) & (va > 0) & (vb > 0) if level.size else level > 0
            va, vb = va[use], vb[use]
            t = (x[use] - y[use]) / np.sqrt(va + vb)
            nu = (va + vb) ** 2 / (va**2 / (batches_a - 1) + vb**2 / (batches_b - 1))
            z = stats.norm.isf(stats.t.sf(np.abs(t), nu))  # |t| -> |z| with the same one-sided tail
            chi2 += float(np.sum(z**2))
            dof += int(use.sum())
        return {"chi2": chi2, "dof": dof, "chi2_per_dof": chi2 / max(dof, 1),
                "p_value": float(stats.chi2.sf(chi2, dof)) if dof else float("nan")}

    ba, bb = a.settings["batches"], b.settings["batches"]
    if min(ba, bb) < 2:
        raise XsimInputError(f"consistency needs batch errors: runs of >= 2 batches, got {ba} and {bb}")
    check_type("block", block, (int, np.integer))
    out = {"images": compare([(getattr(a, k), getattr(a, f"{k}_std"), getattr(b, k), getattr(b, f"{k}_std"))
                              for k in IMAGE_KINDS], ba, bb)}
    if a.energy_deposit is not None and b.energy_deposit is not None:
        out["energy_deposit"] = compare([(a.energy_deposit, a.energy_deposit_std, b.energy_deposit,
                                          b.energy_deposit_std)], ba, bb)
    return out


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="monte_carlo batches", unit="batch", disable=not enabled, leave=False)


def _xsim_version() -> str:
    from . import __version__
    return __version__
