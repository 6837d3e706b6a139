"""Validation: flat-field mean and variance of rendered images against the Poisson + electronic noise model.

Flat fields (no patient) are rendered with :func:`xsim.render` (projector, readout, gain and offset) for
several exposures, many frames each. Per pixel, the sample mean and variance over the frames are compared
with the model of :mod:`xsim.readout` (compound Poisson, Whiting et al., Med. Phys. 33 (2006) 3290):

    mean = g S + o,        var = g^2 (k e_bar S sum(psf^2) + sigma_e^2)

S: expected flat signal (keV), e_bar = S / n (n: expected detected photons), k = <e^2>/<e>^2 of the
detected spectrum, psf the discrete Gaussian PSF, sigma_e the electronic noise (keV), g gain, o offset.
Cases: a CsI energy-integrating panel with blur and electronic noise at 0.0001-1 mAs (from electronic-
to quantum-dominated), and a photon-counting detector (k = 1, pure Poisson). PASS when the mean and the
variance, averaged over the inner pixels, agree with the model within 3 %.

Run: ``python -m validation.noise_statistics [--quick] [--out DIR]``.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import xsim  # noqa: E402
from xsim.detector import Detector  # noqa: E402
from xsim.readout import Readout, spectral_spread_factor  # noqa: E402
from xsim.rendering import render  # noqa: E402
from xsim.validate import overall_verdict, save_figure, save_table, study_cli  # noqa: E402
from xsim.volume import Phantom  # noqa: E402

DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "results"
TOLERANCE = 0.03
MAS = (0.0001, 0.001, 0.01, 0.1, 1.0)
EDGE_PX = 6  # pixels near the border see the PSF's edge extension: left out


def _case(name, detector, readout, mas, frames, spectrum, camera):
    empty = Phantom(np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 2), np.float32), np.eye(4), ["air"])
    stack = []
    for seed in range(frames):
        r = render(empty, camera, spectrum, mas=mas, scatter="none", seed=seed, detector=detector,
                   readout=readout, labels=None)
        stack.append(r.image.astype(float))
    inner = (slice(EDGE_PX, -EDGE_PX), slice(EDGE_PX, -EDGE_PX))
    images = np.stack(stack)[(slice(None),) + inner]
    noise_free = render(empty, camera, spectrum, mas=mas, scatter="none", noise=False, detector=detector,
                        readout=Readout.ideal())
    # expected detected photons per pixel: the projector's photon image, recomputed for the model
    from xsim.projector import project

    proj = project(empty, camera, spectrum=spectrum, detector=detector, photons=True)
    s = noise_free.primary[inner].astype(float)
    n = proj.photons[inner].astype(float) * mas
    k = spectral_spread_factor(spectrum, detector)
    g, o = readout.gain_adu_per_keV, readout.offset_adu
    model_mean = g * s + o
    model_var = g**2 * (k * (s / n) * s * readout.psf_sum_of_squares(camera.pixel_mm)
                        + readout.electronic_noise_keV**2)
    mean_ratio = float(np.mean(images.mean(axis=0) - o) / np.mean(model_mean - o))
    var_ratio = float(np.mean(images.var(axis=0, ddof=1)) / np.mean(model_var))
    ok = abs(mean_ratio - 1) <= TOLERANCE and abs(var_ratio - 1) <= TOLERANCE
    return {"case": name, "mas": mas, "frames": frames, "mean_photons_per_pixel": float(n.mean()),
            "model_mean_adu": float(model_mean.mean()), "model_var_adu2": float(model_var.mean()),
            "electronic_fraction_of_var": float(g**2 * readout.electronic_noise_keV**2 / model_var.mean()),
            "mean_ratio": mean_ratio, "var_ratio": var_ratio, "tolerance": TOLERANCE,
            "status": "PASS" if ok else "FAIL"}


def main(out_dir: str | os.PathLike = DEFAULT_OUT_DIR, quick: bool = False) -> bool:
    """Run the study, write ``noise_statistics.csv`` and ``noise_statistics.png``; return True on PASS."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = 100 if quick else 400
    spectrum = xsim.Spectrum.tungsten(80.0, {"Al": 3.0}, bin_keV=1.0)
    camera = xsim.CArm(detector_shape=(48, 48), pixel_mm=0.6).view(0.0, 0.0)
    panel = Readout(blur_sigma_mm=0.3, electronic_noise_keV=60.0, gain_adu_per_keV=0.25, offset_adu=500.0)
    rows = [_case("CsI energy integrating, blur 0.3 mm, 60 keV electronic", Detector(), panel, mas, frames,
                  spectrum, camera) for mas in (MAS[::2] if quick else MAS)]
    counting = Readout(blur_sigma_mm=0.0, electronic_noise_keV=0.5, gain_adu_per_keV=1.0, offset_adu=0.0)
    rows += [_case("photon counting, no blur, 0.5 count electronic", Detector(photon_counting=True), counting,
                   mas, frames, spectrum, camera) for mas in (0.001, 0.1)]
    table = pd.DataFrame(rows)

    save_table(table, out_dir / "noise_statistics.csv")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for case, group in table.groupby("case"):
        ax.semilogx(group["mas"], group["mean_ratio"], "o-", label=f"mean, {case}")
        ax.semilogx(group["mas"], group["var_ratio"], "s--", mfc="none", label=f"variance, {case}")
    ax.axhspan(1 - TOLERANCE, 1 + TOLERANCE, color="g", alpha=0.1, label="±3 % (pass band)")
    ax.set_xlabel("exposure (mAs)")
    ax.set_ylabel("measured / model (flat field)")
    ax.set_title(f"flat-field noise statistics, {frames} frames per point")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out_dir / "noise_statistics.png")

    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table[["case", "mas", "mean_photons_per_pixel", "electronic_fraction_of_var", "mean_ratio",
                     "var_ratio", "status"]].to_string(index=False))
    return overall_verdict(table, f"flat-field mean and variance within {TOLERANCE:.0%} of the model")


if __name__ == "__main__":
    study_cli(main, __doc__.splitlines()[0], DEFAULT_OUT_DIR, quick_help="100 frames and half the exposures")
