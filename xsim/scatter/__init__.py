"""Learned scatter: a compact U-Net that predicts the Monte Carlo scatter image from ray-cast inputs.

Owns the CNN (:class:`ScatterModel`), its input features (:func:`input_features`, :class:`ScatterGeometry`) and
:func:`predict`, the fast scatter path of :func:`xsim.render` (``scatter="cnn"``). Data generation:
:mod:`xsim.scatter.data` (bodies: :mod:`xsim.scatter.bodies`); training: :mod:`xsim.scatter.train`;
evaluation: :mod:`xsim.scatter.evaluate`. Method after Deep Scatter Estimation (Maier et al., Med Phys 46(1)
238-249, 2019): an encoder-decoder maps the projection to its scatter, at reduced resolution because scatter
is smooth; here it is also told the physics it cannot see in the image (geometry, grid, beam).

What the network predicts
-------------------------
The log of the *scatter fraction* ``f = S / F``: scatter signal S over the flat-field signal F of the same
pixel (both keV per pixel per mAs, F without anti-scatter grid). ``f`` does not depend on the pixel size, the
tube output or mAs, so a prediction on the CNN's working grid (``WORK_SHAPE``) is upsampled and multiplied by
the flat field of the caller's detector: ``S = F * exp(net(x))``, in the units of ``Projection.primary``.

Inputs (``FEATURES``; image channels pooled onto the working grid by adaptive average pooling)
-------------------------------------------------------------------------------------------
* ``-ln T`` (T = primary / flat field) and the total mass thickness ``sum_m L_m`` (g/cm^2): with ``-ln T``
  it carries the effective attenuation, hence the composition;
* three *kernel estimates*: the first-scatter yield of each pencil beam, ``q = T (-ln T)`` (the fraction of a
  narrow beam's photons that interact once, in the Beer-Lambert picture), spread by Gaussians of 20, 50 and
  120 mm *on the detector plane* (zero outside the collimated panel): the scatter-kernel superposition of
  classical scatter correction (Ohnesorge et al., Med Phys 26, 1999; Star-Lack et al., SPIE 7258, 2009)
  without its fitted amplitudes, in millimetres rather than pixels, so the network sees the panel's scale;
* the beam and the geometry as constant channels (:class:`ScatterGeometry`): kVp, mean energy, source-detector
  distance, air gap (from the object's centre of mass to the detector plane), panel height and width, and the
  anti-scatter grid's ratio and strip density (0 without a grid); the network adds the distance from the
  panel centre itself.
:func:`predict` warns when these fall outside the ranges the model was trained on (its metadata).
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checks import XsimInputError, check_type
from ..fileio import atomic_path

__all__ = ["DEFAULT_MODEL", "FEATURES", "WORK_SHAPE", "ScatterGeometry", "ScatterModel", "input_features",
           "load_model", "predict"]

WORK_SHAPE = (64, 64)
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "scatter_unet.pt"
FORMAT = "xsim.ScatterModel"
FORMAT_VERSION = 2  # 2: geometry, grid and kernel-estimate inputs (version 1 knew the beam only)
FEATURES = ("neg_log_t", "mass", "kernel_20mm", "kernel_50mm", "kernel_120mm", "kvp", "mean_energy", "sdd",
            "air_gap", "panel_rows", "panel_cols", "grid_ratio", "grid_lines")
N_INPUTS = len(FEATURES)
N_IMAGE_INPUTS = 5  # the first channels vary over the image; the rest are constants
KERNEL_SIGMAS_MM = (20.0, 50.0, 120.0)
# Feature scales: bring each channel to O(1) over the training range.
NEG_LOG_T_SCALE = 4.0
MASS_SCALE_G_CM2 = 30.0
KERNEL_SCALE = 3.0  # q <= 1/e
KVP_CENTRE, KVP_SCALE = 90.0, 30.0
MEAN_E_CENTRE_KEV, MEAN_E_SCALE_KEV = 50.0, 15.0
SDD_CENTRE_MM, SDD_SCALE_MM = 1100.0, 200.0
AIR_GAP_CENTRE_MM, AIR_GAP_SCALE_MM = 350.0, 150.0
PANEL_CENTRE_MM, PANEL_SCALE_MM = 315.0, 115.0
GRID_RATIO_SCALE, GRID_LINES_SCALE = 10.0, 100.0


@dataclasses.dataclass(frozen=True)
class ScatterGeometry:
    """What the CNN is told about the acquisition (mm): source-detector distance, the air gap from the object's
    centre of mass to the detector plane, the panel's extent (rows, cols), and the anti-scatter grid (ratio,
    strips per cm; 0 without one)."""

    sdd_mm: float
    air_gap_mm: float
    panel_mm: tuple[float, float]
    grid_ratio: float = 0.0
    grid_lines_per_cm: float = 0.0

    @classmethod
    def of(cls, camera: Any, object_center_mm: Any, grid: Any = None) -> "ScatterGeometry":
        """From a :class:`xsim.geometry.Camera`, the object's centre of mass (world mm; e.g.
        ``Projection.object_center_mm``) and an optional :class:`xsim.montecarlo.AntiScatterGrid`."""
        frame = camera.detector_frame()
        normal = frame.normal / np.linalg.norm(frame.normal)
        gap = float((frame.origin_mm - np.asarray(object_center_mm, dtype=float)) @ normal)
        rows, cols = camera.detector_shape
        pitch = camera.pixel_mm
        ratio = 0.0 if grid is None else float(grid.ratio)
        lines = 0.0 if grid is None else float(grid.strips_per_cm)
        return cls(float(camera.sdd_mm), gap, (float(rows * pitch[0]), float(cols * pitch[1])), ratio, lines)

    def vector(self, kvp: float, mean_energy_keV: float) -> np.ndarray:
        """The constant channels, scaled (``FEATURES[N_IMAGE_INPUTS:]``)."""
        return np.array([(kvp - KVP_CENTRE) / KVP_SCALE, (mean_energy_keV - MEAN_E_CENTRE_KEV) / MEAN_E_SCALE_KEV,
                         (self.sdd_mm - SDD_CENTRE_MM) / SDD_SCALE_MM,
                         (self.air_gap_mm - AIR_GAP_CENTRE_MM) / AIR_GAP_SCALE_MM,
                         (self.panel_mm[0] - PANEL_CENTRE_MM) / PANEL_SCALE_MM,
                         (self.panel_mm[1] - PANEL_CENTRE_MM) / PANEL_SCALE_MM,
                         self.grid_ratio / GRID_RATIO_SCALE, self.grid_lines_per_cm / GRID_LINES_SCALE])

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "panel_mm": list(self.panel_mm)}


def _gaussian_blur(image: torch.Tensor, sigma_px: tuple[float, float]) -> torch.Tensor:
    """(C, H, W) blurred by a sampled Gaussian (radius 3 sigma), zero outside the image: no scatter comes from
    outside the collimated panel."""
    x = image[None]
    for axis, sigma in enumerate(sigma_px):
        radius = max(1, int(3.0 * sigma + 0.5))
        offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        w = torch.exp(-0.5 * (offsets / sigma) ** 2)
        w = (w / w.sum()).repeat(x.shape[1], 1)
        if axis == 0:
            x = F.conv2d(x, w.view(x.shape[1], 1, -1, 1), padding=(radius, 0), groups=x.shape[1])
        else:
            x = F.conv2d(x, w.view(x.shape[1], 1, 1, -1), padding=(0, radius), groups=x.shape[1])
    return x[0]


def feature_tensor(primary: torch.Tensor, flat_field: torch.Tensor, mass: torch.Tensor, kvp: float,
                   mean_energy_keV: float, geometry: ScatterGeometry, shape=WORK_SHAPE) -> torch.Tensor:
    """:func:`input_features` on torch tensors (float64, on any device; the GPU path uses it as it is)."""
    if bool((flat_field <= 0).any()):
        raise XsimInputError("flat_field must be > 0 everywhere (the CNN works on the collimated field)")
    t = torch.clamp(primary / flat_field, min=1e-8)
    neg_log_t = -torch.log(t)
    planes = torch.stack([neg_log_t / NEG_LOG_T_SCALE, mass / MASS_SCALE_G_CM2, t * neg_log_t])
    pooled = F.adaptive_avg_pool2d(planes[None], shape)[0]
    pitch = (geometry.panel_mm[0] / shape[0], geometry.panel_mm[1] / shape[1])
    q = pooled[2:3] * KERNEL_SCALE
    kernels = [_gaussian_blur(q, (s / pitch[0], s / pitch[1])) for s in KERNEL_SIGMAS_MM]
    const = torch.as_tensor(geometry.vector(kvp, mean_energy_keV), dtype=pooled.dtype, device=pooled.device)
    constants = const[:, None, None].expand(len(const), *shape)
    return torch.cat([pooled[:2], *kernels, constants]).float()


def input_features(primary: np.ndarray, flat_field: np.ndarray, line_integrals: dict, kvp: float,
                   mean_energy_keV: float, geometry: ScatterGeometry, shape: tuple[int, int] = WORK_SHAPE
                   ) -> np.ndarray:
    """The CNN's input channels on the working grid (``FEATURES``, module docstring), float32
    (N_INPUTS, rows, cols).

    Parameters
    ----------
    primary, flat_field : ndarray (R, C)
        Ray-cast primary and flat field on the detector grid (same units).
    line_integrals : dict of str to ndarray (R, C)
        Per-material density line integrals, g/cm^2.
    kvp, mean_energy_keV : float
        Tube voltage, kV, and fluence-weighted mean energy of the spectrum, keV.
    geometry : ScatterGeometry
        Source-detector distance, air gap, panel size, grid.
    shape : (int, int)
        Working grid; each working pixel is the mean of the detector pixels it covers (torch's adaptive average
        pooling: exact area means when the detector's size is a multiple of the grid's, windows that overlap
        by a pixel otherwise).
    """
    check_type("geometry", geometry, ScatterGeometry)
    flat = torch.as_tensor(np.asarray(flat_field, dtype=np.float64))
    mass = torch.zeros_like(flat)
    for image in line_integrals.values():
        mass += torch.as_tensor(np.asarray(image, dtype=np.float64))
    return feature_tensor(torch.as_tensor(np.asarray(primary, dtype=np.float64)), flat, mass, kvp,
                          mean_energy_keV, geometry, shape).numpy()


def area_resample(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area means of (C, R, C) images over a coarser grid (torch's adaptive average pooling)."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float64))[None]
    return F.adaptive_avg_pool2d(x, shape)[0].numpy()


def _radius(batch: int, shape, dtype) -> torch.Tensor:
    """Distance from the panel centre, 1 at the edge midpoints: where the field's edge cuts off scatter.
    Radial, so it is unchanged by the flips and transposes the training uses."""
    v = torch.linspace(-1, 1, shape[0], dtype=dtype)[:, None]
    u = torch.linspace(-1, 1, shape[1], dtype=dtype)[None, :]
    return torch.sqrt(u**2 + v**2).expand(batch, 1, *shape)


def _block(c_in: int, c_out: int):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(4, c_out), nn.SiLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(4, c_out), nn.SiLU())


class ScatterModel(nn.Module):
    """U-Net: log scatter fraction on the working grid from :func:`input_features`.

    Input: the features plus the radial distance from the panel centre (:func:`_radius`). Encoder: ``depth``
    levels of two 3x3 convolutions (GroupNorm, SiLU) and 2x2 max pooling, channels
    ``width * 2**level``; decoder: bilinear upsampling, concatenation with the encoder's features, two 3x3
    convolutions; a 1x1 convolution to one channel. Scatter varies over centimetres, so 64x64 with three
    poolings (receptive field about the whole field) suffices.

    Parameters
    ----------
    width : int
        Channels of the first level.
    depth : int
        Poolings (the working grid must be divisible by ``2**depth``).
    metadata : dict, optional
        Plain JSON-like description (training data, geometry, settings, measured errors) saved with the
        weights.
    """

    def __init__(self, width: int = 16, depth: int = 3, metadata: dict | None = None):
        super().__init__()
        if not (isinstance(width, int) and width >= 4 and width % 4 == 0):
            raise XsimInputError(f"width must be a positive multiple of 4, got {width!r}")
        if not (isinstance(depth, int) and 1 <= depth <= 5):
            raise XsimInputError(f"depth must be an integer in [1, 5], got {depth!r}")
        self.width, self.depth = width, depth
        self.metadata = dict(metadata or {})
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(N_INPUTS + 1 if i == 0 else chans[i - 1], chans[i]) for i in range(depth)])
        self.bottom = _block(chans[depth - 1], chans[depth])
        self.up = nn.ModuleList([_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], 1, 1)

    def forward(self, x):
        """(batch, N_INPUTS, H, W) features -> (batch, 1, H, W) log scatter fraction."""
        skips = []
        x = torch.cat([x, _radius(x.shape[0], x.shape[-2:], x.dtype)], dim=1)
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, path: str | os.PathLike) -> Path:
        """Write weights, architecture and metadata (``torch.save``; temporary name, then renamed)."""
        path = Path(path)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(path) as tmp:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION,
                        "config": {"width": self.width, "depth": self.depth, "n_inputs": N_INPUTS,
                                   "work_shape": list(WORK_SHAPE)},
                        # through JSON: plain types only, which torch.load(weights_only=True) accepts
                        "metadata": json.loads(json.dumps(self.metadata)), "state_dict": state}, tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ScatterModel":
        """Read a model written by :meth:`save` (``weights_only``: no code is unpickled)."""
        path = Path(path)
        if not path.is_file():
            raise XsimInputError(f"scatter model file {str(path)!r} does not exist")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for a corrupt or foreign file
            raise XsimInputError(f"{path} is not a readable scatter model: {type(err).__name__}: {err}") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT or blob.get("format_version") != FORMAT_VERSION:
            raise XsimInputError(f"{path} is not an {FORMAT} file of version {FORMAT_VERSION}; "
                                 "retrain it with `xsim scatter train`")
        config = blob["config"]
        if config["n_inputs"] != N_INPUTS or tuple(config["work_shape"]) != WORK_SHAPE:
            raise XsimInputError(f"{path} was trained on other input features ({config}); retrain it")
        model = cls(width=config["width"], depth=config["depth"], metadata=blob.get("metadata", {}))
        model.load_state_dict(blob["state_dict"])
        model.eval()
        return model


@lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int) -> ScatterModel:
    return ScatterModel.load(path)


def load_model(model: ScatterModel | str | os.PathLike | None = None) -> ScatterModel:
    """``model`` itself, the model at a path, or (None) the shipped model ``DEFAULT_MODEL`` (cached)."""
    if isinstance(model, ScatterModel):
        return model
    path = Path(DEFAULT_MODEL if model is None else model)
    if not path.is_file():
        what = "the shipped scatter model" if model is None else "scatter model"
        raise XsimInputError(f"{what} {str(path)!r} does not exist (train one with `xsim scatter train`)")
    return _load_cached(str(path.resolve()), path.stat().st_mtime_ns)


def predict_fraction(model: ScatterModel, features: np.ndarray) -> np.ndarray:
    """Scatter fraction S/F on the working grid for (N_INPUTS, H, W) or (batch, N_INPUTS, H, W) features."""
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    single = x.ndim == 3
    model.eval()
    with torch.no_grad():
        out = torch.exp(model(x[None] if single else x))[:, 0].numpy()
    return out[0] if single else out


def predict(projection: Any, spectrum: Any = None, model: ScatterModel | str | os.PathLike | None = None,
            grid: Any = None) -> np.ndarray:
    """Scatter image of a projection, predicted by the CNN.

    The inputs are area-averaged onto the 64 x 64 working grid, whatever the detector's shape; the network is
    told the geometry (source-detector distance, air gap, panel size), the grid and the beam
    (:class:`ScatterGeometry`), and :func:`predict` warns, once per quantity, when one of them lies outside
    what the model was trained on (``model.metadata["ranges"]``, listed in the model card).

    Parameters
    ----------
    projection : xsim.projector.Projection
        Ray-cast projection (primary, flat field, per-material line integrals), any detector shape.
    spectrum : Spectrum, optional
        The tube spectrum of the projection (default ``projection.spectrum``); must have a kVp.
    model : ScatterModel or path, optional
        Default: the shipped model (``xsim/models/scatter_unet.pt``).
    grid : xsim.AntiScatterGrid, optional
        The anti-scatter grid in front of the panel (default none). The prediction is then the scatter behind
        the grid.

    Returns
    -------
    ndarray (rows, cols) float32
        Expected scatter signal per pixel per mAs on the projection's detector grid, in the units of
        ``projection.primary`` (keV for an energy-integrating detector).
    """
    net = load_model(model)
    spectrum, geometry = _inputs(projection, spectrum, grid, net)
    if gpu_ready(projection):  # a projection of the cuda backend: features and network run on its GPU
        return predict_on_device(projection, spectrum, net, grid).cpu().numpy()
    features = input_features(projection.primary, projection.flat_field, projection.line_integrals,
                              spectrum.kvp, spectrum.mean_energy_keV, geometry)
    if _strips_along_u(grid):
        fraction = predict_fraction(net, transpose_features(torch.as_tensor(features)).numpy()).T
    else:
        fraction = predict_fraction(net, features)
    # bilinear upsampling of the smooth fraction, then the caller's own flat field restores pixel area/output
    up = F.interpolate(torch.as_tensor(fraction)[None, None], size=projection.primary.shape, mode="bilinear",
                       align_corners=False)[0, 0].numpy()
    return (up * projection.flat_field).astype(np.float32)


def _inputs(projection: Any, spectrum: Any, grid: Any, net: ScatterModel) -> tuple[Any, ScatterGeometry]:
    """The checked spectrum and the geometry of a prediction; warns about inputs outside the training ranges."""
    from ..montecarlo import AntiScatterGrid
    from ..physics.spectra import Spectrum
    from ..projector import Projection

    check_type("projection", projection, Projection)
    spectrum = projection.spectrum if spectrum is None else check_type("spectrum", spectrum, Spectrum)
    if spectrum.kvp is None:
        raise XsimInputError("spectrum must be a tube spectrum with a kVp (the CNN is conditioned on it), got "
                             f"{spectrum!r}")
    if grid is not None:
        check_type("grid", grid, AntiScatterGrid)
    if projection.object_center_mm is None:
        raise XsimInputError("projection.object_center_mm is None: the CNN needs the object's centre of mass for the "
                             "air gap (xsim.project sets it; or set it from Phantom.center_of_mass_mm())")
    geometry = ScatterGeometry.of(projection.camera, projection.object_center_mm, grid)
    warn_out_of_range(net, spectrum, geometry, projection.camera)
    return spectrum, geometry


def _strips_along_u(grid: Any) -> bool:
    """The model learnt grids whose strips run along the panel's columns (``strips_along="v"``); with the
    other orientation the image is transposed through the network."""
    return grid is not None and grid.strips_along == "u"


def transpose_features(features: torch.Tensor) -> torch.Tensor:
    """(..., N_INPUTS, H, W) features of the transposed panel: images transposed, height and width swapped."""
    out = features.transpose(-1, -2).clone()
    rows, cols = FEATURES.index("panel_rows"), FEATURES.index("panel_cols")
    out[..., [rows, cols], :, :] = out[..., [cols, rows], :, :]
    return out


def warn_out_of_range(net: ScatterModel, spectrum: Any, geometry: ScatterGeometry, camera: Any) -> list[str]:
    """Warn (once per model and quantity) about inputs outside the model's training ranges; returns the
    quantities that are outside."""
    from ..geometry import CArm

    ranges = net.metadata.get("ranges", {})
    lao, cran = CArm.angles_of(camera)
    values = {"kvp": spectrum.kvp, "sdd_mm": geometry.sdd_mm, "air_gap_mm": geometry.air_gap_mm,
              "panel_mm": min(geometry.panel_mm), "panel_max_mm": max(geometry.panel_mm), "lao_deg": lao,
              "cran_deg": cran}
    if geometry.grid_ratio > 0:  # a grid is judged against the grids trained on, not against "no grid"
        values.update(grid_ratio=geometry.grid_ratio, grid_lines_per_cm=geometry.grid_lines_per_cm)
    warned = net.__dict__.setdefault("_warned_ranges", set())  # once per model object and quantity
    outside = []
    for name, value in values.items():
        if name not in ranges:
            continue
        lo, hi = ranges[name]
        if not lo - 1e-9 <= value <= hi + 1e-9:
            outside.append(name)
            if name not in warned:
                warned.add(name)
                warnings.warn(f"xsim.scatter.predict: {name} = {value:.4g} lies outside the range the scatter model "
                              f"was trained on, [{lo:.4g}, {hi:.4g}] (its model card lists the ranges and the "
                              "measured errors); the prediction is an extrapolation", RuntimeWarning, stacklevel=4)
    return outside


def gpu_ready(projection: Any) -> bool:
    """True when the projection's images are on a GPU and torch can work there (a CUDA build of torch): then
    :func:`predict_on_device` runs without copies to the host."""
    from ..device import is_device_array

    return is_device_array(projection.device["primary"]) and torch.cuda.is_available()


def device_features(projection: Any, kvp: float, mean_energy_keV: float, geometry: ScatterGeometry) -> torch.Tensor:
    """:func:`input_features` of a projection whose images are on the GPU, computed there (the same
    operations, :func:`feature_tensor`), as a float32 tensor (N_INPUTS, *WORK_SHAPE) on that GPU."""
    images = projection.device
    flat = torch.from_dlpack(images["flat_field"]).double()
    mass = torch.zeros_like(flat)
    for image in images["line_integrals"].values():
        mass += torch.from_dlpack(image)
    return feature_tensor(torch.from_dlpack(images["primary"]).double(), flat, mass, kvp, mean_energy_keV,
                          geometry)


def _model_on(net: ScatterModel, device: torch.device) -> ScatterModel:
    """A copy of ``net`` on ``device`` (evaluation mode), made once per model and device."""
    import copy

    from .. import device as residency

    return residency.cached(net, f"scatter model on {device}", lambda: copy.deepcopy(net).to(device).eval())


def predict_on_device(projections: Any, spectrum: Any, net: ScatterModel, grid: Any = None) -> torch.Tensor:
    """Scatter images of projections of the cuda backend, as a float32 torch tensor on their GPU: (rows, cols)
    for one projection, (views, rows, cols) for a list (one batch through the network). Same model and
    inputs as :func:`predict`; the images never leave the device. Needs :func:`gpu_ready` projections."""
    single = not isinstance(projections, (list, tuple))
    projections = [projections] if single else list(projections)
    features = torch.stack([device_features(p, spectrum.kvp, spectrum.mean_energy_keV,
                                            _inputs(p, spectrum, grid, net)[1]) for p in projections])
    transposed = _strips_along_u(grid)
    with torch.no_grad():
        fraction = torch.exp(_model_on(net, features.device)(transpose_features(features) if transposed
                                                             else features))
    if transposed:
        fraction = fraction.transpose(-1, -2)
    out = []
    for k, projection in enumerate(projections):
        flat = torch.from_dlpack(projection.device["flat_field"])
        up = F.interpolate(fraction[k:k + 1], size=tuple(flat.shape), mode="bilinear", align_corners=False)[0, 0]
        out.append(up * flat)
    return out[0] if single else torch.stack(out)
