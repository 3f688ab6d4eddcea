"""The serial executor: every trial in this process, one after another, retried in place."""

from __future__ import annotations

from ..engine import pick_device
from ..plan import Plan
from ..record import Resources
from ..store import Store
from .dispatch import Dispatch
from .options import RunOptions
from .progress import ProgressLine
from .stop import StopRequested
from .trial import run_trial


def run_serial(plan: Plan, store: Store, dispatch: Dispatch, options: RunOptions,
               progress: ProgressLine) -> None:
    # In-process trials own the whole device, and the report's GPU-hours are wall time x this share.
    on_gpu = pick_device(options.device).type == "cuda"
    resources = Resources(cpu=options.cpus_per_trial, gpu=1.0 if on_gpu else 0.0)
    protocol = plan.protocol.to_dict()
    while (trial := dispatch.next_trial()) is not None:
        progress.update()
        try:
            for _ in range(options.retries + 1):
                record = run_trial(trial, protocol, store.root, resources=resources,
                                   data_root=options.data_root, device=options.device, note=progress.note,
                                   stop=lambda: dispatch.stopping)
                if record.status == "done":
                    break
        except StopRequested:
            dispatch.set_back(trial)
            break
        if record.status != "done":
            progress.note(f"lhdbench: trial {trial.trial_id} failed: {record.reason}")
        dispatch.finish(trial, record)
        progress.update()
