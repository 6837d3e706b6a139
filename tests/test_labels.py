"""Labels: projected landmarks land where their markers appear in the image; masks cover every projected
label voxel and nothing far from it; points files; phantom material masks."""
import json

import numpy as np
import pytest

import xsim
from xsim.checks import XsimInputError
from xsim.labels import LabelSpec, LabelVolume, make_labels, project_landmarks, project_masks, read_points
from xsim.readout import Readout
from xsim.rendering import render

VOXEL_MM = 4.0
SHAPE = (40, 36, 32)


def _water_block(marker_ijk=None):
    """A water block (4 mm voxels, centred on the origin) with an optional steel voxel marker."""
    index = np.ones(SHAPE, np.uint8)
    if marker_ijk is not None:
        index[marker_ijk] = 2
    affine = np.diag([VOXEL_MM] * 3 + [1.0])
    affine[:3, 3] = -VOXEL_MM * (np.array(SHAPE) - 1) / 2
    return xsim.Phantom.from_labels(index, ["air", "water", "stainless steel"], affine)


def test_landmark_at_a_voxel_projects_onto_its_marker():
    ijk = (27, 10, 20)
    phantom = _water_block(ijk)
    landmark = phantom.voxel_to_world(np.array(ijk, dtype=float))
    camera = xsim.CArm(detector_shape=(96, 96), pixel_mm=2.0).view(25.0, -15.0)
    spectrum = xsim.Spectrum.tungsten(80.0, bin_keV=2.0)
    kw = dict(mas=1.0, scatter="none", noise=False, readout=Readout.ideal(),
              labels=LabelSpec(points={"marker": landmark}))
    with_marker = render(phantom, camera, spectrum, **kw)
    without = render(_water_block(), camera, spectrum, **kw)
    excess = with_marker.log - without.log  # the marker's own attenuation, >= 0
    rows, cols = np.indices(excess.shape)
    centroid = np.array([np.sum(excess * cols), np.sum(excess * rows)]) / excess.sum()
    darkest = np.unravel_index(np.argmax(excess), excess.shape)
    uv = np.array(with_marker.labels["landmarks"]["marker"]["uv"])
    assert with_marker.labels["landmarks"]["marker"]["inside"]
    assert np.abs(np.array(darkest[::-1]) - uv).max() <= 1.0  # brightest-attenuation pixel
    assert np.abs(centroid - uv).max() < 0.25  # sub-pixel: the marker's attenuation centroid


def test_masks_cover_the_projected_label_voxels():
    labels = np.zeros(SHAPE, np.int16)
    labels[10:16, 8:12, 5:9] = 3
    labels[25:27, 20:30, 20:22] = 7
    affine = _water_block().affine
    volume = LabelVolume(labels, affine, {3: "box", 7: "slab"})
    camera = xsim.CArm(detector_shape=(80, 80), pixel_mm=2.5).view(-20.0, 10.0)
    masks = project_masks(volume, camera)
    assert set(masks) == {"box", "slab"}
    for value, name in volume.names.items():
        centres = volume.voxel_to_world(np.argwhere(labels == value).astype(float))
        uv = np.rint(camera.project_points(centres)).astype(int)
        assert masks[name][uv[:, 1], uv[:, 0]].all()  # every voxel centre's pixel is in the mask
        # and no mask pixel lies farther than one projected voxel diagonal from a voxel centre
        mag_px = camera.sdd_mm / 760.0 * VOXEL_MM * np.sqrt(3) / 2.5 + 1.0
        rows, cols = np.nonzero(masks[name])
        d = np.min(np.hypot(cols[:, None] - uv[None, :, 0], rows[:, None] - uv[None, :, 1]), axis=1)
        assert d.max() <= mag_px


def test_phantom_material_masks_and_landmarks():
    phantom = xsim.phantoms.thorax(seed=2, voxel_mm=6.0, vessels=True, tool=True)
    camera = xsim.CArm(detector_shape=(64, 64), pixel_mm=4.0).view(0.0, 0.0)
    out = make_labels(LabelSpec(mask_materials=["iodine contrast"]), phantom, camera)
    assert set(out["landmarks"]) == set(phantom.landmarks)
    assert out["masks"]["iodine contrast"].any() and not out["masks"]["iodine contrast"].all()
    with pytest.raises(XsimInputError, match="not in the phantom"):
        make_labels(LabelSpec(mask_materials=["unobtainium"]), phantom, camera)
    # render() reads the same masks from its own projection's line integrals: identical
    rendered = render(phantom, camera, xsim.Spectrum.tungsten(80.0, bin_keV=2.0), scatter="none",
                      labels=LabelSpec(mask_materials=["iodine contrast"]))
    np.testing.assert_array_equal(rendered.labels["masks"]["iodine contrast"], out["masks"]["iodine contrast"])


def test_points_files(tmp_path):
    csv_file = tmp_path / "points.csv"
    csv_file.write_text("name,x_mm,y_mm,z_mm\ntip,1.5,-2,3\nbase,0,0,0\n")
    json_file = tmp_path / "points.json"
    json_file.write_text(json.dumps({"tip": [1.5, -2, 3]}))
    assert read_points(csv_file)["tip"].tolist() == [1.5, -2.0, 3.0]
    assert read_points(json_file)["tip"].tolist() == [1.5, -2.0, 3.0]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,x,y,z\ntip,1,2,3\n")
    with pytest.raises(XsimInputError, match="lacks columns"):
        read_points(bad)
    worse = tmp_path / "worse.csv"
    worse.write_text("name,x_mm,y_mm,z_mm\ntip,1,two,3\n")
    with pytest.raises(XsimInputError, match="line 2"):
        read_points(worse)
    with pytest.raises(XsimInputError, match="does not exist"):
        read_points(tmp_path / "missing.csv")


def test_points_behind_the_source_or_off_the_detector_are_flagged():
    camera = xsim.CArm(detector_shape=(32, 32), pixel_mm=1.0).view(0.0, 0.0)
    out = project_landmarks({"centre": [0, 0, 0], "far_left": [500, 0, 0], "behind": [0, 2000, 0]}, camera)
    assert out["centre"]["inside"] and out["centre"]["uv"] == pytest.approx([15.5, 15.5])
    assert not out["far_left"]["inside"]
    assert not out["behind"]["inside"] and np.isnan(out["behind"]["uv"]).all()
