#!/usr/bin/env bash
# One run on a GPU machine, from a checkout with nothing installed beyond torch and triton:
# does every kernel work here (python -m torchconv_ext check), then how fast is it against
# cuDNN (python -m benchmarks --budget). Everything goes under $OUT: the environment (device,
# driver, versions, commit), the check's JSON report, the benchmark results, both logs and the
# autotuner's disk cache (tuning-cache/: the config each tuned problem chose, to study offline).
# Each step has its own time budget and a hard limit 30 s above it, so the whole run stays
# under CHECK_BUDGET + BENCH_BUDGET + 60 s (540 s by default).
#
#   OUT=/path/to/results bash benchmarks/gpu_run.sh [CHECK_BUDGET [BENCH_BUDGET]]
set -u
OUT=${OUT:-gpu-run}
CHECK_BUDGET=${1:-210}
BENCH_BUDGET=${2:-270}
mkdir -p "$OUT"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export TORCHCONV_EXT_CACHE_DIR="$OUT/tuning-cache"

{
    date -u +%Y-%m-%dT%H:%M:%SZ
    git rev-parse HEAD 2>/dev/null && git status --short 2>/dev/null
    nvidia-smi 2>&1 || echo "no nvidia-smi"
    python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
} > "$OUT/environment.txt" 2>&1

timeout $((CHECK_BUDGET + 30)) python -m torchconv_ext check --budget "$CHECK_BUDGET" \
    --out "$OUT/torchconv_ext_check.json" > "$OUT/check.log" 2>&1
echo "check exit status $?" >> "$OUT/check.log"

timeout $((BENCH_BUDGET + 30)) python -m benchmarks --budget "$BENCH_BUDGET" \
    --out "$OUT/results" > "$OUT/benchmarks.log" 2>&1
echo "benchmarks exit status $?" >> "$OUT/benchmarks.log"

tail -n 4 "$OUT/check.log" "$OUT/benchmarks.log"
