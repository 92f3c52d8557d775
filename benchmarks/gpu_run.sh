#!/usr/bin/env bash
# One run on a GPU machine, from a checkout with nothing installed beyond torch and triton:
# does every kernel work here (python -m torchconv_ext check), then how fast is it against
# cuDNN (python -m benchmarks --budget), then the TMA box-tile experiment against our flat
# kernels and cuDNN (python -m benchmarks.box_tiles --time). Everything goes under $OUT: the
# environment (device, driver, versions, commit), the check's JSON report, the benchmark
# results, the logs and the autotuner's disk cache (tuning-cache/: the config each problem the
# benchmarks tuned chose, to study offline; the check tunes into a temporary one of its own).
# Each step has its own time budget and a hard limit above it (30 s, 30 s, 10 s), so the whole
# run stays under CHECK_BUDGET + BENCH_BUDGET + BOX_BUDGET + 70 s (540 s by default).
#
# $OUT ends up holding six files, none in a subfolder: the environment, the three logs, the
# check's report and gpu-run.tar.gz, which holds the folders (results/, tuning-cache/) — a
# remote machine may hand back only a few files. Unpack the archive where the results go:
#   tar -xzf gpu-run/gpu-run.tar.gz -C gpu-run
#
#   OUT=/path/to/results bash benchmarks/gpu_run.sh [CHECK_BUDGET [BENCH_BUDGET [BOX_BUDGET]]]
set -u
OUT=${OUT:-gpu-run}
# (some images have python3 only)
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
CHECK_BUDGET=${1:-200}
BENCH_BUDGET=${2:-230}
BOX_BUDGET=${3:-40}
mkdir -p "$OUT"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export TORCHCONV_EXT_CACHE_DIR="$OUT/tuning-cache"
# (a step stopped at its hard limit keeps what it printed)
export PYTHONUNBUFFERED=1

{
    date -u +%Y-%m-%dT%H:%M:%SZ
    git rev-parse HEAD 2>/dev/null && git status --short 2>/dev/null
    nvidia-smi 2>&1 || echo "no nvidia-smi"
    "$PYTHON" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
} > "$OUT/environment.txt" 2>&1

timeout $((CHECK_BUDGET + 30)) "$PYTHON" -m torchconv_ext check --budget "$CHECK_BUDGET" \
    --out "$OUT/torchconv_ext_check.json" > "$OUT/check.log" 2>&1
echo "check exit status $?" >> "$OUT/check.log"

timeout $((BENCH_BUDGET + 30)) "$PYTHON" -m benchmarks --budget "$BENCH_BUDGET" \
    --out "$OUT/results" > "$OUT/benchmarks.log" 2>&1
echo "benchmarks exit status $?" >> "$OUT/benchmarks.log"

timeout $((BOX_BUDGET + 10)) "$PYTHON" -m benchmarks.box_tiles --time --budget "$BOX_BUDGET" \
    --out "$OUT/results" > "$OUT/box-tiles.log" 2>&1
echo "box tiles exit status $?" >> "$OUT/box-tiles.log"

folders=$(cd "$OUT" && for d in results tuning-cache; do [ -d "$d" ] && echo "$d"; done)
if [ -n "$folders" ] && tar -czf "$OUT/gpu-run.tar.gz" -C "$OUT" $folders; then
    (cd "$OUT" && rm -rf $folders)
fi

# Printed too, in case the files do not come back: the check's failures, each step's end.
grep -A1 "^FAIL" "$OUT/check.log" | head -n 80
tail -n 4 "$OUT/check.log" "$OUT/benchmarks.log" "$OUT/box-tiles.log"
ls -l "$OUT"
