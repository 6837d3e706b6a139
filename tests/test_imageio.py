"""Image writers: PNG 8/16 bit, float32 TIFF with its description, HDF5 round trip; no temporary files left."""
import json

import h5py
import numpy as np
import pytest
from PIL import Image

import xsim
from xsim.checks import XsimInputError
from xsim.imageio import read_rendering_group, save_rendering, write_png, write_tiff
from xsim.labels import LabelSpec
from xsim.rendering import render


def test_png_8_and_16_bit(tmp_path):
    ramp = np.tile(np.linspace(0.0, 1.0, 256), (4, 1))
    for bits, top in ((8, 255), (16, 65535)):
        path = write_png(tmp_path / f"ramp{bits}.png", ramp, bits=bits)
        back = np.asarray(Image.open(path)).astype(float)
        assert back.max() == top and back.min() == 0
        np.testing.assert_allclose(back / top, ramp, atol=0.5 / top + 1e-12)
    with pytest.raises(XsimInputError, match="bits"):
        write_png(tmp_path / "x.png", ramp, bits=12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ramp16.png", "ramp8.png"]


def test_float_tiff_keeps_values_and_description(tmp_path):
    image = np.random.default_rng(0).normal(1000.0, 50.0, (20, 30)).astype(np.float32)
    path = write_tiff(tmp_path / "raw.tiff", image, {"kvp": 80})
    with Image.open(path) as im:
        assert im.mode == "F"
        np.testing.assert_array_equal(np.asarray(im), image)
        assert json.loads(im.tag_v2[270]) == {"kvp": 80}


def test_rendering_round_trip(tmp_path):
    phantom = xsim.phantoms.thorax(seed=1, voxel_mm=6.0, vessels=True)
    camera = xsim.CArm(detector_shape=(48, 64), pixel_mm=4.0).view(10.0, 5.0)
    r = render(phantom, camera, xsim.Spectrum.tungsten(80.0, bin_keV=2.0), scatter="none", seed=4,
               labels=LabelSpec(mask_materials=["iodine contrast"]))
    paths = save_rendering(r, tmp_path / "sub" / "img", bits=16)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["img.h5", "img.png", "img.tiff"]
    with h5py.File(paths["h5"], "r") as f:
        back = read_rendering_group(f)
    np.testing.assert_array_equal(back["image"], r.image)
    np.testing.assert_array_equal(back["masks"]["iodine contrast"], r.labels["masks"]["iodine contrast"])
    np.testing.assert_array_equal(back["camera"].matrix, camera.matrix)
    assert back["landmarks"] == json.loads(json.dumps(r.labels["landmarks"]))
    assert back["settings"]["seed"] == 4 and back["settings"]["camera"]["detector_shape"] == [48, 64]
    assert np.asarray(Image.open(paths["png"])).dtype == np.uint16
