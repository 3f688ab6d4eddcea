#!/usr/bin/env bash
# Every GPU measurement of the cost work in one run that fits a short GPU window (15 minutes with the
# machine's start, so about 9 minutes of script): `bash benchmarks/gpu.sh [--budget SECONDS]`.
# `bash benchmarks/gpu.sh --rehearse` runs the same steps in the same order on the CPU with tiny
# networks and iteration counts (tests/test_benchmark_gpu_run.py runs it), so the script cannot rot
# between GPU windows. The work is done by benchmarks/gpu_run.py; docs/speed.md says how to read the
# results.
#
# Time plan on one H100 (limits in seconds; a step that reaches its limit is killed, keeps what it
# wrote, and the next one starts; benchmarks/gpu_run.py's STEPS hold the same numbers, and
# tests/test_benchmark_gpu_run.py checks that they agree). "expected" is worked out from the H100
# measurements in docs/speed.md (a plain training step 72 ms, a plain search step 0.77 s, a fused one
# 0.3 s, 4-6 s of cuDNN autotuning and a few seconds to start Python with torch and CUDA per process);
# nothing of this script has run on a GPU yet, so they are estimates, not measurements.
#
#   step         limit  expected  what it measures (the order is the order of what it decides)
#   set-up          30      5-15  pip install -e . where lhdbench does not import (PYTHONPATH where pip
#                                 fails); torch and the CUDA check: without a GPU the run stops here
#   gpu-tests       50     20-35  tests/gpu: graphed step = plain step (three epochs, short last batch
#                                 eager), fresh drop-path masks, resume; memory figures vs measured
#   train-step      55     30-40  plain (50 steps), then the equality check (2 x 30 steps), graphed
#                                 fp32 and graphed bf16 (50 steps each)
#   packing         60     35-47  4 workers start and warm up together (20-25 s), then phases of 1, 2
#                                 and 4 graphed trials, 5 s each
#   search-step     45     25-35  reference cell, fused fp32, fused bf16: 3 + 8 steps each
#   streams         70     40-55  4 one-policy workers and 1 worker with all four networks (its
#                                 warm-up is four networks', 30-35 s), then 2 phases of 5 s
#   compiled        75       cut  torch.compile: backend "cudagraphs" first, then mode
#                                 "reduce-overhead" (Inductor's compilation of this network took over
#                                 four minutes before: it may be cut at its limit, which is recorded)
#   methods         50       cut  every method's search step and memory (about 6 s each), while its
#                                 time lasts
#   summary         15       3-5  summary.json; never skipped (its time is held back from the budget)
#                  ---
#                  450            of the default budget of 480 s (--budget)
#
# A step is offered min(its limit, the budget left minus the summary's 15 s) and skipped below 5 s,
# so a budget too short for the steps still ends with summary.json, whose `missing` list names what
# did not run. After the set-up and after every step, gpu-steps.json (each step: limit, seconds,
# done / failed / killed / skipped) is written and every result file is copied to $OUT when it is
# set, as on a lent device machine. Results go to benchmarks/results/ (a rehearsal: a new temporary
# folder, or --results DIR). Exit status: 0 all steps finished, 1 some did not, 3 stopped at set-up.
#
# Needs python3 (or $PYTHON) with a CUDA build of PyTorch and lhdbench's dependencies other than Ray.
# On a machine without a package registry, first put wheels of the missing ones into benchmarks/wheels:
#   pip download pydantic --python-version 3.12 --only-binary=:all: \
#       --platform manylinux2014_x86_64 -d benchmarks/wheels
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
exec "$PY" benchmarks/gpu_run.py "$@"
