"""Learned scatter: a compact U-Net that predicts the Monte Carlo scatter image from ray-cast inputs.

Owns the CNN (:class:`ScatterModel`), its input features (:func:`input_features`) and :func:`predict`, the
fast scatter path of :func:`xsim.render` (``scatter="cnn"``). Data generation: :mod:`xsim.scatter.data`;
training: :mod:`xsim.scatter.train`; evaluation: :mod:`xsim.scatter.evaluate`. Method after Deep Scatter
Estimation (Maier et al., Med Phys 46(1) 238-249, 2019): an encoder-decoder maps the projection to its
scatter, at reduced resolution because scatter is smooth.

What the network predicts
-------------------------
The log of the *scatter fraction* ``f = S / F``: scatter signal S over the flat-field signal F of the same
pixel (both keV per pixel per mAs). ``f`` does not depend on the pixel size, the tube output or mAs, so a
prediction on the CNN's working grid (``WORK_SHAPE``) is upsampled and multiplied by the flat field of the
caller's detector: ``S = F * exp(net(x))``, in the units of ``Projection.primary``.

Inputs (channels on the working grid, each the area mean of the detector pixels it covers):
``-ln T`` (T = primary / flat field), the total mass thickness ``sum_m L_m`` (g/cm^2; with ``-ln T`` it
carries the effective attenuation, hence the composition), and the spectrum as two constant channels (kVp
and mean energy); the network adds the distance from the panel centre itself. The training geometry
(source-detector distance, panel size, air gap) is in the model's metadata: the network has seen only that
geometry, and other geometries are an extrapolation.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checks import XsimInputError, check_type
from ..fileio import atomic_path

__all__ = ["DEFAULT_MODEL", "WORK_SHAPE", "ScatterModel", "input_features", "load_model", "predict"]

WORK_SHAPE = (64, 64)
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "scatter_unet.pt"
FORMAT = "xsim.ScatterModel"
FORMAT_VERSION = 1
# Feature scales: bring each channel to O(1) over the training range (60-120 kVp, trunk and head).
NEG_LOG_T_SCALE = 4.0
MASS_SCALE_G_CM2 = 30.0
KVP_CENTRE, KVP_SCALE = 90.0, 30.0
MEAN_E_CENTRE_KEV, MEAN_E_SCALE_KEV = 50.0, 15.0
N_INPUTS = 4


def input_features(primary: np.ndarray, flat_field: np.ndarray, line_integrals: dict, kvp: float,
                   mean_energy_keV: float, shape: tuple[int, int] = WORK_SHAPE) -> np.ndarray:
    """The CNN's input channels on the working grid, float32 (N_INPUTS, rows, cols).

    Parameters
    ----------
    primary, flat_field : ndarray (R, C)
        Ray-cast primary and flat field on the detector grid (same units).
    line_integrals : dict of str to ndarray (R, C)
        Per-material density line integrals, g/cm^2.
    kvp, mean_energy_keV : float
        Tube voltage, kV, and fluence-weighted mean energy of the spectrum, keV.
    shape : (int, int)
        Working grid; each working pixel is the area mean of the detector pixels it covers.
    """
    flat = np.asarray(flat_field, dtype=np.float64)
    if np.any(flat <= 0):
        raise XsimInputError("flat_field must be > 0 everywhere (the CNN works on the collimated field)")
    t = np.clip(np.asarray(primary, dtype=np.float64) / flat, 1e-8, None)
    mass = np.zeros_like(flat)
    for image in line_integrals.values():
        mass += image
    planes = np.stack([-np.log(t) / NEG_LOG_T_SCALE, mass / MASS_SCALE_G_CM2])
    pooled = area_resample(planes, shape)
    const = np.ones((2, *shape))
    const[0] *= (kvp - KVP_CENTRE) / KVP_SCALE
    const[1] *= (mean_energy_keV - MEAN_E_CENTRE_KEV) / MEAN_E_SCALE_KEV
    return np.concatenate([pooled, const]).astype(np.float32)


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


def predict(projection: Any, spectrum: Any = None, model: ScatterModel | str | os.PathLike | None = None) -> np.ndarray:
    """Scatter image of a projection, predicted by the CNN.

    The inputs are area-averaged onto the 64 x 64 working grid, whatever the detector's shape: the model
    knows the panel only through that grid, so it is meant for the geometry it was trained on
    (``model.metadata["geometry"]``: a square 307 mm panel at SDD 1020 mm, no grid); elsewhere it
    extrapolates.

    Parameters
    ----------
    projection : xsim.projector.Projection
        Ray-cast projection (primary, flat field, per-material line integrals), any detector shape.
    spectrum : Spectrum, optional
        The tube spectrum of the projection (default ``projection.spectrum``); must have a kVp.
    model : ScatterModel or path, optional
        Default: the shipped model (``xsim/models/scatter_unet.pt``).

    Returns
    -------
    ndarray (rows, cols) float32
        Expected scatter signal per pixel per mAs on the projection's detector grid, in the units of
        ``projection.primary`` (keV for an energy-integrating detector).
    """
    from ..physics.spectra import Spectrum
    from ..projector import Projection

    check_type("projection", projection, Projection)
    spectrum = projection.spectrum if spectrum is None else check_type("spectrum", spectrum, Spectrum)
    if spectrum.kvp is None:
        raise XsimInputError("spectrum must be a tube spectrum with a kVp (the CNN is conditioned on it), got "
                             f"{spectrum!r}")
    net = load_model(model)
    if gpu_ready(projection):  # a projection of the cuda backend: features and network run on its GPU
        return predict_on_device(projection, spectrum, net).cpu().numpy()
    features = input_features(projection.primary, projection.flat_field, projection.line_integrals,
                              spectrum.kvp, spectrum.mean_energy_keV)
    fraction = predict_fraction(net, features)
    # bilinear upsampling of the smooth fraction, then the caller's own flat field restores pixel area/output
    up = F.interpolate(torch.as_tensor(fraction)[None, None], size=projection.primary.shape, mode="bilinear",
                       align_corners=False)[0, 0].numpy()
    return (up * projection.flat_field).astype(np.float32)


def gpu_ready(projection: Any) -> bool:
    """True when the projection's images are on a GPU and torch can work there (a CUDA build of torch): then
    :func:`predict_on_device` runs without copies to the host."""
    from ..device import is_device_array

    return is_device_array(projection.device["primary"]) and torch.cuda.is_available()


def device_features(projection: Any, kvp: float, mean_energy_keV: float) -> torch.Tensor:
    """:func:`input_features` of a projection whose images are on the GPU, computed there in float64 (the same
    operations as the numpy version) and returned as a float32 tensor (N_INPUTS, *WORK_SHAPE) on that GPU."""
    images = projection.device
    primary = torch.from_dlpack(images["primary"]).double()
    flat = torch.from_dlpack(images["flat_field"]).double()
    if bool((flat <= 0).any()):
        raise XsimInputError("flat_field must be > 0 everywhere (the CNN works on the collimated field)")
    t = torch.clamp(primary / flat, min=1e-8)
    mass = torch.zeros_like(flat)
    for image in images["line_integrals"].values():
        mass += torch.from_dlpack(image)
    planes = torch.stack([-torch.log(t) / NEG_LOG_T_SCALE, mass / MASS_SCALE_G_CM2])
    pooled = F.adaptive_avg_pool2d(planes[None], WORK_SHAPE)[0]
    const = torch.ones((2, *WORK_SHAPE), dtype=torch.float64, device=flat.device)
    const[0] *= (kvp - KVP_CENTRE) / KVP_SCALE
    const[1] *= (mean_energy_keV - MEAN_E_CENTRE_KEV) / MEAN_E_SCALE_KEV
    return torch.cat([pooled, const]).float()


def _model_on(net: ScatterModel, device: torch.device) -> ScatterModel:
    """A copy of ``net`` on ``device`` (evaluation mode), made once per model and device."""
    import copy

    from .. import device as residency

    return residency.cached(net, f"scatter model on {device}", lambda: copy.deepcopy(net).to(device).eval())


def predict_on_device(projections: Any, spectrum: Any, net: ScatterModel) -> torch.Tensor:
    """Scatter images of projections of the cuda backend, as a float32 torch tensor on their GPU: (rows, cols)
    for one projection, (views, rows, cols) for a list (one batch through the network). Same model and
    inputs as :func:`predict`; the images never leave the device. Needs :func:`gpu_ready` projections."""
    single = not isinstance(projections, (list, tuple))
    projections = [projections] if single else list(projections)
    features = torch.stack([device_features(p, spectrum.kvp, spectrum.mean_energy_keV) for p in projections])
    with torch.no_grad():
        fraction = torch.exp(_model_on(net, features.device)(features))
    out = []
    for k, projection in enumerate(projections):
        flat = torch.from_dlpack(projection.device["flat_field"])
        up = F.interpolate(fraction[k:k + 1], size=tuple(flat.shape), mode="bilinear", align_corners=False)[0, 0]
        out.append(up * flat)
    return out[0] if single else torch.stack(out)
