"""Tests of the learned scatter path: xsim.scatter (model, predict), xsim.scatter.data (Monte Carlo dataset),
xsim.scatter.train (loss, deterministic training) and xsim.scatter.evaluate (metrics).

The shipped model is checked against tests/data/scatter_heldout/, Monte Carlo cases of phantom seeds the model
never saw (provenance: tests/data/scatter_heldout/PROVENANCE.md).
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from xsim import phantoms
from xsim.checks import XsimInputError
from xsim.geometry import CArm
from xsim.physics.spectra import Spectrum
from xsim.projector import project
from xsim.scatter import DEFAULT_MODEL, N_INPUTS, WORK_SHAPE, ScatterModel, load_model, predict, predict_fraction
from xsim.scatter.data import load_dataset, make_dataset, plan_cases
from xsim.scatter.evaluate import case_errors, mc_seconds_at_noise
from xsim.scatter.train import fit, loss_weights, noise_weighted_loss

HELDOUT = Path(__file__).parent / "data" / "scatter_heldout"


def _synthetic(n=8, seed=0):
    """Smooth random inputs and a smooth positive target that depends on them (a learnable map)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_INPUTS, *WORK_SHAPE)).astype(np.float32)
    x[:, :2] = gaussian_filter(x[:, :2], (0, 0, 5, 5)) * 5
    x[:, 2:] = rng.uniform(-1, 1, size=(n, 2, 1, 1))
    f = 0.03 * np.exp(gaussian_filter(x[:, 0], (0, 6, 6)) + 0.3 * x[:, 2])
    std = 0.05 * f
    return x, (f + std * rng.normal(size=f.shape)).astype(np.float32), std.astype(np.float32)


def _loss(model, x, f, std):
    with torch.no_grad():
        return float(noise_weighted_loss(model(torch.as_tensor(x)), torch.as_tensor(f),
                                         torch.as_tensor(loss_weights(f, std))))


def test_training_reduces_loss_and_is_deterministic():
    x, f, std = _synthetic(n=6)
    kwargs = dict(epochs=3, batch_size=3, width=8, depth=2, seed=3, threads=1, progress=False)
    model, history = fit(x, f, std, **kwargs)
    torch.manual_seed(3)
    untrained = ScatterModel(width=8, depth=2)
    with torch.no_grad():
        untrained.head.bias.fill_(float(np.log(f.mean())))  # the same start as fit's
    assert _loss(model, x, f, std) < 0.5 * _loss(untrained, x, f, std)
    assert history["train_loss"][-1] < history["train_loss"][0]
    again, history_again = fit(x, f, std, **kwargs)
    assert history_again["train_loss"] == history["train_loss"]
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    other, _ = fit(x, f, std, **{**kwargs, "seed": 4, "epochs": 1})
    assert not torch.equal(other.head.weight, model.head.weight)


def test_loss_is_inverse_variance_weighted():
    f = np.full((1, 8, 8), 0.1, np.float32)
    std = np.full((1, 8, 8), 0.01, np.float32)
    w = loss_weights(f, std)
    # smoothing a uniform variance leaves it unchanged; floor = (1 % of 0.1)^2
    np.testing.assert_allclose(w, 1 / (0.01**2 + 0.001**2), rtol=1e-5)
    pred = torch.full((1, 1, 8, 8), float(np.log(0.12)))
    loss = float(noise_weighted_loss(pred, torch.as_tensor(f), torch.as_tensor(w)))
    assert loss == pytest.approx(0.02**2 / (0.01**2 + 0.001**2), rel=1e-5)


