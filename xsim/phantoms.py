"""Procedural voxel phantoms: analytic shapes to check projectors against closed forms, and seeded
anthropomorphic phantoms (thorax, abdomen, pelvis, head) for realistic images and datasets.

Every phantom is a :class:`xsim.volume.Phantom` on an axis-aligned grid in patient LPS mm (+x the
patient's left, +y posterior, +z superior; the patient lies supine), centred on the world origin
unless stated. Analytic phantoms carry their exact geometry in ``phantom.shapes`` (shapes with
``contains`` and ``intersection_mm``); anthropomorphic ones carry named ``phantom.landmarks``.

Voxelisation of the analytic phantoms (sphere, ellipsoid, cylinder) is partial-volume by default: a
voxel the surface cuts holds the fraction of its volume inside the shape, computed from the shapes'
closed-form chords (8 x 8 per voxel), at density f rho + (1 - f) rho_background. Masses are then
the exact shape's (to 1e-5) and projected line integrals unbiased, each within 1 % of the closed-form
chord for rays 16 voxels or more inside the silhouette (nearer the edge a voxel grid aliases more).
The background's share of a cut voxel is counted in the shape's material: negligible for air
(0.0012 g/cm^3), an approximate mixture (right mass, the shape's composition) for a dense background.
Anthropomorphic phantoms are binary: a voxel takes the material of the last shape that contains
its centre. Structures thinner than the voxel (wires, small vessels) are widened to a radius of
0.75 voxel, which no voxel lattice can miss, and their density is lowered by (r / r_wide)^2, which
keeps their mass per unit length, hence the line integral across them, on average.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy.interpolate import CubicSpline

from .checks import XsimInputError, check_choice, check_positive, check_type
from .geometry import rotation_x, rotation_z
from .physics.materials import Material, material
from .volume import Phantom

_AXES = {"x": 0, "y": 1, "z": 2}

# Densities drawn per phantom in a band around a reference value (g/cm^3): inflated lung 0.26
# (ICRP Publication 23 adult lung with air; the 'lung' material's 1.05 is the tissue itself) and
# trabecular bone around the ICRU Report 44 skeleton-spongiosa density 1.18.
_LUNG_DENSITY_G_CM3 = (0.22, 0.30)
_TRABECULAR_DENSITY_G_CM3 = (1.10, 1.25)
_THIN_RADIUS_VOXELS = 0.75  # >= sqrt(2)/2: every line lies within this of some voxel centre line
# Partial volume: n x n closed-form chords per voxel (see _volume_fractions); a surface flat
# across a voxel is misplaced by at most half a line spacing, 1/(2n) of the voxel. 4, 8 and 16 give
# the same projected line integrals within 0.1 % of the chord (voxel aliasing limits those, not n);
# at 8 a 0.5 mm grid of a 40 mm radius sphere takes ~0.6 s.
_SUBLINES_PER_EDGE = 8
_LINES_PER_CHUNK = 1 << 20  # bounds the memory of _volume_fractions (~100 MB of temporaries)


# --- analytic shapes -----------------------------------------------------------------------------


def _slab_interval(s: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Parameter interval [t0, t1] of s + t d inside lo <= x <= hi on every axis (slab method)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ta, tb = (lo - s) / d, (hi - s) / d
    parallel = d == 0
    inside = (s >= lo) & (s <= hi)
    near = np.where(parallel, np.where(inside, -np.inf, np.inf), np.minimum(ta, tb))
    far = np.where(parallel, np.where(inside, np.inf, -np.inf), np.maximum(ta, tb))
    return near.max(axis=-1), far.min(axis=-1)


def _unit_ball_interval(p: np.ndarray, q: np.ndarray):
    """Interval of |p + t q| <= 1 (p, q already divided by the radii): roots of a t^2 + b t + c."""
    a = (q * q).sum(-1)
    b = 2.0 * (p * q).sum(-1)
    c = (p * p).sum(-1) - 1.0
    disc = b * b - 4.0 * a * c
    ok = (disc >= 0) & (a > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.sqrt(np.where(ok, disc, 0.0))
        t0 = np.where(ok, (-b - root) / (2 * a), np.inf)
        t1 = np.where(ok, (-b + root) / (2 * a), -np.inf)
    return t0, t1


class _Shape:
    def _mask(self, x, y, z) -> np.ndarray:
        raise NotImplementedError

    def _interval(self, s: np.ndarray, d: np.ndarray):
        raise NotImplementedError

    def _line_axis(self) -> int:
        """World axis along which :func:`_volume_fractions` integrates in closed form."""
        return 2

    def contains(self, points_mm: Any) -> np.ndarray:
        """Whether world points (..., 3) in mm lie inside (boundary included)."""
        p = np.asarray(points_mm, dtype=float)
        if p.shape[-1:] != (3,):
            raise XsimInputError(f"points_mm must have shape (..., 3), got {p.shape}")
        return self._mask(p[..., 0], p[..., 1], p[..., 2])

    def intersection_mm(self, start_mm: Any, end_mm: Any) -> np.ndarray:
        """Length in mm of the segment(s) start -> end inside the shape (exact, closed form).

        ``start_mm`` and ``end_mm`` are (..., 3) world positions (broadcast together), e.g. the
        source and the pixel centres of a camera. The line integral of the shape's material is
        this length times its density.
        """
        s, e = np.broadcast_arrays(np.asarray(start_mm, float), np.asarray(end_mm, float))
        if s.shape[-1:] != (3,):
            raise XsimInputError(f"start_mm and end_mm must have shape (..., 3), got {s.shape}")
        d = e - s
        t0, t1 = self._interval(s, d)
        inside = np.minimum(t1, 1.0) - np.maximum(t0, 0.0)
        return np.maximum(inside, 0.0) * np.linalg.norm(d, axis=-1)


@dataclass(frozen=True)
class Ellipsoid(_Shape):
    """Axis-aligned ellipsoid: sum(((x - centre) / radii)^2) <= 1, in world mm."""

    center_mm: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    material: str

    def _mask(self, x, y, z):
        (cx, cy, cz), (rx, ry, rz) = self.center_mm, self.radii_mm
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0

    def _interval(self, s, d):
        r = np.asarray(self.radii_mm)
        return _unit_ball_interval((s - self.center_mm) / r, d / r)


@dataclass(frozen=True)
class Box(_Shape):
    """Axis-aligned box of full edge lengths ``size_mm`` about ``center_mm``, world mm."""

    center_mm: tuple[float, float, float]
    size_mm: tuple[float, float, float]
    material: str

    def _mask(self, x, y, z):
        (cx, cy, cz), (sx, sy, sz) = self.center_mm, self.size_mm
        return (np.abs(x - cx) <= sx / 2) & (np.abs(y - cy) <= sy / 2) & (np.abs(z - cz) <= sz / 2)

    def _interval(self, s, d):
        c, h = np.asarray(self.center_mm), np.asarray(self.size_mm) / 2
        return _slab_interval(s, d, c - h, c + h)


@dataclass(frozen=True)
class Cylinder(_Shape):
    """Circular cylinder of ``radius_mm`` and ``length_mm`` along world ``axis`` ('x', 'y', 'z')."""

    center_mm: tuple[float, float, float]
    radius_mm: float
    length_mm: float
    axis: str
    material: str

    def _line_axis(self) -> int:
        return min(i for i in range(3) if i != _AXES[self.axis])  # across the curved side

    def _split(self, v: np.ndarray):
        a = _AXES[self.axis]
        radial = [i for i in range(3) if i != a]
        return v[..., radial], v[..., a : a + 1]

    def _mask(self, x, y, z):
        d = [x - self.center_mm[0], y - self.center_mm[1], z - self.center_mm[2]]
        along = d.pop(_AXES[self.axis])
        return (d[0] ** 2 + d[1] ** 2 <= self.radius_mm**2) & (np.abs(along) <= self.length_mm / 2)

    def _interval(self, s, d):
        radial_s, along_s = self._split(s - np.asarray(self.center_mm))
        radial_d, along_d = self._split(d)
        r0, r1 = _unit_ball_interval(radial_s / self.radius_mm, radial_d / self.radius_mm)
        half = np.array([self.length_mm / 2])
        a0, a1 = _slab_interval(along_s, along_d, -half, half)
        return np.maximum(r0, a0), np.minimum(r1, a1)


def _column_coverage(u0: np.ndarray, u1: np.ndarray, column: np.ndarray, n_columns: int,
                     n_voxels: int) -> np.ndarray:
    """Per column and voxel k, the summed length of the column's line intervals [u0, u1] in voxel k.

    u0 <= u1 are in voxel units along the column (voxel k spans [k, k + 1]). A line covers voxel k
    by r(u1) - r(u0), with r(u) = clip(u - k, 0, 1): 1 below floor(u), frac(u) at floor(u), 0
    above. Summed over lines, the 1s are a cumulative count of (floor(u0) <= k) - (floor(u1) <= k).
    """
    size = n_columns * (n_voxels + 1)

    def bins(u):
        whole = np.floor(u)
        return (column * (n_voxels + 1) + whole.astype(np.intp)).ravel(), (u - whole).ravel()

    (b0, r0), (b1, r1) = bins(u0), bins(u1)
    ones = np.bincount(b0, minlength=size) - np.bincount(b1, minlength=size)
    parts = np.bincount(b1, r1, size) - np.bincount(b0, r0, size)
    covered = ones.reshape(n_columns, -1).cumsum(axis=1) + parts.reshape(n_columns, -1)
    return covered[:, :-1]


def _volume_fractions(shape_obj: _Shape, origin_mm: np.ndarray, voxel_mm: float,
                      grid_shape: tuple[int, int, int], n: int = _SUBLINES_PER_EDGE) -> np.ndarray:
    """Fraction of each voxel's volume inside ``shape_obj`` (float32 in [0, 1], x, y, z order).

    f = (1 / n^2) sum over n x n lines of |[t0, t1] & voxel| / voxel_mm: the lines run along
    ``shape_obj._line_axis()`` through the midpoints of an n x n grid on the voxel's cross-section,
    and [t0, t1] is each line's closed-form interval inside the shape (the one ``intersection_mm``
    uses). Exact along the lines, midpoint rule across them; a voxel wholly inside gets exactly 1,
    one wholly outside exactly 0. Each line crosses its whole column of voxels at once, so the cost
    is n^2 closed forms per column, not per voxel.
    """
    a = shape_obj._line_axis()
    b, c = (i for i in range(3) if i != a)
    n_a, n_b, n_c = grid_shape[a], grid_shape[b], grid_shape[c]
    offsets = (np.arange(n) + 0.5) / n - 0.5
    sub_b = origin_mm[b] + voxel_mm * (np.arange(n_b)[:, None] + offsets).ravel()
    sub_c = origin_mm[c] + voxel_mm * (np.arange(n_c)[:, None] + offsets).ravel()
    direction = np.zeros(3)
    direction[a] = 1.0  # unit: t is in mm from the grid's lower face along a
    column_c = np.arange(n * n_c) // n
    out = np.empty((n_b, n_c, n_a), dtype=np.float32)
    rows = max(1, _LINES_PER_CHUNK // (n * n * n_c))
    for b0 in range(0, n_b, rows):
        b1 = min(n_b, b0 + rows)
        starts = np.empty((n * (b1 - b0), n * n_c, 3))
        starts[..., a] = origin_mm[a] - voxel_mm / 2
        starts[..., b] = sub_b[n * b0 : n * b1, None]
        starts[..., c] = sub_c[None, :]
        t0, t1 = shape_obj._interval(starts, direction)
        u0 = np.clip(t0 / voxel_mm, 0.0, n_a)
        u1 = np.maximum(np.clip(t1 / voxel_mm, 0.0, n_a), u0)  # a missed line: t0 = inf > t1
        column = (np.arange(n * (b1 - b0)) // n)[:, None] * n_c + column_c[None, :]
        n_col = (b1 - b0) * n_c
        inside = _column_coverage(u0, u1, column, n_col, n_a)
        out[b0:b1] = inside.reshape(b1 - b0, n_c, n_a) / (n * n)
    return np.moveaxis(out, (0, 1, 2), (b, c, a))


@functools.lru_cache(maxsize=1)
def trabecular_bone() -> Material:
    """Trabecular (spongy) bone at 1.18 g/cm^3: cortical bone filling the marrow space in part.

    Model: marrow = adipose + soft tissue, 1:1 by mass (adult mixed red/yellow marrow); bone
    volume fraction f from rho = f rho_cortical + (1 - f) rho_marrow with rho = 1.18 g/cm^3
    (ICRU Report 44 skeleton-spongiosa); mass fraction of bone w = f rho_cortical / rho = 0.31.
    That gives Ca 7.1 % by mass, near the 7.4 % of ICRU-44 spongiosa; cortical-bone composition
    at 1.18 g/cm^3 would carry 22.5 % Ca and overstate photoelectric absorption.
    """
    rho = 1.18
    cortical, adipose, soft = material("cortical bone"), material("adipose"), material("soft tissue")
    rho_marrow = 1.0 / (0.5 / adipose.density_g_cm3 + 0.5 / soft.density_g_cm3)
    marrow = Material.mixture("marrow", {adipose: 0.5, soft: 0.5}, rho_marrow)
    f = (rho - rho_marrow) / (cortical.density_g_cm3 - rho_marrow)
    w = f * cortical.density_g_cm3 / rho
    return Material.mixture("trabecular bone", {cortical: w, marrow: 1.0 - w}, rho)


# --- voxel painter -------------------------------------------------------------------------------

Region = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class _Builder:
    """Paints shapes into a material-index + density grid (painter's order: later wins).

    Each shape is evaluated only in the sub-block of voxels its bounding box covers, on open
    (broadcastable) coordinate grids, which keeps a whole anthropomorphic phantom to ~1 s.
    """

    def __init__(self, shape: tuple[int, int, int], voxel_mm: float, center_mm=(0.0, 0.0, 0.0),
                 background: str = "air"):
        self.voxel_mm = float(voxel_mm)
        self.shape = tuple(int(n) for n in shape)
        n = np.array(self.shape, dtype=float)
        self.origin_mm = np.asarray(center_mm, dtype=float) - (n - 1) / 2 * self.voxel_mm
        self.coords = [self.origin_mm[a] + self.voxel_mm * np.arange(self.shape[a]) for a in range(3)]
        self.materials: list = []
        self.index = np.zeros(self.shape, dtype=np.uint8)
        self.density = np.full(self.shape, material(background).density_g_cm3, dtype=np.float32)
        self._material(background)
        self.landmarks: dict[str, np.ndarray] = {}

    def bounds_mm(self, axis: int) -> tuple[float, float]:
        """Range of voxel centres along a world axis."""
        return float(self.coords[axis][0]), float(self.coords[axis][-1])

    def _material(self, name: str | Material) -> int:
        mat = material(name) if isinstance(name, str) else name
        names = [m.name for m in self.materials]
        if mat.name in names:
            return names.index(mat.name)
        self.materials.append(mat)
        return len(self.materials) - 1

    def paint(self, name: str, region: Region, lo_mm, hi_mm, density: float | None = None) -> None:
        """Give ``name`` to the voxels whose centres lie in the box [lo, hi] and in ``region``."""
        sl = []
        for a in range(3):
            lo = (lo_mm[a] - self.origin_mm[a]) / self.voxel_mm
            hi = (hi_mm[a] - self.origin_mm[a]) / self.voxel_mm
            i0, i1 = max(0, math.ceil(lo - 1e-9)), min(self.shape[a], math.floor(hi + 1e-9) + 1)
            if i1 <= i0:
                return
            sl.append(slice(i0, i1))
        X = self.coords[0][sl[0], None, None]
        Y = self.coords[1][None, sl[1], None]
        Z = self.coords[2][None, None, sl[2]]
        block = tuple(s.stop - s.start for s in sl)
        mask = np.broadcast_to(region(X, Y, Z), block)
        k = self._material(name)
        sl = tuple(sl)
        self.index[sl][mask] = k
        self.density[sl][mask] = self.materials[k].density_g_cm3 if density is None else density

    def ellipsoid(self, name, center, radii, density=None, rotation=None, where: Region | None = None):
        """Ellipsoid with semi-axes ``radii`` along the columns of ``rotation`` (default world axes)."""
        c, r = np.asarray(center, float), np.asarray(radii, float)
        R = np.eye(3) if rotation is None else np.asarray(rotation, float)
        half = np.sqrt(((R * r) ** 2).sum(axis=1))  # bounding box of the rotated ellipsoid

        def region(X, Y, Z):
            d = (X - c[0], Y - c[1], Z - c[2])
            total = 0.0
            for k in range(3):
                local = d[0] * R[0, k] + d[1] * R[1, k] + d[2] * R[2, k]
                total = total + (local / r[k]) ** 2
            inside = total <= 1.0
            return inside & where(X, Y, Z) if where is not None else inside

        self.paint(name, region, c - half, c + half, density)

    def elliptic_cylinder(self, name, center_xy, radii_xy, z_range, density=None,
                          where: Region | None = None):
        """Cylinder along z with an elliptic cross-section, between z_range[0] and z_range[1]."""
        (cx, cy), (rx, ry) = center_xy, radii_xy
        if rx <= 0 or ry <= 0:
            return

        def region(X, Y, Z):
            inside = ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2 <= 1.0
            return inside & where(X, Y, Z) if where is not None else inside

        lo, hi = (cx - rx, cy - ry, z_range[0]), (cx + rx, cy + ry, z_range[1])
        self.paint(name, region, lo, hi, density)

    def tube(self, name, points, radius, density=None):
        """Union of capsules of ``radius`` around a polyline ``points`` (N, 3)."""
        pts = np.asarray(points, float)
        rho = self.materials[self._material(name)].density_g_cm3 if density is None else density
        wide = _THIN_RADIUS_VOXELS * self.voxel_mm
        if radius < wide:  # keep mass per length: rho pi r^2 = rho' pi r_wide^2
            rho, radius = rho * (radius / wide) ** 2, wide
        for a, b in zip(pts[:-1], pts[1:]):
            ab = b - a
            ab2 = max(float(ab @ ab), 1e-12)

            def region(X, Y, Z, a=a, ab=ab, ab2=ab2):
                px, py, pz = X - a[0], Y - a[1], Z - a[2]
                t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / ab2, 0.0, 1.0)
                d2 = (px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2
                return d2 <= radius * radius

            self.paint(name, region, np.minimum(a, b) - radius, np.maximum(a, b) + radius, rho)

    # bones: cortical shell around a trabecular interior
    def _shell(self, shell_mm: float) -> float:
        return max(shell_mm, self.voxel_mm)  # a shell thinner than a voxel would vanish

    def bone_ellipsoid(self, center, radii, trabecular_g_cm3, shell_mm=2.0, rotation=None, where=None):
        s = self._shell(shell_mm)
        self.ellipsoid("cortical bone", center, radii, rotation=rotation, where=where)
        inner = np.asarray(radii, float) - s
        if (inner > 0).all():
            self.ellipsoid(trabecular_bone(), center, inner, trabecular_g_cm3, rotation, where)

    def bone_cylinder(self, center_xy, radii_xy, z_range, trabecular_g_cm3, shell_mm=2.0):
        s = self._shell(shell_mm)
        self.elliptic_cylinder("cortical bone", center_xy, radii_xy, z_range)
        self.elliptic_cylinder(trabecular_bone(), center_xy, (radii_xy[0] - s, radii_xy[1] - s),
                               (z_range[0] + s, z_range[1] - s), trabecular_g_cm3)

    def bone_tube(self, points, radius, trabecular_g_cm3, shell_mm=1.5):
        s = self._shell(shell_mm)
        self.tube("cortical bone", points, radius)
        if radius - s > 0:
            self.tube(trabecular_bone(), points, radius - s, trabecular_g_cm3)

    def affine(self) -> np.ndarray:
        A = np.diag([self.voxel_mm, self.voxel_mm, self.voxel_mm, 1.0])
        A[:3, 3] = self.origin_mm
        return A

    def phantom(self, shapes=()) -> Phantom:
        return Phantom(self.index, self.density, self.affine(), self.materials,
                       landmarks=self.landmarks, shapes=shapes)


def _count(name: str, length_mm: float, voxel_mm: float) -> int:
    """Number of voxels in ``length_mm``, which must be a whole multiple of the voxel size."""
    check_positive(name, length_mm, unit="mm")
    n = round(length_mm / voxel_mm)
    if n < 1 or not math.isclose(n * voxel_mm, length_mm, rel_tol=1e-9, abs_tol=1e-9):
        raise XsimInputError(
            f"{name} = {length_mm:g} mm must be a whole multiple of voxel_mm = {voxel_mm:g} mm"
        )
    return n


def _fov_shape(fov_mm: Any, voxel_mm: float) -> tuple[int, int, int]:
    fov = np.asarray(fov_mm, dtype=float)
    if fov.shape != (3,):
        raise XsimInputError(f"fov_mm must be (x, y, z) extents in mm, got {fov_mm!r}")
    check_positive("fov_mm", fov, unit="mm")
    return tuple(max(1, int(round(f / voxel_mm))) for f in fov)


def _check_common(seed: Any, voxel_mm: float) -> np.random.Generator:
    check_type("seed", seed, (int, np.integer))
    check_positive("voxel_mm", voxel_mm, unit="mm")
    return np.random.default_rng(seed)


# --- analytic phantoms ---------------------------------------------------------------------------


def slab(
    thickness_mm: float = 100.0,
    size_mm: tuple[float, float] = (300.0, 300.0),
    material: str = "water",
    voxel_mm: float = 1.0,
    axis: str = "y",
) -> Phantom:
    """A homogeneous slab filling its grid exactly, centred on the world origin.

    Parameters
    ----------
    thickness_mm : float
        Thickness along ``axis``, mm; a whole multiple of ``voxel_mm`` (so it is exact).
    size_mm : (float, float)
        Extents along the two other world axes in x, y, z order, mm; whole multiples of voxel_mm.
    material : str
        Material name.
    voxel_mm : float
        Cubic voxel edge, mm.
    axis : {'x', 'y', 'z'}
        Slab normal. The default 'y' (anterior-posterior) faces the beam of a frontal C-arm view.

    Returns
    -------
    Phantom
        One material; ``shapes`` holds the exact :class:`Box`.
    """
    check_positive("voxel_mm", voxel_mm, unit="mm")
    check_choice("axis", axis, _AXES)
    size = tuple(size_mm)
    if len(size) != 2:
        raise XsimInputError(f"size_mm must be two extents in mm, got {size_mm!r}")
    extents = list(size)
    extents.insert(_AXES[axis], thickness_mm)
    names = [f"size_mm[{i}]" for i in range(2)]
    names.insert(_AXES[axis], "thickness_mm")
    shape = tuple(_count(n, e, voxel_mm) for n, e in zip(names, extents))
    b = _Builder(shape, voxel_mm, background=material)
    box = Box((0.0, 0.0, 0.0), tuple(float(n * voxel_mm) for n in shape), material)
    return b.phantom(shapes=(box,))


def water_cylinder(
    diameter_mm: float = 200.0,
    length_mm: float = 200.0,
    voxel_mm: float = 1.0,
    axis: str = "z",
    material: str = "water",
    partial_volume: bool = True,
) -> Phantom:
    """A cylinder in air, centred on the world origin, with two voxels of air all round.

    Parameters
    ----------
    diameter_mm : float
        Cylinder diameter, mm.
    length_mm : float
        Cylinder length along ``axis``, mm; a whole multiple of ``voxel_mm`` (exact end faces).
    voxel_mm : float
        Cubic voxel edge, mm.
    axis : {'x', 'y', 'z'}
        Cylinder axis; default 'z', the patient's long axis.
    material : str
        Material name (default water).
    partial_volume : bool
        True (default): partial-volume voxels (exact mass; see the module docstring). False: binary
        voxels, each taking the material that contains its centre.

    Returns
    -------
    Phantom
        Materials air and ``material``; ``shapes`` holds the exact :class:`Cylinder`. The end
        faces lie on voxel faces, so only the curved side has partial voxels.
    """
    check_positive("voxel_mm", voxel_mm, unit="mm")
    check_positive("diameter_mm", diameter_mm, unit="mm")
    check_choice("axis", axis, _AXES)
    check_type("partial_volume", partial_volume, bool)
    n_len = _count("length_mm", length_mm, voxel_mm) + 4
    n_dia = math.ceil(diameter_mm / voxel_mm) + 4
    shape = [n_dia, n_dia, n_dia]
    shape[_AXES[axis]] = n_len  # same parity as the length: exactly length / voxel slices inside
    cyl = Cylinder((0.0, 0.0, 0.0), diameter_mm / 2, float(length_mm), axis, material)
    return _paint_shape(cyl, tuple(shape), voxel_mm, (0.0, 0.0, 0.0), "air", partial_volume)


def ellipsoid(
    radii_mm: tuple[float, float, float] = (80.0, 60.0, 100.0),
    center_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    material: str = "water",
    voxel_mm: float = 1.0,
    background: str = "air",
    partial_volume: bool = True,
) -> Phantom:
    """An axis-aligned ellipsoid on a grid centred on it, with two voxels of background all round.

    Parameters
    ----------
    radii_mm : (float, float, float)
        Semi-axes along x, y, z, mm.
    center_mm : (float, float, float)
        Centre, world mm (LPS).
    material, background : str
        Material names of the ellipsoid and of the rest of the grid.
    voxel_mm : float
        Cubic voxel edge, mm.
    partial_volume : bool
        True (default): partial-volume voxels (exact mass; see the module docstring). False: binary
        voxels, each taking the material that contains its centre.

    Returns
    -------
    Phantom
        ``shapes`` holds the exact :class:`Ellipsoid`.
    """
    check_positive("voxel_mm", voxel_mm, unit="mm")
    check_type("partial_volume", partial_volume, bool)
    radii = np.asarray(radii_mm, dtype=float)
    center = np.asarray(center_mm, dtype=float)
    if radii.shape != (3,) or center.shape != (3,):
        raise XsimInputError(
            f"radii_mm and center_mm must be 3 values each, got {radii_mm!r}, {center_mm!r}")
    check_positive("radii_mm", radii, unit="mm")
    shape = tuple(int(math.ceil(2 * r / voxel_mm)) + 4 for r in radii)
    shp = Ellipsoid(tuple(center.tolist()), tuple(radii.tolist()), material)
    return _paint_shape(shp, shape, voxel_mm, center, background, partial_volume)


def sphere(
    radius_mm: float = 50.0,
    center_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    material: str = "water",
    voxel_mm: float = 1.0,
    background: str = "air",
    partial_volume: bool = True,
) -> Phantom:
    """A sphere: :func:`ellipsoid` with three equal radii (``shapes`` holds an Ellipsoid).

    Partial-volume voxels by default, as :func:`ellipsoid` describes.
    """
    check_positive("radius_mm", radius_mm, unit="mm")
    return ellipsoid((radius_mm,) * 3, center_mm, material, voxel_mm, background, partial_volume)


def _paint_shape(shape_obj, grid_shape, voxel_mm, center, background, partial_volume) -> Phantom:
    b = _Builder(grid_shape, voxel_mm, center_mm=center, background=background)
    if not partial_volume:
        b.paint(shape_obj.material, shape_obj._mask, b.origin_mm,
                b.origin_mm + voxel_mm * np.array(grid_shape))
        return b.phantom(shapes=(shape_obj,))
    f = _volume_fractions(shape_obj, b.origin_mm, voxel_mm, grid_shape)
    k = b._material(shape_obj.material)
    # volume-weighted mixture, exact at f = 0 and f = 1: the shape's part plus the background's
    b.density = f * np.float32(b.materials[k].density_g_cm3) + (1 - f) * b.density
    b.index[f > 0] = k
    return b.phantom(shapes=(shape_obj,))


# --- anthropomorphic building blocks -------------------------------------------------------------


def _curve(points: Any, n: int) -> np.ndarray:
    """n points on a smooth (cubic spline, chord-length parameter) curve through ``points``."""
    p = np.asarray(points, dtype=float)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
    return CubicSpline(s, p, axis=0)(np.linspace(0.0, s[-1], n))


def _trunk(b: _Builder, rng, a_mm: float, b_mm: float, fat_mm: float, muscle_mm: float):
    """Skin (2 mm soft tissue), fat, muscle and a soft-tissue cavity: elliptic cylinders along z.

    Returns the cavity semi-axes and a region test for the cavity.
    """
    z = b.bounds_mm(2)
    z = (z[0] - b.voxel_mm, z[1] + b.voxel_mm)
    for name, inset in (("soft tissue", 0.0), ("adipose", 2.0), ("skeletal muscle", 2.0 + fat_mm),
                        ("soft tissue", 2.0 + fat_mm + muscle_mm)):
        b.elliptic_cylinder(name, (0.0, 0.0), (a_mm - inset, b_mm - inset), z)
    ai, bi = a_mm - 2.0 - fat_mm - muscle_mm, b_mm - 2.0 - fat_mm - muscle_mm

    def cavity(X, Y, Z):
        return (X / ai) ** 2 + (Y / bi) ** 2 <= 1.0

    # paraspinal muscles fill the posterior cavity on both sides of the spine
    for side in (-1, 1):
        b.elliptic_cylinder("skeletal muscle", (side * rng.uniform(30, 40), bi - 18),
                            (rng.uniform(22, 30), rng.uniform(20, 26)), z, where=cavity)
    return ai, bi, cavity


def _spine(b: _Builder, rng, y_mm: float, radii_mm, height_mm: float, disc_mm: float,
           trab: float) -> tuple[list[np.ndarray], float]:
    """Vertebrae stacked along z through the whole grid.

    Returns the vertebral body centres and the y of the spinal canal (where the ribs attach).
    """
    z_lo, z_hi = b.bounds_mm(2)
    rx, ry = radii_mm
    canal_r = rng.uniform(7.0, 9.0)
    canal_y = y_mm + ry + canal_r + 3.0
    centres = []
    z = z_lo - rng.uniform(0.0, height_mm + disc_mm)
    while z - height_mm / 2 < z_hi:
        h = height_mm * rng.uniform(0.95, 1.05)
        b.bone_cylinder((0.0, y_mm), (rx, ry), (z - h / 2, z + h / 2), trab)
        b.elliptic_cylinder("cortical bone", (0.0, canal_y), (canal_r + 5, canal_r + 5),
                            (z - h / 2 + 2, z + h / 2 - 2))  # neural arch
        b.ellipsoid("cortical bone", (0.0, canal_y + canal_r + 18, z - 0.3 * h),
                    (4.0, rng.uniform(15, 20), 0.35 * h))  # spinous process
        for side in (-1, 1):  # transverse processes
            b.ellipsoid("cortical bone", (side * (canal_r + 14), canal_y, z), (14.0, 6.0, 6.0))
        centres.append(np.array([0.0, y_mm, z]))
        z += h + disc_mm
    b.elliptic_cylinder("soft tissue", (0.0, canal_y), (canal_r, canal_r),
                        (z_lo - b.voxel_mm, z_hi + b.voxel_mm))  # spinal canal
    return centres, canal_y


def _ribs(b: _Builder, rng, levels_z, a_mm: float, b_mm: float, canal_y: float, trab: float,
          end_deg: tuple[float, float] = (-65.0, -45.0)) -> None:
    """Rib pairs from the transverse processes round the chest wall ellipse (a, b), descending."""
    for z0 in levels_z:
        r = rng.uniform(4.5, 6.0)
        drop = rng.uniform(35.0, 60.0)
        phi0 = math.degrees(math.acos(min(1.0, 40.0 / a_mm)))  # posterior start, x = 40 mm
        phi1 = rng.uniform(*end_deg)  # front end (the costal cartilage beyond is soft tissue)
        phi = np.radians(np.linspace(phi0, phi1, 16))
        frac = (math.radians(phi0) - phi) / (math.radians(phi0) - math.radians(phi1))
        for side in (-1, 1):
            arc = np.stack([side * a_mm * np.cos(phi), b_mm * np.sin(phi), z0 - drop * frac], axis=1)
            start = np.array([[side * 25.0, canal_y, z0]])
            b.bone_tube(np.vstack([start, arc]), r, trab)


def _coronary(center, radii, theta_deg, psi_deg, offset_mm) -> np.ndarray:
    """Points on an ellipsoid's surface (pushed out by offset) for polar/azimuth angle sequences."""
    th, ps = np.radians(theta_deg), np.radians(psi_deg)
    u = np.stack([np.sin(th) * np.cos(ps), np.sin(th) * np.sin(ps), np.cos(th)], axis=1)
    return np.asarray(center) + u * (np.asarray(radii) + offset_mm)


def _wire(b: _Builder, rng, path: Any, radius_mm: float, jitter_mm: float,
          hook_mm: float) -> np.ndarray:
    """A stainless-steel guidewire along ``path`` (N, 3), wandering inside the lumen by about
    ``jitter_mm``, ending in a J-shaped tip of radius ``hook_mm``. Returns the tip position.
    """
    path = np.asarray(path, dtype=float)
    ctrl = path[np.unique(np.linspace(0, len(path) - 1, 10).round().astype(int))]
    ctrl[1:-1] += rng.normal(0.0, jitter_mm, ctrl[1:-1].shape)
    length = np.linalg.norm(np.diff(ctrl, axis=0), axis=1).sum()
    pts = _curve(ctrl, max(10, int(length / 2.0)))
    tangent = pts[-1] - pts[-2]
    tangent /= np.linalg.norm(tangent)
    side = np.cross(tangent, rng.normal(size=3))
    side /= np.linalg.norm(side)
    ang = np.linspace(0.0, math.pi, 9)[1:]  # J tip: a half circle of radius hook_mm
    hook = pts[-1] + hook_mm * (np.sin(ang)[:, None] * tangent + (1 - np.cos(ang))[:, None] * side)
    b.tube("stainless steel", np.vstack([pts, hook]), radius_mm)
    return hook[-1]


# --- anthropomorphic phantoms --------------------------------------------------------------------


def thorax(
    seed: int = 0,
    voxel_mm: float = 2.0,
    fov_mm: tuple[float, float, float] = (400.0, 300.0, 320.0),
    vessels: bool = False,
    tool: bool = False,
) -> Phantom:
    """Seeded adult chest: skin, fat, muscle, lungs, heart, great vessels, airways, spine, ribs,
    sternum, scapulae and clavicles.

    Parameters
    ----------
    seed : int
        Random seed (body size, organ sizes and positions, bone geometry).
    voxel_mm : float
        Cubic voxel edge, mm.
    fov_mm : (float, float, float)
        Grid extent along x, y, z, mm, centred on the world origin; the trunk runs through the
        whole z range, like a CT crop.
    vessels : bool
        Fill the aorta, pulmonary arteries and coronary arteries with iodine contrast (else blood;
        coronaries only with contrast).
    tool : bool
        Add a stainless-steel guidewire from the descending aorta over the arch to the aortic root.

    Returns
    -------
    Phantom
        Landmarks (world mm): carina, spine_center, heart_center, aortic_root, aortic_arch,
        left_lung_center, right_lung_center, and tool_tip when ``tool``.
    """
    rng = _check_common(seed, voxel_mm)
    b = _Builder(_fov_shape(fov_mm, voxel_mm), voxel_mm)
    trab = rng.uniform(*_TRABECULAR_DENSITY_G_CM3)
    vessel = "iodine contrast" if vessels else "blood"
    a, bb = rng.uniform(150, 180), rng.uniform(100, 122)
    fat, muscle = rng.uniform(6, 25), rng.uniform(8, 16)
    ai, bi, cavity = _trunk(b, rng, a, bb, fat, muscle)
    z_lo, z_hi = b.bounds_mm(2)

    # lungs, cut below by the diaphragm domes (the left dome sits lower)
    z_dia = rng.uniform(-95, -65)
    apex = z_dia + rng.uniform(200, 240)
    lung_rho = rng.uniform(*_LUNG_DENSITY_G_CM3)
    lungs = {}
    for side, name in ((-1, "right"), (1, "left")):
        c = (side * ai * rng.uniform(0.46, 0.52), rng.uniform(0, 12), (z_dia + apex) / 2 - 20)
        r = (ai * rng.uniform(0.42, 0.47), bi * rng.uniform(0.78, 0.86), (apex - z_dia) / 2 + 20)
        b.ellipsoid("lung", c, r, lung_rho, where=cavity)
        lungs[name] = np.array([c[0], c[1], (z_dia + apex) / 2])
    for side in (-1, 1):
        top = z_dia - (8.0 if side > 0 else 0.0)
        b.ellipsoid("soft tissue", (side * ai * 0.45, 0.0, top - 130), (ai * 0.65, bi * 1.2, 130),
                    where=cavity)

    # heart: myocardium around blood-filled chambers, resting on the diaphragm
    hc = np.array([rng.uniform(10, 30), -bi * rng.uniform(0.28, 0.4), z_dia + rng.uniform(40, 55)])
    hr = np.array([rng.uniform(48, 60), rng.uniform(40, 50), rng.uniform(50, 62)])
    b.ellipsoid("skeletal muscle", hc, hr, where=cavity)
    b.ellipsoid("blood", hc, hr - 10)

    # great vessels: the aorta rises from the heart, arches backward over the left main bronchus
    # and descends left of the spine; the pulmonary trunk splits toward both lung hila
    vb = (rng.uniform(16, 20), rng.uniform(13, 16))
    y_spine = bi - rng.uniform(45, 55)
    ao_r = rng.uniform(11, 15)
    desc = np.array([vb[0] + ao_r * 0.6, y_spine - vb[1] - ao_r + 6])
    root = np.array([hc[0] - 15, hc[1] + 15, hc[2] + 0.6 * hr[2]])
    arch_z = root[2] + rng.uniform(55, 75)
    aorta = _curve([root, root + (-5, -3, 30), ((root[0] + desc[0]) / 2 - 8, (root[1] + desc[1]) / 2,
                    arch_z), (desc[0], desc[1], arch_z - 30), (desc[0], desc[1], arch_z - 80),
                    (desc[0], desc[1], z_lo - 10)], 60)
    b.tube(vessel, aorta, ao_r)
    trunk_start = hc + (8, -hr[1] * 0.6, hr[2] * 0.6)
    bif = np.array([4.0, hc[1] + 25, arch_z - 35])
    b.tube(vessel, _curve([trunk_start, trunk_start + (0, 5, 20), bif], 12), rng.uniform(10, 12))
    for side in (-1, 1):
        hilum = np.array([side * ai * 0.42, rng.uniform(0, 10), bif[2] - rng.uniform(5, 15)])
        b.tube(vessel, _curve([bif, (bif + hilum) / 2 + (0, 5, 3), hilum], 10), rng.uniform(7, 9))

    y_trachea = y_spine - vb[1] - rng.uniform(14, 20)
    carina = np.array([0.0, y_trachea, arch_z - rng.uniform(5, 15)])
    b.tube("air", [(0.0, y_trachea, z_hi + 5), carina], rng.uniform(8, 10))
    for side in (-1, 1):
        b.tube("air", [carina, carina + (side * rng.uniform(40, 50), 8, -rng.uniform(25, 40))],
               rng.uniform(5.5, 7))

    centres, canal_y = _spine(b, rng, y_spine, vb, rng.uniform(20, 24), rng.uniform(5, 7), trab)
    rib_levels = [c[2] for c in centres if z_dia - 40 < c[2] < apex][-12:]
    _ribs(b, rng, rib_levels, a - 2 - fat - muscle / 2, bb - 2 - fat - muscle / 2, canal_y, trab)

    y_sternum = -(bb - 2 - fat - 9)
    b.bone_cylinder((0.0, y_sternum), (rng.uniform(13, 17), 6.0), (hc[2] - 30, apex - 20), trab)
    for side in (-1, 1):
        inset = 2 + fat + 4
        phi = math.radians(rng.uniform(50, 62))
        c = (side * (a - inset) * math.cos(phi), (bb - inset) * math.sin(phi),
             apex - rng.uniform(70, 90))
        normal_deg = math.degrees(math.atan2(math.sin(phi) / bb, side * math.cos(phi) / a))
        b.bone_ellipsoid(c, (rng.uniform(45, 55), 5.0, rng.uniform(60, 75)), trab, shell_mm=2.0,
                         rotation=rotation_z(normal_deg - 90))  # scapula: thin axis along the wall normal
        clav = [(side * 18.0, y_sternum, apex - 15), (side * a * 0.45, y_sternum + 10, apex - 5),
                (side * a * 0.8, -bb * 0.1, apex + 5)]
        b.bone_tube(_curve(clav, 10), rng.uniform(6, 7.5), trab)

    if vessels:  # coronary arteries on the heart surface (LAD, circumflex, right coronary)
        b.tube(vessel, _coronary(hc, hr, np.linspace(35, 150, 12), np.full(12, -60.0), 2.5), 1.8)
        b.tube(vessel, _coronary(hc, hr, np.full(10, 70.0), np.linspace(-40, 90, 10), 2.5), 1.6)
        b.tube(vessel, _coronary(hc, hr, np.full(12, 80.0), np.linspace(-100, -230, 12), 2.5), 1.7)

    spine_center = min(centres, key=lambda c: abs(c[2]))
    b.landmarks.update({
        "carina": carina, "spine_center": spine_center, "heart_center": hc,
        "aortic_root": root, "aortic_arch": aorta[np.argmax(aorta[:, 2])],
        "left_lung_center": lungs["left"], "right_lung_center": lungs["right"],
    })
    if tool:
        wire_r = rng.uniform(0.3, 0.45)  # 0.024-0.035 inch guidewires
        b.landmarks["tool_tip"] = _wire(b, rng, aorta[::-1][:-4], wire_r, 0.25 * ao_r, 4.0)
    return b.phantom()


def abdomen(
    seed: int = 0,
    voxel_mm: float = 2.0,
    fov_mm: tuple[float, float, float] = (420.0, 320.0, 300.0),
    vessels: bool = False,
    tool: bool = False,
) -> Phantom:
    """Seeded adult abdomen: skin, fat, muscle, liver, spleen, kidneys, bowel gas, lumbar spine
    with psoas muscles, lowest ribs, aorta and inferior vena cava.

    Parameters
    ----------
    seed : int
        Random seed.
    voxel_mm : float
        Cubic voxel edge, mm.
    fov_mm : (float, float, float)
        Grid extent along x, y, z, mm, centred on the world origin.
    vessels : bool
        Fill the aorta and the renal arteries with iodine contrast (else blood).
    tool : bool
        Add a stainless-steel guidewire up the aorta to above the renal arteries.

    Returns
    -------
    Phantom
        Landmarks: spine_center, liver_center, left_kidney, right_kidney, renal_arteries
        (aortic origin), and tool_tip when ``tool``.
    """
    rng = _check_common(seed, voxel_mm)
    b = _Builder(_fov_shape(fov_mm, voxel_mm), voxel_mm)
    trab = rng.uniform(*_TRABECULAR_DENSITY_G_CM3)
    vessel = "iodine contrast" if vessels else "blood"
    a, bb = rng.uniform(150, 190), rng.uniform(105, 135)
    fat, muscle = rng.uniform(10, 40), rng.uniform(8, 14)
    ai, bi, cavity = _trunk(b, rng, a, bb, fat, muscle)
    z_lo, z_hi = b.bounds_mm(2)

    liver_c = np.array([-ai * rng.uniform(0.35, 0.45), -rng.uniform(0, 15), z_hi - rng.uniform(20, 50)])
    b.ellipsoid("soft tissue", liver_c, (ai * 0.6, bi * 0.75, rng.uniform(80, 100)),
                rng.uniform(1.05, 1.07), where=cavity)
    b.ellipsoid("soft tissue", (ai * 0.6, bi * 0.35, z_hi - rng.uniform(40, 70)),
                (rng.uniform(30, 40), rng.uniform(40, 55), rng.uniform(50, 65)), 1.06, where=cavity)
    for _ in range(int(rng.integers(6, 14))):  # bowel gas pockets, anterior and central
        c = (rng.uniform(-0.6, 0.6) * ai, -rng.uniform(0.0, 0.7) * bi, rng.uniform(z_lo, z_hi - 60))
        b.ellipsoid("air", c, rng.uniform(6, 22, size=3), where=cavity)

    vb = (rng.uniform(20, 25), rng.uniform(16, 19))
    y_spine = bi - rng.uniform(50, 60)
    kidneys = {}
    z_renal = rng.uniform(-10, 30)
    for side, name in ((-1, "right"), (1, "left")):
        c = np.array([side * rng.uniform(60, 75), y_spine + rng.uniform(0, 15),
                      z_renal - (12.0 if side < 0 else 0.0)])
        radii = (rng.uniform(25, 30), rng.uniform(20, 24), rng.uniform(50, 60))
        b.ellipsoid("soft tissue", c, radii, 1.05, rotation=rotation_z(side * 30.0))
        kidneys[name] = c
        b.elliptic_cylinder("skeletal muscle", (side * (vb[0] + rng.uniform(15, 22)), y_spine + 5),
                            (rng.uniform(14, 20), rng.uniform(14, 18)),
                            (z_lo - 5, z_renal + 60))  # psoas

    centres, canal_y = _spine(b, rng, y_spine, vb, rng.uniform(25, 29), rng.uniform(8, 10), trab)
    top = [c[2] for c in centres if c[2] > z_hi - 80][:2]
    _ribs(b, rng, top, a - 2 - fat - muscle / 2, bb - 2 - fat - muscle / 2, canal_y, trab,
          end_deg=(0.0, 20.0))  # floating ribs end laterally

    ao_r = rng.uniform(9, 12)
    ao = np.array([rng.uniform(8, 18), y_spine - vb[1] - ao_r - 2])
    b.elliptic_cylinder(vessel, ao, (ao_r, ao_r), (z_lo - 5, z_hi + 5))
    b.elliptic_cylinder("blood", (-rng.uniform(18, 26), ao[1] + 2), (rng.uniform(10, 13),) * 2,
                        (z_lo - 5, z_hi + 5))  # inferior vena cava
    origin = np.array([ao[0], ao[1], z_renal + 10])
    for name in ("right", "left"):
        k = kidneys[name]
        path = _curve([origin, (origin[0] + (k[0] - origin[0]) * 0.5, origin[1] + 8, origin[2] - 5),
                       k + (-np.sign(k[0]) * 20, -5, 0)], 12)
        b.tube(vessel, path, rng.uniform(2.5, 3.5))

    spine_center = min(centres, key=lambda c: abs(c[2]))
    b.landmarks.update({"spine_center": spine_center, "liver_center": liver_c,
                        "left_kidney": kidneys["left"], "right_kidney": kidneys["right"],
                        "renal_arteries": origin})
    if tool:
        path = np.array([(ao[0], ao[1], z_lo - 5), (ao[0], ao[1], origin[2]),
                         (ao[0], ao[1], origin[2] + rng.uniform(30, 60))])
        b.landmarks["tool_tip"] = _wire(b, rng, path, rng.uniform(0.3, 0.45), 0.3 * ao_r, 4.0)
    return b.phantom()


def pelvis(
    seed: int = 0,
    voxel_mm: float = 2.0,
    fov_mm: tuple[float, float, float] = (440.0, 320.0, 280.0),
    vessels: bool = False,
    tool: bool = False,
) -> Phantom:
    """Seeded adult pelvis: skin, fat, muscle, bladder, rectal gas, sacrum, iliac wings,
    acetabula, femoral heads, necks and shafts, pubic and ischial rami, iliac and femoral arteries.

    Parameters
    ----------
    seed : int
        Random seed.
    voxel_mm : float
        Cubic voxel edge, mm.
    fov_mm : (float, float, float)
        Grid extent along x, y, z, mm, centred on the world origin.
    vessels : bool
        Fill the aortic bifurcation, iliac and femoral arteries with iodine contrast (else blood).
    tool : bool
        Add a stainless-steel guidewire from the right femoral artery up to the aorta
        (retrograde femoral access).

    Returns
    -------
    Phantom
        Landmarks: aortic_bifurcation, sacrum, pubic_symphysis, left_femoral_head,
        right_femoral_head, and tool_tip when ``tool``.
    """
    rng = _check_common(seed, voxel_mm)
    b = _Builder(_fov_shape(fov_mm, voxel_mm), voxel_mm)
    trab = rng.uniform(*_TRABECULAR_DENSITY_G_CM3)
    vessel = "iodine contrast" if vessels else "blood"
    a, bb = rng.uniform(165, 200), rng.uniform(105, 130)
    fat, muscle = rng.uniform(15, 45), rng.uniform(10, 16)
    ai, bi, cavity = _trunk(b, rng, a, bb, fat, muscle)
    z_lo, z_hi = b.bounds_mm(2)

    z_fh = rng.uniform(-60, -30)  # femoral head centres
    x_fh, y_fh, r_fh = rng.uniform(85, 100), rng.uniform(-15, 5), rng.uniform(22, 26)
    bladder = (rng.uniform(40, 55), rng.uniform(30, 42), rng.uniform(30, 42))
    b.ellipsoid("water", (0.0, -bi * 0.45, z_fh + 25), bladder, where=cavity)
    b.ellipsoid("air", (rng.uniform(-10, 10), bi * 0.35, z_fh + rng.uniform(20, 50)),
                rng.uniform(8, 16, size=3))  # rectal gas

    sacrum = np.array([0.0, bi * rng.uniform(0.55, 0.7), z_hi - rng.uniform(60, 80)])
    b.bone_ellipsoid(sacrum, (rng.uniform(45, 55), rng.uniform(15, 20), rng.uniform(55, 70)), trab,
                     rotation=rotation_x(20.0))  # sacrum, tilted
    heads = {}
    for side, name in ((-1, "right"), (1, "left")):
        fh = np.array([side * x_fh, y_fh, z_fh])
        # iliac wing: a thin plate fanning from the sacroiliac joint forward and outward
        wing = np.array([side * rng.uniform(75, 90), sacrum[1] * 0.2, z_fh + rng.uniform(75, 95)])
        rot, half = rotation_z(-side * rng.uniform(45, 55)), rng.uniform(55, 65)
        b.bone_ellipsoid(wing, (half, rng.uniform(6, 8), rng.uniform(50, 60)), trab, rotation=rot)
        b.bone_tube([wing - (0, 0, 40), fh + (side * 5, 5, r_fh)], rng.uniform(14, 18), trab)
        b.bone_tube([sacrum + (side * 35, 0, 0), wing - 0.8 * half * rot[:, 0]], 10.0, trab)

        def above_hip(X, Y, Z, z=z_fh):
            return Z > z - 8

        b.ellipsoid("cortical bone", fh, (r_fh + 7,) * 3, where=above_hip)  # acetabulum
        b.ellipsoid("soft tissue", fh, (r_fh + 2.5,) * 3)  # hip joint space
        troch = fh + (side * rng.uniform(45, 55), 5, -rng.uniform(20, 30))
        b.bone_tube([fh, troch], rng.uniform(14, 17), trab)  # femoral neck
        b.bone_ellipsoid(fh, (r_fh,) * 3, trab)
        shaft = [troch, troch + (-side * 10, 0, -60), (side * (x_fh + 20), y_fh, z_lo - 10)]
        b.bone_tube(shaft, rng.uniform(13, 15), trab, shell_mm=4.0)
        symph = np.array([side * 8.0, -bi * rng.uniform(0.7, 0.8), z_fh - 15])
        ischium = fh + (-side * 25, 20, -55)
        b.bone_tube([fh + (-side * 15, -10, -5), symph], rng.uniform(8, 10), trab)  # superior ramus
        ramus = _curve([symph, symph + (side * 20, 10, -30), ischium, fh + (-side * 5, 15, -20)], 12)
        b.bone_tube(ramus, rng.uniform(7, 9), trab)  # inferior ramus and ischium
        heads[name] = fh

    bif = np.array([rng.uniform(0, 10), sacrum[1] - 55, z_hi - rng.uniform(30, 50)])
    b.tube(vessel, [(bif[0], bif[1], z_hi + 5), bif], rng.uniform(8, 10))  # abdominal aorta
    arteries = {}
    for side, name in ((-1, "right"), (1, "left")):
        femoral = np.array([side * (x_fh - 5), y_fh - r_fh - 15, z_lo - 10])
        path = _curve([bif, bif + (side * 35, 10, -60), (side * (x_fh - 25), y_fh - 20, z_fh + 40),
                       (side * (x_fh - 8), y_fh - r_fh - 12, z_fh), femoral], 24)
        b.tube(vessel, path, rng.uniform(4, 5.5))
        arteries[name] = path

    b.landmarks.update({"aortic_bifurcation": bif, "sacrum": sacrum,
                        "pubic_symphysis": np.array([0.0, -bi * 0.75, z_fh - 15]),
                        "left_femoral_head": heads["left"], "right_femoral_head": heads["right"]})
    if tool:
        path = np.vstack([arteries["right"][::-1], [bif + (0, 0, rng.uniform(10, 25))]])
        b.landmarks["tool_tip"] = _wire(b, rng, path, rng.uniform(0.3, 0.45), 1.0, 3.0)
    return b.phantom()


def head(
    seed: int = 0,
    voxel_mm: float = 1.25,
    fov_mm: tuple[float, float, float] = (200.0, 240.0, 240.0),
    vessels: bool = False,
    tool: bool = False,
) -> Phantom:
    """Seeded adult head and upper neck: scalp, skull (cortical tables around diploe), brain
    with ventricles, skull base, orbits, sinuses, nasal cavity, maxilla, mandible, cervical spine,
    carotid and basilar arteries with the circle of Willis branches.

    Parameters
    ----------
    seed : int
        Random seed.
    voxel_mm : float
        Cubic voxel edge, mm (default 1.25: the head is small and its bone thin).
    fov_mm : (float, float, float)
        Grid extent along x, y, z, mm, centred on the world origin.
    vessels : bool
        Fill the cerebral arteries with iodine contrast (else blood).
    tool : bool
        Add a stainless-steel microwire up the right internal carotid artery into the middle
        cerebral artery.

    Returns
    -------
    Phantom
        Landmarks: skull_center, sella, left_orbit, right_orbit, ica_terminus_left,
        ica_terminus_right, and tool_tip when ``tool``.
    """
    rng = _check_common(seed, voxel_mm)
    b = _Builder(_fov_shape(fov_mm, voxel_mm), voxel_mm)
    trab = rng.uniform(*_TRABECULAR_DENSITY_G_CM3)
    vessel = "iodine contrast" if vessels else "blood"
    z_lo, _ = b.bounds_mm(2)
    zc = rng.uniform(25, 40)  # skull centre height
    sk = np.array([rng.uniform(68, 76), rng.uniform(86, 96), rng.uniform(78, 88)])  # outer table
    c = np.array([0.0, rng.uniform(5, 12), zc])
    t = rng.uniform(6, 8)  # skull thickness

    neck = (rng.uniform(50, 60), rng.uniform(52, 62))
    for name, inset in (("soft tissue", 0.0), ("adipose", 2.0), ("skeletal muscle", 6.0)):
        b.elliptic_cylinder(name, (0.0, 10.0), (neck[0] - inset, neck[1] - inset), (z_lo - 5, zc - 40))
    b.ellipsoid("soft tissue", c, sk + 6)  # scalp
    b.ellipsoid("adipose", c, sk + 4)
    b.ellipsoid("soft tissue", c, sk)  # under the skull base: soft tissue of face and neck
    b.ellipsoid("soft tissue", (0.0, c[1] - 45, zc - 70), (sk[0] * 0.78, 55.0, 60.0))  # face

    slope_deg = rng.uniform(12, 18)  # the skull base descends from the orbits to the occiput
    tan_slope = math.tan(math.radians(slope_deg))

    def vault(X, Y, Z):
        return Z > zc - 30 - tan_slope * (Y - c[1])

    def in_skull(X, Y, Z):
        return ((X - c[0]) / sk[0]) ** 2 + ((Y - c[1]) / sk[1]) ** 2 + ((Z - c[2]) / sk[2]) ** 2 <= 1

    b.bone_ellipsoid(c, sk, trab, shell_mm=2.0, where=vault)  # outer table + diploe
    b.ellipsoid("cortical bone", c, sk - t + 2, where=vault)  # inner table
    b.ellipsoid("soft tissue", c, sk - t, 1.04, where=vault)  # brain
    for side in (-1, 1):
        b.ellipsoid("water", (side * rng.uniform(9, 13), c[1] + 5, zc + 12),
                    (rng.uniform(5, 8), rng.uniform(25, 32), rng.uniform(8, 11)))  # lateral ventricles
    b.bone_ellipsoid((0.0, c[1], zc - 34), (sk[0] - t, sk[1] - t, 7.0), trab,
                     rotation=rotation_x(-slope_deg), where=in_skull)  # skull base

    orbits = {}
    y_face = c[1] - sk[1]
    for side, name in ((-1, "right"), (1, "left")):
        o = np.array([side * rng.uniform(28, 34), y_face + 22, zc - 22])
        b.bone_ellipsoid(o, (17.0, 22.0, 16.0), trab, shell_mm=1.5)
        b.ellipsoid("adipose", o, (15.5, 20.5, 14.5))
        orbits[name] = o
        b.ellipsoid("air", (side * 28.0, y_face + 40, zc - 58),
                    (14.0, 18.0, rng.uniform(15, 20)))  # maxillary sinus
    b.ellipsoid("air", (0.0, y_face + 10, zc + 5), (rng.uniform(8, 14), 6.0, 9.0))  # frontal sinus
    b.ellipsoid("air", (0.0, y_face + 35, zc - 50), (9.0, 22.0, 18.0))  # nasal cavity
    b.ellipsoid("air", (0.0, c[1] - 5, zc - 42), (10.0, 10.0, 8.0))  # sphenoid sinus
    sella = np.array([0.0, c[1] + 2, zc - 28])

    jaw_z = zc - rng.uniform(100, 110)
    arc = np.radians(np.linspace(-170, -10, 24))
    w, depth = rng.uniform(40, 48), rng.uniform(60, 70)
    y_chin = y_face + rng.uniform(8, 16)
    mandible = np.stack([w * np.cos(arc), y_chin + depth * (1 + np.sin(arc)), np.full_like(arc, jaw_z)],
                        axis=1)
    mandible = np.vstack([mandible[:1] + (0, 25, 45), mandible, mandible[-1:] + (0, 25, 45)])  # rami
    b.bone_tube(mandible, rng.uniform(6.5, 8), trab)
    maxilla = mandible[1:-1] * (0.95, 1.0, 1.0) + (0, 3, 25)
    b.bone_tube(maxilla, rng.uniform(6, 7), trab)

    vb = (rng.uniform(9, 12), rng.uniform(8, 10))
    spine_y = 12.0 + rng.uniform(-3, 3)
    z = zc - 62
    while z > z_lo - 20:
        h = rng.uniform(13, 16)
        b.bone_cylinder((0.0, spine_y), vb, (z - h / 2, z + h / 2), trab)
        b.elliptic_cylinder("cortical bone", (0.0, spine_y + vb[1] + 12), (12.0, 12.0), (z - 5, z + 5))
        b.elliptic_cylinder("soft tissue", (0.0, spine_y + vb[1] + 12), (7.0, 7.0), (z - 9, z + 9))
        z -= h + rng.uniform(4, 6)

    termini = {}
    for side, name in ((-1, "right"), (1, "left")):
        term = np.array([side * rng.uniform(12, 16), sella[1] - 12, zc - 22])
        ica = _curve([(side * 22.0, spine_y - 25, z_lo - 5), (side * 24.0, spine_y - 20, zc - 70),
                      (side * 16.0, sella[1] - 5, zc - 45), (side * 18.0, sella[1] - 18, zc - 32),
                      term], 30)
        b.tube(vessel, ica, rng.uniform(2.2, 2.8))
        mca = _curve([term, term + (side * 25, 0, 3), term + (side * 50, 10, 15)], 12)
        b.tube(vessel, mca, rng.uniform(1.4, 1.8))
        b.tube(vessel, _curve([term, (side * 3.0, term[1] - 15, term[2] + 5), (side * 3.0, term[1] - 45,
                                                                               term[2] + 40)], 12), 1.2)
        vertebral = [(side * 8.0, spine_y, z_lo - 5), (side * 4.0, spine_y, zc - 60)]
        b.tube(vessel, vertebral, 1.8)
        termini[name] = (term, ica, mca)
    b.tube(vessel, [(0.0, spine_y - 2, zc - 60), (0.0, sella[1] + 12, zc - 30)], 1.6)  # basilar

    b.landmarks.update({"skull_center": c, "sella": sella, "left_orbit": orbits["left"],
                        "right_orbit": orbits["right"], "ica_terminus_left": termini["left"][0],
                        "ica_terminus_right": termini["right"][0]})
    if tool:
        _, ica, mca = termini["right"]
        path = np.vstack([ica, mca[1 : len(mca) // 2]])
        b.landmarks["tool_tip"] = _wire(b, rng, path, 0.18, 0.3, 1.5)  # 0.014 inch microwire
    return b.phantom()
