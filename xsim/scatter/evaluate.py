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
    ``transmission`` is the primary over the flat field without a grid, so behind a grid the SPRs are scatter
    over the grid-free primary (low by the grid's primary transmission, the same factor for CNN and Monte
    Carlo: relative errors are unaffected).
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
    from .data import KINDS

    # procedural anatomies must be unseen (random bodies are a family of their own; held-out bodies and CTs are
    # not drawn by any training generator)
    train_seeds = set(net.metadata.get("data", {}).get("train_seeds", []))
    test_seeds = {c["phantom_seed"] for c in data["cases"] if c["kind"] in KINDS}
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
    for j, i in enumerate(picks):
        case = data["cases"][i]
        panel_mm = case.get("panel_mm") or [256 * 1.2, 256 * 1.2]  # cases of the first model: the default panel
        for r, (label, sl) in enumerate((("row 32", np.s_[32, :]), ("column 32", np.s_[:, 32])), start=0):
            ax = axes[r, j]
            x_mm = (np.arange(64) - 31.5) * panel_mm[1 - r] / 64  # a row runs across the columns
            f, s, p = data["fraction"][i][sl], data["fraction_std"][i][sl], pred[i][sl]
            ax.fill_between(x_mm, 100 * (f - s), 100 * (f + s), color="0.8", label="MC +-1 sigma")
            ax.plot(x_mm, 100 * f, color="0.3", lw=0.8, label="Monte Carlo")
            ax.plot(x_mm, 100 * p, color="C3", lw=1.5, label="CNN")
            what = case.get("body") or f"{case['kind']} s{case['phantom_seed']}"
            ax.set_title(f"{what} {case['kvp']:.0f} kVp, {label}", fontsize=8)
            ax.set_xlabel("detector mm (at the panel)", fontsize=8)
            if j == 0:
                ax.set_ylabel("scatter / flat field, %", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def model_card(model: ScatterModel, suites, cases, timing: dict, reproduce: str = "") -> str:
    """Markdown model card: inputs, training data and settings, the ranges :func:`xsim.scatter.predict` checks
    (the model's metadata), and the errors measured per validation suite and per case.

    Parameters
    ----------
    model : ScatterModel
    suites : pandas.DataFrame
        Per suite (validation/scatter_cnn.py ``suite_table``).
    cases : pandas.DataFrame
        Per case, with columns ``suite``, ``case_id``, ``source``, ``kvp``, ``sdd_mm``, ``panel_mm``, ``grid`` and the
        metrics of :func:`evaluate`.
    timing : dict
        ``{"cnn_ms_512": ...}``.
    reproduce : str
        Markdown commands that rebuild the data and the model.
    """
    from . import FEATURES

    meta = model.metadata
    data, train, ranges = meta.get("data", {}), meta.get("training", {}), meta.get("ranges", {})
    grid = 64 // EVAL_POOL
    pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
    rng = lambda k, unit="": (f"{ranges[k][0]:.4g}-{ranges[k][1]:.4g}{unit}" if k in ranges else "?")  # noqa: E731
    lines = [
        "# xsim scatter CNN (`scatter_unet.pt`)", "",
        "Predicts the Monte Carlo scatter image of a projection from its ray-cast inputs, its geometry, grid and beam "
        "(`xsim.scatter.predict`). Generated by `xsim.scatter.evaluate.model_card` from the model's metadata and "
        "`validation/scatter_cnn.py`.", "",
        "## Model",
        f"- U-Net, width {train.get('width')}, depth {train.get('depth')}, {meta.get('parameters')} parameters, on a "
        "64 x 64 working grid; output ln(scatter / flat field), upsampled bilinearly to the detector and multiplied "
        "by its flat field.",
        f"- Inputs ({len(FEATURES)}): {', '.join(FEATURES)} (`xsim.scatter` module docstring), and the distance from "
        "the panel centre.",
        f"- xsim {meta.get('xsim_version')}, torch {meta.get('torch_version')}, trained {meta.get('created')}.", "",
        "## Training data (`xsim scatter make-dataset`)",
        f"- {data.get('cases')} Monte Carlo cases ({data.get('train_cases')} fit, {data.get('val_cases')} validation "
        f"for model selection): {data.get('random_bodies')} random CT-like bodies (`xsim.scatter.bodies`) and the "
        f"procedural {', '.join(k for k in data.get('kinds', []) if k != 'body')} phantoms of seeds "
        f"{data.get('train_seeds')}; {data.get('photons_per_case')} histories per case (median MC noise per 64 x 64 "
        f"pixel {100 * data.get('mc_noise_median_per_pixel', float('nan')):.0f} %).",
        "", "## Ranges of the training data (`predict` warns outside them)",
        f"- kVp {rng('kvp')}; SDD {rng('sdd_mm', ' mm')}; air gap (object centre of mass to panel) "
        f"{rng('air_gap_mm', ' mm')}; shorter panel side {rng('panel_mm', ' mm')}, longer side "
        f"{rng('panel_max_mm', ' mm')}; no grid, or a focused lead grid of ratio {rng('grid_ratio')} with "
        f"{rng('grid_lines_per_cm', ' strips/cm')} (strips along the panel's columns; the other orientation goes "
        f"through the network transposed); LAO/RAO {rng('lao_deg', ' deg')}, CRAN/CAUD {rng('cran_deg', ' deg')}. "
        "CsI 600 um detector.", "",
        "## Training (`xsim scatter train`)",
        f"- Loss: {train.get('loss')}; Adam lr {train.get('lr')} cosine, {train.get('epochs')} epochs, batch "
        f"{train.get('batch_size')}, seed {train.get('seed')}, {train.get('threads')} threads, flips/transposes; "
        f"{train.get('time_s')} s on this CPU; best validation epoch {train.get('best_epoch')}.", "",
        "## Measured errors (`python -m validation.scatter_cnn`)",
        "Suites (fixed cases written before training; `validation/scatter_cnn.py` defines them): in-family "
        "(procedural phantoms of seeds no training used, the first model's geometry), new geometry, new anatomy "
        "(body shapes no generator makes), grid, real CT (a chest CT that xsim does not ship).",
        f"MAPE of the scatter over the field against Monte Carlo on the {grid} x {grid} evaluation grid (pixels of "
        "panel side / 16: 19 mm on a 307 mm panel) and the 64 x 64 working grid; the noise floor is the MAPE a perfect predictor "
        "would score against the noisy reference; SPR error: relative error of the field-mean scatter-to-primary "
        "ratio. Targets (issue 17): suite mean <= 5 %, every case <= 10 %, |SPR error| <= 5 %.", "",
        f"| suite | n | MAPE {grid}² mean | worst case | noise floor | MAPE 64² mean | mean |SPR error| | "
        "worst |SPR error| |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for suite, row in suites.iterrows():
        lines.append(f"| {suite} | {int(row['n'])} | {pct(row[f'mape_{grid}_mean'])} | {pct(row[f'mape_{grid}_worst'])}"
                     f" | {pct(row[f'noise_floor_{grid}'])} | {pct(row['mape_64_mean'])} | "
                     f"{pct(row['spr_abs_rel_error_mean'])} | {pct(row['spr_abs_rel_error_worst'])} |")
    lines += ["", "Per case:", "", f"| suite | case | source | kVp | SDD | panel mm | grid | MAPE {grid}² | "
              "SPR error |", "|---|---|---|---|---|---|---|---|---|"]
    for _, row in cases.iterrows():
        lines.append(f"| {row['suite']} | {row['case_id']} | {row['source']} | {row['kvp']:g} | {row['sdd_mm']:g} | "
                     f"{row['panel_mm']} | {row['grid']} | {pct(row[f'mape_{grid}'])} | "
                     f"{pct(row[f'spr_rel_error_{grid}'])} |")
    lines += ["", "## Speed",
              f"- CNN: {timing['cnn_ms_512']:.1f} ms per 512 x 512 image (`predict`: features, network, upsampling; one "
              "torch thread on this 2-core CPU).", "",
              "## Limitations",
              "- Bodies at 4-5 mm voxels and CT at ~3 mm: fine detail that scatters (thin metal) is averaged; the "
              "default detector (CsI 600 um) only; grids focused on the source, lead strips; no table, no collimation "
              "inside the panel; conditioned on kVp and mean energy, not the spectrum's whole shape.", ""]
    if reproduce:
        lines += ["## Reproduce", reproduce, ""]
    return "\n".join(lines)
