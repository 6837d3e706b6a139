"""Tests for xsim.phantoms: analytic shapes and phantoms, seeded anthropomorphic phantoms."""
import math

import numpy as np
import pytest

from xsim import phantoms
from xsim.checks import XsimInputError
from xsim.phantoms import Box, Cylinder, Ellipsoid, _Builder
from xsim.physics.materials import material

ANATOMY = ["thorax", "abdomen", "pelvis", "head"]


@pytest.fixture(scope="module")
def built():
    """Each anthropomorphic phantom at seeds 0 (twice), 1, and seed 0 with vessels and tool."""
    out = {}
    for name in ANATOMY:
        make = getattr(phantoms, name)
        out[name] = {"0": make(seed=0), "0 again": make(seed=0), "1": make(seed=1),
                     "full": make(seed=0, vessels=True, tool=True)}
    return out


# --- analytic shapes ----------------------------------------------------------------------------


def test_slab_thickness_is_exact():
    for axis, k in (("x", 0), ("y", 1), ("z", 2)):
        ph = phantoms.slab(thickness_mm=30.0, size_mm=(40.0, 20.0), voxel_mm=2.0, axis=axis)
        assert ph.shape[k] * ph.spacing_mm[k] == 30.0
        bounds = ph.world_bounds_mm()
        assert bounds[1, k] - bounds[0, k] == pytest.approx(30.0, abs=1e-12)
        assert ph.material_names == ["water"] and (ph.density_g_cm3 == 1.0).all()
        box = ph.shapes[0]
        start, end = np.zeros(3), np.zeros(3)
        start[k], end[k] = -100.0, 100.0
        assert box.intersection_mm(start, end) == pytest.approx(30.0, abs=1e-12)
    with pytest.raises(XsimInputError, match="whole multiple"):
        phantoms.slab(thickness_mm=25.0, voxel_mm=2.0)
    with pytest.raises(XsimInputError, match="axis"):
        phantoms.slab(axis="w")


def test_water_cylinder_volume():
    ph = phantoms.water_cylinder(diameter_mm=200.0, length_mm=200.0, voxel_mm=2.0)
    water = ph.material_names.index("water")
    volume_mm3 = (ph.material_index == water).sum() * ph.spacing_mm.prod()
    exact = math.pi * 100.0**2 * 200.0
    assert abs(volume_mm3 / exact - 1) < 0.02  # measured +0.08 %
    # exactly length / voxel slices hold water
    slices = (ph.material_index == water).any(axis=(0, 1)).sum()
    assert slices * 2.0 == 200.0
    cyl = ph.shapes[0]
    assert isinstance(cyl, Cylinder) and cyl.radius_mm == 100.0 and cyl.axis == "z"


def test_ellipsoid_and_sphere():
    ph = phantoms.ellipsoid(radii_mm=(30.0, 20.0, 40.0), center_mm=(5.0, -10.0, 15.0), voxel_mm=1.0)
    shp = ph.shapes[0]
    inside = ph.material_index == ph.material_names.index("water")
    assert abs(inside.sum() / (4 / 3 * math.pi * 30 * 20 * 40) - 1) < 0.02
    # the voxelisation is the shape's contains() at voxel centres
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in ph.shape], indexing="ij"), axis=-1)
    np.testing.assert_array_equal(inside, shp.contains(ph.voxel_to_world(ijk)))
    centre = np.array(shp.center_mm)
    assert shp.intersection_mm(centre - (0, 0, 100), centre + (0, 0, 100)) == pytest.approx(80.0)
    sph = phantoms.sphere(radius_mm=10.0, voxel_mm=0.5).shapes[0]
    assert sph.radii_mm == (10.0, 10.0, 10.0)