def test_make_dataset_from_monte_carlo_resumes_and_trains(tmp_path):
    cases = plan_cases([7], kinds=["head"], views=2, photons=1e5, seed=5, split="unit")
    assert cases == plan_cases([7], kinds=["head"], views=2, photons=1e5, seed=5, split="unit")
    first = make_dataset(tmp_path, cases[:1], workers=0, progress=False)
    assert first["simulated"] == 1 and not first["failed"]
    with pytest.raises(XsimInputError, match="another scatter dataset"):
        make_dataset(tmp_path, cases, workers=0, progress=False)
    data = load_dataset(tmp_path)
    assert data["features"].shape == (1, N_INPUTS, *WORK_SHAPE)
    assert data["fraction"].shape == data["fraction_std"].shape == (1, *WORK_SHAPE)
    assert np.all(data["fraction"] >= 0) and data["fraction"].mean() > 0
    again = make_dataset(tmp_path, cases[:1], workers=0, progress=False)
    assert again["done"] == 1 and again["simulated"] == 0
    # the Monte Carlo primary agrees with the ray cast it is paired with (same flat field), within its noise
    ratio = data["mc_primary_fraction"].mean() / data["transmission"].mean()
    assert ratio == pytest.approx(1.0, abs=0.05)
    _, history = fit(data["features"], data["fraction"], data["fraction_std"], epochs=3, batch_size=1,
                     width=4, depth=1, threads=1, progress=False, augment=False)
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_plan_split_and_checks():
    train = plan_cases(range(3), views=2)
    test = plan_cases([100], views=2, split="test")
    assert not {c["phantom_seed"] for c in train} & {c["phantom_seed"] for c in test}
    assert all(60 <= c["kvp"] <= 120 for c in train + test)
    with pytest.raises(XsimInputError, match="kind"):
        plan_cases([0], kinds=["knee"])
    with pytest.raises(XsimInputError, match="views"):
        plan_cases([0], views=0)


def test_plan_kvp_range_and_values():
    low = plan_cases(range(20, 30), views=1, kvp_range=(60, 85))
    assert all(60 <= c["kvp"] <= 85 for c in low) and max(c["kvp"] for c in low) > 75
    # kvp_values replace the drawn voltages in plan order and leave every other setting as drawn
    drawn = plan_cases([100, 101], views=1, seed=2)
    fixed = plan_cases([100, 101], views=1, seed=2, kvp_values=[60, 120, 80])
    assert [c["kvp"] for c in fixed] == [60.0, 120.0, 80.0, 60.0, 120.0, 80.0, 60.0, 120.0]
    assert [{**c, "kvp": 0} for c in fixed] == [{**c, "kvp": 0} for c in drawn]
    with pytest.raises(XsimInputError, match="kvp_values"):
        plan_cases([0], kvp_values=[150])
    with pytest.raises(XsimInputError, match=r"kvp_range\[1\]"):
        plan_cases([0], kvp_range=(90, 70))


@pytest.fixture(scope="module")
def head_projection():
    phantom = phantoms.head(seed=1, voxel_mm=5.0)
    spectrum = Spectrum.tungsten(90.0, {"Al": 3.0})
    cams = [CArm(detector_shape=(n, n), pixel_mm=307.2 / n).view(10.0, 5.0) for n in (96, 192)]
    return [project(phantom, cam, spectrum=spectrum) for cam in cams], spectrum


