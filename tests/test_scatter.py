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
from xsim.montecarlo import AntiScatterGrid
from xsim.physics.spectra import Spectrum
from xsim.projector import project
from xsim.scatter import (DEFAULT_MODEL, FEATURES, N_IMAGE_INPUTS, N_INPUTS, WORK_SHAPE, ScatterGeometry,
                          ScatterModel, input_features, load_model, predict, predict_fraction)
from xsim.scatter.data import export_cases, load_dataset, make_dataset, plan_cases, plan_varied_cases
from xsim.scatter.evaluate import case_errors, mc_seconds_at_noise
from xsim.scatter.train import deviance_loss, fit, loss_weights

HELDOUT = Path(__file__).parent / "data" / "scatter_heldout"
SUITES = Path(__file__).parent / "data" / "scatter_suites"


def _synthetic(n=8, seed=0):
    """Smooth random inputs and a smooth positive target that depends on them (a learnable map)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_INPUTS, *WORK_SHAPE)).astype(np.float32)
    x[:, :N_IMAGE_INPUTS] = gaussian_filter(x[:, :N_IMAGE_INPUTS], (0, 0, 5, 5)) * 5
    x[:, N_IMAGE_INPUTS:] = rng.uniform(-1, 1, size=(n, N_INPUTS - N_IMAGE_INPUTS, 1, 1))
    x[:, FEATURES.index("grid_ratio")] = 0.0  # no grid: transposes allowed
    f = 0.03 * np.exp(gaussian_filter(x[:, 0], (0, 6, 6)) + 0.3 * x[:, N_IMAGE_INPUTS])
    std = 0.05 * f
    return x, (f + std * rng.normal(size=f.shape)).astype(np.float32), std.astype(np.float32)


def _loss(model, x, f, std):
    with torch.no_grad():
        return float(deviance_loss(model(torch.as_tensor(x)), torch.as_tensor(f), torch.as_tensor(loss_weights(f))))


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


def test_deviance_loss_is_relative_and_unbiased_on_noisy_counts():
    f = np.full((1, 8, 8), 0.1, np.float32)
    w = torch.as_tensor(loss_weights(f))
    np.testing.assert_allclose(w, 10.0)  # 1 / the case's mean fraction
    exact = float(deviance_loss(torch.log(torch.as_tensor(f))[:, None], torch.as_tensor(f), w))
    assert exact == pytest.approx(0.0, abs=1e-6)  # float32 rounding
    # p = f (1 + d): (f / mean f) d^2 / 2 for small d, whatever the scale of f
    for scale in (1.0, 1e-3):
        g = torch.as_tensor(f * scale)
        pred = torch.log(g * 1.02)[:, None]
        assert float(deviance_loss(pred, g, torch.as_tensor(loss_weights(f * scale)))) == pytest.approx(
            0.02**2 / 2, rel=0.02)
    # compound-Poisson targets with many zeros (few histories): the best constant is their mean, not below it
    rng = np.random.default_rng(0)
    noisy = (0.01 * rng.poisson(1.5, size=(1, 64, 64))).astype(np.float32)  # 22 % zeros, 80 % noise
    assert (noisy == 0).mean() > 0.15
    levels = np.linspace(0.8, 1.2, 401) * noisy.mean()
    losses = [float(deviance_loss(torch.full((1, 1, 64, 64), float(np.log(v))), torch.as_tensor(noisy),
                                  torch.as_tensor(loss_weights(noisy)))) for v in levels]
    assert levels[int(np.argmin(losses))] == pytest.approx(noisy.mean(), rel=2e-3)
    with pytest.raises(XsimInputError, match="no scatter"):
        loss_weights(np.zeros((1, 4, 4)))


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


def test_make_dataset_on_a_dask_cluster_matches_in_process(tmp_path):
    from dask.distributed import LocalCluster

    cases = plan_cases([7], kinds=["head"], views=1, photons=1e5, seed=5, split="unit")
    local = make_dataset(tmp_path / "local", cases, workers=0, progress=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        dask = make_dataset(tmp_path / "dask", cases, progress=False, scheduler=cluster.scheduler_address)
    assert local["simulated"] == dask["simulated"] == 1 and not dask["failed"]
    a, b = load_dataset(tmp_path / "local"), load_dataset(tmp_path / "dask")
    # same seed, same tallies whatever the thread count (the reproducibility rule), so the same targets
    np.testing.assert_array_equal(a["fraction"], b["fraction"])
    np.testing.assert_array_equal(a["features"], b["features"])
    # export (the stored test sets): one folder, or several with distinct case ids
    ids = [c["case_id"] for c in a["cases"]]
    with pytest.raises(XsimInputError, match="in both"):
        export_cases([tmp_path / "local", tmp_path / "dask"], tmp_path / "export", ids)
    with pytest.raises(XsimInputError, match="not finished"):
        export_cases(tmp_path / "local", tmp_path / "export", ["no-such-case"])
    exported = load_dataset(export_cases([tmp_path / "local"], tmp_path / "export", ids))
    np.testing.assert_array_equal(exported["fraction"], a["fraction"])


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
    assert meta["training"]["loss"].startswith("scaled Poisson deviance") and len(history["val_loss"]) == 1


# --- issue 17: inputs that carry the geometry, data over what users bring, out-of-range warnings -----------
def test_varied_plan_covers_the_ranges_and_every_case_fits():
    from xsim.montecarlo import _check_phantom_in_field, _field_geometry
    from xsim.scatter.data import (GRID_RATIOS, PANEL_RANGE_MM, SDD_RANGE_MM, case_camera, case_grid,
                                   case_phantom)

    cases = plan_varied_cases(24, photons=1e5, seed=3)
    assert cases == plan_varied_cases(24, photons=1e5, seed=3)  # reproducible
    assert {c["kind"] for c in cases} >= {"body"} and len({c["kind"] for c in cases}) > 1
    assert any(c["grid"] for c in cases) and not all(c["grid"] for c in cases)
    for c in cases:
        assert SDD_RANGE_MM[0] <= c["sdd_mm"] <= SDD_RANGE_MM[1] and c["sid_mm"] < c["sdd_mm"]
        assert all(PANEL_RANGE_MM[0] <= v <= PANEL_RANGE_MM[1] for v in c["panel_mm"])
        assert -90 <= c["lao_deg"] <= 90 and -40 <= c["cran_deg"] <= 40
        if c["grid"]:
            assert c["grid"]["ratio"] in GRID_RATIOS and case_grid(c).ratio == c["grid"]["ratio"]
        camera = case_camera(c)
        np.testing.assert_allclose(camera.pixel_mm * 256, c["panel_mm"])
        _check_phantom_in_field(case_phantom(c), camera, _field_geometry(camera))  # no XsimInputError


def test_random_bodies_are_reproducible_and_varied():
    from xsim.scatter.bodies import BODY_KINDS, random_body

    a, b = random_body(11), random_body.__wrapped__(11)  # cached, and built afresh
    assert a is not b and np.array_equal(a.density_g_cm3, b.density_g_cm3) and a.source == b.source
    kinds = {random_body(s).source.split("kind=")[1].split()[0] for s in range(12)}
    assert kinds <= set(BODY_KINDS) and len(kinds) >= 2
    names = set().union(*(random_body(s).material_names for s in range(12)))
    assert {"lung", "cortical bone", "soft tissue", "adipose"} <= names
    assert names & {"iodine contrast", "titanium", "stainless steel"}  # labels for what HU cannot tell
    with pytest.raises(XsimInputError, match="kind"):
        random_body(0, kind="knee")


def test_geometry_inputs_are_in_millimetres(head_projection):
    (coarse, _), spectrum = head_projection
    geometry = ScatterGeometry.of(coarse.camera, coarse.object_center_mm)
    # the head's centre of mass sits near the isocenter: air gap about SDD - SID
    assert geometry.air_gap_mm == pytest.approx(1020.0 - 760.0, abs=20.0)
    assert geometry.panel_mm == pytest.approx((307.2, 307.2)) and geometry.grid_ratio == 0.0
    args = (coarse.primary, coarse.flat_field, coarse.line_integrals, spectrum.kvp, spectrum.mean_energy_keV)
    x = input_features(*args, geometry)
    assert x.shape == (N_INPUTS, *WORK_SHAPE) and np.isfinite(x).all()
    # the kernel estimates blur over millimetres: a panel twice as wide (same image) blurs half as many pixels
    wide = input_features(*args, ScatterGeometry(geometry.sdd_mm, geometry.air_gap_mm, (614.4, 614.4)))
    k = FEATURES.index("kernel_50mm")
    assert wide[k].std() > x[k].std()  # less blur in pixels keeps more contrast
    np.testing.assert_array_equal(wide[:2], x[:2])
    grid = ScatterGeometry.of(coarse.camera, coarse.object_center_mm, AntiScatterGrid(ratio=12, strips_per_cm=70))
    assert (grid.grid_ratio, grid.grid_lines_per_cm) == (12.0, 70.0)


def test_predict_warns_once_outside_the_training_ranges(tmp_path, head_projection):
    import warnings

    (coarse, _), spectrum = head_projection
    torch.manual_seed(0)
    model = ScatterModel(width=8, depth=2, metadata={"ranges": {"kvp": [60.0, 120.0], "sdd_mm": [1100.0, 1300.0]}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predict(coarse, spectrum, model=model)
        predict(coarse, spectrum, model=model)
    messages = [str(w.message) for w in caught if "outside the range" in str(w.message)]
    assert len(messages) == 1 and "sdd_mm = 1020" in messages[0]


def test_grid_strips_along_u_go_through_the_network_transposed(head_projection):
    _, spectrum = head_projection
    # a rectangular panel, so that a swap of rows and columns (pixels or panel sides) shows
    camera = CArm(detector_shape=(96, 64), pixel_mm=(3.2, 4.0)).view(10.0, 5.0)
    coarse = project(phantoms.head(seed=1, voxel_mm=5.0), camera, spectrum=spectrum)
    torch.manual_seed(0)
    model = ScatterModel(width=8, depth=2)
    along_v = AntiScatterGrid(ratio=10, strips_per_cm=60)
    along_u = AntiScatterGrid(ratio=10, strips_per_cm=60, strips_along="u")
    from xsim.projector import Projection

    turned = CArm(detector_shape=(64, 96), pixel_mm=(4.0, 3.2)).view(10.0, 5.0)  # same SDD, gap; sides swapped
    flipped = Projection(coarse.primary.T.copy(), {k: v.T.copy() for k, v in coarse.line_integrals.items()}, None,
                         coarse.flat_field.T.copy(), turned, spectrum, coarse.detector,
                         object_center_mm=coarse.object_center_mm)
    np.testing.assert_allclose(predict(coarse, spectrum, model=model, grid=along_u),
                               predict(flipped, spectrum, model=model, grid=along_v).T, rtol=1e-5)


def test_augmentation_swaps_panel_sides_and_keeps_grids_untransposed():
    from xsim.scatter.train import _augment

    x, f, std = _synthetic(n=16, seed=4)
    rows, cols = FEATURES.index("panel_rows"), FEATURES.index("panel_cols")
    x[:, rows], x[:, cols] = 0.5, -0.5
    x[8:, FEATURES.index("grid_ratio")] = 1.0
    ax, af, _ = _augment(x, f, std, np.random.default_rng(0))
    swapped = ax[:, rows, 0, 0] == -0.5
    assert swapped[:8].any() and not swapped[8:].any()
    assert np.array_equal(ax[swapped, cols, 0, 0], np.full(swapped.sum(), 0.5, np.float32))


def _suite_errors():
    from xsim.scatter.evaluate import EVAL_POOL

    data = load_dataset(SUITES)
    assert [c["case_id"] for c in data["cases"]] == ["geometry-1", "anatomy-1", "grid-1"]
    pred = predict_fraction(load_model(), data["features"])
    coarse = case_errors(pred, data["fraction"], data["fraction_std"], data["transmission"], pool=EVAL_POOL)
    fine = case_errors(pred, data["fraction"], data["fraction_std"], data["transmission"])
    assert np.all(coarse["mc_noise"] < 0.02)  # the references are precise enough for a 10 % bound
    return coarse, fine


def test_shipped_model_on_out_of_family_cases():
    """The fast version of validation/scatter_cnn.py's out-of-family suites: the first case each of "new
    geometry", "new anatomy" and "grid" (tests/data/scatter_suites/PROVENANCE.md), 1e8-2e8 histories (about 1 %
    noise per 16 x 16 pixel). What the shipped model must do on a body or geometry it never saw: beat both
    oracle baselines (the constant SPR and the constant scatter that match the reference's field means)."""
    coarse, fine = _suite_errors()
    assert np.all(fine["mape"] < fine["mape_const_spr"]), (fine["mape"], fine["mape_const_spr"])
    assert np.all(fine["mape"] < fine["mape_const_scatter"]), (fine["mape"], fine["mape_const_scatter"])


@pytest.mark.xfail(strict=True, reason="issue 17 open: the shipped model misses the per-case bounds on the "
                   "new-anatomy case (water ellipse: 11 % MAPE, SPR -12 %, xsim/models/MODEL_CARD.md)")
def test_shipped_model_meets_issue_17_bounds_out_of_family():
    """Issue 17's target for a single case: MAPE over the field on the 16 x 16 evaluation grid <= 10 % and the
    field-mean scatter-to-primary ratio within 5 %. Strict xfail: passes (and so fails here) once a model
    meets it, so the marker is removed with the issue."""
    coarse, _ = _suite_errors()
    assert np.all(coarse["mape"] <= 0.10), coarse["mape"]
    assert np.all(np.abs(coarse["spr_rel_error"]) <= 0.05), coarse["spr_rel_error"]


def test_stored_references_have_the_current_inputs(tmp_path):
    """refresh_features recomputes the CNN inputs and keeps the Monte Carlo targets; on a stored reference it
    must reproduce the stored inputs exactly, or the stored sets are stale (refresh them, PROVENANCE.md)."""
    from xsim.scatter.data import refresh_features

    stored = load_dataset(SUITES)
    fresh = load_dataset(refresh_features(SUITES, tmp_path / "fresh", ["geometry-1"], threads=1))
    np.testing.assert_array_equal(fresh["features"][0], stored["features"][0])
    np.testing.assert_array_equal(fresh["fraction"][0], stored["fraction"][0])
