"""Validation: the shipped scatter CNN against Monte Carlo scatter of held-out procedural phantoms, 60-120 kVp.

Held-out reference set (``reference_cases``): thorax, abdomen, pelvis and head phantoms of seeds 100 and
101 (the shipped model was trained on seeds 0-29), one random view each, tube voltages 60, 65, 70, 80, 90,
100, 110 and 120 kVp (one per case), Al 2-4 mm + Cu 0-0.3 mm, with enough histories (2.5e8 to 1e9 per
case, ``REFERENCE_PHOTONS``) that the Monte Carlo's own noise is below 1 % per 16 x 16 pixel (median over
the field), as issue 6 asks of the reference. It is simulated with :func:`xsim.scatter.data.make_dataset`
into ``<out_dir>/reference-data`` unless ``data_dir`` points at an existing one (resumable; about 35 minutes
on two CPU cores). Quick version: the four phantoms of seed 102, one view each, 2e7 histories (a minute or
two).

Metrics (:mod:`xsim.scatter.evaluate`): MAPE of the scatter over the field on the 64 x 64 working grid
(4.8 mm pixels) and on the 16 x 16 evaluation grid (19 mm pixels), its noise floor, the SPR error, the
oracle constant-SPR baseline; timing of :func:`xsim.scatter.predict` for a 256 x 256 image (one torch thread)
and the Monte Carlo time for the same noise (one kernel thread, from the reference runs).

PASS: mean MAPE on the evaluation grid <= 5 % (issue 6), the reference's median noise per evaluation pixel
< 1 % in every case, and the CNN beats the constant-SPR baseline on every case. Four cases are too few to
judge a 5 % mean: the quick version reports the MAPE and passes on the baseline comparison alone.

Run: ``python -m validation.scatter_cnn [--quick] [--out DIR] [--data DIR]``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from xsim.scatter import load_model  # noqa: E402
from xsim.scatter.data import make_dataset, plan_cases  # noqa: E402
from xsim.scatter.evaluate import EVAL_POOL, evaluate, mc_seconds_at_noise, time_inference  # noqa: E402
from xsim.validate import save_figure, save_table  # noqa: E402

DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "results"
REFERENCE_PLAN = dict(phantom_seeds=[100, 101], views=1, photons=2.5e8, seed=2, split="reference",
                      kvp_values=[60, 120, 80, 100, 70, 110, 90, 65])
# Histories per case: a pilot run of 2.5e8 each measured the median relative noise per 16 x 16 pixel
# (0.7-1.8 %); cases above 0.9 % get 2x or 4x (noise falls as 1 / sqrt(histories)).
REFERENCE_PHOTONS = {"reference-thorax-s0100-v00": 5e8, "reference-thorax-s0101-v00": 2.5e8,
                     "reference-abdomen-s0100-v00": 5e8, "reference-abdomen-s0101-v00": 5e8,
                     "reference-pelvis-s0100-v00": 1e9, "reference-pelvis-s0101-v00": 5e8,
                     "reference-head-s0100-v00": 5e8, "reference-head-s0101-v00": 5e8}
QUICK_PLAN = dict(phantom_seeds=[102], views=1, photons=2e7, seed=2, split="quick")
TOL_MAPE = 0.05
TOL_REFERENCE_NOISE = 0.01
GRID = 64 // EVAL_POOL


def reference_cases() -> list[dict]:
    """The held-out reference plan (``REFERENCE_PLAN`` with the histories of ``REFERENCE_PHOTONS``)."""
    cases = plan_cases(**REFERENCE_PLAN)
    for case in cases:
        case["photons"] = int(REFERENCE_PHOTONS[case["case_id"]])
    return cases


def main(out_dir: str | os.PathLike = DEFAULT_OUT_DIR, quick: bool = False,
         data_dir: str | os.PathLike | None = None) -> bool:
    """Run the study, write ``scatter_cnn.csv``, ``scatter_cnn_summary.csv`` and PNGs; return True on PASS."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if data_dir is None:
        data_dir = out / ("quick-data" if quick else "reference-data")
        summary = make_dataset(data_dir, plan_cases(**QUICK_PLAN) if quick else reference_cases(), workers=2)
        if summary["failed"]:
            print(f"FAIL: {len(summary['failed'])} Monte Carlo cases failed: {summary['failed']}")
            return False
    model = load_model()
    result = evaluate(data_dir, model=model, out_dir=out, plots=4)
    cases, table = result["cases"], result["summary"]
    save_table(cases, out / "scatter_cnn.csv")

    cnn_ms = time_inference(model, (256, 256), threads=1)
    # Monte Carlo at equal noise: relative noise per 256 x 256 pixel equal to the CNN's 64 x 64 MAPE
    mc_s = np.median([mc_seconds_at_noise(t, n, m, pixel_ratio=16.0) for t, n, m in
                      zip(cases["mc_time_s"], cases["mc_noise_64"], cases["mape_64"])])
    mc_1pct_s = np.median([mc_seconds_at_noise(t, n, 0.01) for t, n in zip(cases["mc_time_s"], cases["mc_noise_64"])])
    timing = table.copy()
    timing["cnn_ms_256"], timing["mc_s_256_equal_noise"] = cnn_ms, mc_s
    timing["mc_s_64_at_1pct"], timing["speedup"] = mc_1pct_s, mc_s / (cnn_ms / 1000)
    save_table(timing, out / "scatter_cnn_summary.csv", index=True)
    _plot(cases, out / "scatter_cnn.png")

    mape_eval, mape_64 = cases[f"mape_{GRID}"].mean(), cases["mape_64"].mean()
    beats = bool((cases["mape_64"] < cases["mape_const_spr_64"]).all())
    print(table[[f"mape_{GRID}", f"noise_floor_{GRID}", f"mc_noise_{GRID}", "mape_64", "noise_floor_64",
                 f"spr_rel_error_{GRID}", "mape_const_spr_64", "n"]].to_string(float_format=lambda v: f"{v:.4f}"))
    floor_eval, floor_64 = cases[f"noise_floor_{GRID}"].mean(), cases["noise_floor_64"].mean()
    print(f"MAPE {GRID}x{GRID}: {100 * mape_eval:.2f} % (MC noise floor {100 * floor_eval:.2f} %); "
          f"64x64: {100 * mape_64:.2f} % (floor {100 * floor_64:.2f} %)")
    print(f"CNN {cnn_ms:.1f} ms per 256x256 image; MC at equal noise {mc_s:.0f} s "
          f"(speedup {mc_s / cnn_ms * 1000:.0f}x)")
    if quick:
        print(f"{'PASS' if beats else 'FAIL'} (quick): CNN beats the constant-SPR baseline on every case: {beats}; "
              f"MAPE not judged against {100 * TOL_MAPE:.0f} % on four cases")
        return beats
    noise_max = cases[f"mc_noise_{GRID}"].max()
    passed = mape_eval <= TOL_MAPE and noise_max < TOL_REFERENCE_NOISE and beats
    print(f"{'PASS' if passed else 'FAIL'}: mean MAPE {100 * mape_eval:.2f} % <= {100 * TOL_MAPE:.0f} % on the "
          f"{GRID}x{GRID} grid; reference noise per {GRID}x{GRID} pixel (median, worst case) "
          f"{100 * noise_max:.2f} % < {100 * TOL_REFERENCE_NOISE:.0f} %; CNN beats the constant-SPR baseline on "
          f"every case: {beats}")
    return passed


