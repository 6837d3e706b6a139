"""Kernel runtime timings, printed as a table: CPU compile (cold cache), load from the cache (in a fresh
process and in-process), Philox and demo-histogram throughput per CPU thread count, and nvcc time per
kernel for sm_80 + sm_90. Run by hand: ``python benchmarks/bench_runtime.py``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from xsim.paths import kernels_dir

def main() -> None:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XSIM_CACHE_DIR": cache}
        probe = (
            "import json, time; from xsim import runtime, runtime_selftest as s\n"
            "t = time.perf_counter(); s.demo_histogram(1, 1, 0); s.rng_draws(1, 1)\n"
            "print(json.dumps({'seconds': time.perf_counter() - t, **runtime.cache_stats()}))"
        )
        cold = json.loads(subprocess.run([sys.executable, "-c", probe], env=env, check=True,
                                         capture_output=True, text=True).stdout)
        warm = json.loads(subprocess.run([sys.executable, "-c", probe], env=env, check=True,
                                         capture_output=True, text=True).stdout)
        rows.append(("compile demo_histogram + rng_check, cold cache (s)", f"{cold['compile_seconds']:.2f}"))
        rows.append(("load both from cache, fresh process (s)", f"{warm['seconds']:.3f} (misses={warm['misses']})"))

        os.environ["XSIM_CACHE_DIR"] = cache
        from xsim import runtime_selftest as s

        for threads in (1, os.cpu_count() or 1):
            n, draws = 1 << 16, 256
            s.demo_histogram(n, draws, 1, threads=threads)
            start = time.perf_counter()
            s.demo_histogram(n, draws, 1, threads=threads)
            rate = n * draws / (time.perf_counter() - start)
            rows.append((f"demo_histogram draws/s, {threads} thread(s) (atomics on 64 bins)", f"{rate:.3g}"))
            start = time.perf_counter()
            s.rng_draws(1 << 14, 256, "uniform", threads=threads)
            rate = (1 << 22) / (time.perf_counter() - start)
            rows.append((f"Philox uniform draws/s written to memory, {threads} thread(s)", f"{rate:.3g}"))

    nvcc = shutil.which("nvcc")
    if nvcc:
        kdir = kernels_dir()
        for path in sorted(kdir.glob("*.cu")):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [nvcc, "-c", "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
                       "-std=c++17", f"-I{kdir}", str(path), "-o", f"{tmp}/k.o"]
                start = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                rows.append((f"nvcc -c sm_80+sm_90 {path.name} (s)", f"{time.perf_counter() - start:.2f}"))
    else:
        rows.append(("nvcc", "not found"))

    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
