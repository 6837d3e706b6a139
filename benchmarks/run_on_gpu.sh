#!/usr/bin/env bash
# Everything issue 16 asks to measure on a GPU, in one command, on a machine where xsim is installed and CuPy
# sees the GPU: the GPU tests (tests/test_gpu.py -m gpu), the transport kernel's build variants
# (bench_gpu_transport.py), issue 16's table (gpu_check.py) and Nsight Compute on the transport kernel before
# (MC_PERSISTENT=0) and after. About 6 minutes on an H200; each step has its own time limit.
#
#     benchmarks/run_on_gpu.sh OUT_DIR [--spectra DIR]     # --spectra: see gpu_check.py (no SpekPy there)
#
# OUT_DIR receives variants.txt, gpu_check.txt and .csv, ncu_default.txt, ncu_old.txt; the terminal gets the
# lines that matter.
set -u
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?usage: run_on_gpu.sh OUT_DIR [--spectra DIR]}"
shift
mkdir -p "$out"
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start )) s] $*"; }
export PYTHONUNBUFFERED=1

stamp "GPU: $(nvidia-smi -L 2>/dev/null | head -1)"
stamp tests
# from another folder: the repository root must not shadow the installed xsim
(cd /tmp && timeout 110 python3 -m pytest -q -p no:cacheprovider -m gpu "$root/tests/test_gpu.py" 2>&1 | tail -25)

stamp "transport variants"
timeout 150 python3 "$root/benchmarks/bench_gpu_transport.py" --photons 1e8 "$@" 2>&1 | tee "$out/variants.txt"

stamp gpu_check
timeout 170 python3 "$root/benchmarks/gpu_check.py" --csv "$out/gpu_check.csv" "$@" > "$out/gpu_check.txt" 2>&1
tail -40 "$out/gpu_check.txt"

for variant in default old; do
  stamp "Nsight Compute: $variant"
  timeout 60 ncu --clock-control none -k mc_transport --launch-skip 1 -c 1 --section SpeedOfLight \
    --section Occupancy --section LaunchStats --section WarpStateStats \
    --metrics smsp__thread_inst_executed_per_inst_executed.ratio \
    python3 "$root/benchmarks/bench_gpu_transport.py" --profile "$variant" --photons 2e7 "$@" \
    > "$out/ncu_$variant.txt" 2>&1
  grep -E "photons/s|Duration|Registers Per|Theoretical Occ|Achieved Occ|Compute \(SM\) Th|Memory Th|thread_inst_executed_per|Warp Cycles Per Issued|Local Memory|ERR" \
    "$out/ncu_$variant.txt" | head -16
done
stamp done
