"""Running a plan as Ray Tune trials, on a private local Ray instance or an existing cluster.

Tune executes and retries the trials; the order comes from a Searcher that hands out a trial only when
it may start (an evaluation once its search is done), so no phase barrier idles a GPU. Each trial asks
for a fraction of a GPU (or CPUs only); Ray makes its share the first visible device, which is the one
the trial uses. Which Ray, and how it is joined: `ray_cluster.py`. GPU shares: `gpu_share.py`.

Import this only after `ray_cluster.prepare_environment`: Ray reads its environment when imported.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.search import Searcher

from ..files import is_storage_failure
from ..memory import MEMORY_FILE, plan_figures
from ..methods import PLUGINS_ENV
from ..plan import Plan, Trial
from ..record import Resources, TrialRecord
from ..store import Store
from .dispatch import Dispatch
from .gpu_share import trial_resources
from .options import RunOptions
from .progress import ProgressLine
from .ray_cluster import LOOPBACK_ENV, PRIVATE_PARENT, PrivateInstance, check_cluster, cluster_address
from .stop import StopRequested
from .trial import run_trial


def worker_environment() -> dict[str, str]:
    """Environment variables a trial on another process or machine needs from the driver."""
    keep = (PLUGINS_ENV, "LHDBENCH_DATA", LOOPBACK_ENV)
    return {k: os.environ[k] for k in keep if os.environ.get(k)}


class RayExecutor:
    """Joins the cluster (or starts a private instance) when built, runs a dispatch, and leaves the
    cluster as it found it when closed."""

    def __init__(self, plan: Plan, store: Store, options: RunOptions) -> None:
        self.plan, self.store, self.options = plan, store, options
        self.address = cluster_address(options.address)
        self.private: PrivateInstance | None = None
        self.joined = False
        if not ray.is_initialized():
            env = worker_environment()
            kwargs = {"runtime_env": {"env_vars": env} if env else None, "include_dashboard": False,
                      "log_to_driver": False, "logging_level": "ERROR", **options.ray_init}
            if self.address is None:
                try:
                    self.private = PrivateInstance(kwargs)
                except OSError as error:
                    raise located(error, [Path(PRIVATE_PARENT or tempfile.gettempdir())]) from None
            else:
                check_cluster(self.address)
                ray.init(address=self.address, **kwargs)
                self.joined = True
        try:
            cluster_gpus = ray.cluster_resources().get("GPU", 0.0)
            self.resources = trial_resources(plan, options, cluster_gpus, _visible_gpu_memory_gb(),
                                             local=self.address is None, peaks=self._peaks)
        except BaseException:
            self.close()  # a refused request must not leave the instance (or its folder) behind
            raise
        if cluster_gpus == 0 and any(r.gpu for r in self.resources.values()):
            print("lhdbench: the cluster has no GPU at the moment; the trials wait for GPU nodes to join "
                  "(an autoscaling cluster adds them for the pending trials)", file=sys.stderr)

    def _peaks(self, plan: Plan) -> dict[str, float | None]:
        def announce(kinds: int) -> None:
            print(f"lhdbench: sizing the GPU memory of {kinds} kind(s) of trial on the CPU, to pack them "
                  "on the GPUs (once per store: kept in memory.json)", file=sys.stderr)

        return plan_figures(plan, self.store.root / MEMORY_FILE, announce=announce)

    def run(self, dispatch: Dispatch, progress: ProgressLine) -> None:
        resources = {k: v.model_dump() for k, v in self.resources.items()}
        trainable = tune.with_resources(
            tune.with_parameters(_tune_trial, trials={t.trial_id: t.to_dict() for t in self.plan.trials},
                                 protocol=self.plan.protocol.to_dict(), storage=str(self.store.root),
                                 resources=resources, data_root=self.options.data_root,
                                 stop_file=str(dispatch.stop.path) if dispatch.stop else None),
            lambda config: tune.PlacementGroupFactory([_bundle(resources[config["trial"]])]))
        # Tune's own console tables and per-attempt tracebacks would bury the progress line; a failing
        # trial gets one line of its own from the searcher, with the reason its record holds.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "0"
        logging.getLogger("ray.tune.tune").addFilter(_no_failure_summary)
        searcher = _PlanSearcher(dispatch, self.store, self.plan, progress)
        # Tune adds its CSV/JSON/TensorBoard loggers by itself when it can; here only those asked for.
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
        folder = self.store.root / "ray"
        try:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, num_samples=dispatch.to_run,
                                            reuse_actors=True, trial_name_creator=_trial_name,
                                            trial_dirname_creator=_trial_name),
                run_config=tune.RunConfig(
                    name=f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                    storage_path=str(folder), verbose=0,
                    failure_config=tune.FailureConfig(max_failures=self.options.retries),
                    callbacks=[_ProgressCallback(progress, dispatch),
                               *trackers(self.options.log_to, self.plan, self.store)]))
            tuner.fit()
        except OSError as error:
            raise located(error, [folder, *([Path(self.private.folder)] if self.private else [])]) from None
        if searcher.fatal is not None:
            raise searcher.fatal
        if not dispatch.exhausted() and not dispatch.stopping:
            # Tune stops early only when asked to (Ctrl-C): the store holds what finished.
            raise KeyboardInterrupt

    def close(self) -> None:
        if self.private is not None:
            self.private.close()
        elif self.joined:
            ray.shutdown()  # disconnects this driver; the cluster runs on


def located(error: OSError, folders: list[Path]) -> OSError:
    """A full or read-only disk met by Ray or Tune, whose error names no file (pyarrow's writes do
    not), with the folder of `folders` whose filesystem is full (else the first) as its file name,
    so that the one line on stderr says where. Other errors are returned as they are."""
    if not is_storage_failure(error) or error.filename:
        return error
    where = folders[0]
    for folder in folders:
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        try:
            if existing is not None and os.statvfs(existing).f_bavail == 0:
                where = folder
                break
        except OSError:
            continue
    return OSError(error.errno, f"{os.strerror(error.errno)} in the folder Ray writes its logs and state to",
                   str(where))


def _trial_name(trial: Any) -> str:
    """Tune's name for a trial: the plan's trial id, so logs and dashboards name trials as the store."""
    return str(trial.config.get("trial", trial.trial_id))


def trackers(names: tuple[str, ...], plan: Plan, store: Store) -> list[Any]:
    """Ray Tune's logger callbacks for the per-epoch metrics every trial reports. Each one is configured
    through its own environment as usual (MLFLOW_TRACKING_URI, WANDB_MODE, WANDB_PROJECT, ...);
    MLflow defaults to a file store beside the results store."""
    callbacks: list[Any] = []
    experiment = f"lhdbench-{plan.suite.name}"
    for name in names:
        if name == "tensorboard":
            from ray.tune.logger import TBXLoggerCallback

            callbacks.append(TBXLoggerCallback())
        elif name == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            uri = os.environ.get("MLFLOW_TRACKING_URI") or (store.root / "mlruns").as_uri()
            if uri.startswith("file:"):  # MLflow 3 asks for this to keep its plain-file store
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            callbacks.append(MLflowLoggerCallback(tracking_uri=uri, experiment_name=experiment,
                                                  save_artifact=False))
        elif name == "wandb":
            from ray.air.integrations.wandb import WandbLoggerCallback

            callbacks.append(WandbLoggerCallback(project=os.environ.get("WANDB_PROJECT") or experiment,
                                                 group=plan.protocol.name))
    return callbacks


def _no_failure_summary(record: logging.LogRecord) -> bool:
    """Tune's closing 'Trials did not complete' line: the searcher has said it, one line per trial."""
    return not str(record.msg).startswith("Trials did not complete")


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
                storage: str, resources: dict[str, dict[str, float]], data_root: str | None,
                stop_file: str | None = None) -> None:
    """One Ray Tune trial. A failure was recorded by run_trial; raising it makes Tune retry. Once the
    driver was asked to stop (its stop file exists) it stops after its next checkpoint, or does not
    start at all."""
    from ..engine import TrialFailed

    trial = Trial(**trials[config["trial"]])
    stop = (lambda: os.path.exists(stop_file)) if stop_file else None
    if stop is not None and stop():
        tune.report({"stopped": 1.0})
        return

    def report(entry: dict[str, Any]) -> None:
        # Every epoch's numbers, so that Tune's logger callbacks (TensorBoard, MLflow, W&B) see them.
        tune.report({k: float(v) for k, v in entry.items() if isinstance(v, (int, float))
                     and not isinstance(v, bool)})

    try:
        record = run_trial(trial, protocol, storage, resources=Resources(**resources[trial.trial_id]),
                           data_root=data_root, on_epoch=report, stop=stop)
    except StopRequested:
        tune.report({"stopped": 1.0})
        return
    except OSError as error:
        if not is_storage_failure(error):
            raise
        # Not the trial's failure, and retrying it would fail the same way: tell the driver to stop.
        tune.report({"storage_error": [error.errno, error.strerror, error.filename]})
        return
    if record.status != "done":
        raise TrialFailed(f"{trial.trial_id}: {record.reason}")
    tune.report({"done": 1.0})


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
            return self.FINISHED if self.dispatch.exhausted() or self.dispatch.stopping else None
        self.live[trial_id] = trial
        return {"trial": trial.trial_id}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        if result and result.get("stopped"):
            self.dispatch.set_back(trial)  # at a checkpoint, on the stop request: the next run resumes it
            return
        if result and result.get("storage_error"):
            number, message, filename = result["storage_error"]
            self.fatal = OSError(number, message, filename)
            self.dispatch.running.pop(trial.trial_id, None)
            return
        try:
            record = self.store.read_record(trial.trial_id)
            if record is None and self.dispatch.stopping:
                # Died while the run stops (a pre-emption's SIGTERM reaches Ray's processes too): it
                # resumes from its last checkpoint next time, like a stopped trial; no failure.
                self.dispatch.set_back(trial)
                return
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
    def __init__(self, progress: ProgressLine, dispatch: Dispatch) -> None:
        self.progress, self.dispatch = progress, dispatch

    def setup(self, **info: Any) -> None:
        # Tune has just set a SIGUSR1 handler of its own (it ends the run at once): take it back.
        if self.dispatch.stop is not None:
            self.dispatch.stop.install()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.progress.update()
