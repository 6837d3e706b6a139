"""Labels: what ML users need next to each image: projected landmarks and projected segmentation masks.

Landmarks are world points (patient LPS mm) projected with the image's camera (:meth:`Camera.project_points`):
pixel (u, v) = (column, row), centres at integers, plus the depth along the principal axis and whether the
point falls on the detector. They come from a points file (:func:`read_points`: CSV ``name,x_mm,y_mm,z_mm``
or JSON ``{name: [x, y, z]}``) and from ``phantom.landmarks``.

Masks: a pixel belongs to label k when its ray (source -> pixel centre) crosses at least one voxel of label
k. They are computed by the projector itself (exact Siddon traversal) on a phantom in which each label is a
material of unit density: one pass gives every label's density line integral, i.e. its path length
(``path_mm = 10 * L[g/cm^2] / 1 g/cm^3``), and ``mask = path_mm > 0``. Using the projector's own rays makes
masks and images agree pixel for pixel (no splatting or rasterisation error). Masks of phantom materials
(e.g. contrast, a guidewire) are read from the image's own projection, whose per-material line integrals
are already there.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .checks import XsimInputError, check_type
from .device import to_host
from .geometry import Camera
from .physics.materials import Material
from .volume import Phantom, _VoxelGrid, _check_affine

__all__ = ["LabelVolume", "LabelSpec", "read_points", "project_landmarks", "project_masks", "make_labels"]

_LABELS_PER_PASS = 31  # the projector's MAX_MATERIALS minus the background


def read_points(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read named world points (mm, patient LPS) from a CSV or JSON file.

    CSV: a header with columns ``name,x_mm,y_mm,z_mm`` (other columns ignored). JSON: ``{name: [x, y, z]}``.
    """
    p = Path(path)
    if not p.is_file():
        raise XsimInputError(f"points file {str(p)!r} does not exist")
    points: dict[str, np.ndarray] = {}
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as err:
            raise XsimInputError(f"points file {p} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise XsimInputError(f"points file {p} must hold a JSON object {{name: [x, y, z]}}")
        for name, xyz in data.items():
            points[str(name)] = _point(xyz, f"point {name!r}", p)
        return points
    if p.suffix.lower() != ".csv":
        raise XsimInputError(f"points file {p} must be .csv (name,x_mm,y_mm,z_mm) or .json ({{name: [x,y,z]}})")
    with open(p, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"name", "x_mm", "y_mm", "z_mm"} - set(reader.fieldnames or [])
        if missing:
            raise XsimInputError(f"points file {p} lacks columns {sorted(missing)} (header: {reader.fieldnames})")
        for line, row in enumerate(reader, start=2):
            points[row["name"]] = _point([row["x_mm"], row["y_mm"], row["z_mm"]], f"line {line}", p)
    return points


def _point(xyz: Any, what: str, path: Path) -> np.ndarray:
    try:
        arr = np.asarray(xyz, dtype=float)
    except (TypeError, ValueError):
        arr = np.array([])
    if arr.shape != (3,) or not np.isfinite(arr).all():
        raise XsimInputError(f"{what} must be three finite numbers x, y, z in mm, got {xyz!r} (in {path})")
    return arr


def project_landmarks(points: Mapping[str, Any], camera: Camera) -> dict[str, dict]:
    """Project named world points onto the detector.

    Returns
    -------
    dict
        ``{name: {"uv": [u, v], "depth_mm": d, "inside": bool}}``: pixel coordinates (column, row; NaN
        behind the source), depth along the principal axis in mm, and whether the point lands on the
        detector (within the outer pixel edges and in front of the source).
    """
    check_type("camera", camera, Camera)
    rows, cols = camera.detector_shape
    out = {}
    for name, xyz in points.items():
        xyz = np.asarray(xyz, dtype=float)
        uv = camera.project_points(xyz)
        depth = float(camera.matrix[2, :3] @ xyz + camera.matrix[2, 3])
        inside = bool(np.isfinite(uv).all() and -0.5 <= uv[0] < cols - 0.5 and -0.5 <= uv[1] < rows - 0.5)
        out[name] = {"uv": [float(uv[0]), float(uv[1])], "depth_mm": depth, "inside": inside}
    return out


class LabelVolume(_VoxelGrid):
    """An integer label volume (a segmentation) with its voxel -> world (LPS mm) affine.

    Parameters
    ----------
    labels : array_like of int, 3D
        Label per voxel; 0 is background.
    affine : array_like (4, 4)
        Voxel index -> world mm (patient LPS).
    names : dict {int: str}, optional
        Name of each label value (default ``"label_<k>"``); only the listed labels are projected when given.
    """

    def __init__(self, labels: Any, affine: Any, names: Mapping[int, str] | None = None):
        arr = np.asarray(labels)
        if arr.ndim != 3 or arr.size == 0:
            raise XsimInputError(f"labels must be a non-empty 3D array, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.array_equal(arr, np.round(arr)):
                raise XsimInputError("labels must hold integer values")
            arr = arr.astype(np.int64)
        self.labels = arr
        self._affine = _check_affine(affine)
        self._shape = tuple(int(n) for n in arr.shape)
        present = [int(k) for k in np.unique(arr) if k != 0]
        self.names = {k: f"label_{k}" for k in present} if names is None else {int(k): str(v) for k, v in names.items()}

    @classmethod
    def from_phantom(cls, phantom: Phantom, materials: Sequence[str]) -> LabelVolume:
        """Labels from a phantom's materials: one label per listed material name (e.g. "iodine contrast")."""
        _check_materials(materials, phantom)
        names = phantom.material_names
        labels = np.zeros(phantom.shape, np.int16)
        for k, name in enumerate(materials, start=1):
            labels[phantom.material_index == names.index(name)] = k
        return cls(labels, phantom.affine, {k: name for k, name in enumerate(materials, start=1)})

    @classmethod
    def load(cls, path: str | os.PathLike, names: Mapping[int, str] | None = None) -> LabelVolume:
        """Read a label volume from any CT format :func:`xsim.load_ct` reads (NIfTI, NRRD, DICOM, npz)."""
        from .volume import load_ct

        vol = load_ct(path)
        return cls(np.rint(vol.hu).astype(np.int32), vol.affine, names)


def project_masks(label_volume: LabelVolume, camera: Camera, backend: str = "auto",
                  threads: int | None = None) -> dict[str, np.ndarray]:
    """Projected mask of each named label: pixels whose ray crosses the label (bool, detector shape).

    See the module docstring for the method. Labels are cast 31 per projector pass.
    """
    from .projector import project

    check_type("label_volume", label_volume, LabelVolume)
    items = list(label_volume.names.items())
    masks: dict[str, np.ndarray] = {}
    for start in range(0, len(items), _LABELS_PER_PASS):
        chunk = items[start:start + _LABELS_PER_PASS]
        index = np.zeros(label_volume.shape, np.uint8)
        for j, (value, _) in enumerate(chunk, start=1):
            index[label_volume.labels == value] = j
        materials = [Material.from_mass_fractions("background", {"H": 1.0}, 1.0)] + [
            Material.from_mass_fractions(f"label:{name}", {"H": 1.0}, 1.0) for _, name in chunk]
        density = (index > 0).astype(np.float32)  # unit density: L in g/cm^2 is path length in cm
        phantom = Phantom(index, density, label_volume.affine, materials)
        proj = project(phantom, camera, energy_keV=60.0, backend=backend, threads=threads)
        for _, name in chunk:
            masks[name] = to_host(proj.device["line_integrals"][f"label:{name}"] > 0)
    return masks


def _check_materials(materials: Sequence[str], phantom: Phantom) -> None:
    names = phantom.material_names
    unknown = [m for m in materials if m not in names]
    if unknown:
        raise XsimInputError(f"mask materials {unknown} are not in the phantom (materials: {names})")


class LabelSpec:
    """Which labels to compute with an image.

    Parameters
    ----------
    points : dict {name: (x, y, z) mm} or path, optional
        Landmarks to project (a CSV or JSON file, see :func:`read_points`).
    phantom_landmarks : bool
        Also project ``phantom.landmarks`` (default True).
    masks : LabelVolume, optional
        A segmentation to project as per-label masks.
    mask_materials : sequence of str
        Phantom materials to project as masks (e.g. ``["iodine contrast", "stainless steel"]``).
    """

    def __init__(self, points: Mapping[str, Any] | str | os.PathLike | None = None, phantom_landmarks: bool = True,
                 masks: LabelVolume | None = None, mask_materials: Sequence[str] = ()):
        if isinstance(points, (str, os.PathLike)):
            points = read_points(points)
        self.points = {str(k): np.asarray(v, dtype=float) for k, v in (points or {}).items()}
        self.phantom_landmarks = bool(phantom_landmarks)
        self.masks = None if masks is None else check_type("masks", masks, LabelVolume)
        self.mask_materials = [str(m) for m in mask_materials]

    def check(self, phantom: Phantom) -> None:
        """Raise unless every mask material is one of the phantom's (before any rendering work)."""
        _check_materials(self.mask_materials, phantom)


def make_labels(spec: LabelSpec | None, phantom: Phantom, camera: Camera, projection=None, backend: str = "auto",
                threads: int | None = None) -> dict:
    """The labels of one image: ``{"landmarks": {name: {...}}, "masks": {name: bool array}}``.

    Material masks come from ``projection.line_integrals`` when the image's own projection is given (the
    same rays, no extra pass), else from a projector pass of their own.
    """
    spec = LabelSpec() if spec is None else check_type("labels", spec, LabelSpec)
    points = dict(phantom.landmarks) if spec.phantom_landmarks else {}
    points.update(spec.points)
    masks: dict[str, np.ndarray] = {}
    if spec.mask_materials:
        spec.check(phantom)
        if projection is not None:
            # (on the GPU only the masks, not every line-integral image, come to the host)
            masks.update({name: to_host(projection.device["line_integrals"][name] > 0) for name in spec.mask_materials})
        else:
            masks.update(project_masks(LabelVolume.from_phantom(phantom, spec.mask_materials), camera, backend,
                                       threads))
    if spec.masks is not None:
        masks.update(project_masks(spec.masks, camera, backend, threads))
    return {"landmarks": project_landmarks(points, camera), "masks": masks}
