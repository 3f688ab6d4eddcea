"""Running a plan as Ray Tune trials, on a private local Ray instance or an existing cluster.

Tune executes and retries the trials; the order comes from a Searcher that hands out a trial only when
it may start (an evaluation once its search is done), so no phase barrier idles a GPU. Each trial asks
for a fraction of a GPU (or CPUs only); Ray makes its share the first visible device, which is the one
the trial uses.

Without `--address` or $RAY_ADDRESS the run starts its own instance on loopback, never joining one that
happens to run on the machine, and a watchdog ends that instance if the driver dies (SIGKILL included).
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import ray
from ray import tune
from ray.tune.search import Searcher

from ..files import is_storage_failure
from ..methods import PLUGINS_ENV
from ..plan import Plan, Trial
from ..record import Resources, TrialRecord
from ..store import Store
from .dispatch import Dispatch
from .options import RunOptions
from .progress import ProgressLine
from .trial import run_trial

# Ray's local instance binds to the machine's address unless this is set; a local run needs loopback.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

# -- GPU shares -----------------------------------------------------------------------------------

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


def trial_resources(plan: Plan, options: RunOptions, cluster_gpus: float,
                    visible_gpu_memory_gb: float | None, local: bool) -> dict[str, Resources]:
    """Each trial's request. Decided from what the user said, not from what an autoscaling cluster has
    at this moment: `--gpus-per-trial` is taken as given, `--gpu-memory` means GPU trials even while
    the cluster has no GPU node yet; otherwise GPU trials where the cluster has GPUs now."""
    if options.device == "cpu":
        wants_gpu = False
    elif options.gpus_per_trial is not None or options.gpu_memory_gb is not None:
        wants_gpu = True
        if local and cluster_gpus == 0:
            raise ValueError("--gpus-per-trial/--gpu-memory given, but this machine has no GPU "
                             "(a local Ray instance cannot gain one)")
    else:
        wants_gpu = cluster_gpus > 0
    memory = options.gpu_memory_gb or visible_gpu_memory_gb
    out = {}
    for trial in plan.trials:
        if not wants_gpu:
            gpus = 0.0
        elif options.gpus_per_trial is not None:
            gpus = options.gpus_per_trial
        elif memory is None:
            gpus = 1.0  # nobody knows the GPU's memory: a whole GPU is always safe
        else:
            gpus = gpu_fraction(trial, memory)
        out[trial.trial_id] = Resources(cpu=options.cpus_per_trial, gpu=gpus)
    return out


def worker_environment() -> dict[str, str]:
    """Environment variables a trial on another process or machine needs from the driver."""
    keep = (PLUGINS_ENV, "LHDBENCH_DATA", LOOPBACK_ENV)
    return {k: os.environ[k] for k in keep if os.environ.get(k)}


# -- the executor -----------------------------------------------------------------------------------

class RayExecutor:
    """Connects to Ray (or starts a private instance) when built, runs a dispatch, and leaves the
    cluster as it found it when closed."""

    def __init__(self, plan: Plan, store: Store, options: RunOptions) -> None:
        self.plan, self.store, self.options = plan, store, options
        self.address = check_address(options.address or os.environ.get("RAY_ADDRESS") or None)
        self.started_here = False
        if not ray.is_initialized():
            self._init()
        cluster_gpus = ray.cluster_resources().get("GPU", 0.0)
        self.resources = trial_resources(plan, options, cluster_gpus, _visible_gpu_memory_gb(),
                                         local=self.address is None)

    def _init(self) -> None:
        env = worker_environment()
        if self.address is None:
            # A private instance for this run: all of Ray's traffic on the loopback interface.
            os.environ.setdefault(LOOPBACK_ENV, "0")
            env.setdefault(LOOPBACK_ENV, os.environ[LOOPBACK_ENV])
        ray.init(address=self.address or "local", runtime_env={"env_vars": env} if env else None,
                 include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 **self.options.ray_init)
        self.started_here = True

    def run(self, dispatch: Dispatch, progress: ProgressLine) -> None:
        resources = {k: v.model_dump() for k, v in self.resources.items()}
        trainable = tune.with_resources(
            tune.with_parameters(_tune_trial, trials={t.trial_id: t.to_dict() for t in self.plan.trials},
                                 protocol=self.plan.protocol.to_dict(), storage=str(self.store.root),
                                 resources=resources, data_root=self.options.data_root),
            lambda config: tune.PlacementGroupFactory([_bundle(resources[config["trial"]])]))
        # Tune's own console tables and error tracebacks would bury the progress line; a failing trial
        # gets one line of its own from the searcher, with the reason its record holds.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        for name in ("ray.tune", "ray.train", "ray.air"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        searcher = _PlanSearcher(dispatch, self.store, self.plan, progress)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=dispatch.to_run, reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                storage_path=str(self.store.root / "ray"), verbose=0,
                failure_config=tune.FailureConfig(max_failures=self.options.retries),
                callbacks=[_ProgressCallback(progress)]))
        tuner.fit()
        if searcher.fatal is not None:
            raise searcher.fatal
        if not dispatch.exhausted():
            # Tune stops early only when asked to (Ctrl-C): the store holds what finished.
            raise KeyboardInterrupt

    def close(self) -> None:
        if self.started_here:
            ray.shutdown()


def check_address(address: str | None) -> str | None:
    if address is None:
        return None
    if address == "local":
        return None
    if address.startswith("ray://"):
        raise ValueError(f"--address {address}: Ray Client (ray://) addresses are not supported; run "
                         "`lhdbench benchmark` on the cluster's head node with --address auto (or the "
                         "head's host:port), so Tune runs next to the cluster")
    return address


def _visible_gpu_memory_gb() -> float | None:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / 1e9
    return None


def _bundle(resources: dict[str, float]) -> dict[str, float]:
    bundle = {"CPU": resources["cpu"]}
    if resources["gpu"]:
        bundle["GPU"] = resources["gpu"]
    return bundle


def _tune_trial(config: dict[str, Any], *, trials: dict[str, dict[str, Any]], protocol: dict[str, Any],
                storage: str, resources: dict[str, dict[str, float]], data_root: str | None) -> None:
    """One Ray Tune trial. A failure was recorded by run_trial; raising it makes Tune retry."""
    from ..engine import TrialFailed

    trial = Trial(**trials[config["trial"]])
    try:
        record = run_trial(trial, protocol, storage, resources=Resources(**resources[trial.trial_id]),
                           data_root=data_root)
    except OSError as error:
        if not is_storage_failure(error):
            raise
        # Not the trial's failure, and retrying it would fail the same way: tell the driver to stop.
        tune.report({"storage_error": [error.errno, error.strerror, error.filename]})
        return
    if record.status != "done":
        raise TrialFailed(f"{trial.trial_id}: {record.reason}")
    tune.report({"status": "done"})


class _PlanSearcher(Searcher):
    """Hands Tune the next trial that may start, None while all remaining ones wait for a running
    search, and FINISHED when nothing is left."""

    def __init__(self, dispatch: Dispatch, store: Store, plan: Plan, progress: ProgressLine) -> None:
        super().__init__()
        self.dispatch, self.store, self.plan, self.progress = dispatch, store, plan, progress
        self.live: dict[str, Trial] = {}
        self.fatal: OSError | None = None  # the store could not be written: stop handing out trials

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.fatal is not None:
            return self.FINISHED
        trial = self.dispatch.next_trial()
        if trial is None:
            return self.FINISHED if self.dispatch.exhausted() else None
        self.live[trial_id] = trial
        return {"trial": trial.trial_id}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        if result and result.get("storage_error"):
            number, message, filename = result["storage_error"]
            self.fatal = OSError(number, message, filename)
            self.dispatch.running.discard(trial.trial_id)
            return
        try:
            record = self.store.read_record(trial.trial_id)
            if record is None:
                # The trial's process died before it could write (killed, or out of host memory).
                record = TrialRecord.died(trial.to_dict(), self.plan.protocol.to_dict(),
                                          self.store.attempts(trial.trial_id))
                self.store.write_record(record)
            if record.status != "done":
                self.progress.note(f"lhdbench: trial {trial.trial_id} failed: {record.reason}")
            self.dispatch.finish(trial, record)
        except OSError as failure:
            self.fatal = failure

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the store is the state, and a rerun rebuilds the plan from it."""

    def restore(self, checkpoint_path: str) -> None:
        """See save."""


class _ProgressCallback(tune.Callback):
    def __init__(self, progress: ProgressLine) -> None:
        self.progress = progress

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.progress.update()
