"""Monte Carlo half-value layers of 80 and 120 kVp spectra in aluminium equal Spectrum.hvl_mm("Al").

Narrow beam (one 4 mm pixel at 1 m, aluminium slab half way), air kerma scored by weighting each photon
reaching the pixel with E (mu_en/rho)_air(E) (the fluence-to-kerma factor, ICRU 85 / IAEA TRS-457). The
kerma ratio K(t)/K(0) is simulated at t = 0.75, 1.0 and 1.25 x the analytic HVL (same seed, so the ratios
are correlated and their noise small); ln K(t)/K(0) is fitted by a quadratic in t (through the origin) and
solved for 1/2. Scattered photons reaching the pixel are counted, as in a measurement. PASS when the MC HVL
equals ``Spectrum.hvl_mm("Al")`` (tungsten, 12 deg anode, 2.5 mm Al, SpekPy) within 2 %.

Run: ``python -m validation.mc_hvl [--quick] [--out DIR]``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from xsim.dosimetry import AirKermaDetector  # noqa: E402
from xsim.montecarlo import monte_carlo  # noqa: E402
from xsim.physics.materials import material  # noqa: E402
from xsim.physics.spectra import Spectrum  # noqa: E402
from xsim.validate import overall_verdict, save_figure, save_table, study_cli  # noqa: E402

try:
    from .mc_common import DEFAULT_OUT_DIR, narrow_beam_camera, slab_phantom
except ImportError:
    from mc_common import DEFAULT_OUT_DIR, narrow_beam_camera, slab_phantom

KVPS = (80.0, 120.0)
THICKNESS_FACTORS = (0.75, 1.0, 1.25)
TOLERANCE = 0.02


def hvl_case(kvp: float, photons: float, seed: int = 0) -> dict:
    spectrum = Spectrum.tungsten(kvp, {"Al": 2.5})
    reference = spectrum.hvl_mm("Al")
    cam = narrow_beam_camera()
    al = material("aluminium")
    kerma, sigma = [], []
    thicknesses = [reference * f for f in (0.0,) + THICKNESS_FACTORS]
    for t in thicknesses:
        # t = 0: the same slab with zero density (no attenuation, same geometry)
        ph = slab_phantom(al, max(t, 1.0), size_mm=40.0, gap_mm=400.0, sdd_mm=1000.0,
                          density_g_cm3=al.density_g_cm3 if t > 0 else 0.0)
        r = monte_carlo(ph, cam, spectrum=spectrum, photons=photons, seed=seed, batches=20,
                        detector=AirKermaDetector(), progress=False)
        kerma.append(r.total[0, 0])
        sigma.append(math.hypot(r.primary_std[0, 0], r.scatter_std[0, 0]))
    t = np.array(thicknesses[1:])
    log_ratio = np.log(np.array(kerma[1:]) / kerma[0])
    a, b = np.linalg.lstsq(np.stack([t, t * t], axis=1), log_ratio, rcond=None)[0]  # ln r = a t + b t^2
    roots = np.roots([b, a, -math.log(0.5)])
    hvl = float(min(r.real for r in roots if abs(r.imag) < 1e-12 and r.real > 0))
    rel_sigma = math.hypot(sigma[2] / kerma[2], sigma[0] / kerma[0])  # upper bound: ignores the correlation
    slope = abs(a + 2 * b * hvl)
    return dict(kvp=kvp, photons_per_thickness=int(photons), hvl_reference_mm=reference, hvl_mc_mm=hvl,
                hvl_sigma_mm=rel_sigma / slope, deviation=hvl / reference - 1.0,
                **{f"kerma_ratio_{f:g}hvl": k / kerma[0] for f, k in zip(THICKNESS_FACTORS, kerma[1:])})


def main(out_dir: str | os.PathLike = DEFAULT_OUT_DIR, quick: bool = False) -> bool:
    """Run both spectra, write ``mc_hvl.csv`` and ``.png``; return True on PASS."""
    photons = 2e5 if quick else 2e6
    table = pd.DataFrame([hvl_case(k, photons, seed=i) for i, k in enumerate(KVPS)])
    table["status"] = ["PASS" if abs(d) <= TOLERANCE else "FAIL" for d in table.deviation]
    out = Path(out_dir)
    save_table(table, out / "mc_hvl.csv")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(table.kvp, table.hvl_mc_mm, yerr=table.hvl_sigma_mm, fmt="o", capsize=3, label="Monte Carlo")
    ax.plot(table.kvp, table.hvl_reference_mm, "k_", ms=20, label="Spectrum.hvl_mm (analytic)")
    ax.set(xlabel="tube potential (kVp)", ylabel="first HVL (mm Al)", title="MC half-value layers")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "mc_hvl.png")
    print(table.to_string(index=False))
    return overall_verdict(table, f"MC HVL = analytic HVL within {TOLERANCE:.0%}")


if __name__ == "__main__":
    study_cli(main, __doc__.splitlines()[0], DEFAULT_OUT_DIR)
