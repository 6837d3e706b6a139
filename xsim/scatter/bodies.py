"""Random CT-like bodies for the scatter CNN's training data: HU volumes, converted like a user's CT.

Owns :func:`random_body`, one body per seed, built as a CT would arrive: a Hounsfield-unit volume
(:class:`xsim.volume.Volume`) with labels for what a CT calibration cannot tell from HU (metal, iodinated
contrast), converted by :meth:`Volume.to_phantom` with the default HU calibration. The procedural phantoms
(:mod:`xsim.phantoms`) are few anatomies drawn from one template; these bodies vary what scatter depends on:
size and shape of the cross-section (adult trunk, child or limb, head), length beyond the field (truncated
bodies), fat layer, lungs, spine and ribs, organs, contrast-filled vessels and metal. Coordinates: patient
LPS mm, body axis along z, centred on the origin.

The generator is a training family, not anatomy: validation/scatter_cnn.py measures the CNN on body shapes
built by other code (and on a real CT when one is given).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter

from ..checks import XsimInputError, check_range

__all__ = ["BODY_KINDS", "random_body"]

BODY_KINDS = ("trunk", "small", "head")
_KIND_WEIGHTS = (0.6, 0.25, 0.15)
AIR_HU = -1000.0


def _axes(shape, voxel_mm):
    """Voxel-centre coordinates (mm) along each axis, the grid centred on the origin."""
    return [(np.arange(n) - (n - 1) / 2.0) * voxel_mm for n in shape]


def _ellipsoid(x, y, z, centre, radii):
    return (((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((z - centre[2]) / radii[2]) ** 2) <= 1.0


def _segment_distance(x, y, z, a, b):
    """Distance of each point to the segment a-b (mm)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    t = ((x - a[0]) * d[0] + (y - a[1]) * d[1] + (z - a[2]) * d[2]) / max(float(d @ d), 1e-9)
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt((x - a[0] - t * d[0]) ** 2 + (y - a[1] - t * d[1]) ** 2 + (z - a[2] - t * d[2]) ** 2)


def _unit(rng):
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


