"""CT volumes in patient coordinates, the CT file readers, and the voxel phantom the kernels use.

Owns: :class:`Volume` (Hounsfield units on a voxel grid with an affine), :func:`load_ct`
(NIfTI, DICOM series, NRRD, numpy ``.npz``), and :class:`Phantom` (material index + mass
density on a voxel grid) with its HDF5 file format.

Conventions (docs/coordinates.md): arrays are indexed [i, j, k]; ``affine`` (4x4) maps the voxel
index (i, j, k, 1) to world (x, y, z, 1) in mm, patient LPS, voxel centres at integer indices.
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .checks import XsimInputError, check_range
from .fileio import atomic_path
from .physics.calibration import HUCalibration
from .physics.materials import Material, material

# NIfTI stores RAS+ world coordinates; xsim's world is LPS+: x_LPS = diag(-1, -1, 1) x_RAS.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

SUPPORTED_CT_FORMATS = (
    "NIfTI (.nii, .nii.gz), DICOM series (a folder, or any one file of the series), "
    "NRRD (.nrrd, .nhdr), numpy (.npz holding arrays 'hu' and 'affine')"
)

_PHANTOM_FORMAT = "xsim.Phantom"
_PHANTOM_FORMAT_VERSION = 1


def _where(source: str | None) -> str:
    return f" (in {source})" if source else ""


def _check_affine(affine: Any, source: str | None = None) -> np.ndarray:
    A = np.array(affine, dtype=float)
    if A.shape != (4, 4):
        raise XsimInputError(f"affine must be a 4x4 matrix, got shape {A.shape}{_where(source)}")
    check_range("affine", A, source=source)
    if not np.array_equal(A[3], [0.0, 0.0, 0.0, 1.0]):
        raise XsimInputError(f"affine's last row must be [0, 0, 0, 1], got {A[3]}{_where(source)}")
    columns = np.linalg.norm(A[:3, :3], axis=0)
    # |det| against the product of column lengths: 1 for orthogonal axes, 0 for collapsed ones
    if columns.min() == 0.0 or abs(np.linalg.det(A[:3, :3])) <= 1e-9 * columns.prod():
        raise XsimInputError(
            f"affine is not invertible (voxel axes {A[:3, :3].T.tolist()} are degenerate)"
            f"{_where(source)}"
        )
    A.setflags(write=False)
    return A


def _check_grid(name: str, array: Any, source: str | None = None) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise XsimInputError(f"{name} must be a 3D array, got shape {arr.shape}{_where(source)}")
    if arr.size == 0:
        raise XsimInputError(f"{name} is empty (shape {arr.shape}){_where(source)}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise XsimInputError(f"{name} must hold real numbers, got dtype {arr.dtype}{_where(source)}")
    return arr


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _check_finite(name: str, arr: np.ndarray, source: str | None = None) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        first = _first_index(bad)
        raise XsimInputError(
            f"{name} holds {int(bad.sum())} non-finite values (NaN or inf), the first at index "
            f"{first} = {arr[first]}{_where(source)}"
        )


def _as_material(value: Any, name: str) -> Material:
    if isinstance(value, Material):
        return value
    if isinstance(value, str):
        return material(value)
    raise XsimInputError(f"{name} must be a Material or a material name, got {value!r}")


class _VoxelGrid:
    """Geometry shared by volumes and phantoms: a 3D array on a grid with a voxel -> world affine."""

    _affine: np.ndarray
    _shape: tuple[int, int, int]

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) voxel index (i, j, k, 1) -> world (x, y, z, 1), mm, patient LPS (read-only)."""
        return self._affine

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape (ni, nj, nk)."""
        return self._shape

    @property
    def spacing_mm(self) -> np.ndarray:
        """(3,) voxel spacing along i, j, k in mm: lengths of the affine's first three columns."""
        return np.linalg.norm(self._affine[:3, :3], axis=0)

    def voxel_to_world(self, ijk: Any) -> np.ndarray:
        """World positions (..., 3), mm LPS, of voxel coordinates (..., 3) (centres at integers)."""
        ijk = np.asarray(ijk, dtype=float)
        if ijk.shape[-1:] != (3,):
            raise XsimInputError(f"ijk must have shape (..., 3), got {ijk.shape}")
        return ijk @ self._affine[:3, :3].T + self._affine[:3, 3]

    def world_to_voxel(self, xyz_mm: Any) -> np.ndarray:
        """Voxel coordinates (..., 3) (fractional) of world positions (..., 3) in mm LPS."""
        xyz = np.asarray(xyz_mm, dtype=float)
        if xyz.shape[-1:] != (3,):
            raise XsimInputError(f"xyz_mm must have shape (..., 3), got {xyz.shape}")
        return (xyz - self._affine[:3, 3]) @ np.linalg.inv(self._affine[:3, :3]).T

    def world_bounds_mm(self) -> np.ndarray:
        """(2, 3) [[xmin, ymin, zmin], [xmax, ymax, zmax]] in mm of the box enclosing all voxels.

        The box runs over voxel *edges* (index -0.5 to n - 0.5 along each axis).
        """
        edges = [(-0.5, n - 0.5) for n in self._shape]
        corners = np.array(np.meshgrid(*edges, indexing="ij")).reshape(3, -1).T
        world = self.voxel_to_world(corners)
        return np.stack([world.min(axis=0), world.max(axis=0)])


