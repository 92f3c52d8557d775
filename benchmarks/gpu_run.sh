#!/usr/bin/env bash
# One run on a GPU machine, from a checkout with nothing installed beyond torch and triton:
# does every kernel work here (python -m torchconv_ext check), then how fast is it against
# cuDNN (python -m benchmarks --budget), then the TMA box-tile experiment against our flat
# kernels and cuDNN (python -m benchmarks.box_tiles --time). Everything goes under $OUT: the
# environment (device, driver, versions, commit), the check's JSON report, the benchmark
# results, the logs and the autotuner's disk cache (tuning-cache/: the config each tuned problem
# chose, to study offline). Each step has its own time budget and a hard limit above it (30 s,
# 30 s, 10 s), so the whole run stays under CHECK_BUDGET + BENCH_BUDGET + BOX_BUDGET + 70 s
# (540 s by default).
#
#   OUT=/path/to/results bash benchmarks/gpu_run.sh [CHECK_BUDGET [BENCH_BUDGET [BOX_BUDGET]]]
set -u
OUT=${OUT:-gpu-run}
CHECK_BUDGET=${1:-200}
BENCH_BUDGET=${2:-230}
BOX_BUDGET=${3:-40}
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

timeout $((BOX_BUDGET + 10)) python -m benchmarks.box_tiles --time --budget "$BOX_BUDGET" \
    --out "$OUT/results" > "$OUT/box-tiles.log" 2>&1
echo "box tiles exit status $?" >> "$OUT/box-tiles.log"

tail -n 4 "$OUT/check.log" "$OUT/benchmarks.log" "$OUT/box-tiles.log"
