"""Monte Carlo energy bookkeeping: incident = deposited + reached the detector plane + escaped (+ world).

The last term is the energy absorbed by the world material, when there is one (an air world).

Every history's energy is tallied in fixed point when it starts, at every local deposit and when it
leaves the phantom; the identity holds up to the rounding of each addition (2^-21 keV), i.e. to ~1e-9
relative. Cases: a thorax phantom at 120 kVp, a water slab at 60 keV, and the thorax in an air world. Also
checked: the sum of the 3D energy-deposit tally equals the deposited total. PASS when both hold to 1e-6
relative.

Run: ``python -m validation.mc_energy_balance [--quick] [--out DIR]``.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from xsim import phantoms  # noqa: E402
from xsim.geometry import CArm  # noqa: E402
from xsim.montecarlo import ENERGY_SLOTS, monte_carlo  # noqa: E402
from xsim.physics.spectra import Spectrum  # noqa: E402
from xsim.validate import save_figure, save_table, study_cli  # noqa: E402

try:
    from .mc_common import DEFAULT_OUT_DIR
except ImportError:
    from mc_common import DEFAULT_OUT_DIR

TOLERANCE = 1e-6


def balance_case(name: str, phantom, camera, photons: float, seed: int = 0, **beam) -> dict:
    r = monte_carlo(phantom, camera, photons=photons, seed=seed, batches=4, progress=False, **beam)
    b = r.energy_balance_eV
    out = b["deposited"] + b["reached_plane"] + b["escaped_elsewhere"] + b["deposited_world"]
    return dict(case=name, photons=r.photons, **{f"{k}_eV": b[k] for k in ENERGY_SLOTS},
                imbalance=(b["incident"] - out) / b["incident"],
                deposit_sum_mismatch=(r.energy_deposit.sum() - b["deposited"]) / b["deposited"])


def cases(quick: bool) -> list[dict]:
    photons = 1e5 if quick else 2e6
    cam = CArm(sdd_mm=1200, sid_mm=800, detector_shape=(64, 64), pixel_mm=6.0).view()
    thorax = phantoms.thorax(seed=1, voxel_mm=8.0 if quick else 4.0)
    slab = phantoms.slab(thickness_mm=200.0, size_mm=(300.0, 300.0), voxel_mm=10.0)
    return [balance_case("thorax 120 kVp", thorax, cam, photons, spectrum=Spectrum.tungsten(120)),
            balance_case("water slab 20 cm, 60 keV", slab, cam, photons, seed=1, energy_keV=60.0),
            balance_case("thorax 120 kVp, air world", thorax, cam, photons, seed=2, spectrum=Spectrum.tungsten(120),
                         world_material="air")]


def main(out_dir: str | os.PathLike = DEFAULT_OUT_DIR, quick: bool = False) -> bool:
    """Run the cases, write ``mc_energy_balance.csv`` and ``.png``; return True on PASS."""
    table = pd.DataFrame(cases(quick))
    ok = (table.imbalance.abs() <= TOLERANCE) & (table.deposit_sum_mismatch.abs() <= TOLERANCE)
    table["status"] = ["PASS" if o else "FAIL" for o in ok]
    out = Path(out_dir)
    save_table(table, out / "mc_energy_balance.csv", float_format="%.9g")
    fig, ax = plt.subplots(figsize=(7, 4))
    parts = ["deposited_eV", "reached_plane_eV", "escaped_elsewhere_eV", "deposited_world_eV"]
    (table.set_index("case")[parts].div(table.set_index("case").incident_eV, axis=0)).plot.barh(stacked=True, ax=ax)
    ax.set(xlabel="fraction of the incident energy", title="MC energy bookkeeping")
    fig.tight_layout()
    save_figure(fig, out / "mc_energy_balance.png")
    print(table.to_string(index=False))
    passed = bool(ok.all())
    print(f"\n{'PASS' if passed else 'FAIL'}: incident = deposited + escaped within {TOLERANCE:g} relative")
    return passed


if __name__ == "__main__":
    study_cli(main, __doc__.splitlines()[0], DEFAULT_OUT_DIR)
