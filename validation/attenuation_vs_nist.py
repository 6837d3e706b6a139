"""Validation: xsim mass attenuation and energy-absorption coefficients against NIST.

xsim's mu/rho (total, with coherent scattering) for the reference materials at 20-150 keV, and
mu_en/rho of air and water at 15-150 keV, against NIST XCOM / NIST SRD 126 (Hubbell & Seltzer,
"Tables of X-Ray Mass Attenuation Coefficients and Mass Energy-Absorption Coefficients", Tables 3
and 4). PASS if every value is within 2 %.

Run: ``python -m validation.attenuation_vs_nist [--out DIR]``. Writes ``attenuation_vs_nist.csv``
(one row per material, quantity and energy) and ``attenuation_vs_nist.png`` (mu/rho against E,
log-log, with the NIST points; and the deviation in per cent).
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from xsim.physics.materials import material  # noqa: E402
from xsim.validate import overall_verdict, save_figure, save_table, study_cli  # noqa: E402

DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "results"
TOLERANCE = 0.02

# NIST XCOM / SRD 126 mu/rho in cm^2/g. Water, air, Al, Pb, soft tissue, iodine:
# /work/shared/reference/nist_mu_rho.md; cortical bone and adipose: SRD 126 Table 4,
# https://physics.nist.gov/PhysRefData/XrayMassCoef/ComTab/bone.html and .../adipose.html.
MU_ENERGIES_KEV = [20.0, 30.0, 40.0, 60.0, 80.0, 100.0, 150.0]
NIST_MU_RHO = {
    "water": [0.8096, 0.3756, 0.2683, 0.2059, 0.1837, 0.1707, 0.1505],
    "air": [0.7779, 0.3538, 0.2485, 0.1875, 0.1662, 0.1541, 0.1356],
    "aluminium": [3.441, 1.128, 0.5685, 0.2778, 0.2018, 0.1704, 0.1378],
    "lead": [86.36, 30.32, 14.36, 5.021, 2.419, 5.549, 2.014],
    "soft tissue": [0.8230, 0.3790, 0.2688, 0.2048, 0.1823, 0.1693, 0.1492],
    "iodine": [25.43, 8.561, 22.10, 7.579, 3.510, 1.942, 0.6978],
    "cortical bone": [4.001, 1.331, 0.6655, 0.3148, 0.2229, 0.1855, 0.1480],
    "adipose": [0.5677, 0.3063, 0.2396, 0.1974, 0.1800, 0.1688, 0.1500],
}
# NIST SRD 126 Table 4 mu_en/rho in cm^2/g (ComTab/air.html, ComTab/water.html; spekpy ships the same values
# in data/tables/nist_muen_{air,water}.dat, water there rounded to 3 digits).
MU_EN_ENERGIES_KEV = [15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0]
NIST_MU_EN_RHO = {
    "air": [1.334, 0.5389, 0.1537, 0.06833, 0.04098, 0.03041, 0.02407, 0.02325, 0.02496],
    "water": [1.374, 0.5503, 0.1557, 0.06947, 0.04223, 0.03190, 0.02597, 0.02546, 0.02764],
}


def compare() -> pd.DataFrame:
    """One row per (material, quantity, energy): xsim, NIST and the deviation in per cent."""
    rows = []
    for quantity, energies, reference in (("mu_over_rho", MU_ENERGIES_KEV, NIST_MU_RHO),
                                          ("mu_en_over_rho", MU_EN_ENERGIES_KEV, NIST_MU_EN_RHO)):
        for name, nist in reference.items():
            mat = material(name)
            ours = (mat.mu_over_rho(np.array(energies)) if quantity == "mu_over_rho"
                    else mat.mu_en_over_rho(np.array(energies)))
            for e, x, n in zip(energies, ours, nist):
                dev = 100.0 * (x / n - 1.0)
                rows.append(dict(material=name, quantity=quantity, energy_keV=e,
                                 xsim_cm2_g=x, nist_cm2_g=n, deviation_percent=dev,
                                 status="PASS" if abs(dev) <= 100 * TOLERANCE else "FAIL"))
    return pd.DataFrame(rows)


def _plot(table: pd.DataFrame):
    fig, (ax_mu, ax_dev) = plt.subplots(1, 2, figsize=(13, 5.5))
    grid = np.geomspace(15.0, 150.0, 400)
    mu_rows = table[table.quantity == "mu_over_rho"]
    for i, (name, group) in enumerate(mu_rows.groupby("material", sort=False)):
        color = f"C{i}"
        ax_mu.loglog(grid, material(name).mu_over_rho(grid), color=color, lw=1.2, label=name)
        ax_mu.loglog(group.energy_keV, group.nist_cm2_g, "o", color=color, ms=4, mfc="none")
    for name, group in table.groupby(["material", "quantity"], sort=False):
        label = name[0] if name[1] == "mu_over_rho" else f"{name[0]} (mu_en)"
        ax_dev.plot(group.energy_keV, group.deviation_percent, "o-" if name[1] == "mu_over_rho"
                    else "s--", ms=4, label=label)
    ax_mu.set(xlabel="energy (keV)", ylabel="mu/rho (cm$^2$/g)",
              title="xsim (lines) and NIST XCOM / SRD 126 (circles)")
    ax_mu.legend(fontsize=8)
    for y in (-100 * TOLERANCE, 100 * TOLERANCE):
        ax_dev.axhline(y, color="k", ls=":", lw=1)
    ax_dev.set(xlabel="energy (keV)", ylabel="xsim / NIST - 1 (%)", xscale="log",
               ylim=(-2.5, 2.5), title=f"deviation (pass band +-{100 * TOLERANCE:g} %)")
    ax_dev.legend(fontsize=7, ncol=2)
    for ax in (ax_mu, ax_dev):
        ax.set_xticks([15, 20, 30, 40, 60, 80, 100, 150])
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.tight_layout()
    return fig



def main(out_dir: str | os.PathLike = DEFAULT_OUT_DIR, quick: bool = False) -> bool:
    """Run the comparison, write the CSV and PNG to ``out_dir``; return True on PASS.

    ``quick`` is accepted for the common interface; the study takes well under a second.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = compare()
    fig = _plot(table)
    save_table(table, out_dir / "attenuation_vs_nist.csv")
    save_figure(fig, out_dir / "attenuation_vs_nist.png")
    worst = table.loc[table.groupby(["material", "quantity"], sort=False)
                      .deviation_percent.apply(lambda d: d.abs().idxmax())]
    for _, row in worst.iterrows():
        print(f"{row.material:>14s} {row.quantity:>15s}: worst {row.deviation_percent:+.2f} % "
              f"at {row.energy_keV:g} keV")
    return overall_verdict(table, f"{len(table)} values within {100 * TOLERANCE:g} % of NIST; tables in {out_dir}")


if __name__ == "__main__":
    study_cli(main, __doc__.splitlines()[0], DEFAULT_OUT_DIR, quick_help="same as the full study")
