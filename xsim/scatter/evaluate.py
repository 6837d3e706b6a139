"""Evaluation of the scatter CNN against Monte Carlo scatter of held-out phantoms.

Owns the error metrics (:func:`case_errors`), the evaluation of a model on a dataset folder
(:func:`evaluate`, the ``xsim scatter evaluate`` command), the profile plots and the timing
(:func:`time_inference`, :func:`mc_seconds_at_noise`).

Definitions (per case, on the 64 x 64 working grid, and on the evaluation grid: 4 x 4 working pixels
pooled, 16 x 16 pixels of 19 mm, where the Monte Carlo reference is less noisy):

* field: the pixels where the ray-cast primary is non-zero, i.e. the collimated field (the Monte Carlo's
  beam is collimated to the detector, so that is the whole panel);
* MAPE = mean over the field of |S_cnn - S_mc| / S_mc (scatter, or equivalently the scatter fraction S/F);
* MC noise: median over the field of the Monte Carlo's relative standard error; a perfect predictor would
  still score MAPE ~ sqrt(2/pi) x mean relative error against the noisy reference (the "noise floor");
* SPR = S / P with P the ray-cast primary; SPR error: mean over the field of |SPR_cnn - SPR_mc| and the
  relative error of the field-mean SPR;
* baselines: constant SPR (S = k P) and constant scatter (S = c F), each with the constant that minimises
  the baseline's own error on that very case (an oracle: favourable to the baselines).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..checks import XsimInputError
from ..fileio import atomic_path
from ..validate import save_figure
from . import ScatterModel, load_model, predict_fraction

__all__ = ["EVAL_POOL", "case_errors", "evaluate", "mc_seconds_at_noise", "time_inference"]

EVAL_POOL = 4  # working pixels per evaluation pixel along each axis


def _pool(image: np.ndarray, k: int) -> np.ndarray:
    n, h, w = image.shape
    return image.reshape(n, h // k, k, w // k, k).mean(axis=(2, 4))


def _pool_std(std: np.ndarray, k: int) -> np.ndarray:
    """Standard error of a k x k pixel mean (pixels independent: distinct detector areas)."""
    n, h, w = std.shape
    return np.sqrt((std**2).reshape(n, h // k, k, w // k, k).sum(axis=(2, 4))) / (k * k)


def case_errors(pred: np.ndarray, fraction: np.ndarray, fraction_std: np.ndarray, transmission: np.ndarray,
                pool: int = 1) -> dict:
    """Error metrics (module docstring) of predicted vs Monte Carlo scatter fractions, (N, H, W) each.

    Returns a dict of (N,) arrays: ``mape``, ``mc_noise``, ``noise_floor``, ``spr_mc``, ``spr_cnn``,
    ``spr_abs_error``, ``spr_rel_error`` (of the field mean), ``mape_const_spr``, ``mape_const_scatter``.
    """
    p, f, t = (np.asarray(a, dtype=np.float64) for a in (pred, fraction, transmission))
    s = np.asarray(fraction_std, dtype=np.float64)
    if pool > 1:
        p, f, t, s = _pool(p, pool), _pool(f, pool), _pool(t, pool), _pool_std(s, pool)
    field = t > 0
    if np.any((f <= 0) & field):
        raise XsimInputError("the Monte Carlo scatter is zero in some field pixels: too few histories for a "
                             "relative error; use more photons or a coarser grid")
    n = len(f)
    out = {k: np.empty(n) for k in ("mape", "mc_noise", "noise_floor", "spr_mc", "spr_cnn", "spr_abs_error",
                                    "spr_rel_error", "mape_const_spr", "mape_const_scatter")}
    for i in range(n):
        m = field[i]
        fi, pi, ti, si = f[i][m], p[i][m], t[i][m], s[i][m]
        rel = np.abs(pi - fi) / fi
        out["mape"][i] = rel.mean()
        out["mc_noise"][i] = np.median(si / fi)
        out["noise_floor"][i] = np.sqrt(2 / np.pi) * np.mean(si / fi)
        spr_mc, spr_cnn = fi / ti, pi / ti
        out["spr_mc"][i], out["spr_cnn"][i] = spr_mc.mean(), spr_cnn.mean()
        out["spr_abs_error"][i] = np.mean(np.abs(spr_cnn - spr_mc))
        out["spr_rel_error"][i] = spr_cnn.mean() / spr_mc.mean() - 1
        # oracle constants: the weighted median minimises sum |k t - f| / f = sum (t/f) |k - f/t|
        out["mape_const_spr"][i] = np.mean(np.abs(_weighted_median(fi / ti, ti / fi) * ti - fi) / fi)
        out["mape_const_scatter"][i] = np.mean(np.abs(_weighted_median(fi, 1 / fi) - fi) / fi)
    return out


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def time_inference(model: ScatterModel | str | os.PathLike | None = None, detector_shape=(256, 256),
                   repeats: int = 20, seed: int = 0, threads: int = 1) -> float:
    """Median wall time of :func:`xsim.scatter.predict` for one projection of ``detector_shape``, ms.

    The projection is a ray cast of the thorax phantom (its time is not counted); the model is loaded before
    timing (the shipped model is loaded once per process). ``threads``: torch threads while timing (more
    threads than free cores make torch's thread pool spin and the time jump tenfold on a loaded machine).
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _time_predict(model, detector_shape, repeats, seed)
    finally:
        torch.set_num_threads(previous)


def _time_predict(model, detector_shape, repeats: int, seed: int) -> float:
    from .. import phantoms
    from ..geometry import CArm
    from ..physics.spectra import Spectrum
    from ..projector import project
    from . import predict

    net = load_model(model)
    camera = CArm(detector_shape=tuple(detector_shape), pixel_mm=307.2 / detector_shape[0]).view(20.0, 10.0)
    spectrum = Spectrum.tungsten(80.0, {"Al": 3.0})
    proj = project(phantoms.thorax(seed=seed, voxel_mm=5.0), camera, spectrum=spectrum)
    predict(proj, spectrum, model=net)  # warm-up: first-call allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(proj, spectrum, model=net)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def mc_seconds_at_noise(mc_time_s: float, mc_noise: float, target_noise: float, pixel_ratio: float = 1.0) -> float:
    """Monte Carlo time for a relative noise ``target_noise`` per pixel, from a run that reached ``mc_noise``.

    The variance of a mean over histories falls as 1/N, so t = t_run (mc_noise / target)^2; ``pixel_ratio``
    (pixels of the target image over pixels of the run) scales N for the smaller pixels.
    """
    return mc_time_s * (mc_noise / target_noise) ** 2 * pixel_ratio


def evaluate(data_dir: str | os.PathLike, model: ScatterModel | str | os.PathLike | None = None,
             out_dir: str | os.PathLike | None = None, plots: int = 4) -> dict:
    """Errors of the CNN on every case of a (held-out) dataset folder, per case and per kVp band.

    Parameters
    ----------
    data_dir : path
        Dataset folder of :func:`xsim.scatter.data.make_dataset` (phantom seeds unseen in training).
    model : ScatterModel or path, optional
        Default: the shipped model.
    out_dir : path, optional
        Write ``scatter_eval_cases.csv``, ``scatter_eval_summary.csv`` and ``scatter_eval_profiles.png`` there.
    plots : int
        Cases shown in the profile plot.

    Returns
    -------
    dict
        ``cases`` (pandas DataFrame, one row per case), ``summary`` (DataFrame per kVp band and overall),
        ``files`` (written paths).
    """
    import pandas as pd

    from .data import load_dataset

    net = load_model(model)
    data = load_dataset(data_dir)
    train_seeds = set(net.metadata.get("data", {}).get("train_seeds", []))
    test_seeds = {c["phantom_seed"] for c in data["cases"]}
    if train_seeds & test_seeds:
        raise XsimInputError(f"{data_dir} shares phantom seeds {sorted(train_seeds & test_seeds)} with the model's "
                             "training data: evaluate on held-out anatomy")
    pred = predict_fraction(net, data["features"])
    rows = {"case_id": [c["case_id"] for c in data["cases"]], "kind": [c["kind"] for c in data["cases"]],
            "phantom_seed": [c["phantom_seed"] for c in data["cases"]], "kvp": [c["kvp"] for c in data["cases"]],
            "photons": [c["photons"] for c in data["cases"]],
            "mc_time_s": [float(r["mc_time_s"]) for r in data["rows"]]}
    for pool, tag in ((1, "64"), (EVAL_POOL, f"{64 // EVAL_POOL}")):
        errors = case_errors(pred, data["fraction"], data["fraction_std"], data["transmission"], pool=pool)
        for k, v in errors.items():
            rows[f"{k}_{tag}"] = v
    cases = pd.DataFrame(rows)
    bands = pd.cut(cases["kvp"], [0, 80, 100, 1000], labels=["<=80", "80-100", ">100"]).astype(str)
    cols = [c for c in cases.columns if c not in ("case_id", "kind", "phantom_seed", "kvp", "photons")]
    summary = pd.concat([cases[cols].groupby(bands).mean().assign(n=cases.groupby(bands).size()),
                         cases[cols].mean().to_frame("all").T.assign(n=len(cases))])
    summary = summary.reindex([b for b in ("<=80", "80-100", ">100", "all") if b in summary.index])
    summary.index.name = "kvp_band"
    files = {}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, table in (("scatter_eval_cases.csv", cases), ("scatter_eval_summary.csv", summary)):
            with atomic_path(out / name) as tmp:
                table.to_csv(tmp, index=name.endswith("summary.csv"), float_format="%.6g")
            files[name] = out / name
        files["profiles"] = plot_profiles(out / "scatter_eval_profiles.png", data, pred, plots)
    return {"cases": cases, "summary": summary, "files": files, "prediction": pred, "data": data}


def plot_profiles(path: str | os.PathLike, data: dict, pred: np.ndarray, n: int = 4) -> Path:
    """Central row and column profiles of the scatter fraction: Monte Carlo (+-1 sigma) vs CNN."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [c["kind"] for c in data["cases"]]
    picks = [kinds.index(k) for k in dict.fromkeys(kinds)][:n]  # one case per kind first
    picks += [i for i in range(len(kinds)) if i not in picks][: max(0, n - len(picks))]
    fig, axes = plt.subplots(2, len(picks), figsize=(3.6 * len(picks), 6.2), squeeze=False)
    x_mm = (np.arange(64) - 31.5) * 4.8
    for j, i in enumerate(picks):
        case = data["cases"][i]
        for r, (label, sl) in enumerate((("row 32", np.s_[32, :]), ("column 32", np.s_[:, 32])), start=0):
            ax = axes[r, j]
            f, s, p = data["fraction"][i][sl], data["fraction_std"][i][sl], pred[i][sl]
            ax.fill_between(x_mm, 100 * (f - s), 100 * (f + s), color="0.8", label="MC +-1 sigma")
            ax.plot(x_mm, 100 * f, color="0.3", lw=0.8, label="Monte Carlo")
            ax.plot(x_mm, 100 * p, color="C3", lw=1.5, label="CNN")
            ax.set_title(f"{case['kind']} s{case['phantom_seed']} {case['kvp']:.0f} kVp, {label}", fontsize=8)
            ax.set_xlabel("detector mm (at the panel)", fontsize=8)
            if j == 0:
                ax.set_ylabel("scatter / flat field, %", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def model_card(model: ScatterModel, summary, timing: dict, heldout: str, reproduce: str = "",
               cases=None) -> str:
    """Markdown model card: training data and settings (the model's metadata) and the measured errors.

    Parameters
    ----------
    model : ScatterModel
    summary : pandas.DataFrame
        ``evaluate(...)["summary"]`` on held-out phantoms.
    timing : dict
        ``{"cnn_ms_256": ..., "mc_s_256_equal_noise": ..., "mc_s_64_at_1pct": ...}``.
    heldout : str
        Description of the held-out set.
    reproduce : str
        Markdown commands that rebuild the data and the model.
    cases : pandas.DataFrame, optional
        ``evaluate(...)["cases"]``: adds the range of the per-case MAPE and the worst cases.
    """
    meta = model.metadata
    data, train, geo = meta.get("data", {}), meta.get("training", {}), meta.get("geometry", {})
    grid = 64 // EVAL_POOL
    lines = [
        "# xsim scatter CNN (`scatter_unet.pt`)", "",
        "Predicts the Monte Carlo scatter image of a projection from its ray-cast inputs (`xsim.scatter.predict`).",
        "Generated by `xsim.scatter.evaluate.model_card` from the model's metadata and an evaluation run.", "",
        "## Model",
        f"- U-Net, width {train.get('width')}, depth {train.get('depth')}, {meta.get('parameters')} parameters; "
        "input: -ln T, total mass thickness, kVp and mean energy channels on a 64 x 64 grid; output: ln(scatter / "
        "flat field), upsampled bilinearly to the detector and multiplied by its flat field.",
        f"- xsim {meta.get('xsim_version')}, torch {meta.get('torch_version')}, trained {meta.get('created')}.", "",
        "## Training data (`xsim scatter make-dataset`)",
        f"- {data.get('cases')} Monte Carlo cases ({data.get('train_cases')} fit, {data.get('val_cases')} validation "
        f"for model selection): procedural {', '.join(data.get('kinds', []))} phantoms, seeds "
        f"{data.get('train_seeds')} (validation seeds {data.get('val_seeds')}), random LAO/CRAN views, kVp "
        f"{data.get('kvp_range')}, Al 2-4 mm + Cu 0-0.3 mm; {data.get('photons_per_case')} histories per case "
        f"(median MC noise per 64 x 64 pixel {100 * data.get('mc_noise_median_per_pixel', float('nan')):.0f} %).",
        f"- Geometry: SDD {geo.get('sdd_mm')} mm, SID {geo.get('sid_mm')} mm, panel {geo.get('detector_shape')} x "
        f"{geo.get('pixel_mm')} mm binned {geo.get('bin')} x {geo.get('bin')}; no anti-scatter grid, CsI 600 um. "
        "Other geometries, grids or detectors are an extrapolation.", "",
        "## Training (`xsim scatter train`)",
        f"- Loss: {train.get('loss')}; Adam lr {train.get('lr')} cosine, {train.get('epochs')} epochs, batch "
        f"{train.get('batch_size')}, seed {train.get('seed')}, {train.get('threads')} threads, flips/transposes; "
        f"{train.get('time_s')} s on this CPU; best validation epoch {train.get('best_epoch')}.", "",
        f"## Measured errors on held-out phantoms ({heldout})",
        f"MAPE over the field (whole collimated panel) vs Monte Carlo, on the {grid} x {grid} evaluation grid and the "
        "64 x 64 working grid; the Monte Carlo reference's own noise enters the MAPE (its floor: the MAPE a perfect "
        "predictor would score). SPR error: relative error of the field-mean scatter-to-primary ratio.", "",
        f"| kVp | n | MAPE {grid}² | floor {grid}² | MC noise {grid}² | MAPE 64² | floor 64² | SPR rel. error | "
        "const-SPR MAPE 64² | const-scatter MAPE 64² |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
    for band, row in summary.iterrows():
        lines.append(f"| {band} | {int(row['n'])} | {pct(row[f'mape_{grid}'])} | {pct(row[f'noise_floor_{grid}'])} | "
                     f"{pct(row[f'mc_noise_{grid}'])} | {pct(row['mape_64'])} | {pct(row['noise_floor_64'])} | "
                     f"{pct(row[f'spr_rel_error_{grid}'])} | {pct(row['mape_const_spr_64'])} | "
                     f"{pct(row['mape_const_scatter_64'])} |")
    if cases is not None:
        ranked = cases.sort_values(f"mape_{grid}")
        worst = ranked.tail(2)
        lines += ["", f"Per case, MAPE {grid}² ranges from {pct(ranked[f'mape_{grid}'].iloc[0])} to "
                  f"{pct(ranked[f'mape_{grid}'].iloc[-1])}; the largest: "
                  + ", ".join(f"{row.case_id} ({row.kvp:g} kVp) {pct(row[f'mape_{grid}'])}"
                              for _, row in worst[::-1].iterrows()) + "."]
    lines += ["", "## Speed",
              f"- CNN: {timing['cnn_ms_256']:.1f} ms per 256 x 256 image (`predict`, features + network + upsampling, "
              "one torch thread on this 2-core CPU shared with other jobs).",
              f"- Monte Carlo for the same noise (relative noise per 256 x 256 pixel = the CNN's 64 x 64 MAPE): "
              f"{timing['mc_s_256_equal_noise']:.0f} s; for 1 % per 64 x 64 pixel: {timing['mc_s_64_at_1pct']:.0f} s "
              "(one CPU thread, from the held-out runs' times).", "",
              "## Limitations"]
    noise = summary.loc["all", f"mc_noise_{grid}"]
    if noise >= 0.01:
        lines.append(f"- The held-out reference is noisier than issue 6 asks (< 1 % per pixel after downsampling): "
                     f"{pct(noise)} per {grid} x {grid} pixel, {pct(summary.loc['all', 'mc_noise_64'])} per 64 x 64 "
                     "pixel; its noise is part of every MAPE above.")
    lines += ["- Trained on procedural phantoms at 4-5 mm voxels, one geometry, no anti-scatter grid, the default "
              "detector; conditioned on kVp and mean energy only (not on the full spectrum shape).", ""]
    if reproduce:
        lines += ["## Reproduce", reproduce, ""]
    return "\n".join(lines)
