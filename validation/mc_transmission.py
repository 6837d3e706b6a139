"""Monte Carlo narrow-beam transmission through water, cortical bone and aluminium equals exp(-mu x).

Geometry: point source, one 4 mm pixel at 1 m (a 2 mrad beam), a slab normal to the beam half way, of
thickness x = 1.5 / mu (transmission ~ 0.22). The MC primary signal (photons that never interacted) over
the analytic unattenuated signal, (1000/r)^2 cos A w(E, cos), is compared with exp(-mu x / cos), mu from
``Material.mu_over_rho`` (xsim tables: xraylib, NIST XCOM-consistent). PASS when every case agrees within
3 standard errors (batch estimate).

Run: ``python -m validation.mc_transmission [--quick] [--out DIR]``.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from xsim.detector import Detector  # noqa: E402
from xsim.montecarlo import monte_carlo  # noqa: E402
from xsim.physics.materials import material  # noqa: E402
from xsim.validate import overall_verdict, save_figure, save_table, study_cli  # noqa: E402

try:  # run as a module of the validation package or as a script
    from .mc_common import DEFAULT_OUT_DIR, analytic_primary, narrow_beam_camera, slab_phantom
except ImportError:
    from mc_common import DEFAULT_OUT_DIR, analytic_primary, narrow_beam_camera, slab_phantom

MATERIALS = ("water", "cortical bone", "aluminium")
ENERGIES_KEV = (30.0, 60.0, 100.0)
N_SIGMA = 3.0


def transmission_case(name: str, energy_keV: float, photons: float, seed: int = 0, threads: int | None = None) -> dict:
    """One case: measured and expected transmission, the measurement's standard error, in sigmas."""
    mat = material(name)
    mu = mat.mu_over_rho(energy_keV) * mat.density_g_cm3 / 10.0  # 1/mm
    thickness = 1.5 / mu
    cam = narrow_beam_camera()
    det = Detector()
    phantom = slab_phantom(mat, thickness, size_mm=40.0, gap_mm=400.0, sdd_mm=1000.0)
    result = monte_carlo(phantom, cam, energy_keV=energy_keV, photons=photons, seed=seed, batches=20,
                         detector=det, progress=False, threads=threads)
    flat = analytic_primary(cam, energy_keV, det, 0.0, thickness)[0, 0]
    expected = analytic_primary(cam, energy_keV, det, mu, thickness)[0, 0] / flat
    measured = result.primary[0, 0] / flat
    sigma = result.primary_std[0, 0] / flat
    return dict(material=name, energy_keV=energy_keV, thickness_mm=thickness, mu_per_mm=mu, photons=result.photons,
                expected=expected, measured=measured, sigma=sigma, deviation_sigma=(measured - expected) / sigma)


def main(out_dir: str | os.PathLike = DEFAULT_OUT_DIR, quick: bool = False) -> bool:
    """Run all cases, write ``mc_transmission.csv`` and ``.png``; return True on PASS."""
    photons = 2e5 if quick else 4e6
    table = pd.DataFrame([transmission_case(m, e, photons, seed=i) for i, (m, e) in
                          enumerate((m, e) for m in MATERIALS for e in ENERGIES_KEV)])
    table["status"] = ["PASS" if abs(d) <= N_SIGMA else "FAIL" for d in table.deviation_sigma]
    out = Path(out_dir)
    save_table(table, out / "mc_transmission.csv")
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, group in table.groupby("material"):
        ax.errorbar(group.energy_keV, group.measured / group.expected - 1.0,
                    yerr=N_SIGMA * group.sigma / group.expected, marker="o", capsize=3, label=name)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set(xlabel="energy (keV)", ylabel="MC / exp(-mu x) - 1 (bars: 3 sigma)", title="narrow-beam transmission")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "mc_transmission.png")
    print(table.to_string(index=False))
    return overall_verdict(table, f"MC primary transmission = exp(-mu x) within {N_SIGMA:g} sigma")


if __name__ == "__main__":
    study_cli(main, __doc__.splitlines()[0], DEFAULT_OUT_DIR)
