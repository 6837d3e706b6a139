"""Monte Carlo transport speed: photons/s on the CPU for 128^3 and 256^3 thorax phantoms at 120 kVp, one and
two threads (with and without the 3D deposit tally), and nvcc's resource usage (registers, stack, spills) of
the transport kernel for sm_80 and sm_90. Run by hand on an otherwise idle machine:
``python benchmarks/bench_montecarlo.py [--photons N]``."""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time

from xsim import phantoms
from xsim.geometry import CArm
from xsim.montecarlo import monte_carlo
from xsim.paths import kernels_dir
from xsim.physics.spectra import Spectrum
from xsim.runtime_build import nvrtc_options


def transport_rates(photons: float) -> list[tuple[str, str]]:
    rows = []
    cam = CArm(sdd_mm=1020, sid_mm=760, detector_shape=(512, 512), pixel_mm=0.8).view()
    spectrum = Spectrum.tungsten(120)
    for n in (128, 256):
        phantom = phantoms.thorax(seed=0, voxel_mm=400.0 / n, fov_mm=(400.0, 400.0, 400.0))
        monte_carlo(phantom, cam, spectrum=spectrum, photons=1e4, batches=1, progress=False)  # compile, warm up
        for threads, deposit in ((1, True), (2, True), (2, False)):
            start = time.perf_counter()
            r = monte_carlo(phantom, cam, spectrum=spectrum, photons=photons, batches=4, threads=threads,
                            tally_deposit=deposit, progress=False)
            rate = photons / (time.perf_counter() - start)
            kernel_rate = photons / r.settings["transport_time_s"]
            what = "images + 3D deposit" if deposit else "images only"
            rows.append((f"thorax {n}^3, 120 kVp, 512^2 detector, {what}, {threads} thread(s): photons/s "
                         "(end to end; transport kernel only)", f"{rate:.3g}; {kernel_rate:.3g}"))
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
                        help="histories per measurement (default 5e6: the fixed cost per call, ~0.3 s for 128^3, "
                        "then weighs little)")
    args = parser.parse_args()
    rows = transport_rates(args.photons) + resource_usage()
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  value")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