@lru_cache(maxsize=4)
def random_body(seed: int, voxel_mm: float | None = None, kind: str | None = None):
    """A random body as a :class:`xsim.volume.Phantom` (HU volume -> default calibration, labels for metal and
    contrast), its voxel box cropped to the body.

    Parameters
    ----------
    seed : int
        Everything is drawn from ``numpy.random.default_rng(seed)``.
    voxel_mm : float, optional
        Cubic voxel edge; default 5 mm for a trunk, 4 mm for the smaller kinds (scatter depends on the gross
        anatomy, and the Monte Carlo's time on the voxel count).
    kind : {"trunk", "small", "head"}, optional
        Default drawn (60 % trunk, 25 % small, 15 % head).
    """
    from ..physics.materials import Material, material
    from ..volume import Volume

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise XsimInputError(f"seed must be an integer >= 0, got {seed!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB0D1]))
    drawn = BODY_KINDS[int(rng.choice(len(BODY_KINDS), p=_KIND_WEIGHTS))]
    kind = drawn if kind is None else kind
    if kind not in BODY_KINDS:
        raise XsimInputError(f"kind must be one of {BODY_KINDS}, got {kind!r}")
    if voxel_mm is None:
        voxel_mm = 5.0 if kind == "trunk" else 4.0
    check_range("voxel_mm", voxel_mm, 1.0, 10.0, unit="mm")

    # outline: an elliptic cylinder (trunk, small) or an ellipsoid (head); semi-axes a (lateral, x), b (AP, y)
    if kind == "trunk":
        a = rng.uniform(110.0, 220.0)
        b = a * rng.uniform(0.55, 0.85)
        length = rng.uniform(300.0, 600.0)
        fat = rng.uniform(5.0, 40.0)
    elif kind == "small":
        a = rng.uniform(40.0, 100.0)
        b = a * rng.uniform(0.7, 1.0)
        length = rng.uniform(150.0, 500.0)
        fat = rng.uniform(2.0, 15.0)
    else:
        a = rng.uniform(65.0, 90.0)
        b = a * rng.uniform(1.1, 1.3)
        length = rng.uniform(170.0, 230.0)
        fat = rng.uniform(2.0, 6.0)
    shape = tuple(int(np.ceil(2 * r / voxel_mm)) + 2 for r in (a, b, length / 2))
    x, y, z = np.meshgrid(*_axes(shape, voxel_mm), indexing="ij", sparse=True)
    if kind == "head":
        body = _ellipsoid(x, y, z, (0, 0, 0), (a, b, length / 2))
        inner = _ellipsoid(x, y, z, (0, 0, 0), (a - fat, b - fat, length / 2 - fat))
    else:
        body = ((x / a) ** 2 + (y / b) ** 2 <= 1.0) & (np.abs(z) <= length / 2)
        inner = ((x / (a - fat)) ** 2 + (y / (b - fat)) ** 2 <= 1.0) & (np.abs(z) <= length / 2)

    soft = rng.normal(40.0, 10.0)
    hu = np.full(shape, AIR_HU, np.float32)
    hu[body] = rng.uniform(-110.0, -70.0)  # subcutaneous fat
    hu[inner] = soft
    # smooth tissue texture, +-15 HU over ~2 cm
    texture = gaussian_filter(rng.normal(size=shape), 20.0 / voxel_mm / 2.355) if min(shape) > 4 else 0.0
    texture = texture / (np.std(texture) + 1e-12) * 15.0 if np.ndim(texture) else 0.0
    hu = np.where(inner, hu + texture, hu).astype(np.float32)
    labels = np.zeros(shape, np.uint8)

    if kind == "head":  # skull and a softer inside
        skull = rng.uniform(5.0, 9.0)
        brain = _ellipsoid(x, y, z, (0, 0, 0), (a - fat - skull, b - fat - skull, length / 2 - fat - skull))
        hu[inner & ~brain] = rng.uniform(800.0, 1400.0)
        hu[brain] = rng.uniform(25.0, 45.0)
    else:
        # organs: soft or fatty ellipsoids inside
        for _ in range(int(rng.integers(2, 6))):
            centre = (rng.uniform(-0.6, 0.6) * a, rng.uniform(-0.6, 0.6) * b, rng.uniform(-0.4, 0.4) * length)
            radii = rng.uniform(0.15, 0.45, size=3) * np.array([a, b, min(length, 300.0)])
            organ = _ellipsoid(x, y, z, centre, radii) & inner
            hu[organ] = rng.uniform(-100.0, -60.0) if rng.random() < 0.3 else rng.uniform(30.0, 70.0)
        lungs = kind == "trunk" and rng.random() < 0.6
        if lungs:
            zc, half = rng.uniform(-0.2, 0.2) * length, rng.uniform(80.0, 140.0)
            for side in (-1.0, 1.0):
                lung = _ellipsoid(x, y, z, (side * 0.45 * a, -0.05 * b, zc), (0.33 * a, 0.6 * b, half)) & inner
                hu[lung] = rng.uniform(-900.0, -750.0)
            # ribs: bands of a shell just inside the fat, every ~25 mm along the lungs
            r = np.sqrt((x / (a - fat)) ** 2 + (y / (b - fat)) ** 2)
            shell = (r <= 1.0) & (r >= 1.0 - 8.0 / (b - fat))
            bands = (np.mod(z - zc, 25.0) < 10.0) & (np.abs(z - zc) < half)
            hu[shell & bands & inner] = rng.uniform(300.0, 800.0)
        if rng.random() < 0.85:  # spine, posterior (+y in LPS)
            radius = rng.uniform(10.0, 20.0) * (a / 160.0) ** 0.5
            spine = (x ** 2 + (y - 0.6 * b) ** 2 <= radius ** 2) & inner
            hu[spine] = rng.uniform(300.0, 900.0)
    label_materials = {}
    if rng.random() < 0.4:  # contrast-filled vessels
        iodine = rng.uniform(0.005, 0.04)
        water = material("water").composition
        fractions = {el: (1.0 - iodine) * w for el, w in water.items()}
        fractions["I"] = iodine
        label_materials[1] = Material.from_mass_fractions("iodine contrast", fractions, 1.0 + 0.9 * iodine)
        for _ in range(int(rng.integers(1, 5))):
            centre = rng.uniform(-0.5, 0.5, size=3) * np.array([a, b, length])
            half = _unit(rng) * rng.uniform(30.0, 150.0)
            vessel = (_segment_distance(x, y, z, centre - half, centre + half) <= rng.uniform(3.0, 12.0)) & inner
            labels[vessel] = 1
    if rng.random() < 0.25:  # metal: a rod, a screw or a plate
        name = "titanium" if rng.random() < 0.5 else "stainless steel"
        label_materials[2] = material(name)
        centre = rng.uniform(-0.5, 0.5, size=3) * np.array([a, b, min(length, 200.0)])
        half = _unit(rng) * rng.uniform(10.0, 40.0)
        metal = (_segment_distance(x, y, z, centre - half, centre + half) <= rng.uniform(2.0, 6.0)) & body
        labels[metal] = 2
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = [-(n - 1) / 2.0 * voxel_mm for n in shape]
    volume = Volume.from_array(hu, affine)
    if label_materials:
        present = {k: m for k, m in label_materials.items() if (labels == k).any()}
        if present:
            labels[~np.isin(labels, list(present))] = 0
            phantom = volume.to_phantom(labels=labels, label_materials=present)
        else:
            phantom = volume.to_phantom()
    else:
        phantom = volume.to_phantom()
    phantom.source = f"random body seed={int(seed)} kind={kind} voxel_mm={voxel_mm:g}"
    return phantom


# ---------------------------------------------------------------------------------------------------------
# Held-out bodies: shapes the training data never holds, built by code of their own (not random_body), for the
# "new anatomy" suite of validation/scatter_cnn.py. Fixed: no seed, no draw.
def _hu_phantom(hu: np.ndarray, voxel_mm: float, source: str, labels=None, label_materials=None):
    from ..volume import Volume

    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = [-(n - 1) / 2.0 * voxel_mm for n in hu.shape]
    volume = Volume.from_array(hu.astype(np.float32), affine)
    phantom = volume.to_phantom(labels=labels, label_materials=label_materials) if labels is not None else \
        volume.to_phantom()
    phantom.source = source
    return phantom


def _elliptic_grid(a_mm, b_mm, length_mm, voxel_mm):
    shape = tuple(int(np.ceil(2 * r / voxel_mm)) + 2 for r in (a_mm, b_mm, length_mm / 2))
    return shape, np.meshgrid(*_axes(shape, voxel_mm), indexing="ij")


def _water_ellipse_lung_rod(voxel_mm: float):
    """Issue 17's body: an elliptic water-equivalent body (HU 0) with a lung-like cavity and a bone rod."""
    shape, (x, y, z) = _elliptic_grid(150.0, 100.0, 240.0, voxel_mm)
    hu = np.full(shape, AIR_HU)
    hu[(x / 150.0) ** 2 + (y / 100.0) ** 2 <= 1.0] = 0.0
    hu[((x + 60.0) / 45.0) ** 2 + (y / 50.0) ** 2 + (z / 90.0) ** 2 <= 1.0] = -800.0
    hu[(x - 70.0) ** 2 + (y - 20.0) ** 2 <= 15.0 ** 2] = 1200.0
    return hu


def _slab_with_plate(voxel_mm: float):
    """A rectangular water slab, 400 x 180 x 300 mm (lateral x AP x long), with a 10 mm cortical-bone plate."""
    shape = tuple(int(np.ceil(s / voxel_mm)) + 2 for s in (400.0, 180.0, 300.0))
    x, y, z = np.meshgrid(*_axes(shape, voxel_mm), indexing="ij")
    hu = np.full(shape, AIR_HU)
    hu[(np.abs(x) <= 200.0) & (np.abs(y) <= 90.0) & (np.abs(z) <= 150.0)] = 10.0
    hu[(np.abs(x) <= 120.0) & (np.abs(y - 40.0) <= 5.0) & (np.abs(z) <= 100.0)] = 1500.0
    return hu


def _cylinder_with_inserts(voxel_mm: float):
    """A 320 mm water cylinder lying along z with fat, bone and air inserts (a CT-phantom-like body)."""
    shape, (x, y, z) = _elliptic_grid(160.0, 160.0, 200.0, voxel_mm)
    hu = np.full(shape, AIR_HU)
    hu[x ** 2 + y ** 2 <= 160.0 ** 2] = 0.0
    for (cx, cy), value in (((80.0, 0.0), -100.0), ((-80.0, 0.0), 800.0), ((0.0, 80.0), -1000.0),
                            ((0.0, -80.0), 300.0)):
        hu[(x - cx) ** 2 + (y - cy) ** 2 <= 25.0 ** 2] = value
    return hu


def _obese_trunk(voxel_mm: float):
    """A large trunk, 480 x 340 mm, with 60 mm of fat around soft tissue and a spine."""
    shape, (x, y, z) = _elliptic_grid(240.0, 170.0, 400.0, voxel_mm)
    hu = np.full(shape, AIR_HU)
    hu[(x / 240.0) ** 2 + (y / 170.0) ** 2 <= 1.0] = -95.0
    hu[(x / 180.0) ** 2 + (y / 110.0) ** 2 <= 1.0] = 45.0
    hu[x ** 2 + (y - 80.0) ** 2 <= 18.0 ** 2] = 600.0
    return hu


def _child_chest(voxel_mm: float):
    """A child's chest, 180 x 130 mm, lungs and a spine, short (the field covers all of it)."""
    shape, (x, y, z) = _elliptic_grid(90.0, 65.0, 160.0, voxel_mm)
    hu = np.full(shape, AIR_HU)
    hu[(x / 90.0) ** 2 + (y / 65.0) ** 2 <= 1.0] = 35.0
    for side in (-1.0, 1.0):
        hu[((x - side * 40.0) / 30.0) ** 2 + (y / 40.0) ** 2 + (z / 60.0) ** 2 <= 1.0] = -820.0
    hu[x ** 2 + (y - 45.0) ** 2 <= 9.0 ** 2] = 700.0
    return hu


HELDOUT_BODIES = {"water ellipse, lung and rod": _water_ellipse_lung_rod, "slab with bone plate": _slab_with_plate,
                  "cylinder with inserts": _cylinder_with_inserts, "large trunk": _obese_trunk,
                  "child chest": _child_chest}


@lru_cache(maxsize=4)
def heldout_body(name: str, voxel_mm: float = 4.0):
    """One of ``HELDOUT_BODIES`` as a phantom (HU -> default calibration), centred on the origin."""
    if name not in HELDOUT_BODIES:
        raise XsimInputError(f"heldout body must be one of {sorted(HELDOUT_BODIES)}, got {name!r}")
    return _hu_phantom(HELDOUT_BODIES[name](voxel_mm), voxel_mm, f"held-out body: {name}, {voxel_mm:g} mm")


@lru_cache(maxsize=2)
def ct_phantom(path: str, voxel_mm: float = 3.0):
    """A CT file (:func:`xsim.load_ct`) as a phantom for the scatter studies: HU averaged over blocks of about
    ``voxel_mm`` (scatter depends on the gross anatomy; the Monte Carlo's time on the voxel count), cropped to
    the voxels above -900 HU, default calibration, centred on the origin (the CT's own axes kept)."""
    from ..volume import Volume, load_ct

    volume = load_ct(path)
    factors = [max(1, int(round(voxel_mm / s))) for s in volume.spacing_mm]
    hu = volume.hu
    shape = [n // f for n, f in zip(hu.shape, factors)]
    hu = hu[:shape[0] * factors[0], :shape[1] * factors[1], :shape[2] * factors[2]]
    hu = hu.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2]).mean(axis=(1, 3, 5))
    inside = np.argwhere(hu > -900.0)
    lo, hi = inside.min(axis=0), inside.max(axis=0) + 1
    hu = hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    affine = volume.affine.copy()
    affine[:3, :3] = affine[:3, :3] * np.array(factors)[None, :]
    centre = affine[:3, :3] @ ((np.array(hu.shape) - 1) / 2.0)
    affine[:3, 3] = -centre
    phantom = Volume.from_array(np.maximum(hu, -1000.0), affine).to_phantom()
    phantom.source = f"CT {path}, blocks of {factors} voxels"
    return phantom
