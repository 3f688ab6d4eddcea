#!/usr/bin/env bash
# Every GPU check of the cost work in one run, under 10 minutes on one H100 or H200:
#   1. the GPU tests (tests/gpu): the graphed training step computes the plain one, draws fresh
#      drop-path masks and resumes; the memory model covers the measured peaks;
#   2. the evaluation training step, plain against graphed (benchmarks/train_step.py);
#   3. packing: 1, 2, 4 and 8 trials on the GPU at once (benchmarks/packing.py);
#   4. the search step, reference cell against the fused one (benchmarks/throughput.py);
#   5. every method's search step and peak memory (benchmarks/methods.py), while time is left;
#   6. benchmarks/results/summary.json (benchmarks/summary.py).
# Each step writes its JSON into benchmarks/results/ (copied to $OUT as well when it is set, as on a
# lent device machine) and a failing step does not stop the others; the exit status is the number of
# steps that failed.
#
# Needs python3 with a CUDA build of PyTorch and lhdbench's dependencies other than Ray. On a machine
# without a package registry, first put wheels of the missing ones into benchmarks/wheels here:
#   pip download pydantic --python-version 3.12 --only-binary=:all: \
#       --platform manylinux2014_x86_64 -d benchmarks/wheels
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
R=benchmarks/results
LOG=$R/gpu-log.txt
mkdir -p "$R"
: > "$LOG"
began=$(date +%s)
failed=0
left() { echo $((570 - ($(date +%s) - began))); }
say() { echo "gpu.sh [$(($(date +%s) - began))s] $*" | tee -a "$LOG"; }
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log it, count a failure
    local name=$1 limit=$2
    shift 2
    if [ "$(left)" -lt 30 ]; then say "$name: skipped, no time left"; failed=$((failed + 1)); return; fi
    [ "$limit" -gt "$(left)" ] && limit=$(left)
    say "$name (at most ${limit}s)"
    timeout "$limit" "$@" >> "$LOG" 2>&1
    local rc=$?
    [ $rc -ne 0 ] && { say "$name FAILED (exit $rc)"; failed=$((failed + 1)); }
}

if ! $PY -c "import pydantic" 2>/dev/null && [ -d benchmarks/wheels ]; then
    $PY -m pip install -q --no-index --find-links benchmarks/wheels pydantic >> "$LOG" 2>&1
fi
$PY -m pip install -q --no-deps --no-build-isolation -e . >> "$LOG" 2>&1 || say "pip install -e . failed"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$LOG"

step "GPU tests" 120 $PY -m pytest -q -p no:cacheprovider tests/gpu -s
step "training step" 120 $PY benchmarks/train_step.py --out $R/gpu-train-step.json
step "packing" 180 $PY benchmarks/packing.py --out $R/gpu-packing.json --variants plain,graphed-fp32 \
    --counts 1,2,4,8 --seconds 8 --ready 30
step "search step" 90 $PY benchmarks/throughput.py --out $R/gpu-throughput-search.json --parts search \
    --paths plain,fused-fp32,fused-bf16 --steps 15 --warmup 5
step "methods" $(($(left) - 20)) $PY benchmarks/methods.py --out $R/gpu-methods.json --steps 5
step "summary" 20 $PY benchmarks/summary.py
say "done: $failed step(s) failed"
[ -n "${OUT:-}" ] && cp $R/gpu-*.json $R/summary.json "$LOG" "$OUT"/ 2>/dev/null
tail -20 $R/summary.json 2>/dev/null
exit $failed
