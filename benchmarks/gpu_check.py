"""The GPU in one command: xsim's CUDA builds checked against the CPU builds, and their speeds, as one table.

    python benchmarks/gpu_check.py [--quick] [--spectra DIR] [--csv FILE]

Run it on a machine whose CuPy sees an NVIDIA GPU (``pip install 'xsim[gpu]'``); it takes under 3 minutes on an
H200. Checks (issue 16, item 2): ``xsim selftest --backend cuda`` (Philox known answers and streams, exact
atomics, the projector's line integrals bit for bit, the Monte Carlo within statistics), with the chi-square of
the Monte Carlo comparison. Speeds (items 1 and 3):

- Monte Carlo (``monte_carlo``): the thorax in a 400 mm cube at 128^3 and 256^3 voxels, 120 kVp, 512^2
  detector of 0.8 mm, 3D dose tally on (and off), 1e9 photons in 10 batches, end to end and in the transport
  kernel; the fixed cost of a call (a 1e6-photon call minus its transport time) with the phantom already on
  the GPU and for a first call; the kernel's registers, local memory and resident blocks;
- projector (``project``): the thorax of 320 x 240 x 256 voxels (10 materials, 1.25 mm), 80 kVp with 2.5 mm
  Al at 0.5 keV bins (156 bins), 512^2 pixels of 0.6 mm, ms per image over calls made back to back;
- rendering (``render``, ``render_views``): the same phantom and camera, CNN scatter, noise and readout, images
  per second with the images left on the GPU and with ``.image`` read to the host.

A machine without SpekPy (the device machines of this project) reads the spectra from CSV files that
``--write-spectra DIR`` writes where SpekPy is installed (``xsim.Spectrum.to_file``).
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SPECTRA = {"w120": (120.0, {}), "w80": (80.0, {"Al": 2.5})}  # name: (kVp, filtration mm)


def spectra(folder: Path | None) -> dict:
    from xsim.physics.spectra import Spectrum

    if folder is None:
        return {name: Spectrum.tungsten(kvp, filtration_mm=filters) for name, (kvp, filters) in SPECTRA.items()}
    return {name: Spectrum.from_file(folder / f"{name}.csv") for name in SPECTRA}


def write_spectra(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, spectrum in spectra(None).items():
        spectrum.to_file(folder / f"{name}.csv")
    print(f"wrote {', '.join(SPECTRA)} to {folder}")


class Table:
    def __init__(self):
        self.rows: list[tuple[str, str, str]] = []

    def add(self, measure: str, value, target: str = "") -> None:
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        self.rows.append((measure, text, target))
        print(f"  {measure}: {text} {target}", flush=True)

    def show(self) -> None:
        width = max(len(r[0]) for r in self.rows)
        print(f"\n{'measure'.ljust(width)}  {'value':>12}  target")
        for measure, value, target in self.rows:
            print(f"{measure.ljust(width)}  {value:>12}  {target}")

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows([("measure", "value", "target"), *self.rows])


def synchronize() -> None:
    import cupy

    cupy.cuda.get_current_stream().synchronize()


def device_info(table: Table) -> None:
    import cupy
    import torch

    import xsim

    props = cupy.cuda.runtime.getDeviceProperties(0)
    table.add("GPU", f"{props['name'].decode()} ({props['multiProcessorCount']} SMs)")
    table.add("versions", f"xsim {xsim.__version__}, CuPy {cupy.__version__}, torch {torch.__version__}")


def checks(table: Table) -> None:
    from xsim.runtime_selftest import selftest

    start = time.perf_counter()
    details: dict = {}
    for name, passed in selftest("cuda", details=details).items():
        table.add(f"check: {name}", "PASS" if passed else "FAIL")
    if "projector_max_relative_difference" in details:
        table.add("check: projector primary GPU vs CPU, largest relative difference",
                  details["projector_max_relative_difference"], "<= 2e-6")
    for tally, r in details.get("consistency", {}).items():
        table.add(f"check: Monte Carlo GPU vs CPU, same seed, {tally}: chi2/dof (blocks), p",
                  f"{r['chi2_per_dof']:.3f} ({r['dof']}), {r['p_value']:.3g}", "p > 1e-3")
    table.add("checks: seconds", time.perf_counter() - start)


def monte_carlo_speeds(table: Table, spec: dict, quick: bool) -> None:
    from xsim import phantoms
    from xsim.geometry import CArm
    from xsim.montecarlo import _transport_kernel, monte_carlo

    camera = CArm(sdd_mm=1020, sid_mm=760, detector_shape=(512, 512), pixel_mm=0.8).view()
    spectrum = spec["w120"]
    target_photons = 1e8 if quick else 1e9
    for n, target in ((128, 1e9), (256, 5e8)):
        phantom = phantoms.thorax(seed=0, voxel_mm=400.0 / n, fov_mm=(400.0, 400.0, 400.0))
        start = time.perf_counter()
        first = monte_carlo(phantom, camera, spectrum=spectrum, photons=1e6, batches=10, progress=False,
                            backend="cuda")
        cold = time.perf_counter() - start - first.settings["transport_time_s"]
        warm = []
        for _ in range(3):
            start = time.perf_counter()
            r = monte_carlo(phantom, camera, spectrum=spectrum, photons=1e6, batches=10, progress=False,
                            backend="cuda")
            warm.append(time.perf_counter() - start - r.settings["transport_time_s"])
        table.add(f"MC thorax {n}^3, dose on: fixed cost of a call, first call (s)", cold)
        table.add(f"MC thorax {n}^3, dose on: fixed cost of a call, phantom on the GPU (s)", statistics.median(warm),
                  "< 0.1 s" if n == 256 else "")
        # size the long run from a short one, so a slow build cannot hold the check for minutes
        probe = monte_carlo(phantom, camera, spectrum=spectrum, photons=2e7, batches=2, progress=False,
                            backend="cuda")
        rate = 2e7 / probe.settings["transport_time_s"]
        photons = float(min(target_photons, max(1e7, round(rate * 20.0, -6))))
        for deposit in (True, False):
            start = time.perf_counter()
            r = monte_carlo(phantom, camera, spectrum=spectrum, photons=photons, batches=10, progress=False,
                            backend="cuda", tally_deposit=deposit)
            if deposit:
                r.energy_deposit  # the dose map to the host: part of "end to end"
            total = time.perf_counter() - start
            what = "dose on" if deposit else "images only"
            table.add(f"MC thorax {n}^3, {what}, {photons:.2g} photons: photons/s end to end", photons / total,
                      f">= {target:.0e}" if deposit else "")
            table.add(f"MC thorax {n}^3, {what}: photons/s in the transport kernel",
                      photons / r.settings["transport_time_s"])
    attrs = _transport_kernel("cuda").cuda_attributes()
    table.add("MC transport kernel: registers, local bytes, threads x blocks resident",
              f"{attrs['registers']}, {attrs['local_bytes']}, {attrs['block']} x {attrs['max_blocks']}")


def rendering_speeds(table: Table, spec: dict, quick: bool) -> None:
    import xsim
    from xsim import phantoms
    from xsim.projector import project
    from xsim.rendering import render, render_views

    phantom = phantoms.thorax(seed=0, voxel_mm=1.25, vessels=True, tool=True)
    spectrum = spec["w80"]
    carm = xsim.CArm(sdd_mm=1020, sid_mm=760, detector_shape=(512, 512), pixel_mm=0.6)
    rng = np.random.default_rng(0)
    cams = [carm.view(rng.uniform(-40, 40), rng.uniform(-25, 25)) for _ in range(32 if quick else 128)]
    keep = spectrum.fluence.astype(np.float32) > 0
    table.add("projector: phantom, energy bins", f"{'x'.join(map(str, phantom.shape))}, {int(keep.sum())}")

    project(phantom, cams[0], spectrum=spectrum, backend="cuda").primary  # warm-up: upload, compile
    times = []
    for _ in range(3):
        synchronize()
        start = time.perf_counter()
        for cam in cams:
            project(phantom, cam, spectrum=spectrum, backend="cuda")
        synchronize()
        times.append((time.perf_counter() - start) / len(cams))
    table.add("project() 512^2: ms per image, back to back", 1e3 * min(times), "<= 3 ms")
    import cupy

    gpu_ms = []
    for cam in cams[:8]:  # GPU time of one call: between events recorded before and after it
        begin, end = cupy.cuda.Event(), cupy.cuda.Event()
        begin.record()
        project(phantom, cam, spectrum=spectrum, backend="cuda")
        end.record()
        end.synchronize()
        gpu_ms.append(cupy.cuda.get_elapsed_time(begin, end))
    table.add("project() 512^2: GPU ms of one call (events around it)", statistics.median(gpu_ms))
    start = time.perf_counter()
    for cam in cams[:16]:
        project(phantom, cam, spectrum=spectrum, backend="cuda").primary
    table.add("project() 512^2: ms per image, primary read to the host each time",
              1e3 * (time.perf_counter() - start) / 16)

    kw = dict(mas=0.2, scatter="cnn", noise=True)
    render(phantom, cams[0], spectrum, backend="cuda", **kw).image  # warm-up: torch, CNN weights
    for read in (False, True):
        synchronize()
        start = time.perf_counter()
        for k, cam in enumerate(cams):
            r = render(phantom, cam, spectrum, seed=k, backend="cuda", **kw)
            if read:
                r.image
        synchronize()
        rate = len(cams) / (time.perf_counter() - start)
        table.add(f"render() 512^2, CNN scatter, noise, readout: images/s, {'image read' if read else 'on the GPU'}",
                  rate, ">= 150")
    for read in (False, True):
        synchronize()
        start = time.perf_counter()
        views = render_views(phantom, cams, spectrum, backend="cuda", **kw)
        if read:
            for v in views:
                v.image
        synchronize()
        rate = len(cams) / (time.perf_counter() - start)
        table.add(f"render_views() of {len(cams)} views: images/s, {'images read' if read else 'on the GPU'}", rate)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer photons and views (a smoke test)")
    parser.add_argument("--spectra", type=Path, help="folder of spectra written by --write-spectra (no SpekPy)")
    parser.add_argument("--write-spectra", type=Path, metavar="DIR", help="write the spectra as CSV and exit")
    parser.add_argument("--csv", type=Path, help="also write the table to this CSV file")
    parser.add_argument("--skip", nargs="*", default=[], choices=["checks", "mc", "render"])
    args = parser.parse_args()
    if args.write_spectra:
        write_spectra(args.write_spectra)
        return 0
    table = Table()
    start = time.perf_counter()
    device_info(table)
    spec = spectra(args.spectra)
    if "checks" not in args.skip:
        checks(table)
    if "mc" not in args.skip:
        monte_carlo_speeds(table, spec, args.quick)
    if "render" not in args.skip:
        rendering_speeds(table, spec, args.quick)
    table.add("gpu_check: total seconds", time.perf_counter() - start)
    table.show()
    if args.csv:
        table.write_csv(args.csv)
    failed = [r for r in table.rows if r[1] == "FAIL"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
