"""Executing a plan: every trial the store does not hold as done, in-process (`serial`) or as Ray Tune
trials (`ray_tune`), with retries, and an evaluation started as soon as its own search is done.

`run_plan` checks everything it can before it writes anything (the storage folder, its file locking,
the device, the Ray cluster), then records the plan and runs it. SIGUSR1 or SIGTERM stops it at the
running trials' next checkpoints (`stop.py`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any

from ..plan import Plan
from ..store import Store
from .dispatch import Dispatch
from .options import DEFAULT_RETRIES, TRACKERS, RunOptions
from .progress import ProgressLine
from .stale import SETTINGS, adopt, find_stale, version_note
from .stale import describe as describe_stale
from .stop import STOPPED_EXIT, StopRequest
from .tracking import tracking_problem
from .trial import run_trial

__all__ = ["DEFAULT_RETRIES", "STOPPED_EXIT", "Dispatch", "RunOptions", "check_run", "run_plan", "run_trial"]


def check_options(options: RunOptions) -> None:
    """Usage errors of the options themselves (ValueError, one line), before anything is written."""
    from ..engine import pick_device

    if options.executor not in ("ray", "serial"):
        raise ValueError(f"unknown executor {options.executor!r} (known: ray, serial)")
    unknown = [t for t in options.log_to if t not in TRACKERS]
    if unknown:
        raise ValueError(f"--log-to {unknown[0]!r}: unknown (known: {', '.join(TRACKERS)})")
    if options.log_to and options.executor != "ray":
        raise ValueError("--log-to uses Ray Tune's logger callbacks: it needs --executor ray")
    for tracker in options.log_to:
        module = {"tensorboard": "tensorboardX", "mlflow": "mlflow", "wandb": "wandb"}[tracker]
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"--log-to {tracker} needs the {module} package: "
                             "pip install 'lhdbench[tracking]'")
        problem = tracking_problem(tracker)
        if problem:
            raise ValueError(problem)
    if options.executor == "serial":
        pick_device(options.device)  # unknown devices and CUDA without a GPU fail here
    elif options.device not in (None, "cpu"):
        raise ValueError("with the Ray executor each trial uses the device share Ray gives it; "
                         "--device takes only cpu there (trials then ask for no GPU)")
    _check_gpu_shares(options)


def _check_gpu_shares(options: RunOptions) -> None:
    """`--gpus-per-trial` and `--gpu-memory` size the GPU shares Ray trials ask for: refused where they
    would be ignored (the serial executor, --device cpu) or could not be met (a private Ray instance
    on a machine without a GPU), instead of running otherwise than asked."""
    given = [flag for flag, value in (("--gpus-per-trial", options.gpus_per_trial),
                                      ("--gpu-memory", options.gpu_memory_gb)) if value is not None]
    if not given:
        return
    if options.executor == "serial":
        raise ValueError(f"{given[0]} sizes the GPU shares of Ray trials; the serial executor runs one "
                         "trial at a time on the whole device (--device)")
    if options.device == "cpu":
        raise ValueError(f"{given[0]} asks for GPU shares and --device cpu for none: give one of them")
    from .ray_cluster import cluster_address

    if cluster_address(options.address) is None and not options.ray_init.get("num_gpus"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"{given[0]} given, but this machine has no GPU and the run uses a private "
                             "Ray instance on it, which cannot gain one (join a cluster with --address)")


def check_run(store: Store, options: RunOptions) -> None:
    """Everything `run_plan` checks before it writes: the storage folder, the options, file locking
    (probed with a temporary file, removed again) and plan.json. `benchmark --dry-run` runs it too,
    so that it refuses what the run refuses."""
    store.check_usable()
    check_options(options)
    store.check_locking()
    store.read_plan()  # a broken plan.json is an error now, not after the run started


def run_plan(plan: Plan, storage: str | os.PathLike, options: RunOptions | None = None,
             progress_stream: Any = None, announce: Callable[[], None] | None = None) -> Dispatch:
    """Run every trial of `plan` that the store does not hold as done. Returns the bookkeeping,
    whose `counts` say what this run finished and failed, and `stopping` whether a stop signal ended
    it early. `announce` is called once every check has passed, just before the first write."""
    options = options or RunOptions()
    store = Store(storage)
    check_run(store, options)
    records = store.records() if store.root.is_dir() else {}
    stale = find_stale(plan, records)
    adoptable = [s for s in stale if s.why != SETTINGS] if options.adopt_old_code else []
    dispatch = Dispatch(plan, store, stop=StopRequest(store.root))
    executor = None
    if options.executor == "ray" and dispatch.to_run > len(adoptable):
        from .ray_cluster import cluster_address, prepare_environment

        prepare_environment(cluster_address(options.address))
        from .ray_tune import RayExecutor

        executor = RayExecutor(plan, store, options)  # connects, or fails, before anything is written
    try:
        if announce is not None:
            announce()
        store.root.mkdir(parents=True, exist_ok=True)
        for line in store.set_aside_invalid():
            print(f"lhdbench: {line}", file=sys.stderr)
        from .. import __version__

        mixed = version_note(records, __version__) if dispatch.to_run > len(adoptable) else None
        for line in describe_stale(stale, adopting=options.adopt_old_code) + ([mixed] if mixed else []):
            print(f"lhdbench: {line}", file=sys.stderr)
        if adoptable:
            adopt(store, adoptable)
            dispatch = Dispatch(plan, store, stop=dispatch.stop)
        store.add_to_plan(plan.run_entry(), {t.trial_id: {**t.to_dict(), "protocol": plan.protocol.name}
                                             for t in plan.trials})
        progress = ProgressLine(dispatch, progress_stream,
                                started=store.is_running if executor is not None else None)
        progress.update()
        try:
            with dispatch.stop.on_signals(note=progress.note):
                if executor is not None:
                    executor.run(dispatch, progress)
                elif options.executor == "serial":
                    from .serial import run_serial

                    run_serial(plan, store, dispatch, options, progress)
        finally:
            progress.update(force=True)
            progress.close()
    finally:
        if executor is not None:
            executor.close()
    return dispatch
