"""HU calibration: CT numbers -> (material index, mass density) per voxel.

Owns the mapping from Hounsfield units to the materials and densities that the projector and the
Monte Carlo transport. A calibration is a list of contiguous HU segments; each assigns one
material and a density linear in HU between its two ends. The default is documented in
:meth:`HUCalibration.default`; users replace it with their scanner's calibration
(:meth:`HUCalibration.from_csv`, :meth:`HUCalibration.from_dict`).
"""
from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checks import XsimInputError
from .materials import Material, material

CSV_FIELDS = ("hu_low", "hu_high", "material", "density_low_g_cm3", "density_high_g_cm3")


@dataclass(frozen=True)
class Segment:
    """HU interval [hu_low, hu_high) given to one material; density linear in HU across it.

    ``density_low_g_cm3`` at ``hu_low``, ``density_high_g_cm3`` at ``hu_high`` (g/cm^3).
    """

    hu_low: float
    hu_high: float
    material: Material
    density_low_g_cm3: float
    density_high_g_cm3: float


class HUCalibration:
    """Piecewise-linear HU -> (material, density) calibration.

    Parameters
    ----------
    segments : sequence
        Contiguous HU segments in increasing HU. Each is a :class:`Segment`, a mapping with the
        keys ``hu_low, hu_high, material, density_low_g_cm3, density_high_g_cm3``, or a 5-tuple
        in that order. ``material`` is a Material or a library name. Segment i covers
        [hu_low, hu_high) (the last one includes hu_high), and ``hu_high`` of one segment must
        equal ``hu_low`` of the next. Densities must be > 0; they may jump at a boundary.
        HU below the first segment are treated as its ``hu_low`` (e.g. -3024 padding -> air),
        HU above the last as its ``hu_high`` (no extrapolation into metal: segment metal
        explicitly, e.g. with labels).

    Attributes
    ----------
    materials : list of Material
        The materials the calibration assigns, in order of first appearance; ``apply`` returns
        indices into this list.
    segments : list of Segment
    """

    def __init__(self, segments: Sequence, *, source: str | None = None):
        where = f" (in {source})" if source else ""
        if isinstance(segments, (str, bytes)) or not isinstance(segments, Sequence) or not segments:
            raise XsimInputError(f"segments must be a non-empty list of segments{where}")
        parsed = [_segment(s, i, source) for i, s in enumerate(segments)]
        for i, (a, b) in enumerate(zip(parsed[:-1], parsed[1:])):
            if a.hu_high != b.hu_low:
                raise XsimInputError(
                    f"segments {i} and {i + 1} must be contiguous: hu_high {a.hu_high:g} != "
                    f"hu_low {b.hu_low:g}{where}")
        self.segments = parsed
        self.materials: list[Material] = []
        names: list[str] = []
        for seg in parsed:
            if seg.material.name not in names:
                names.append(seg.material.name)
                self.materials.append(seg.material)
        if len(self.materials) > 256:
            raise XsimInputError(f"at most 256 materials fit the uint8 index, got "
                                 f"{len(self.materials)}{where}")
        self._index = np.array([names.index(s.material.name) for s in parsed], dtype=np.uint8)
        self._bounds = np.array([s.hu_low for s in parsed] + [parsed[-1].hu_high])

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def default(cls) -> HUCalibration:
        """xsim's default calibration: air, lung, adipose, soft tissue, cortical bone (ICRU-44).

        Material classes (HU ranges; tissue ranges of Schneider, Bortfeld & Schlegel, Phys. Med.
        Biol. 45, 459 (2000), Table 6, with DeepDRR's (Unberath et al. 2018) single bone class):

        ======================  ==================
        air                     HU < -950
        lung (ICRU-44)          -950 <= HU < -120
        adipose (ICRU-44)       -120 <= HU < -20
        soft tissue (ICRU-44)   -20 <= HU < 300
        cortical bone (ICRU-44) 300 <= HU <= 3071
        ======================  ==================

        Density: one continuous piecewise-linear curve through (HU, g/cm^3) nodes that put each
        ICRU-44 tissue at its nominal density where its HU is, the HU being
        1000 (mu/mu_water - 1) at 60 keV (a typical effective energy of a 120 kV CT beam) with
        NIST SRD 126 mu/rho: air (-1000, 0.001205), adipose (-89, 0.95), soft tissue
        (54, 1.06), cortical bone (1935, 1.92); the bone line is continued to HU 3071
        (2.44 g/cm^3). Water (HU 0) then gets 1.019 g/cm^3 of soft tissue; lung tissue at its
        nominal density 1.05 sits near HU 0, and inflated lung (HU ~ -800) gets ~0.21 g/cm^3.
        """
        nodes_hu = np.array([-1000.0, -89.0, 54.0, 1935.0])
        nodes_density = np.array([0.001205, 0.95, 1.06, 1.92])
        slope_bone = (nodes_density[-1] - nodes_density[-2]) / (nodes_hu[-1] - nodes_hu[-2])
        nodes_hu = np.append(nodes_hu, 3071.0)
        nodes_density = np.append(nodes_density, 1.92 + slope_bone * (3071.0 - 1935.0))
        bounds = [-1000.0, -950.0, -120.0, -20.0, 300.0, 3071.0]
        names = ["air", "lung", "adipose", "soft tissue", "cortical bone"]
        rho = np.interp(bounds, nodes_hu, nodes_density)
        # The density curve has nodes inside segments (-89 and 54 lie in adipose and soft tissue):
        # split those segments at the nodes so each piece stays linear.
        segments = []
        for i, name in enumerate(names):
            inner = [h for h in nodes_hu if bounds[i] < h < bounds[i + 1]]
            edges = [bounds[i], *inner, bounds[i + 1]]
            dens = [rho[i], *np.interp(inner, nodes_hu, nodes_density), rho[i + 1]]
            for j in range(len(edges) - 1):
                segments.append((edges[j], edges[j + 1], name, float(dens[j]), float(dens[j + 1])))
        return cls(segments, source="HUCalibration.default")

    @classmethod
    def from_dict(cls, spec: Mapping | Sequence) -> HUCalibration:
        """Calibration from ``{"segments": [...]}`` or a list of segment mappings (see class)."""
        if isinstance(spec, Mapping):
            if "segments" not in spec:
                raise XsimInputError("calibration dict needs a 'segments' list")
            spec = spec["segments"]
        return cls(spec)

    @classmethod
    def from_csv(cls, path: str | Path) -> HUCalibration:
        """Calibration from a CSV file with the header
        ``hu_low,hu_high,material,density_low_g_cm3,density_high_g_cm3``.

        One segment per line; blank lines and lines starting with '#' are skipped. Errors name the
        file, the line and the field.
        """
        path = Path(path)
        if not path.is_file():
            raise XsimInputError(f"calibration file {path} not found")
        segments = []
        with path.open(newline="") as f:
            rows = [(n, line) for n, line in enumerate(f, start=1)
                    if line.strip() and not line.lstrip().startswith("#")]
        if not rows:
            raise XsimInputError(f"calibration file {path} has no header and no segments")
        header_line, header = rows[0]
        fields = [h.strip() for h in next(csv.reader([header]))]
        if fields != list(CSV_FIELDS):
            raise XsimInputError(f"{path}, line {header_line}: header must be "
                                 f"{','.join(CSV_FIELDS)}, got {','.join(fields)}")
        for n, line in rows[1:]:
            values = [v.strip() for v in next(csv.reader([line]))]
            where = f"{path}, line {n}"
            if len(values) != len(CSV_FIELDS):
                raise XsimInputError(f"{where}: expected {len(CSV_FIELDS)} fields "
                                     f"({','.join(CSV_FIELDS)}), got {len(values)}")
            row = dict(zip(CSV_FIELDS, values))
            for key in ("hu_low", "hu_high", "density_low_g_cm3", "density_high_g_cm3"):
                try:
                    row[key] = float(row[key])
                except ValueError:
                    raise XsimInputError(f"{where}: field {key} must be a number, "
                                         f"got {row[key]!r}") from None
            segments.append(_segment(row, len(segments), where))
        return cls(segments, source=str(path))

    # -- use ----------------------------------------------------------------------------------
    def apply(self, hu) -> tuple[np.ndarray, np.ndarray]:
        """Material index and density per voxel.

        Parameters
        ----------
        hu : array_like
            CT numbers in HU, any shape.

        Returns
        -------
        material_index : ndarray of uint8
            Index into :attr:`materials`, shape of ``hu``.
        density_g_cm3 : ndarray of float32
            Mass density in g/cm^3, shape of ``hu``.

        Raises
        ------
        XsimInputError
            If ``hu`` contains NaN or infinity.
        """
        hu = np.asarray(hu, dtype=np.float64)
        bad = ~np.isfinite(hu)
        if bad.any():
            raise XsimInputError(f"hu contains {int(bad.sum())} non-finite values (NaN or inf), "
                                 f"first at index {np.unravel_index(np.argmax(bad), hu.shape)}")
        h = np.clip(hu, self._bounds[0], self._bounds[-1])
        seg = np.clip(np.searchsorted(self._bounds, h, side="right") - 1, 0, len(self.segments) - 1)
        lo = self._bounds[seg]
        hi = self._bounds[seg + 1]
        d_lo = np.array([s.density_low_g_cm3 for s in self.segments])[seg]
        d_hi = np.array([s.density_high_g_cm3 for s in self.segments])[seg]
        density = d_lo + (h - lo) / (hi - lo) * (d_hi - d_lo)
        return self._index[seg], density.astype(np.float32)

    def __repr__(self) -> str:
        rows = ", ".join(f"[{s.hu_low:g}, {s.hu_high:g}) {s.material.name}" for s in self.segments)
        return f"HUCalibration({rows})"