@pytest.mark.parametrize("shape", [
    Ellipsoid((1.0, -2.0, 3.0), (30.0, 20.0, 45.0), "water"),
    Box((1.0, -2.0, 3.0), (30.0, 20.0, 45.0), "water"),
    Cylinder((1.0, -2.0, 3.0), 25.0, 40.0, "y", "water"),
])
def test_intersection_length_matches_sampling(shape):
    """Closed-form chord lengths against dense sampling of contains() along each segment."""
    rng = np.random.default_rng(11)
    centre = np.array([1.0, -2.0, 3.0])
    starts = centre + rng.uniform(-80, 80, size=(200, 3))
    ends = 2 * centre - starts + rng.uniform(-30, 30, size=(200, 3))  # mostly through the shape
    ends[:20, 1:] = starts[:20, 1:]  # segments parallel to x: zero direction components
    ends[20:40] = starts[20:40] + (ends[20:40] - starts[20:40]) * 0.05  # short ones, often fully inside
    exact = shape.intersection_mm(starts, ends)
    t = (np.arange(20000) + 0.5) / 20000
    pts = starts[:, None, :] + t[None, :, None] * (ends - starts)[:, None, :]
    sampled = shape.contains(pts).mean(axis=1) * np.linalg.norm(ends - starts, axis=1)
    # sampling resolves the entry and exit points to one step (length / 20000) each
    step_mm = np.linalg.norm(ends - starts, axis=1) / 20000
    assert (np.abs(exact - sampled) <= 2 * step_mm + 1e-9).all()
    assert (exact > 0).sum() > 100


def test_thin_tubes_keep_their_mass_per_length():
    """A 0.3 mm-radius wire on a 1 mm grid: widened, lighter, same mass per unit length."""
    b = _Builder((80, 80, 80), 1.0)
    a, e = np.array([-30.0, -20.0, -25.0]), np.array([28.0, 25.0, 30.0])
    b.tube("stainless steel", [a, e], 0.3)
    steel = b.index == b._material("stainless steel")
    mass_g = b.density[steel].sum() * 1e-3  # voxel 1 mm^3 = 1e-3 cm^3
    exact_g = 8.0 * math.pi * 0.03**2 * np.linalg.norm(e - a) / 10  # rho pi r^2 L, cm
    # plus the two hemispherical end caps of the widened capsule (radius 0.75 mm, reduced density)
    caps_g = 8.0 * (0.3 / 0.75) ** 2 * 4 / 3 * math.pi * 0.075**3
    assert mass_g == pytest.approx(exact_g + caps_g, rel=0.05)  # lattice counting noise
    voxels_per_mm = steel.sum() / np.linalg.norm(e - a)
    assert voxels_per_mm > 1.0  # never broken: at least a voxel per mm along the wire


def test_trabecular_bone_model():
    bone = phantoms.trabecular_bone()
    assert bone.density_g_cm3 == pytest.approx(1.18)
    # ICRU Report 44 (1989), skeleton-spongiosa: Ca 7.4 % by mass at 1.18 g/cm^3; the
    # cortical + marrow mixture model is expected within 1.5 points of it
    assert bone.composition["Ca"] == pytest.approx(0.074, abs=0.015)


# --- anthropomorphic phantoms --------------------------------------------------------------------


@pytest.mark.parametrize("name", ANATOMY)
def test_seeds_reproduce_and_differ(built, name):
    a, again, other = built[name]["0"], built[name]["0 again"], built[name]["1"]
    np.testing.assert_array_equal(a.material_index, again.material_index)
    np.testing.assert_array_equal(a.density_g_cm3, again.density_g_cm3)
    assert a.landmarks.keys() == again.landmarks.keys()
    assert all(np.array_equal(a.landmarks[k], again.landmarks[k]) for k in a.landmarks)
    changed = (a.material_index != other.material_index).mean()
    assert changed > 0.01, changed


# Volume fraction of the body (non-air voxels) taken by bone and by lung. Expected ranges come
# from adult anatomy: lungs of 3-6 L in a chest crop of ~15-20 L; bone ~5-8 % of the trunk
# volume (ICRP Publication 89: skeleton 10.5 kg of 73 kg at ~1.4 g/cm^3), more in the head,
# whose skull is ~0.6-0.9 L of ~4 L. Measured over seeds 0-7: thorax bone 4.8-6.3 %, lung
# 17-26 %; abdomen bone 2.1-3.0 %; pelvis bone 4.2-5.9 %; head bone 15-17 %.
FRACTIONS = {
    "thorax": {"bone": (0.02, 0.12), "lung": (0.10, 0.40)},
    "abdomen": {"bone": (0.01, 0.08), "lung": (0.0, 0.0)},
    "pelvis": {"bone": (0.02, 0.12), "lung": (0.0, 0.0)},
    "head": {"bone": (0.08, 0.30), "lung": (0.0, 0.0)},
}


