"""Where the CPU projector spends its time: traversal, energy integration and total per image, per image size,
spectrum and thread count, optionally against an older copy of the projector in the same run. Prints a table.

    /work/venv/bin/python benchmarks/bench_projector_speed.py [--repeats 3] [--threads 1 2]
        [--baseline DIR]    # DIR holds an older kernels/project.cu (+ its headers) and xsim/projector.py

Phantom: ``xsim.phantoms.thorax(voxel_mm=1.25, vessels=True, tool=True)`` (320 x 240 x 256 voxels, 10
materials). Camera: C-arm SDD 1020 mm, SID 760 mm, a 307 mm detector of 256 or 512 pixels a side, LAO 30
CRAN 10 and LAO -20 CAUD 15. Columns:

- ``traversal s``: a monochromatic image (one energy bin: the time is the ray walk and line integrals);
- ``total s``: tungsten 80 kVp, 2.5 mm Al, at the given bin width, CsI detector, photon image on;
- ``energy s``: their difference, the energy integration;

each the best of ``--repeats`` calls per view, averaged over the views, wall clock. The baseline and the
current projector are timed alternately, so they share the machine's load; compare the ratios.
With ``--baseline`` the script also checks that both give the same images: line integrals bit for bit,
primary / flat field / photons to the largest relative difference printed.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np

import xsim
import xsim.projector
from xsim import runtime

SIZES = {256: 1.2, 512: 0.6}  # pixels a side -> pixel mm (same field of view)
VIEWS = ((30.0, 10.0), (-20.0, -15.0))  # (LAO, CRAN) degrees


def load_baseline(folder: Path) -> ModuleType:
    """The projector module in ``folder/projector.py``, launching the kernel ``folder/project.cu``."""
    spec = importlib.util.spec_from_file_location("xsim._projector_baseline", folder / "projector.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its relative imports resolve inside the xsim package
    spec.loader.exec_module(module)

    @cache
    def kernel(n_materials: int, backend: str) -> runtime.Kernel:
        return runtime.Kernel(folder / "project.cu", entry="project", params=module.ProjectParams,
                              defines={"PROJECT_NMAT": n_materials, "PROJECT_TILE": module._TILE}, backend=backend)

    module._kernel = kernel
    return module


def best_time(project, phantom, camera, repeats: int, **kwargs) -> float:
    project(phantom, camera, **kwargs)  # warm-up: compile or load the kernel
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        project(phantom, camera, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times)


def agreement(old, new) -> dict:
    """Bit-identity of the line integrals and the largest relative difference of the images."""
    out = {"line integrals identical": all(np.array_equal(old.line_integrals[k], new.line_integrals[k])
                                           for k in old.line_integrals)}
    for name in ("primary", "flat_field", "photons"):
        a, b = getattr(old, name), getattr(new, name)
        if a is not None:
            a64 = a.astype(np.float64)
            out[name] = float(np.max(np.abs(b - a64) / np.maximum(np.abs(a64), np.finfo(np.float32).tiny)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], choices=sorted(SIZES))
    parser.add_argument("--bin-kev", type=float, nargs="+", default=[0.5])
    parser.add_argument("--baseline", type=Path, help="folder with an older project.cu and projector.py")
    args = parser.parse_args()

    phantom = xsim.phantoms.thorax(seed=0, voxel_mm=1.25, vessels=True, tool=True)
    versions = {"current": xsim.projector}
    if args.baseline is not None:
        versions = {"baseline": load_baseline(args.baseline), **versions}
    print(f"phantom {phantom.shape}, {len(phantom.materials)} materials; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; wall clock, best of {args.repeats}")
    print(f"{'image':>7} {'bins':>4} {'threads':>7} {'version':>8} {'traversal s':>11} {'energy s':>9} "
          f"{'total s':>8} {'img/s':>6} {'speed-up':>8}")
    checks = []
    for size in args.sizes:
        carm = xsim.CArm(detector_shape=(size, size), pixel_mm=SIZES[size])
        cameras = [carm.view(lao, cran) for lao, cran in VIEWS]
        for bin_keV in args.bin_kev:
            spectrum = xsim.Spectrum.tungsten(80.0, {"Al": 2.5}, bin_keV=bin_keV)
            bins = int(np.count_nonzero(spectrum.fluence))
            poly = {"spectrum": spectrum, "photons": True}
            if args.baseline is not None:
                images = {name: versions[name].project(phantom, cameras[0], **poly) for name in versions}
                checks.append((size, bin_keV, agreement(images["baseline"], images["current"])))
            for threads in args.threads:
                rows = {name: [0.0, 0.0] for name in versions}
                for camera in cameras:
                    for name, module in versions.items():  # alternate: both see the same load
                        rows[name][0] += best_time(module.project, phantom, camera, args.repeats,
                                                   energy_keV=60.0, threads=threads) / len(cameras)
                        rows[name][1] += best_time(module.project, phantom, camera, args.repeats,
                                                   threads=threads, **poly) / len(cameras)
                reference = rows[next(iter(rows))][1]
                for name, (traversal, total) in rows.items():
                    print(f"{size:>3}^2 {bins:>6} {threads:>7} {name:>8} {traversal:>11.3f} "
                          f"{total - traversal:>9.3f} {total:>8.3f} {1 / total:>6.2f} {reference / total:>7.2f}x")
    for size, bin_keV, check in checks:
        print(f"{size}^2, {bin_keV:g} keV bins, current vs baseline: " +
              ", ".join(f"{k} {v:.2e}" if isinstance(v, float) else f"{k}: {v}" for k, v in check.items()))


if __name__ == "__main__":
    main()
