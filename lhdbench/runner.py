"""Executes a plan: every trial the store does not hold as done, in-process (`serial`) or as Ray Tune
trials (`ray`), with retries, and an evaluation started as soon as its own search is done.

Durability comes from the store, not from Ray: each trial runs under its lock, resumes from its last
epoch checkpoint and writes its own record atomically, so killing the driver at any moment loses only
the epochs in flight, and a rerun of the same command skips what is done.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engine import RECORD_FILE, TrialFailed, one_line_reason, pick_device
from .methods import PLUGINS_ENV
from .plan import Plan, Trial
from .store import Store

DEFAULT_RETRIES = 2
# Ray's local instance binds to the machine's address unless this is set; a local run needs loopback.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass(frozen=True)
class Resources:
    """What one trial asks the executor for: CPUs, and a fraction of a GPU (0 on a CPU-only run)."""

    cpus: float = 1.0
    gpus: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {"cpu": self.cpus, "gpu": self.gpus}


# -- one trial ------------------------------------------------------------------------------------

def run_trial(trial: Trial, protocol: dict[str, Any], storage: str | os.PathLike, *,
              resources: Resources = Resources(), data_root: str | None = None,
              device: str | None = None) -> dict[str, Any]:
    """Run (or resume, or return the finished record of) one planned trial and store its record.

    Never raises for a failure of the trial itself: the returned record says `failed` with a one-line
    reason. Interrupts propagate and write nothing, so the checkpoint resumes."""
    import torch

    from .protocol import protocol_from_dict

    store = Store(storage)
    with store.trial_lock(trial.trial_id):
        previous = store.read_record(trial.trial_id)
        if previous is not None and previous.get("status") == "done":
            return previous  # a finished trial's record is never rewritten
        attempts = (previous or {}).get("attempts", 0) + 1
        # One intra-op thread pool per trial, sized to what the trial was given: concurrent trials
        # each using every core slow each other down many times over on small machines.
        torch.set_num_threads(max(1, int(resources.cpus)))
        started = time.time()
        worker = {"host": socket.gethostname(), "pid": os.getpid(),
                  "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        store.log_event(trial.trial_id, {"event": "start", "attempt": attempts, "time": started, **worker})
        try:
            record = _run_phase(trial, protocol_from_dict(protocol, name=protocol["name"]), store,
                                data_root, device)
        except Exception as error:  # noqa: BLE001 - any error of one trial is its recorded failure
            record = _failed_trial_record(store, trial, protocol, one_line_reason(error))
        record = {**record, **trial.to_dict(), "attempts": attempts, "resources": resources.to_dict(),
                  "worker": {**worker, "started_at": started, "finished_at": time.time()}}
        store.write_record(record)
        store.log_event(trial.trial_id, {"event": record["status"], "attempt": attempts,
                                         "time": record["worker"]["finished_at"], **worker})
        return record


def _run_phase(trial: Trial, protocol: Any, store: Store, data_root: str | None,
               device: str | None) -> dict[str, Any]:
    out = store.trial_dir(trial.trial_id)
    if trial.phase == "search":
        from .search import run_search

        return run_search(trial.baseline, trial.dataset, trial.seed, protocol, out, device=device,
                          data_root=data_root, progress=False)
    from .evaluate import run_evaluation
    from .search import ARCH_FILE
    from .space import get_policy
    from .space.arch_weights import load_arch_weights

    search = store.read_record(trial.search_trial_id)
    if search is None or search.get("status") != "done":
        raise TrialFailed(f"its search {trial.search_trial_id} has not finished")
    arch = store.trial_dir(trial.search_trial_id) / ARCH_FILE
    return run_evaluation(load_arch_weights(arch), get_policy(trial.policy), trial.dataset, trial.seed,
                          protocol, out, device=device, data_root=data_root, progress=False,
                          inputs={"arch_file": str(arch)})


def _failed_trial_record(store: Store, trial: Trial, protocol: dict[str, Any], reason: str) -> dict[str, Any]:
    """The trial folder's own failed record when the loop wrote it for this failure (it has the
    history and environment), else a minimal one. An earlier attempt's record with another reason
    is not this failure's."""
    from .files import read_json

    path = store.trial_dir(trial.trial_id) / RECORD_FILE
    if path.exists():
        own = read_json(path)
        if own.get("status") == "failed" and own.get("reason") == reason:
            return own
    return {"status": "failed", "reason": reason, "phase": trial.phase, "protocol": protocol}


