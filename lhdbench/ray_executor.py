"""Running a plan as Ray Tune trials, on a local Ray instance or an existing cluster.

Tune executes and retries the trials; the order comes from a Searcher that hands out a trial only when
it may start (an evaluation once its search is done), so no phase barrier idles a GPU. Each trial asks
for a fraction of a GPU (or CPUs only, where the cluster has no GPU); Ray makes its share the first
visible device, which is the one the trial uses.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ray
from ray import tune
from ray.tune.search import Searcher

from .plan import Plan, Trial
from .runner import (
    LOOPBACK_ENV,
    Dispatch,
    ProgressLine,
    Resources,
    RunOptions,
    gpu_fraction,
    run_trial,
    worker_environment,
)
from .store import Store

# Where no GPU is visible to the driver (a CPU-only head node), assume this much memory per GPU for
# sharing decisions: small enough to be safe on 40 GB cards. --gpus-per-trial overrides it all.
ASSUMED_GPU_MEMORY_GB = 40.0


def run_on_ray(plan: Plan, store: Store, dispatch: Dispatch, options: RunOptions,
               progress: ProgressLine) -> None:
    if dispatch.to_run == 0:
        return  # everything is done: no need to start Ray at all
    started_here = _init_ray(options)
    try:
        resources = _trial_resources(plan, options)
        trainable = tune.with_resources(
            tune.with_parameters(_tune_trial, trials={t.trial_id: t.to_dict() for t in plan.trials},
                                 protocol=plan.protocol.to_dict(), storage=str(store.root),
                                 resources={k: v.to_dict() for k, v in resources.items()},
                                 data_root=options.data_root),
            lambda config: tune.PlacementGroupFactory([_bundle(resources[config["trial"]])]))
        # Tune's own console tables would interleave with the progress line, which says it all.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=_PlanSearcher(dispatch, store),
                                        num_samples=dispatch.to_run, reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                storage_path=str(store.root / "ray"), verbose=0,
                failure_config=tune.FailureConfig(max_failures=options.retries),
                callbacks=[_ProgressCallback(progress)]))
        tuner.fit()
        if not dispatch.exhausted():
            # Tune stops early only when asked to (Ctrl-C): the store holds what finished.
            raise KeyboardInterrupt
    finally:
        if started_here:
            ray.shutdown()


def _init_ray(options: RunOptions) -> bool:
    if ray.is_initialized():
        return False
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    env = worker_environment()
    if address is None:
        # A local instance for this run only: keep all of Ray's traffic on the loopback interface.
        os.environ.setdefault(LOOPBACK_ENV, "0")
        env.setdefault(LOOPBACK_ENV, os.environ[LOOPBACK_ENV])
    ray.init(address=address, runtime_env={"env_vars": env} if env else None, include_dashboard=False,
             log_to_driver=False, logging_level="ERROR", **options.ray_init)
    return True


def _trial_resources(plan: Plan, options: RunOptions) -> dict[str, Resources]:
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    if options.gpus_per_trial is not None and options.gpus_per_trial > 0 and not has_gpus:
        raise ValueError("--gpus-per-trial given, but the Ray cluster has no GPUs")
    memory = _gpu_memory_gb() if has_gpus else 0.0
    out = {}
    for trial in plan.trials:
        if not has_gpus:
            gpus = 0.0
        elif options.gpus_per_trial is not None:
            gpus = options.gpus_per_trial
        else:
            gpus = gpu_fraction(trial, memory)
        out[trial.trial_id] = Resources(cpus=options.cpus_per_trial, gpus=gpus)
    return out


def _gpu_memory_gb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / 1e9
    return ASSUMED_GPU_MEMORY_GB


def _bundle(resources: Resources) -> dict[str, float]:
    bundle = {"CPU": resources.cpus}
    if resources.gpus:
        bundle["GPU"] = resources.gpus
    return bundle


def _tune_trial(config: dict[str, Any], *, trials: dict[str, dict[str, Any]], protocol: dict[str, Any],
                storage: str, resources: dict[str, dict[str, float]], data_root: str | None) -> None:
    """One Ray Tune trial. A failure was recorded by run_trial; raising it makes Tune retry."""
    from .engine import TrialFailed

    trial = Trial(**trials[config["trial"]])
    share = resources[trial.trial_id]
    record = run_trial(trial, protocol, storage, resources=Resources(share["cpu"], share["gpu"]),
                       data_root=data_root)
    if record["status"] != "done":
        raise TrialFailed(f"{trial.trial_id}: {record.get('reason')}")
    tune.report({"status": "done"})


class _PlanSearcher(Searcher):
    """Hands Tune the next trial that may start, None while all remaining ones wait for a running
    search, and FINISHED when nothing is left."""

    def __init__(self, dispatch: Dispatch, store: Store) -> None:
        super().__init__()
        self.dispatch, self.store = dispatch, store
        self.live: dict[str, Trial] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        trial = self.dispatch.next_trial()
        if trial is None:
            return Searcher.FINISHED if self.dispatch.exhausted() else None
        self.live[trial_id] = trial
        return {"trial": trial.trial_id}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        record = self.store.read_record(trial.trial_id)
        if record is None:
            # The trial's process died before it could write (killed, or out of host memory).
            record = {**trial.to_dict(), "status": "failed", "attempts": 0,
                      "reason": "the trial's process ended without writing a record (killed?)"}
            self.store.write_record(record)
        self.dispatch.finish(trial, record)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the store is the state, and a rerun rebuilds the plan from it."""

    def restore(self, checkpoint_path: str) -> None:
        """See save."""


class _ProgressCallback(tune.Callback):
    def __init__(self, progress: ProgressLine) -> None:
        self.progress = progress

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.progress.update()
