"""Build variants of the Monte Carlo transport kernel on a GPU: photons/s and resources per variant, in one run.

    python benchmarks/bench_gpu_transport.py [--photons 2e8] [--variants NAME ...] [--spectra DIR]
    python benchmarks/bench_gpu_transport.py --profile NAME --photons 2e7    # one launch, for Nsight Compute:
    ncu --clock-control none -k mc_transport -c 1 --section SpeedOfLight --section Occupancy \\
        --section WarpStateStats --metrics smsp__thread_inst_executed_per_inst_executed.ratio \\
        python benchmarks/bench_gpu_transport.py --profile NAME --photons 2e7

Setup: the thorax in a 400 mm cube at 128^3 and 256^3 voxels, 120 kVp, a 512^2 detector of 0.8 mm, 3D dose
tally on (issue 16's setup). Per variant: the transport kernel's photons/s (``transport_time_s`` of
``monte_carlo``, batches synchronized), its registers per thread, local memory (stack and spills) per thread,
and the threads x blocks launched at once. The variants are the choices of docs/monte_carlo.md's GPU section:
the former one-history-per-index state machine (``old``) against persistent threads with several register
budgets, the Philox refill inlined or not, fast-math intrinsics, and walks cut after 2 or 4 block crossings per
pass. Spectra: as in gpu_check.py.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# name: (-D defines, extra NVRTC options)
VARIANTS = {
    "old": ({"MC_PERSISTENT": 0}, ()),
    "default": ({}, ()),
    "regs128": ({"MC_CUDA_MIN_BLOCKS": 2}, ()),
    "regs64": ({"MC_CUDA_MIN_BLOCKS": 4}, ()),
    "block128": ({"MC_CUDA_THREADS": 128, "MC_CUDA_MIN_BLOCKS": 6}, ()),
    "philox_inline": ({"XSIM_PHILOX_NOINLINE": 0}, ()),
    "fast_math": ({}, ("--use_fast_math",)),
    "walk2": ({"MC_CUDA_WALK_CROSSINGS": 2}, ()),
    "walk4": ({"MC_CUDA_WALK_CROSSINGS": 4}, ()),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photons", type=float, default=2e8)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--sizes", nargs="*", type=int, default=[128, 256])
    parser.add_argument("--profile", choices=list(VARIANTS), help="run one launch of this variant (for ncu)")
    parser.add_argument("--spectra", type=Path, help="folder of spectra CSV files (see gpu_check.py)")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_check import spectra

    from xsim import montecarlo, phantoms
    from xsim.geometry import CArm
    from xsim.montecarlo import monte_carlo

    spectrum = spectra(args.spectra)["w120"]
    camera = CArm(sdd_mm=1020, sid_mm=760, detector_shape=(512, 512), pixel_mm=0.8).view()
    sizes = [128] if args.profile else args.sizes
    thorax = {n: phantoms.thorax(seed=0, voxel_mm=400.0 / n, fov_mm=(400.0, 400.0, 400.0)) for n in sizes}
    if args.profile:
        defines, options = VARIANTS[args.profile]
        with montecarlo._transport_build(cuda_options=options, **defines):
            monte_carlo(thorax[128], camera, spectrum=spectrum, photons=1e5, batches=1, progress=False,
                        backend="cuda")  # compile, upload (a launch ncu skips with --launch-skip 1 or profiles)
            r = monte_carlo(thorax[128], camera, spectrum=spectrum, photons=args.photons, batches=1,
                            progress=False, backend="cuda")
        print(f"{args.profile}: {args.photons / r.settings['transport_time_s']:.3g} photons/s")
        return 0

    print(f"{'variant':<14} {'regs':>5} {'local B':>8} {'resident':>10} " +
          " ".join(f"{f'{n}^3 photons/s':>16}" for n in sizes) + "  compile s", flush=True)
    for name in args.variants:
        defines, options = VARIANTS[name]
        with montecarlo._transport_build(cuda_options=options, **defines):
            start = time.perf_counter()
            monte_carlo(thorax[sizes[0]], camera, spectrum=spectrum, photons=1e5, batches=1, progress=False,
                        backend="cuda")
            compile_s = time.perf_counter() - start
            attrs = montecarlo._transport_kernel("cuda").cuda_attributes()
            rates = []
            for n in sizes:
                monte_carlo(thorax[n], camera, spectrum=spectrum, photons=1e6, batches=1, progress=False,
                            backend="cuda")  # the phantom to the GPU
                r = monte_carlo(thorax[n], camera, spectrum=spectrum, photons=args.photons, batches=4,
                                progress=False, backend="cuda")
                rates.append(args.photons / r.settings["transport_time_s"])
        print(f"{name:<14} {attrs['registers']:>5} {attrs['local_bytes']:>8} "
              f"{attrs['block']:>4}x{attrs['max_blocks']:<5} " + " ".join(f"{v:>16.3g}" for v in rates) +
              f"  {compile_s:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