def _segment(spec, i: int, source: str | None) -> Segment:
    where = f" (in {source})" if source else ""
    if isinstance(spec, Segment):
        values = [spec.hu_low, spec.hu_high, spec.material, spec.density_low_g_cm3,
                  spec.density_high_g_cm3]
    elif isinstance(spec, Mapping):
        missing = [k for k in CSV_FIELDS if k not in spec]
        if missing:
            raise XsimInputError(f"segment {i} lacks {', '.join(missing)}{where}")
        values = [spec[k] for k in CSV_FIELDS]
    elif isinstance(spec, Sequence) and not isinstance(spec, str) and len(spec) == 5:
        values = list(spec)
    else:
        raise XsimInputError(f"segment {i} must be a mapping with {', '.join(CSV_FIELDS)} or a "
                             f"5-tuple, got {spec!r}{where}")
    hu_low, hu_high, mat, d_lo, d_hi = values
    for key, v in zip(("hu_low", "hu_high", "density_low_g_cm3", "density_high_g_cm3"),
                      (hu_low, hu_high, d_lo, d_hi)):
        if not isinstance(v, (int, float, np.number)) or isinstance(v, bool) or not math.isfinite(v):
            raise XsimInputError(f"segment {i}: {key} must be a finite number, got {v!r}{where}")
    if not hu_low < hu_high:
        raise XsimInputError(f"segment {i}: hu_low {hu_low:g} must be < hu_high {hu_high:g}{where}")
    for key, v in (("density_low_g_cm3", d_lo), ("density_high_g_cm3", d_hi)):
        if v <= 0:
            raise XsimInputError(f"segment {i}: {key} must be > 0 g/cm^3, got {v:g}{where}")
    if isinstance(mat, str):
        try:
            mat = material(mat)
        except XsimInputError as err:
            raise XsimInputError(f"segment {i}: field material: {err}{where}") from None
    elif not isinstance(mat, Material):
        raise XsimInputError(f"segment {i}: material must be a Material or a library name, got "
                             f"{mat!r}{where}")
    return Segment(float(hu_low), float(hu_high), mat, float(d_lo), float(d_hi))
