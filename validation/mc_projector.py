"""Monte Carlo primary image equals the ray-cast projector's primary image (same geometry).

Both paths see the same voxels, attenuation data, spectrum and detector response; the projector integrates
exp(-sum mu L) along each pixel-centre ray, the MC counts photons that cross the phantom without
interacting, averaged over the pixel area. So the projector runs on a detector SUPERSAMPLE times finer and its
image is summed over each MC pixel. Cases: a water cylinder at 60 keV, the same cylinder on a voxel grid rotated
by 30 degrees (a CT's oblique direction cosines: each index axis mixes the world's three), and an 8 mm thorax at
80 kVp. Pixels
expected (from the projector's transmission) to receive more than 200 primary histories are compared (the normal
approximation holds there). PASS when the
reduced chi-square of (MC - projector) / sigma_MC lies within 1 +- 5 sqrt(2 / n) and the summed ratio
MC / projector is 1 within 3 standard errors.

Run: ``python -m validation.mc_projector [--quick] [--out DIR]``.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from xsim import phantoms  # noqa: E402
from xsim.geometry import CArm  # noqa: E402
from xsim.montecarlo import monte_carlo  # noqa: E402
from xsim.physics.spectra import Spectrum  # noqa: E402
from xsim.projector import project  # noqa: E402
from xsim.validate import overall_verdict, save_figure, save_table, study_cli  # noqa: E402
from xsim.volume import Phantom  # noqa: E402

try:
    from .mc_common import DEFAULT_OUT_DIR
except ImportError:
    from mc_common import DEFAULT_OUT_DIR

SUPERSAMPLE = 8
MIN_PRIMARY_HISTORIES = 200
SDD_MM, SID_MM, SHAPE, PIXEL_MM = 1200.0, 800.0, (24, 24), 16.0


def projector_pixel_sums(phantom, **beam) -> np.ndarray:
    rows, cols = SHAPE
    fine = CArm(sdd_mm=SDD_MM, sid_mm=SID_MM, detector_shape=(rows * SUPERSAMPLE, cols * SUPERSAMPLE),
                pixel_mm=PIXEL_MM / SUPERSAMPLE).view()
    proj = project(phantom, fine, **beam)
    return tuple(a.astype(float).reshape(rows, SUPERSAMPLE, cols, SUPERSAMPLE).sum(axis=(1, 3))
                 for a in (proj.primary, proj.flat_field))


def rotated_grid(phantom: Phantom, angle_deg: float) -> Phantom:
    """The phantom with its voxel grid turned by ``angle_deg`` about the world z axis through the grid's centre."""
    affine = np.asarray(phantom.affine, dtype=float)
    centre = affine @ np.r_[(np.array(phantom.material_index.shape) - 1) / 2.0, 1.0]
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    turn = np.eye(4)
    turn[:2, :2] = [[c, -s], [s, c]]
    turn[:3, 3] = centre[:3] - turn[:3, :3] @ centre[:3]
    return Phantom(phantom.material_index, phantom.density_g_cm3, turn @ affine, phantom.materials)


def compare_case(name: str, phantom, photons: float, seed: int = 0, **beam) -> tuple[dict, tuple]:
    camera = CArm(sdd_mm=SDD_MM, sid_mm=SID_MM, detector_shape=SHAPE, pixel_mm=PIXEL_MM).view()
    proj, flat = projector_pixel_sums(phantom, **beam)
    mc = monte_carlo(phantom, camera, photons=photons, seed=seed, batches=20, progress=False, **beam)
    # chosen from the projector (choosing by the MC's own error would favour upward fluctuations):
    # expected primary histories per pixel ~ photons / pixels x transmission
    mask = photons / proj.size * proj / flat > MIN_PRIMARY_HISTORIES
    z = (mc.primary - proj)[mask] / mc.primary_std[mask]
    n = int(mask.sum())
    ratio = mc.primary[mask].sum() / proj[mask].sum()
    ratio_sigma = np.sqrt((mc.primary_std[mask] ** 2).sum()) / proj[mask].sum()
    chi2 = float((z * z).mean())
    ok = abs(chi2 - 1.0) <= 5 * np.sqrt(2.0 / n) and abs(ratio - 1.0) <= 3 * ratio_sigma
    row = dict(case=name, photons=mc.photons, pixels_compared=n, reduced_chi2=chi2,
               chi2_tolerance=5 * np.sqrt(2.0 / n), mean_ratio=ratio, ratio_sigma=ratio_sigma,
               status="PASS" if ok else "FAIL")
    return row, (proj, mc.primary, mask)


def main(out_dir: str | os.PathLike = DEFAULT_OUT_DIR, quick: bool = False) -> bool:
    """Run the cases, write ``mc_projector.csv`` and ``.png``; return True on PASS."""
    photons = 2e6 if quick else 2e7
    cylinder = phantoms.water_cylinder(200, 200, voxel_mm=5.0)
    runs = [compare_case("water cylinder 60 keV", cylinder, photons, energy_keV=60.0),
            compare_case("water cylinder 60 keV, grid rotated 30 deg", rotated_grid(cylinder, 30.0), photons,
                         seed=2, energy_keV=60.0),
            compare_case("thorax 80 kVp", phantoms.thorax(seed=2, voxel_mm=8.0), photons, seed=1,
                         spectrum=Spectrum.tungsten(80))]
    table = pd.DataFrame([r for r, _ in runs])
    out = Path(out_dir)
    save_table(table, out / "mc_projector.csv")
    fig, axes = plt.subplots(len(runs), 3, figsize=(10, 3.3 * len(runs)), squeeze=False)
    for row_axes, (row, (proj, mc, mask)) in zip(axes, runs):
        row_axes[0].imshow(proj, cmap="gray")
        row_axes[0].set_title(f"{row['case']}: projector (pixel sums)")
        row_axes[1].imshow(mc, cmap="gray")
        row_axes[1].set_title("MC primary")
        im = row_axes[2].imshow(np.where(mask, mc / proj - 1.0, np.nan), cmap="coolwarm", vmin=-0.05, vmax=0.05)
        row_axes[2].set_title("MC / projector - 1 (compared pixels)")
        fig.colorbar(im, ax=row_axes[2])
    fig.tight_layout()
    save_figure(fig, out / "mc_projector.png", dpi=100)
    print(table.to_string(index=False))
    return overall_verdict(table, "MC primary = projector primary within statistics")


if __name__ == "__main__":
    study_cli(main, __doc__.splitlines()[0], DEFAULT_OUT_DIR)
