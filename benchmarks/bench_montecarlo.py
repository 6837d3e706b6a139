"""Monte Carlo transport speed: photons/s on the CPU for 128^3 and 256^3 thorax phantoms at 120 kVp, one and
two threads (with and without the 3D deposit tally); the speed-up of the host build over the portable one (one
history per index, as on the GPU) measured in the same run; and nvcc's resource usage (registers, stack, spills)
of the transport kernel for sm_80 and sm_90. Run by hand on an otherwise idle machine:
``python benchmarks/bench_montecarlo.py [--photons N] [--repeats R]``.

Each measurement is repeated R times, the repetitions of all configurations interleaved, and reported as the
median (min-max): a virtual machine's speed can drift by 10-30 % within minutes."""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from xsim import montecarlo, phantoms
from xsim.geometry import CArm
from xsim.montecarlo import monte_carlo
from xsim.paths import kernels_dir
from xsim.physics.spectra import Spectrum
from xsim.runtime_build import nvrtc_options

# The portable build of the transport: one history per index run to its end, Philox one block at a time (the
# GPU's way, compiled for the CPU); the peer of the default host build (interleaved histories, batched Philox).
PORTABLE_DEFINES = {"MC_INTERLEAVE": 1, "XSIM_PHILOX_BLOCKS": 1}


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"


def transport_rates(photons: float, repeats: int) -> list[tuple[str, str]]:
    cam = CArm(sdd_mm=1020, sid_mm=760, detector_shape=(512, 512), pixel_mm=0.8).view()
    spectrum = Spectrum.tungsten(120)
    phantoms_by_n = {n: phantoms.thorax(seed=0, voxel_mm=400.0 / n, fov_mm=(400.0, 400.0, 400.0)) for n in (128, 256)}
    # (phantom, threads, deposit, build)
    configs = [(n, threads, deposit, None) for n in (128, 256) for threads, deposit in ((1, True), (2, True), (2, False))]
    configs.append((128, 2, True, PORTABLE_DEFINES))
    for n, _, _, defines in configs:  # compile and warm up every build
        with montecarlo._transport_build(**(defines or {})):
            monte_carlo(phantoms_by_n[n], cam, spectrum=spectrum, photons=1e4, batches=1, progress=False)
    end_to_end: list[list[float]] = [[] for _ in configs]
    kernel: list[list[float]] = [[] for _ in configs]
    for _ in range(repeats):
        for k, (n, threads, deposit, defines) in enumerate(configs):
            with montecarlo._transport_build(**(defines or {})):
                start = time.perf_counter()
                r = monte_carlo(phantoms_by_n[n], cam, spectrum=spectrum, photons=photons, batches=4,
                                threads=threads, tally_deposit=deposit, progress=False)
                end_to_end[k].append(photons / (time.perf_counter() - start))
            kernel[k].append(photons / r.settings["transport_time_s"])
    rows = []
    for k, (n, threads, deposit, _) in enumerate(configs[:-1]):
        what = "images + 3D deposit" if deposit else "images only"
        rows.append((f"thorax {n}^3, 120 kVp, 512^2 detector, {what}, {threads} thread(s): photons/s, end to end",
                     _spread(end_to_end[k])))
        rows.append((f"thorax {n}^3, 120 kVp, 512^2 detector, {what}, {threads} thread(s): photons/s, transport "
                     "kernel only", _spread(kernel[k])))
    portable, host = len(configs) - 1, configs.index((128, 2, True, None))
    rows.append(("thorax 128^3, images + 3D deposit, 2 threads: portable build (one history per index), "
                 "photons/s, transport kernel only", _spread(kernel[portable])))
    ratios = [h / p for h, p in zip(kernel[host], kernel[portable])]
    rows.append(("  host build / portable build, same run", _spread(ratios)))
    return rows


def resource_usage() -> list[tuple[str, str]]:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return [("nvcc", "not found")]
    kdir = kernels_dir()
    rows = []
    for arch in ("80", "90"):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [nvcc, "-c", f"-gencode=arch=compute_{arch},code=sm_{arch}", "--resource-usage",
                   *nvrtc_options([kdir], {}, "0" * 64), "-x", "cu", str(kdir / "mc_transport.cu"), "-o", f"{tmp}/k.o"]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            lines = (out.stdout + out.stderr).splitlines()
            # ptxas reports the entry's stack frame and spills on the line after "Function properties for
            # mc_transport", then its registers on a "Used N registers" line
            for k, line in enumerate(lines):
                if line.rstrip().endswith("Function properties for mc_transport") and k + 1 < len(lines):
                    rows.append((f"mc_transport sm_{arch}: stack and spills", lines[k + 1].strip()))
                if "Used" in line and "registers" in line:
                    usage = re.sub(r"\s+", " ", line.split(":", 1)[-1]).strip()
                    rows.append((f"mc_transport sm_{arch}: resources", usage))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photons", type=float, default=5e6,
                        help="histories per measurement (default 5e6: the fixed cost per call, ~0.1 s for 128^3, "
                        "then weighs little)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each measurement (default 3)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    rows = transport_rates(args.photons, args.repeats) + resource_usage()
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  value")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