# -- dependencies and progress -------------------------------------------------------------------

@dataclass
class Dispatch:
    """Which trials may start now. Evaluations wait for their search; a failed search fails its
    evaluations with a reason that names it (they are run again when a rerun's search succeeds)."""

    plan: Plan
    store: Store
    ready: deque[Trial] = field(default_factory=deque)
    waiting: dict[str, list[Trial]] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=lambda: {"done": 0, "failed": 0})
    skipped: int = 0  # done before this run

    def __post_init__(self) -> None:
        records = self.store.records()
        done = {tid for tid, r in records.items() if r.get("status") == "done"}
        self.skipped = sum(t.trial_id in done for t in self.plan.trials)
        for trial in self.plan.trials:
            if trial.trial_id in done:
                continue
            if trial.phase == "search" or trial.search_trial_id in done:
                self.ready.append(trial)
            else:
                self.waiting.setdefault(trial.search_trial_id, []).append(trial)
        # The longest work first (evaluations train for far more epochs than searches run), which
        # shortens the whole run; searches are next so that they unlock more evaluations.
        self.ready = deque(sorted(self.ready, key=lambda t: t.phase == "search"))

    @property
    def to_run(self) -> int:
        return len(self.ready) + sum(map(len, self.waiting.values()))

    def next_trial(self) -> Trial | None:
        if not self.ready:
            return None
        trial = self.ready.popleft()
        self.running.add(trial.trial_id)
        return trial

    def exhausted(self) -> bool:
        return not self.ready and not self.running

    def finish(self, trial: Trial, record: dict[str, Any]) -> None:
        self.running.discard(trial.trial_id)
        unlocked = self.waiting.pop(trial.trial_id, [])
        if record.get("status") == "done":
            self.counts["done"] += 1
            self.ready.extendleft(reversed(unlocked))
            return
        self.counts["failed"] += 1
        for evaluation in unlocked:
            self.store.write_record({
                **evaluation.to_dict(), "status": "failed", "attempts": 0,
                "reason": f"not run: its search {trial.trial_id} failed",
                "protocol": self.plan.protocol.to_dict()})
            self.counts["failed"] += 1

    def counts_line(self, started: float) -> str:
        finished = self.counts["done"] + self.counts["failed"]
        pending = self.to_run
        line = (f"done {self.counts['done'] + self.skipped}/{len(self.plan.trials)}"
                f" ({self.skipped} before this run) | running {len(self.running)}"
                f" | failed {self.counts['failed']} | pending {pending}")
        elapsed = time.monotonic() - started
        if finished and (pending or self.running):
            eta = elapsed / finished * (pending + len(self.running))
            line += f" | ETA {_duration(eta)}"
        return line + f" | {_duration(elapsed)} elapsed"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class ProgressLine:
    """The run's counts on stderr: rewritten in place on a terminal, one line per change otherwise."""

    def __init__(self, dispatch: Dispatch, stream: Any = None) -> None:
        self.dispatch, self.stream = dispatch, stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last: Any = None

    def update(self, force: bool = False) -> None:
        line = self.dispatch.counts_line(self.started)
        # In a log, a line per finished trial; on a terminal, also trial starts and ETA refreshes.
        if self.tty:
            news = (line.rsplit(" | ", 2)[0], int(time.monotonic()))
        else:
            news = (line.split(" | ")[0], self.dispatch.counts["failed"])
        if news == self.last and not (force and self.tty):
            return
        self.last = news
        self.stream.write(f"\r{line}\033[K" if self.tty else f"{line}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.last:
            self.stream.write("\n")
            self.stream.flush()


# -- executors ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunOptions:
    executor: str = "ray"  # "ray" or "serial"
    retries: int = DEFAULT_RETRIES
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: from the method's measured peak memory
    address: str | None = None
    data_root: str | None = None
    device: str | None = None  # serial only; a Ray trial always takes its first visible device
    ray_init: dict[str, Any] = field(default_factory=dict)  # extra ray.init arguments (tests)


def run_plan(plan: Plan, storage: str | os.PathLike, options: RunOptions = RunOptions(),
             progress_stream: Any = None) -> Dispatch:
    """Run every trial of `plan` that the store does not hold as done. Returns the bookkeeping,
    whose `counts` say what this run finished and failed."""
    store = Store(storage)
    store.add_to_plan(plan.run_entry(), {t.trial_id: {**t.to_dict(), "protocol": plan.protocol.name}
                                         for t in plan.trials})
    dispatch = Dispatch(plan, store)
    progress = ProgressLine(dispatch, progress_stream)
    progress.update()
    try:
        if options.executor == "serial":
            _run_serial(plan, store, dispatch, options, progress)
        elif options.executor == "ray":
            from .ray_executor import run_on_ray

            run_on_ray(plan, store, dispatch, options, progress)
        else:
            raise ValueError(f"unknown executor {options.executor!r} (known: ray, serial)")
    finally:
        progress.update(force=True)
        progress.close()
    return dispatch


def _run_serial(plan: Plan, store: Store, dispatch: Dispatch, options: RunOptions,
                progress: ProgressLine) -> None:
    # In-process trials own the whole device, and the report's GPU-hours are wall time x this share.
    on_gpu = pick_device(options.device).type == "cuda"
    resources = Resources(cpus=options.cpus_per_trial, gpus=1.0 if on_gpu else 0.0)
    protocol = plan.protocol.to_dict()
    while (trial := dispatch.next_trial()) is not None:
        progress.update()
        for _ in range(options.retries + 1):
            record = run_trial(trial, protocol, store.root, resources=resources,
                               data_root=options.data_root, device=options.device)
            if record["status"] == "done":
                break
        dispatch.finish(trial, record)
        progress.update()


# -- GPU sharing ----------------------------------------------------------------------------------

# Peak GPU memory per trial at the paper protocol, in GB, from benchmarks/results/ on an H100:
# a fused-cell DARTS search at batch 176 + 176 in bf16 (throughput-search-switches-h100.json) and the
# base network's training step at batch 64 in fp32 (throughput-h100.json). Methods not measured take
# a whole GPU until benchmarks/methods.py has been run for them (see docs/runner.md).
MEASURED_SEARCH_GB = {"darts": 8.3, "milenas": 8.3, "beta-darts": 8.3}
MEASURED_EVALUATION_GB = 3.3
MEMORY_HEADROOM = 1.25  # allocator fragmentation and the CUDA context of each process
MAX_TRIALS_PER_GPU = 4  # host-bound trials overlap well, but beyond a few they contend (unmeasured)


def gpu_fraction(trial: Trial, gpu_memory_gb: float) -> float:
    """The share of one GPU a trial asks for: as many trials per GPU as fit in its memory, at most
    MAX_TRIALS_PER_GPU, or the whole GPU when the method's peak memory is unknown."""
    peak = MEASURED_EVALUATION_GB if trial.phase == "evaluate" else MEASURED_SEARCH_GB.get(trial.baseline)
    if peak is None:
        return 1.0
    per_gpu = max(1, min(MAX_TRIALS_PER_GPU, math.floor(gpu_memory_gb / (peak * MEMORY_HEADROOM))))
    return 1.0 / per_gpu


def worker_environment() -> dict[str, str]:
    """Environment variables a trial on another process or machine needs from the driver."""
    keep = (PLUGINS_ENV, "LHDBENCH_DATA", LOOPBACK_ENV)
    return {k: os.environ[k] for k in keep if os.environ.get(k)}


def resolve_plugin_paths(paths: list[str]) -> None:
    """Put single-file plugins into the environment (absolute paths: trials run elsewhere)."""
    if not paths:
        return
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ValueError(f"plugin file {missing[0]} does not exist")
    existing = [p for p in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if p]
    os.environ[PLUGINS_ENV] = os.pathsep.join(existing + [str(Path(p).resolve()) for p in paths])