@pytest.mark.parametrize("name", ANATOMY)
def test_materials_and_volume_fractions(built, name):
    ph = built[name]["0"]
    f = ph.material_fractions()
    for needed in ("air", "soft tissue", "adipose", "muscle", "cortical bone", "trabecular bone"):
        assert f.get(needed, 0.0) > 0, needed
    body = 1.0 - f["air"]
    bone = (f["cortical bone"] + f["trabecular bone"]) / body
    lung = f.get("lung", 0.0) / body
    lo, hi = FRACTIONS[name]["bone"]
    assert lo <= bone <= hi, bone
    lo, hi = FRACTIONS[name]["lung"]
    assert lo <= lung <= hi, lung
    cortical = ph.material_index == ph.material_names.index("cortical bone")
    trabecular = ph.material_index == ph.material_names.index("trabecular bone")
    assert (ph.density_g_cm3[trabecular] < ph.density_g_cm3[cortical].min()).all()
    assert "iodine contrast" not in f and "stainless steel" not in f and "tool_tip" not in ph.landmarks


@pytest.mark.parametrize("name", ANATOMY)
def test_vessels_and_tool(built, name):
    ph = built[name]["full"]
    names = ph.material_names
    assert (ph.material_index == names.index("iodine contrast")).sum() > 100
    steel = np.argwhere(ph.material_index == names.index("stainless steel"))
    assert len(steel) > 20
    tip = ph.landmarks["tool_tip"]
    lo, hi = ph.world_bounds_mm()
    assert (tip > lo).all() and (tip < hi).all()
    nearest_mm = np.linalg.norm(ph.voxel_to_world(steel) - tip, axis=1).min()
    assert nearest_mm < 1.5 * ph.spacing_mm.max()
    # same anatomy with and without the extras: only vessel and wire voxels change
    plain = built[name]["0"]
    for key in plain.landmarks:
        np.testing.assert_array_equal(ph.landmarks[key], plain.landmarks[key])
    as_full = np.array([names.index(n) if n in names else 255 for n in plain.material_names])
    changed = ph.material_index != as_full[plain.material_index]
    extras = [names.index("iodine contrast"), names.index("stainless steel")]
    assert np.isin(ph.material_index[changed], extras).all()


def test_thorax_anatomy(built):
    ph = built["thorax"]["0"]
    lm = ph.landmarks
    left, right = lm["left_lung_center"], lm["right_lung_center"]
    assert left[0] > 0 > right[0]  # LPS: the left lung at +x
    assert right[0] < lm["carina"][0] < left[0]
    assert lm["spine_center"][1] > lm["carina"][1]  # spine posterior to the airway
    assert lm["heart_center"][0] > 0 and lm["heart_center"][1] < lm["spine_center"][1]
    assert lm["aortic_arch"][2] > lm["aortic_root"][2]
    lung = ph.material_names.index("lung")
    for centre in (left, right):
        ijk = np.round(ph.world_to_voxel(centre)).astype(int)
        assert ph.material_index[tuple(ijk)] == lung
    rho = ph.density_g_cm3[ph.material_index == lung]
    assert 0.2 < rho.min() and rho.max() < 0.32  # inflated lung, ICRP 23: ~0.26 g/cm^3


def test_head_and_pelvis_landmarks(built):
    head = built["head"]["0"].landmarks
    assert head["left_orbit"][0] > 0 > head["right_orbit"][0]
    assert head["left_orbit"][1] < head["skull_center"][1]  # orbits anterior (-y)
    pelvis = built["pelvis"]["0"].landmarks
    assert pelvis["left_femoral_head"][0] > 0 > pelvis["right_femoral_head"][0]
    assert pelvis["pubic_symphysis"][1] < pelvis["sacrum"][1]


def test_anthropomorphic_input_checks():
    with pytest.raises(XsimInputError, match="seed"):
        phantoms.thorax(seed=1.5)
    with pytest.raises(XsimInputError, match="voxel_mm"):
        phantoms.abdomen(voxel_mm=0.0)
    with pytest.raises(XsimInputError, match="fov_mm"):
        phantoms.head(fov_mm=(100.0, 100.0))


def test_custom_grid():
    ph = phantoms.thorax(seed=3, voxel_mm=4.0, fov_mm=(400.0, 320.0, 200.0))
    assert ph.shape == (100, 80, 50)
    np.testing.assert_allclose(ph.spacing_mm, 4.0)
    np.testing.assert_allclose(ph.world_bounds_mm(), [[-200, -160, -100], [200, 160, 100]])
    assert material("lung").name in ph.material_names
