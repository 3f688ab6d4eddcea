"""The sbatch script `lhdbench slurm` writes: Ray on the allocation, the driver against it, Ray gone at
the end. The steps it calls are in job.py; what each line is for is said in the script itself, for
whoever reads it in the store."""

from __future__ import annotations

import shlex
from pathlib import Path

from .chain import SLURM_FOLDER
from .job import NOTHING_LEFT
from .options import SbatchOptions

JOIN_TIMEOUT_ENV = "LHDBENCH_SLURM_JOIN_TIMEOUT"  # seconds the nodes have to join the head (300)

TEMPLATE = r"""#!/bin/bash
#SBATCH --job-name={job_name}
#SBATCH --output={output}
#SBATCH --ntasks-per-node=1
{sbatch_lines}
#
# Written by `lhdbench slurm` (lhdbench {version}) for chain {chain} of the store {store}:
#   {command}
# Run that command again to resubmit (a new chain); `lhdbench status --storage {store}` shows the jobs.
# This job
#  1. checks that this node sees the store and can write and lock it; with --until-done it submits the
#     chain's next job, which starts once this one has ended, however it ends;
#  2. starts a Ray head on this node (the first of the allocation) and a Ray worker on every other node
#     through srun, each with the CPUs and GPUs Slurm gave that node, and waits until all have joined;
#  3. runs the benchmark driver against them; on SIGUSR1 (Slurm's warning before the time limit) or
#     SIGTERM (pre-emption, scancel) the driver starts no more trials and the running ones stop at their
#     next checkpoint;
#  4. stops Ray and says what it finished and what is left.
set -u
python={python}
store={store}
# Run directly, not through a function: then $! is its own pid, and it gets the signals sent to it.
step=("$python" -m lhdbench.slurm.job --storage "$store" --chain {chain})

stop_signal="" driver="" head="" workers=()
forward() {{  # Slurm signals the batch shell only (B:): pass it on to the driver
    stop_signal=$1
    if [ -n "$driver" ]; then kill -s "$1" "$driver" 2>/dev/null; fi
}}
# SIGTERM reaches every process of the job, Ray's too, and Slurm kills what is left KillWait seconds
# later (30 by default): the running trials cannot reach a checkpoint any more, so the driver gets a few
# seconds to end, then this script stops Ray and records the job's end while it still can.
ending_grace=5
trap 'forward USR1' USR1
trap 'forward TERM' TERM

"${{step[@]}}" begin --token {token}
case $? in 0) ;; {nothing_left}) exit 0 ;; *) exit 1 ;; esac

# A token of this cluster's own: nobody else on the network can join it or run code in it.
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$("$python" -c 'import secrets; print(secrets.token_hex(32))')
export RAY_AUTH_TOKEN
case "${{LHDBENCH_HEAD_IP:-}}" in  # on loopback Ray would put the node's network address in its place
    127.*|localhost|::1) export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ;;
esac
run=$(mktemp -d "/tmp/lhdb-slurm-$SLURM_JOB_ID.XXXXXX")

stop_ray() {{  # each Ray node stops its own processes on SIGTERM (never `ray stop`: other jobs' Ray)
    local pid
    for pid in ${{workers[@]+"${{workers[@]}}"}} $head; do kill -TERM "$pid" 2>/dev/null; done
    for pid in ${{workers[@]+"${{workers[@]}}"}} $head; do
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -KILL "$pid" 2>/dev/null
    done
    wait
    rm -rf "$run"
}}
give_up() {{
    stop_ray
    "${{step[@]}}" end --driver-status 1 --signal "$stop_signal" --no-driver
    exit 1
}}

mapfile -t nodes < <("${{step[@]}}" nodes)  # "NAME CPUS", this node first
[ "${{#nodes[@]}}" -gt 0 ] || give_up
read -r head_node head_cpus <<< "${{nodes[0]}}"
"${{step[@]}}" ray-node head --cpus "$head_cpus" --address-file "$run/address" &
head=$!
address=$("${{step[@]}}" await-head --address-file "$run/address" --pid "$head") || give_up
for line in "${{nodes[@]:1}}"; do
    read -r node cpus <<< "$line"
    srun --nodes=1 --ntasks=1 --nodelist="$node" --cpus-per-task="$cpus" --kill-on-bad-exit=0 \
        "${{step[@]}}" ray-node worker --cpus "$cpus" --address "$address" &
    workers+=($!)
done
"${{step[@]}}" await-nodes --address "$address" --timeout "${{{join_timeout_env}:-300}}" || give_up

status={stopped}
if [ -z "$stop_signal" ]; then
    "$python" -m lhdbench.cli {benchmark} --address "$address" &
    driver=$!
    while kill -0 "$driver" 2>/dev/null; do
        wait "$driver"  # returns early when a signal is trapped
        if [ "$stop_signal" = TERM ]; then
            for _ in $(seq "$ending_grace"); do kill -0 "$driver" 2>/dev/null && sleep 1; done
            kill -KILL "$driver" 2>/dev/null  # loses nothing: every record and checkpoint is atomic
        fi
    done
    wait "$driver"
    status=$?
fi
stop_ray
"${{step[@]}}" end --driver-status "$status" --signal "$stop_signal"
exit "$status"
"""


def job_script(*, store: Path, chain: int, token: str, python: str, benchmark: list[str],
               sbatch: SbatchOptions, job_name: str, command: str, version: str) -> str:
    from ..runner.stop import STOPPED_EXIT

    return TEMPLATE.format(
        job_name=job_name, output=_sbatch_quoted(str(store / SLURM_FOLDER).replace("%", "%%") + "/%j.out"),
        sbatch_lines="\n".join(f"#SBATCH {line}" for line in sbatch.lines), version=version, chain=chain,
        store=shlex.quote(str(store)), command=command, python=shlex.quote(python), token=token,
        nothing_left=NOTHING_LEFT, join_timeout_env=JOIN_TIMEOUT_ENV, stopped=STOPPED_EXIT,
        benchmark=" ".join(shlex.quote(a) for a in benchmark))


def _sbatch_quoted(text: str) -> str:
    return f'"{text}"' if any(c.isspace() for c in text) else text
