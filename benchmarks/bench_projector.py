"""xsim's ray-cast projector against DiffDRR (Siddon renderer): same CT, same geometry, image agreement
and time per image, printed as a table. Run by hand in the benchmark venv (see benchmarks/README.md):

    /work/bench-venv/bin/python benchmarks/bench_projector.py [--voxel-mm 1.25] [--repeats 3] [--out DIR]

The CT is ``xsim.phantoms.thorax`` (1.25 mm voxels: 320 x 240 x 256). DiffDRR gets the linear attenuation
coefficient volume at ENERGY_KEV, mu = (mu/rho)(E) * density / 10 in 1/mm, so its image is the line integral
of mu; xsim's monochromatic image gives the same quantity as -ln(primary / flat_field). Geometry: the xsim
camera (C-arm, LAO 30 CRAN 10) is mapped to DiffDRR's intrinsics (sdd, pixel size, height, width,
reverse_x_axis=False) and pose (camera -> world rigid transform, orientation=None); the mapping is checked by
comparing DiffDRR's ray end points with xsim's source and pixel centres before anything is timed.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffdrr.drr import DRR  # noqa: E402
from diffdrr.pose import RigidTransform  # noqa: E402
from torchio import ScalarImage, Subject  # noqa: E402

from xsim import phantoms  # noqa: E402
from xsim.geometry import CArm, Camera  # noqa: E402
from xsim.physics.spectra import Spectrum  # noqa: E402
from xsim.projector import project  # noqa: E402
from xsim.validate import save_figure  # noqa: E402

ENERGY_KEV = 60.0
SDD_MM, SID_MM, FIELD_MM = 1020.0, 760.0, 300.0  # detector side fixed, pixel size = FIELD_MM / pixels
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def mu_volume_per_mm(phantom, energy_keV: float) -> np.ndarray:
    table = np.array([m.mu_over_rho(energy_keV) for m in phantom.materials])
    return (table[phantom.material_index] * phantom.density_g_cm3 / 10.0).astype(np.float32)


def diffdrr_for(phantom, camera: Camera, mu: np.ndarray, patch_size: int) -> tuple[DRR, RigidTransform]:
    """A DiffDRR renderer and pose reproducing ``camera``.

    DiffDRR's camera frame has the source at 0 and pixel (row i, col j) at ((j - cx) delx, (i - cy) dely,
    sdd) with reverse_x_axis=False (cx, cy: the detector centre); xsim's C-arm camera frame (x_c = R (x -
    source)) has it at (-(j - cx) col_mm, (i - cy) row_mm, sdd) ... with the signs of both in-plane axes
    flipped: x_xsim = D x_diffdrr, D = diag(-1, -1, 1), a rotation. So the DiffDRR pose (camera -> world)
    is [R^T D | source], and pixel (i, j) is the same pixel in both images.
    """
    rows, cols = camera.detector_shape
    row_mm, col_mm = camera.pixel_mm
    image = ScalarImage(tensor=torch.from_numpy(mu)[None], affine=np.asarray(phantom.affine, dtype=float))
    subject = Subject(volume=image, density=image, reorient=torch.eye(4), mask=None, fiducials=None)
    drr = DRR(subject, sdd=float(camera.sdd_mm), height=rows, width=cols, delx=float(col_mm), dely=float(row_mm),
              reverse_x_axis=False, patch_size=patch_size)
    pose = np.eye(4)
    pose[:3, :3] = camera.rotation.T @ np.diag([-1.0, -1.0, 1.0])
    pose[:3, 3] = camera.source_mm
    return drr, RigidTransform(torch.as_tensor(pose, dtype=torch.float32)[None])


def check_geometry(drr: DRR, pose: RigidTransform, camera: Camera) -> float:
    """Largest distance (mm) between DiffDRR's ray end points and xsim's source / pixel centres."""
    source, target = drr.detector(pose, None)
    positions, _ = camera.pixel_rays()
    err_src = np.abs(source[0, 0].numpy() - camera.source_mm).max()
    err_pix = np.abs(target[0].numpy().reshape(positions.shape) - positions).max()
    return float(max(err_src, err_pix))


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up: kernel compile / allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(voxel_mm: float = 1.25, repeats: int = 3, out_dir: Path = DEFAULT_OUT) -> None:
    torch.set_grad_enabled(False)
    threads = torch.get_num_threads()
    phantom = phantoms.thorax(voxel_mm=voxel_mm)
    mu = mu_volume_per_mm(phantom, ENERGY_KEV)
    spectrum = Spectrum.tungsten(80.0, {"Al": 2.5})
    print(f"CT: thorax {phantom.shape} at {voxel_mm} mm, {len(phantom.materials)} materials; "
          f"{ENERGY_KEV:g} keV; 80 kVp spectrum {int((spectrum.fluence > 0).sum())} bins; "
          f"torch threads {threads}, xsim threads {threads}")
    rows_out, images = [], {}
    for n in (256, 512):
        camera = CArm(sdd_mm=SDD_MM, sid_mm=SID_MM, detector_shape=(n, n), pixel_mm=FIELD_MM / n).view(
            lao_deg=30, cran_deg=10)
        drr, pose = diffdrr_for(phantom, camera, mu, patch_size=min(n, 128))
        geometry_mm = check_geometry(drr, pose, camera)
        if geometry_mm > 1e-2:
            raise RuntimeError(f"DiffDRR geometry differs from xsim's by {geometry_mm:.3g} mm")

        ref = drr(pose)[0, 0].numpy().astype(float)  # line integral of mu
        mono = project(phantom, camera, energy_keV=ENERGY_KEV, threads=threads)
        ours = -np.log(mono.primary.astype(float) / mono.flat_field)
        r = float(np.corrcoef(ours.ravel(), ref.ravel())[0, 1])
        rel = float(np.abs(ours - ref).sum() / np.abs(ref).sum())
        t_diffdrr = best_time(lambda: drr(pose), repeats)
        t_mono = best_time(lambda: project(phantom, camera, energy_keV=ENERGY_KEV, threads=threads), repeats)
        t_poly = best_time(lambda: project(phantom, camera, spectrum=spectrum, threads=threads), repeats)
        rows_out.append((n, geometry_mm, r, rel, t_diffdrr, t_mono, t_poly))
        images[n] = (ours, ref)

    header = ("detector", "geom err mm", "Pearson r", "mean |rel err|", "DiffDRR s", "xsim mono s",
              "xsim poly s", "DiffDRR/mono", "DiffDRR/poly")
    print(" | ".join(header))
    for n, geo, r, rel, t_d, t_m, t_p in rows_out:
        print(f"{n}x{n} | {geo:.1e} | {r:.5f} | {rel:.2e} | {t_d:.2f} | {t_m:.3f} | {t_p:.3f} | "
              f"{t_d / t_m:.1f}x | {t_d / t_p:.1f}x")

    out_dir.mkdir(parents=True, exist_ok=True)
    ours, ref = images[512]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    vmax = np.percentile(ref, 99.5)
    panels = (("xsim: -ln(primary / flat), 60 keV", ours, {"cmap": "gray", "vmin": 0, "vmax": vmax}),
              ("DiffDRR Siddon: sum mu l", ref, {"cmap": "gray", "vmin": 0, "vmax": vmax}),
              ("xsim - DiffDRR", ours - ref, {"cmap": "coolwarm", "vmin": -0.05 * vmax, "vmax": 0.05 * vmax}))
    for ax, (title, img, style) in zip(axes, panels):
        fig.colorbar(ax.imshow(img, **style), ax=ax, fraction=0.046)
        ax.set_title(title)
    fig.tight_layout()
    png = out_dir / "bench_projector.png"
    save_figure(fig, png, dpi=90)
    print(f"wrote {png}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxel-mm", type=float, default=1.25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    main(args.voxel_mm, args.repeats, args.out)