def _plot(cases, path: Path) -> None:
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, group in cases.groupby("kind"):
        ax[0].scatter(group["kvp"], 100 * group[f"mape_{GRID}"], label=kind)
    ax[0].scatter(cases["kvp"], 100 * cases[f"noise_floor_{GRID}"], marker="_", color="k", label="MC noise floor")
    ax[0].axhline(100 * TOL_MAPE, color="r", ls="--", lw=1, label="target 5 %")
    ax[0].set(xlabel="kVp", ylabel=f"MAPE, % ({GRID}x{GRID} grid)", title="CNN vs Monte Carlo, held-out phantoms")
    ax[0].legend(fontsize=8)
    ax[1].scatter(cases["spr_mc_64"], cases["spr_cnn_64"], c=cases["kvp"], cmap="viridis")
    lim = [0, 1.05 * max(cases["spr_mc_64"].max(), cases["spr_cnn_64"].max())]
    ax[1].plot(lim, lim, "k--", lw=1)
    ax[1].set(xlabel="field-mean SPR, Monte Carlo", ylabel="field-mean SPR, CNN", title="scatter-to-primary ratio")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(DEFAULT_OUT_DIR))
    parser.add_argument("--data", help="existing held-out dataset folder (default: simulate it into OUT)")
    args = parser.parse_args()
    raise SystemExit(0 if main(args.out, quick=args.quick, data_dir=args.data) else 1)