class Volume(_VoxelGrid):
    """A CT volume in Hounsfield units with its voxel -> world (LPS mm) affine.

    Parameters
    ----------
    hu : array_like, 3D
        CT numbers in HU, indexed [i, j, k]; stored as float32 (not copied when already float32).
    affine : array_like, (4, 4)
        Voxel index -> world mm (patient LPS); last row [0, 0, 0, 1]; invertible.
    source : str, optional
        Where the data came from (file name), quoted in error messages.
    """

    def __init__(self, hu: Any, affine: Any, *, source: str | None = None):
        arr = _check_grid("hu", hu, source)
        arr = np.asarray(arr, dtype=np.float32)
        _check_finite("hu", arr, source)
        self._hu = arr
        self._affine = _check_affine(affine, source)
        self._shape = tuple(int(n) for n in arr.shape)
        self.source = source

    @classmethod
    def from_array(cls, hu: Any, affine: Any) -> "Volume":
        """A volume from an HU array and its 4x4 voxel -> world (LPS mm) affine."""
        return cls(hu, affine)

    @property
    def hu(self) -> np.ndarray:
        """CT numbers, HU, float32 array indexed [i, j, k]."""
        return self._hu

    def to_phantom(
        self,
        calibration: HUCalibration | None = None,
        labels: Any = None,
        label_materials: Mapping[int, Material | str] | None = None,
    ) -> "Phantom":
        """Convert HU to materials and mass densities.

        Parameters
        ----------
        calibration : HUCalibration, optional
            HU -> (material, density) map; default ``HUCalibration.default()``.
        labels : array_like of int, optional
            A label volume of the same shape (e.g. a segmentation), used with ``label_materials``.
        label_materials : dict {int: Material or str}, optional
            Voxels whose label equals a key become that material at its nominal density,
            overriding the calibration (e.g. a metal implant whose HU saturate).

        Returns
        -------
        Phantom
            Materials are the calibration's, followed by any new label material (materials are
            identified by name).
        """
        cal = HUCalibration.default() if calibration is None else calibration
        index, density = cal.apply(self._hu)
        index = np.asarray(index, dtype=np.uint8)
        density = np.array(density, dtype=np.float32)
        materials = list(cal.materials)
        if (labels is None) != (not label_materials):
            raise XsimInputError("labels and label_materials must be given together")
        if labels is not None:
            lab = _check_grid("labels", labels)
            if lab.shape != self._shape:
                raise XsimInputError(f"labels has shape {lab.shape}, the volume {self._shape}")
            for value, mat in label_materials.items():
                mat = _as_material(mat, f"label_materials[{value!r}]")
                mask = lab == value
                if not mask.any():
                    present = np.unique(lab)[:20].tolist()
                    raise XsimInputError(
                        f"label_materials has label {value!r} but no voxel of labels has it "
                        f"(labels present: {present})"
                    )
                names = [m.name for m in materials]
                if mat.name not in names:
                    materials.append(mat)
                    names.append(mat.name)
                index[mask] = names.index(mat.name)
                density[mask] = mat.density_g_cm3
        return Phantom(index, density, self._affine, materials, source=self.source)

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self._shape}, spacing_mm={tuple(np.round(self.spacing_mm, 4).tolist())}, "
            f"hu=[{self._hu.min():.0f}, {self._hu.max():.0f}])"
        )