def test_predict_shape_units_and_model_sources(tmp_path, head_projection):
    (coarse, fine), spectrum = head_projection
    torch.manual_seed(0)
    model = ScatterModel(width=8, depth=2)
    path = model.save(tmp_path / "m.pt")
    s_coarse = predict(coarse, spectrum, model=model)
    assert s_coarse.shape == coarse.primary.shape and s_coarse.dtype == np.float32
    assert np.all(np.isfinite(s_coarse)) and np.all(s_coarse > 0)
    np.testing.assert_array_equal(predict(coarse, spectrum, model=path), s_coarse)
    # units of .primary: per pixel, so halving the pixel pitch quarters the scatter per pixel (as the primary)
    s_fine = predict(fine, model=model)
    assert s_fine.sum() / s_coarse.sum() == pytest.approx(fine.primary.sum() / coarse.primary.sum(), rel=0.02)
    assert fine.primary.sum() / coarse.primary.sum() == pytest.approx(1.0, rel=0.02)
    with pytest.raises(XsimInputError, match="does not exist"):
        predict(coarse, spectrum, model=tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(XsimInputError, match="not a readable scatter model"):
        load_model(tmp_path / "bad.pt")


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(1)
    model = ScatterModel(width=8, depth=2, metadata={"note": "unit test", "data": {"cases": 3}})
    loaded = ScatterModel.load(model.save(tmp_path / "m.pt"))
    assert loaded.metadata == model.metadata
    x = np.random.default_rng(0).normal(size=(2, N_INPUTS, *WORK_SHAPE)).astype(np.float32)
    np.testing.assert_array_equal(predict_fraction(loaded, x), predict_fraction(model, x))


def test_case_errors_definitions():
    rng = np.random.default_rng(0)
    f = rng.uniform(0.01, 0.05, size=(2, 64, 64))
    t = rng.uniform(0.01, 1.0, size=(2, 64, 64))
    std = 0.1 * f
    e = case_errors(1.1 * f, f, std, t)
    np.testing.assert_allclose(e["mape"], 0.1)
    np.testing.assert_allclose(e["spr_rel_error"], 0.1)
    np.testing.assert_allclose(e["mc_noise"], 0.1)
    np.testing.assert_allclose(e["noise_floor"], 0.1 * np.sqrt(2 / np.pi))
    pooled = case_errors(1.1 * f, f, std, t, pool=4)
    np.testing.assert_allclose(pooled["mape"], 0.1)
    assert np.all(pooled["mc_noise"] < 0.1 / 3)  # 16 pixels pooled: noise / 4 (spread of f widens it a bit)
    # a constant-SPR case is matched exactly by the constant-SPR baseline
    exact = case_errors(f, 0.5 * t, std, t)
    np.testing.assert_allclose(exact["mape_const_spr"], 0.0, atol=1e-12)
    assert mc_seconds_at_noise(10.0, 0.2, 0.1, pixel_ratio=16) == pytest.approx(640.0)


def test_shipped_model_beats_constant_spr_on_heldout_phantoms():
    model = load_model()
    assert DEFAULT_MODEL.stat().st_size < 20e6
    data = load_dataset(HELDOUT)
    train_seeds = set(model.metadata["data"]["train_seeds"]) | set(model.metadata["data"]["val_seeds"])
    assert not train_seeds & {c["phantom_seed"] for c in data["cases"]}
    pred = predict_fraction(model, data["features"])
    errors = case_errors(pred, data["fraction"], data["fraction_std"], data["transmission"])
    assert np.all(errors["mape"] < errors["mape_const_spr"]), (errors["mape"], errors["mape_const_spr"])


def test_render_with_cnn_scatter():
    from xsim.rendering import render

    phantom = phantoms.head(seed=2, voxel_mm=5.0)
    camera = CArm(detector_shape=(64, 64), pixel_mm=4.8).view(0.0, 0.0)
    spectrum = Spectrum.tungsten(80.0, {"Al": 3.0})
    r = render(phantom, camera, spectrum, mas=0.5, scatter="cnn", noise=False)
    expected = predict(project(phantom, camera, spectrum=spectrum), spectrum) * 0.5
    np.testing.assert_allclose(r.scatter, expected, rtol=1e-5)
    assert r.settings["scatter"] == "cnn" and r.scatter.mean() > 0


def test_train_writes_model_with_metadata(tmp_path):
    from xsim.scatter.train import train

    out = tmp_path / "m.pt"
    model, history = train(HELDOUT, out, epochs=1, width=4, depth=1, threads=1, progress=False)
    assert out.is_file() and not (tmp_path / "m.pt.ckpt").exists()
    meta = ScatterModel.load(out).metadata
    assert meta["data"]["val_seeds"] == [101] and meta["data"]["train_seeds"] == [100]
    assert meta["training"]["loss"].startswith("inverse-variance") and len(history["val_loss"]) == 1
