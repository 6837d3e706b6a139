"""Render pipeline: determinism, components and settings, scatter modes, CT input, CLI commands, bad input."""
import numpy as np
import pytest
from PIL import Image

import xsim
from xsim import cli
from xsim.checks import XsimInputError
from xsim.readout import Readout
from xsim.rendering import load_phantom, render

SPECTRUM = xsim.Spectrum.tungsten(80.0, bin_keV=2.0)


@pytest.fixture(scope="module")
def phantom():
    return xsim.phantoms.thorax(seed=3, voxel_mm=6.0, vessels=True, tool=True)


@pytest.fixture(scope="module")
def camera():
    return xsim.CArm(detector_shape=(64, 64), pixel_mm=4.0).view(20.0, 10.0)


def test_same_seed_same_image(phantom, camera):
    a = render(phantom, camera, SPECTRUM, mas=0.5, scatter="none", seed=11)
    b = render(phantom, camera, SPECTRUM, mas=0.5, scatter="none", seed=11)
    c = render(phantom, camera, SPECTRUM, mas=0.5, scatter="none", seed=12)
    assert np.array_equal(a.image, b.image) and not np.array_equal(a.image, c.image)


def test_noise_free_image_is_the_blurred_expected_signal(phantom, camera):
    r = render(phantom, camera, SPECTRUM, mas=2.0, scatter="none", noise=False, readout=Readout.ideal())
    np.testing.assert_allclose(r.image, r.primary, rtol=1e-5)
    np.testing.assert_allclose(r.transmission, r.primary / r.flat_field, rtol=1e-5)
    assert (r.transmission <= 1.0 + 1e-6).all() and r.transmission.min() < 0.2
    assert set(r.labels["landmarks"]) == set(phantom.landmarks)
    s = r.settings
    assert s["mas"] == 2.0 and s["scatter"] == "none" and s["spectrum"]["kvp"] == 80.0
    assert xsim.Camera.from_dict({k: s["camera"][k] for k in ("format", "format_version", "matrix",
                                  "detector_shape", "sdd_mm")}).matrix.tolist() == camera.matrix.tolist()
    assert s["camera"]["lao_deg"] == pytest.approx(20.0) and s["camera"]["cran_deg"] == pytest.approx(10.0)


def test_mean_image_scales_with_mas(phantom, camera):
    low = render(phantom, camera, SPECTRUM, mas=0.1, scatter="none", noise=False)
    high = render(phantom, camera, SPECTRUM, mas=1.0, scatter="none", noise=False)
    np.testing.assert_allclose(high.image, 10.0 * low.image, rtol=1e-5)


def test_mc_scatter_adds_signal(phantom, camera):
    r = render(phantom, camera, SPECTRUM, scatter="mc", noise=False, mc_photons=20_000, seed=1)
    assert r.scatter.sum() > 0
    np.testing.assert_allclose(r.image, Readout().blur(r.primary.astype(float) + r.scatter, camera.pixel_mm),
                               rtol=1e-4)


def test_cnn_scatter_uses_the_shipped_model(phantom, camera):
    r = render(phantom, camera, SPECTRUM, scatter="cnn", noise=False)  # details: tests/test_scatter.py
    assert r.settings["scatter"] == "cnn" and np.all(np.isfinite(r.scatter)) and r.scatter.mean() > 0


def test_grid_lowers_primary_by_its_transmission_and_scatter_more(phantom, camera):
    grid = xsim.AntiScatterGrid(ratio=10, strips_per_cm=70)
    bare = render(phantom, camera, SPECTRUM, scatter="cnn", noise=False)
    behind = render(phantom, camera, SPECTRUM, scatter="cnn", noise=False, grid=grid)
    tp = behind.settings["grid"]["primary_transmission"]
    # the detector-weighted mean of the grid's own transmission over the beam's energies
    energies = SPECTRUM.energies_keV[SPECTRUM.fluence > 0]
    t = [grid.primary_transmission(float(e)) for e in energies]
    assert min(t) <= tp <= max(t) and 0.5 < tp < 0.95
    np.testing.assert_allclose(behind.primary, tp * bare.primary, rtol=1e-5)
    np.testing.assert_allclose(behind.flat_field, tp * bare.flat_field, rtol=1e-5)
    # a ratio-10 grid removes most scatter: the scatter-to-primary ratio falls severalfold (CNN, told the grid)
    assert behind.scatter.sum() / behind.primary.sum() < 0.5 * bare.scatter.sum() / bare.primary.sum()
    with pytest.raises(XsimInputError, match="grid"):
        render(phantom, camera, SPECTRUM, scatter="none", grid="ratio 10")


def test_ct_volume_input(camera):
    hu = np.full((30, 30, 30), -1000.0, np.float32)
    hu[8:22, 8:22, 8:22] = 0.0
    hu[13:17, 13:17, 13:17] = 1200.0
    affine = np.diag([5.0, 5.0, 5.0, 1.0])
    affine[:3, 3] = -72.5
    r = render(xsim.Volume.from_array(hu, affine), camera, SPECTRUM, scatter="none", noise=False)
    assert r.transmission.min() < 0.6 and r.transmission.max() > 0.99


def test_bad_inputs(phantom, camera):
    with pytest.raises(XsimInputError, match="mas"):
        render(phantom, camera, SPECTRUM, mas=0.0, scatter="none")
    with pytest.raises(XsimInputError, match="scatter"):
        render(phantom, camera, SPECTRUM, scatter="magic")
    with pytest.raises(XsimInputError, match="Volume .* or a Phantom"):
        render(np.zeros((3, 3, 3)), camera, SPECTRUM, scatter="none")
    with pytest.raises(XsimInputError, match="kvp"):
        xsim.Spectrum.tungsten(200.0)


def test_load_phantom_names_and_errors(tmp_path):
    p = load_phantom("thorax:seed=4,voxel_mm=8,vessels=true")
    assert "iodine contrast" in p.material_names
    path = p.save(tmp_path / "p.h5")
    assert load_phantom(path).shape == p.shape
    with pytest.raises(XsimInputError, match="did you mean 'voxel_mm'"):
        load_phantom("thorax:voxelmm=8")
    with pytest.raises(XsimInputError, match="true or false"):
        load_phantom("thorax:tool=maybe")
    with pytest.raises(XsimInputError, match="neither"):
        load_phantom(tmp_path / "ct.nii.gz")


def test_cli_render_and_demo(tmp_path, capsys):
    code = cli.main(["render", "thorax:seed=1,voxel_mm=6", "--lao", "30", "--kvp", "70", "--mas", "0.5",
                     "--shape", "64", "64", "--pixel-mm", "4", "--out", str(tmp_path / "r")])
    assert code == 0
    assert {p.name for p in tmp_path.iterdir()} == {"r.png", "r.tiff", "r.h5"}
    assert cli.main(["render", "thorax", "--kvp", "20", "--out", str(tmp_path / "bad")]) == 2
    assert "kvp must lie in [40, 150]" in capsys.readouterr().err
    assert cli.main(["demo", "--out", str(tmp_path / "demo")]) == 0
    png = np.asarray(Image.open(tmp_path / "demo" / "demo_thorax.png"))
    assert png.shape == (512, 512) and png.dtype == np.uint8 and png.std() > 20  # a windowed, visible image
