"""`lhdbench slurm`: the `benchmark` command as a Slurm job (or a chain of them), through Ray.

Everything that can be checked here is checked before anything is written or submitted: the benchmark
options and the plan, the sbatch options (by sbatch itself, `--test-only`), Slurm being there, and the
store (a folder this user can write, on a filesystem that locks files). The job checks again from its
node that it sees the same store (job.py, `begin`).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .chain import SLURM_FOLDER, job_states, read_chains, updating
from .options import parse_sbatch

DEFAULT_MAX_JOBS = 10
# Benchmark options that make no sense in a job, and why.
NOT_IN_A_JOB = {
    "dry_run": "--dry-run: `lhdbench benchmark --dry-run` shows the plan and its cost (--gpus N for the "
               "cluster's GPUs)",
    "gpus": "--gpus goes with `lhdbench benchmark --dry-run`",
    "address": "--address: the job starts a Ray cluster of its own on the allocation",
}
LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}


def add_slurm_command(commands: Any, bench: argparse.ArgumentParser) -> None:
    """`lhdbench slurm`: every option of `benchmark` (its parser is the parent), and the job's own."""
    slurm = commands.add_parser(
        "slurm", parents=[bench], add_help=False,
        help="run a suite as a Slurm job: Ray on the allocation, chained jobs across time limits",
        description="Write and submit an sbatch script that starts Ray on the allocated nodes and runs "
        "`lhdbench benchmark` with these options against it (docs/cluster.md).")
    slurm.add_argument("--until-done", action="store_true",
                       help="each job submits the next one (afterany) until every trial is done")
    slurm.add_argument("--max-jobs", type=_positive_int, default=None, metavar="N",
                       help=f"with --until-done: at most N jobs in the chain (default {DEFAULT_MAX_JOBS})")
    slurm.add_argument("--sbatch", metavar='"OPTIONS"', default="",
                       help='sbatch options, e.g. "--partition gpu --time 24:00:00 --nodes 2 '
                       '--gpus-per-node 4 --cpus-per-task 32"')
    slurm.add_argument("--print", dest="print_script", action="store_true",
                       help="print the job script; submit and write nothing")
    own = {"until_done", "max_jobs", "sbatch", "print_script", "help"}
    benchmark_actions = [a for a in slurm._actions if a.dest not in own and a.option_strings]
    slurm.set_defaults(handler=slurm_command, benchmark_actions=benchmark_actions)


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def slurm_command(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..preflight import check_fits_datasets
    from ..runner import check_options, check_run
    from ..runner.request import benchmark_request
    from ..store import Store

    for dest, why in NOT_IN_A_JOB.items():
        if getattr(args, dest, None) not in (None, False):
            raise UsageError(why)
    if args.executor != "ray":
        raise UsageError("--executor serial: a Slurm job runs its trials on Ray across the allocation")
    if args.max_jobs is not None and not args.until_done:
        raise UsageError("--max-jobs bounds the chain of --until-done: give both")
    sbatch = parse_sbatch(args.sbatch)

    # The plan and the options as `benchmark` makes and checks them, so that the job's driver cannot
    # refuse what was submitted.
    request = benchmark_request(args)
    suite, plan, options = request.suite, request.plan, request.options
    store = Store(request.storage)
    check_fits_datasets(plan)
    check_options(options)
    if any(c in str(store.root) for c in '"\n'):
        raise UsageError(f"--storage {store.root}: a store for Slurm cannot have a double quote or a line "
                         "break in its path")
    max_jobs = (args.max_jobs or DEFAULT_MAX_JOBS) if args.until_done else 1
    command = resubmit_command(args, store.root)
    benchmark = benchmark_argv(args, store.root)

    def script(number: int, token: str) -> str:
        from .script import job_script

        return job_script(store=store.root, chain=number, token=token, python=sys.executable,
                          benchmark=benchmark, sbatch=sbatch, job_name=f"lhdbench-{suite.name}",
                          command=command, version=__version__)

    if args.print_script:
        print(script(next_chain(store.root), "TOKEN"), end="")
        return 0
    if shutil.which("sbatch") is None:
        raise UsageError("no Slurm here: sbatch is not on PATH (run this on a login node of the cluster; "
                         "--print shows the job script without submitting)")
    check_run(store, options)  # the store: a writable folder, file locks, a readable plan.json
    chains = read_chains(store.root)
    check_with_sbatch(script(next_chain(store.root), "TOKEN"))
    note_live_jobs(chains)

    store.root.mkdir(parents=True, exist_ok=True)
    (store.root / SLURM_FOLDER).mkdir(exist_ok=True)
    with updating(store.root) as data:
        number = max([c.get("chain", 0) for c in data["chains"]], default=0) + 1
        token = secrets.token_hex(8)
        path = store.root / SLURM_FOLDER / f"chain-{number}.sh"
        path.write_text(script(number, token))
        try:
            job = submit(path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        data["chains"].append({
            "chain": number, "token": token, "command": command,
            "script": str(path.relative_to(store.root)), "until_done": args.until_done,
            "max_jobs": max_jobs, "trials": [t.trial_id for t in plan.trials], "submitted_at": time.time(),
            "submitted_from": socket.gethostname(),
            "jobs": [{"job_id": job, "dependency": None, "submitted_at": time.time()}]})
    store.add_to_plan(plan.run_entry(), {t.trial_id: {**t.to_dict(), "protocol": plan.protocol.name}
                                         for t in plan.trials})
    records = store.records()
    left = sum(not (records.get(t.trial_id) and records[t.trial_id].status == "done") for t in plan.trials)
    chain = f"--until-done, at most {max_jobs} jobs" if args.until_done else "one job"
    print(f"lhdbench slurm: submitted job {job} (chain {number}, {chain}): {left} of {len(plan.trials)} "
          f"trials left; its output: {store.root / SLURM_FOLDER / (job + '.out')}; `lhdbench status "
          f"--storage {store.root}` follows it")
    return 0


def next_chain(store_root: Path) -> int:
    chains = read_chains(store_root)["chains"] if store_root.is_dir() else []
    return max([c.get("chain", 0) for c in chains], default=0) + 1


def check_with_sbatch(script: str) -> None:
    """sbatch's own verdict on the options, without submitting (`--test-only`): one line if it refuses."""
    with tempfile.NamedTemporaryFile("w", prefix="lhdbench-slurm-", suffix=".sh") as handle:
        handle.write(script)
        handle.flush()
        try:
            answer = subprocess.run(["sbatch", "--test-only", handle.name], capture_output=True, text=True,
                                    timeout=120)
        except (OSError, subprocess.SubprocessError) as error:
            raise UsageError(f"sbatch --test-only did not answer: {error}") from None
    if answer.returncode != 0:
        raise UsageError(f"sbatch refuses the job: {sbatch_error(answer.stderr)}")


def sbatch_error(text: str) -> str:
    """The line of sbatch's stderr that says what is wrong (it often adds a generic one after it)."""
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    specific = [line for line in lines if "error:" in line and "Batch job submission failed" not in line]
    return (specific or lines or ["(no message)"])[0].removeprefix("sbatch: ").removeprefix("error: ")


def submit(path: Path) -> str:
    answer = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True, timeout=120)
    if answer.returncode != 0:
        raise UsageError(f"sbatch refuses the job: {sbatch_error(answer.stderr)}")
    return answer.stdout.strip().split(";")[0]


def note_live_jobs(chains: dict[str, Any]) -> None:
    unfinished = [str(j["job_id"]) for c in chains["chains"] for j in c["jobs"] if not j.get("ended_at")]
    live = [job for job, state in job_states(unfinished).items() if state in LIVE_STATES]
    if live:
        print(f"lhdbench slurm: note: job(s) {', '.join(sorted(live))} of this store are still queued or "
              "running; the new job shares the trials with them (none runs twice)", file=sys.stderr)


# -- the command lines --------------------------------------------------------------------------------

def benchmark_argv(args: argparse.Namespace, store_root: Path) -> list[str]:
    """`benchmark` with the options given here, paths made absolute (the job may start elsewhere)."""
    argv = ["benchmark"]
    for action in args.benchmark_actions:
        if action.dest in ("storage", "executor") or action.dest in NOT_IN_A_JOB:
            continue
        value = getattr(args, action.dest, None)
        if value is None or value is False or value == action.default:
            continue
        option = max(action.option_strings, key=len)
        if action.nargs == 0:
            argv.append(option)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                argv += [option, _text(action.dest, item)]
        else:
            argv += [option, _text(action.dest, value)]
    return argv + ["--storage", str(store_root)]


def _text(dest: str, value: Any) -> str:
    if dest == "seeds":
        return ",".join(map(str, value))
    text = str(value)
    if dest in ("plugin", "data_root") or (dest in ("suite", "preset") and ("/" in text or text.endswith(
            (".yaml", ".yml")))):
        return os.path.abspath(os.path.expanduser(text))
    return text


def resubmit_command(args: argparse.Namespace, store_root: Path) -> str:
    parts = ["lhdbench", "slurm", *benchmark_argv(args, store_root)[1:]]
    if args.until_done:
        parts.append("--until-done")
        if args.max_jobs:
            parts += ["--max-jobs", str(args.max_jobs)]
    if args.sbatch:
        parts += ["--sbatch", args.sbatch]
    return shlex.join(parts)