class Phantom(_VoxelGrid):
    """What the projector and the Monte Carlo read: a material index and a mass density per voxel.

    Parameters
    ----------
    material_index : array_like of int, 3D
        Index into ``materials`` per voxel, stored as uint8 (so at most 256 materials).
    density_g_cm3 : array_like, 3D
        Mass density per voxel, g/cm^3, >= 0; stored as float32.
    affine : array_like, (4, 4)
        Voxel index -> world mm (patient LPS).
    materials : sequence of Material or str
        The materials the indices refer to; names must be unique.
    landmarks : dict {str: (3,) mm}, optional
        Named world positions (e.g. ``"carina"``), mm LPS.
    shapes : sequence, optional
        Analytic description of procedural phantoms (see :mod:`xsim.phantoms`); not saved to file.
    source : str, optional
        Where the data came from, quoted in error messages.

    Notes
    -----
    ``material_index`` and ``density_g_cm3`` are read-only views: a phantom does not change once made, which
    lets the cuda backend keep its device copy between calls. To change voxels, make a new Phantom from
    modified copies (``phantom.density_g_cm3.copy()``).
    """

    def __init__(
        self,
        material_index: Any,
        density_g_cm3: Any,
        affine: Any,
        materials: Sequence[Material | str],
        *,
        landmarks: Mapping[str, Any] | None = None,
        shapes: Sequence[Any] = (),
        source: str | None = None,
    ):
        self.materials = _check_materials(materials)
        self.material_index = _check_index(material_index, len(self.materials), "material_index",
                                           source)
        shape = self.material_index.shape
        density = _check_grid("density_g_cm3", density_g_cm3, source)
        if density.shape != shape:
            raise XsimInputError(
                f"density_g_cm3 has shape {density.shape}, material_index {shape}{_where(source)}"
            )
        density = np.asarray(density, dtype=np.float32)
        _check_finite("density_g_cm3", density, source)
        if (density < 0).any():
            neg = density < 0
            first = _first_index(neg)
            raise XsimInputError(
                f"density_g_cm3 holds {int(neg.sum())} negative values, the first at index "
                f"{first} = {density[first]:g} g/cm^3{_where(source)}"
            )
        # Read-only views: a phantom does not change after it is made, so the GPU keeps its device copy between
        # calls (xsim.device); to edit voxels, build a new Phantom from modified copies.
        self.material_index = _read_only(self.material_index)
        self.density_g_cm3 = _read_only(density)
        self._affine = _check_affine(affine, source)
        self._shape = tuple(int(n) for n in shape)
        self.landmarks = {}
        for name, pos in (landmarks or {}).items():
            xyz = np.asarray(pos, dtype=float)
            if not isinstance(name, str) or xyz.shape != (3,):
                raise XsimInputError(f"landmark {name!r} must map a name to (x, y, z) mm, got {pos!r}")
            self.landmarks[name] = check_range(f"landmarks[{name!r}]", xyz, unit="mm")
        self.shapes = tuple(shapes)
        self.source = source

    def center_of_mass_mm(self) -> np.ndarray:
        """(3,) world position (mm, LPS) of the phantom's centre of mass (density-weighted voxel centres);
        computed once (a phantom does not change). The sums run in float64 over a copy of the densities, in
        this order on purpose: the scatter training plans (xsim.scatter.data) place the isocenter from this
        value, and a plan must come out the same to the last bit to resume."""
        if "_center_of_mass" not in self.__dict__:
            rho = self.density_g_cm3.astype(np.float64)
            total = rho.sum()
            if total <= 0:
                ijk = (np.array(self._shape) - 1) / 2.0
            else:
                ijk = np.array([(rho.sum(axis=tuple(b for b in range(3) if b != a)) * np.arange(n)).sum() / total
                                for a, n in enumerate(self._shape)])
            self.__dict__["_center_of_mass"] = self.voxel_to_world(ijk)
        return self.__dict__["_center_of_mass"].copy()

    @classmethod
    def from_labels(
        cls,
        labels: Any,
        materials: Sequence[Material | str],
        affine: Any,
        densities: Any = None,
    ) -> "Phantom":
        """A phantom from a label volume whose values index ``materials``.

        Parameters
        ----------
        labels : array_like of int, 3D
            Per-voxel index into ``materials``.
        materials : sequence of Material or str
            Material of each label value.
        affine : array_like, (4, 4)
            Voxel index -> world mm (patient LPS).
        densities : None, sequence, dict or 3D array, optional
            g/cm^3. None: each material's nominal density. A sequence (one per material) or a dict
            {label: density} (unlisted labels keep the nominal density): one density per label.
            A 3D array of the labels' shape: the density of every voxel.
        """
        mats = _check_materials(materials)
        index = _check_index(labels, len(mats), "labels")
        nominal = [float(m.density_g_cm3) for m in mats]
        if densities is None:
            per_label = nominal
        elif isinstance(densities, Mapping):
            per_label = list(nominal)
            for label, value in densities.items():
                if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not (
                    0 <= label < len(mats)
                ):
                    raise XsimInputError(
                        f"densities has key {label!r}; keys must be label values 0..{len(mats) - 1}"
                    )
                per_label[int(label)] = value
        else:
            arr = np.asarray(densities, dtype=float)
            if arr.ndim == 3:
                return cls(index, arr, affine, mats)
            if arr.shape != (len(mats),):
                raise XsimInputError(
                    f"densities must be one value per material ({len(mats)}), a dict or a 3D array "
                    f"of shape {index.shape}; got shape {arr.shape}"
                )
            per_label = arr.tolist()
        lut = np.asarray(check_range("densities", np.asarray(per_label, dtype=float), 0.0,
                                     unit="g/cm^3"), dtype=np.float32)
        return cls(index, lut[index], affine, mats)

    @property
    def material_names(self) -> list[str]:
        """Material names in index order."""
        return [m.name for m in self.materials]

    def material_fractions(self) -> dict[str, float]:
        """Fraction of the voxels holding each material, by name."""
        counts = np.bincount(self.material_index.ravel(), minlength=len(self.materials))
        return {m.name: float(c) / self.material_index.size for m, c in zip(self.materials, counts)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the phantom to an HDF5 file (``.h5``); format in docs/coordinates.md.

        Datasets ``material_index`` (uint8), ``density_g_cm3`` (float32), ``affine`` (4x4);
        attributes ``format``, ``format_version``, ``world`` and JSON ``materials`` (name,
        density_g_cm3, composition, source) and ``landmarks``. Written to a temporary name, then
        renamed. Analytic ``shapes`` are not saved.
        """
        import h5py

        path = Path(path)
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["format"] = _PHANTOM_FORMAT
            f.attrs["format_version"] = _PHANTOM_FORMAT_VERSION
            f.attrs["world"] = "patient LPS, mm; affine maps voxel index (i, j, k, 1) to world"
            f.attrs["materials"] = json.dumps([
                {"name": m.name, "density_g_cm3": float(m.density_g_cm3),
                 "composition": {k: float(v) for k, v in m.composition.items()}, "source": m.source}
                for m in self.materials
            ])
            f.attrs["landmarks"] = json.dumps({k: v.tolist() for k, v in self.landmarks.items()})
            f.create_dataset("material_index", data=self.material_index, compression="gzip")
            f.create_dataset("density_g_cm3", data=self.density_g_cm3, compression="gzip")
            f.create_dataset("affine", data=self._affine)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Phantom":
        """Read a phantom written by :meth:`save`."""
        import h5py

        path = Path(path)
        if not path.is_file():
            raise XsimInputError(f"phantom file {path} does not exist")
        src = str(path)
        with h5py.File(path, "r") as f:
            fmt, version = f.attrs.get("format"), f.attrs.get("format_version")
            if fmt != _PHANTOM_FORMAT or version != _PHANTOM_FORMAT_VERSION:
                raise XsimInputError(
                    f"{path} is not an {_PHANTOM_FORMAT} file of version {_PHANTOM_FORMAT_VERSION} "
                    f"(format {fmt!r}, version {version!r}); write it again with Phantom.save"
                )
            materials = [_material_from_record(r) for r in json.loads(f.attrs["materials"])]
            return cls(
                f["material_index"][()], f["density_g_cm3"][()], f["affine"][()], materials,
                landmarks=json.loads(f.attrs["landmarks"]), source=src,
            )

    def __repr__(self) -> str:
        return (
            f"Phantom(shape={self._shape}, spacing_mm={tuple(np.round(self.spacing_mm, 4).tolist())}, "
            f"materials={self.material_names})"
        )


def _material_from_record(record: dict) -> Material:
    """The library material of that name when it is the one recorded, else the recorded one."""
    recorded = Material(record["name"], record["density_g_cm3"], record["composition"],
                        record.get("source", ""))
    try:
        known = material(record["name"])
    except XsimInputError:
        return recorded
    same = (
        known.name == recorded.name
        and np.isclose(known.density_g_cm3, recorded.density_g_cm3, rtol=1e-12)
        and known.composition.keys() == recorded.composition.keys()
        and all(np.isclose(w, recorded.composition[el], rtol=1e-12)
                for el, w in known.composition.items())
    )
    return known if same else recorded


def _check_materials(materials: Any) -> list[Material]:
    if isinstance(materials, (str, Material)) or not isinstance(materials, Sequence):
        raise XsimInputError(f"materials must be a list of Material or names, got {materials!r}")
    mats = [_as_material(m, f"materials[{i}]") for i, m in enumerate(materials)]
    if not 1 <= len(mats) <= 256:
        raise XsimInputError(f"materials must hold 1 to 256 entries (uint8 index), got {len(mats)}")
    names = [m.name for m in mats]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise XsimInputError(f"materials has repeated names {dup}")
    return mats


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array`` (the caller's own array keeps its flags)."""
    view = array.view()
    view.flags.writeable = False
    return view


def _check_index(index: Any, n_materials: int, name: str, source: str | None = None) -> np.ndarray:
    arr = _check_grid(name, index, source)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.array_equal(arr, np.round(arr)):
            raise XsimInputError(f"{name} must hold integers, got dtype {arr.dtype}{_where(source)}")
    bad = (arr < 0) | (arr >= n_materials)
    if bad.any():
        first = _first_index(bad)
        raise XsimInputError(
            f"{name} holds {int(bad.sum())} voxels with an unknown material index (valid: 0.."
            f"{n_materials - 1} for {n_materials} materials), the first at {first} = {arr[first]}"
            f"{_where(source)}"
        )
    return np.asarray(arr, dtype=np.uint8)


# --- readers -----------------------------------------------------------------------------------


def load_ct(path: str | os.PathLike) -> Volume:
    """Read a CT volume in Hounsfield units.

    Parameters
    ----------
    path : str or path-like
        A NIfTI file (.nii, .nii.gz; RAS affine converted to LPS), a DICOM series (its folder, or
        any one of its files; slices sorted along the slice normal, RescaleSlope/Intercept applied),
        an NRRD file (.nrrd, .nhdr; 'space' LPS, RAS or LAS) or a numpy ``.npz`` holding arrays
        ``hu`` and ``affine`` (4x4, LPS).

    Returns
    -------
    Volume
        HU indexed [i, j, k] with the voxel -> LPS mm affine (for DICOM, i runs along a row,
        j down the columns and k across the slices).
    """
    p = Path(path)
    if not p.exists():
        raise XsimInputError(f"CT path {str(p)!r} does not exist")
    name = p.name.lower()
    if p.is_dir():
        return _load_dicom(p)
    if name.endswith((".nii", ".nii.gz")):
        return _load_nifti(p)
    if name.endswith((".nrrd", ".nhdr")):
        return _load_nrrd(p)
    if name.endswith(".npz"):
        return _load_npz(p)
    if name.endswith(".dcm") or _has_dicom_preamble(p):
        return _load_dicom(p.parent, member=p)
    raise XsimInputError(f"cannot read {str(p)!r}: supported CT formats are {SUPPORTED_CT_FORMATS}")


def _has_dicom_preamble(p: Path) -> bool:
    with open(p, "rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


def _load_npz(p: Path) -> Volume:
    with np.load(p, allow_pickle=False) as data:
        missing = {"hu", "affine"} - set(data.files)
        if missing:
            raise XsimInputError(
                f"{p} lacks arrays {sorted(missing)}: a numpy CT is an .npz holding 'hu' (3D, HU) "
                f"and 'affine' (4x4 voxel -> LPS mm); it holds {data.files}"
            )
        return Volume(data["hu"], data["affine"], source=str(p))


def _load_nifti(p: Path) -> Volume:
    import nibabel

    try:
        img = nibabel.load(str(p))
    except Exception as err:  # nibabel raises several types for damaged files
        raise XsimInputError(f"cannot read NIfTI file {p}: {err}") from err
    hdr = img.header
    if int(hdr["sform_code"]) == 0 and int(hdr["qform_code"]) == 0:
        warnings.warn(f"{p} has no orientation (sform and qform codes 0); assuming nibabel's "
                      "default axes, the patient orientation may be wrong", stacklevel=3)
    data = img.get_fdata(dtype=np.float32)  # applies scl_slope / scl_inter
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return Volume(data, RAS_TO_LPS @ img.affine, source=str(p))


# NRRD 'space' -> sign flips taking its axes to LPS
_NRRD_SPACES = {
    "left-posterior-superior": (1.0, 1.0, 1.0),
    "lps": (1.0, 1.0, 1.0),
    "right-anterior-superior": (-1.0, -1.0, 1.0),
    "ras": (-1.0, -1.0, 1.0),
    "left-anterior-superior": (1.0, -1.0, 1.0),
    "las": (1.0, -1.0, 1.0),
}


def _load_nrrd(p: Path) -> Volume:
    import nrrd

    src = str(p)
    try:
        data, header = nrrd.read(src)  # index order 'F': data[i, j, k], i the fastest axis on disk
    except nrrd.NRRDError as err:
        raise XsimInputError(f"cannot read NRRD file {p}: {err}") from err
    space = str(header.get("space", "")).lower()
    if space not in _NRRD_SPACES:
        raise XsimInputError(
            f"NRRD 'space' must be a patient space (left-posterior-superior, right-anterior-superior "
            f"or left-anterior-superior), got {header.get('space')!r} (in {src})"
        )
    if data.ndim != 3:
        raise XsimInputError(f"NRRD data must be 3D, got shape {data.shape} (in {src})")
    dirs = np.asarray(header.get("space directions"), dtype=float)
    if dirs.shape != (3, 3) or not np.isfinite(dirs).all():
        raise XsimInputError(f"NRRD 'space directions' must give 3 spatial axes, got {dirs} (in {src})")
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=float)
    flip = np.diag(_NRRD_SPACES[space])
    affine = np.eye(4)
    affine[:3, :3] = flip @ dirs.T  # column a = direction vector of data axis a
    affine[:3, 3] = flip @ origin
    return Volume(data, affine, source=src)


def _load_dicom(folder: Path, member: Path | None = None) -> Volume:
    """Read the DICOM series in ``folder`` (the one holding ``member`` when given)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    series: dict[str, list] = {}
    for f in sorted(folder.iterdir()):
        if not f.is_file():
            continue
        try:
            ds = pydicom.dcmread(f)
        except (InvalidDicomError, OSError):
            continue
        if "PixelData" in ds and "ImagePositionPatient" in ds:
            series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((f, ds))
    if member is not None:
        uid = next((u for u, items in series.items() if any(f == member for f, _ in items)), None)
        if uid is None:
            raise XsimInputError(f"{member} is not a DICOM image with ImagePositionPatient")
        series = {uid: series[uid]}
    if not series:
        raise XsimInputError(f"no DICOM images with ImagePositionPatient found in folder {folder}")
    if len(series) > 1:
        listing = "; ".join(f"{uid or '(no UID)'}: {len(v)} files, first {v[0][0].name}"
                            for uid, v in series.items())
        raise XsimInputError(
            f"folder {folder} holds {len(series)} DICOM series ({listing}); pass one file of the "
            "series to load"
        )
    items = next(iter(series.values()))
    return _assemble_dicom(folder, items)


def _assemble_dicom(folder: Path, items: list) -> Volume:
    src = str(folder)
    first = items[0][1]
    if int(first.get("NumberOfFrames", 1)) > 1:
        raise XsimInputError(f"multi-frame (enhanced) DICOM is not supported (in {items[0][0]}); "
                             "convert the series to single-frame files or to NIfTI")
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    rows, cols = int(first.Rows), int(first.Columns)
    row_mm, col_mm = (float(x) for x in first.PixelSpacing)  # (between rows, between columns)
    for f, ds in items:
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=float), iop, atol=1e-4):
            raise XsimInputError(f"ImageOrientationPatient differs between slices (in {f})")
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise XsimInputError(f"slice size differs between slices (in {f})")
    if first.get("Modality", "CT") != "CT":
        warnings.warn(f"{src}: Modality is {first.Modality}, not CT; values read as HU", stacklevel=4)
    along_row, along_col = iop[:3], iop[3:]  # directions of increasing column / row index
    normal = np.cross(along_row, along_col)
    positions = np.array([np.asarray(ds.ImagePositionPatient, dtype=float) for _, ds in items])
    order = np.argsort(positions @ normal, kind="stable")
    items = [items[i] for i in order]
    positions = positions[order]
    n = len(items)
    if n > 1:
        gaps = np.diff(positions @ normal)
        if gaps.min() < 1e-3:
            raise XsimInputError(f"two slices share a position along the slice normal in {src} "
                                 "(several acquisitions in one series?)")
        step = (positions[-1] - positions[0]) / (n - 1)
        off = np.linalg.norm(positions - (positions[0] + np.arange(n)[:, None] * step), axis=1)
        if off.max() > 0.05 * np.linalg.norm(step):
            raise XsimInputError(
                f"irregular slice spacing in {src} (gaps {np.round(gaps, 3).tolist()[:10]} mm): "
                "resample the series to uniform spacing first"
            )
    else:
        thickness = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)) or 1.0)
        step = normal * thickness
    hu = np.empty((cols, rows, n), dtype=np.float32)
    for k, (f, ds) in enumerate(items):
        try:
            pixels = ds.pixel_array
        except (NotImplementedError, RuntimeError, ValueError) as err:
            raise XsimInputError(f"cannot decode the pixel data of {f}: {err}") from err
        slope = float(ds.get("RescaleSlope", 1.0))
        intercept = float(ds.get("RescaleIntercept", 0.0))
        hu[:, :, k] = (pixels.astype(np.float64) * slope + intercept).T  # [row, col] -> [i=col, j=row]
    affine = np.eye(4)
    affine[:3, 0] = along_row * col_mm
    affine[:3, 1] = along_col * row_mm
    affine[:3, 2] = step
    affine[:3, 3] = positions[0]
    return Volume(hu, affine, source=src)
