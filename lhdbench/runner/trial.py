"""One planned trial, run in the store: under its lock, resumed from its checkpoint, recorded.

Durability comes from here, not from the executor: each trial runs under its lock, resumes from its
last epoch checkpoint and writes its own record atomically, so killing the driver at any moment loses
only the epochs in flight, and a rerun of the same command skips what is done.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from ..engine import RECORD_FILE, EpochCallback, TrialFailed, TrialMismatch, one_line_reason
from ..files import is_storage_failure
from ..plan import Trial
from ..record import InvalidRecord, Resources, TrialRecord, Worker, read_record
from ..store import Store
from .stop import StopRequested


def run_trial(trial: Trial, protocol: dict[str, Any], storage: str | os.PathLike, *,
              resources: Resources | None = None, data_root: str | None = None,
              device: str | None = None, on_epoch: EpochCallback | None = None,
              note: Callable[[str], None] | None = None,
              stop: Callable[[], bool] | None = None) -> TrialRecord:
    """Run (or resume, or return the finished record of) one planned trial and store its record.

    Never raises for a failure of the trial itself: the returned record says `failed` with a one-line
    reason. Interrupts propagate and write nothing, so the checkpoint resumes. A full or read-only
    storage (`files.is_storage_failure`) propagates too: it is no trial's failure, and the run stops.
    A trial that resumes from its checkpoint logs a `resume` event and says so through `note` (default:
    a line on stderr). `stop` is asked after every epoch checkpoint; once it says yes the trial raises
    StopRequested there (logged as a `stopped` event, no record), and the next run resumes it from that
    checkpoint."""
    import torch

    from ..checkpoint import resume_listener
    from ..protocol import protocol_from_dict

    resources = resources or Resources()
    store = Store(storage)
    with store.trial_lock(trial.trial_id):
        previous = store.read_record(trial.trial_id)
        if previous is not None and previous.status == "done":
            return previous  # a finished trial's record is never rewritten
        attempt = store.attempts(trial.trial_id) + 1
        # One intra-op thread pool per trial, sized to what the trial was given: concurrent trials
        # each using every core slow each other down many times over on small machines.
        torch.set_num_threads(max(1, int(resources.cpu)))
        started = time.time()
        who = {"host": socket.gethostname(), "pid": os.getpid(),
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        store.log_event(trial.trial_id, {"event": "start", "attempt": attempt, "time": started, **who})
        on_epoch = _stopping_after_checkpoints(on_epoch, stop)

        def resumed(path: Any, epochs_done: int) -> None:
            store.log_event(trial.trial_id, {"event": "resume", "attempt": attempt, "time": time.time(),
                                             "epochs_done": epochs_done, **who})
            (note or _to_stderr)(f"lhdbench: trial {trial.trial_id} resumed from its checkpoint after "
                                 f"{epochs_done} epoch(s)")

        listening = resume_listener.set(resumed)
        try:
            parsed = protocol_from_dict(protocol, name=protocol["name"])
            _check_unchanged(trial, parsed)
            try:
                record = _run_phase(trial, parsed, store, data_root, device, on_epoch)
            except TrialMismatch as mismatch:
                # The trial id pins what the trial is, so a folder that disagrees was written by
                # another version of lhdbench: set its files aside and start the trial over.
                _set_aside_folder(store, trial.trial_id, mismatch)
                record = _run_phase(trial, parsed, store, data_root, device, on_epoch)
        except StopRequested:
            store.log_event(trial.trial_id, {"event": "stopped", "attempt": attempt, "time": time.time(),
                                             **who})
            raise
        except Exception as error:  # noqa: BLE001 - any error of one trial is its recorded failure
            if is_storage_failure(error):
                raise  # the storage, not the trial: the run stops (see the executors)
            record = _failed_record(store, trial, protocol, one_line_reason(error))
        finally:
            resume_listener.reset(listening)
        finished = time.time()
        record = _with_method_code(store, trial, record)
        record = record.stored(trial.to_dict(), attempt, resources,
                               Worker(**who, started_at=started, finished_at=finished))
        store.write_record(record)
        store.log_event(trial.trial_id, {"event": record.status, "attempt": attempt, "time": finished,
                                         **who})
        return record


def _stopping_after_checkpoints(on_epoch: EpochCallback | None,
                                stop: Callable[[], bool] | None) -> EpochCallback | None:
    """The loops call on_epoch right after writing each epoch's checkpoint: the place to stop."""
    if stop is None:
        return on_epoch

    def after_checkpoint(entry: dict[str, Any]) -> None:
        if on_epoch is not None:
            on_epoch(entry)
        if stop():
            raise StopRequested(f"stopped on request after epoch {entry.get('epoch')}")

    return after_checkpoint


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run_phase(trial: Trial, protocol: Any, store: Store, data_root: str | None,
               device: str | None, on_epoch: EpochCallback | None = None) -> TrialRecord:
    out = store.trial_dir(trial.trial_id)
    if trial.phase == "search":
        from ..search import run_search

        return run_search(trial.baseline, trial.dataset, trial.seed, protocol, out, device=device,
                          data_root=data_root, progress=False, on_epoch=on_epoch)
    from ..space import get_policy

    search = _finished(store, trial.search_trial_id, "search")
    search_dir = store.trial_dir(trial.search_trial_id)
    if trial.phase == "select":
        from ..select import run_selection

        return run_selection(search, search_dir, trial.search_trial_id, get_policy(trial.policy), protocol,
                             out, device=device, data_root=data_root, on_epoch=on_epoch)
    from ..evaluate import run_evaluation

    if trial.selection == "perturbation":
        from ..select import GENOTYPE_FILE
        from ..space import Genotype

        selection = _finished(store, trial.selection_trial_id, "selection")
        source = store.trial_dir(trial.selection_trial_id) / GENOTYPE_FILE
        if source.is_file() or selection.genotype is None:
            architecture = Genotype.from_json(source.read_text())
        else:
            # The file is gone (a store copied without trial folders): the selection's record holds
            # the same genotype, validated when it was written.
            architecture = Genotype.from_dict(selection.genotype)
            source = store.record_path(trial.selection_trial_id)
    else:
        from ..search import ARCH_FILE
        from ..space.arch_weights import load_arch_weights

        source = search_dir / ARCH_FILE
        architecture = load_arch_weights(source)
    return run_evaluation(architecture, get_policy(trial.policy), trial.dataset, trial.seed, protocol, out,
                          device=device, data_root=data_root, progress=False, arch_file=str(source),
                          on_epoch=on_epoch)


def _check_unchanged(trial: Trial, protocol: Any) -> None:
    """A search runs the code and settings its id was planned with: a method file edited while a run
    goes on would otherwise store results of the new code under the old code's id."""
    if trial.phase != "search":
        return
    from ..plan import trial_id
    from ..search import search_identity

    label = trial.trial_id.rsplit("-", 1)[0]
    identity = search_identity(trial.baseline, trial.dataset, trial.seed, protocol)
    if trial_id(label, identity) != trial.trial_id:
        raise TrialFailed(f"the code or settings of method {trial.baseline} changed since this run was "
                          "planned; rerun the command to plan it anew")


def _with_method_code(store: Store, trial: Trial, record: TrialRecord) -> TrialRecord:
    """A selection's or evaluation's record names the method code of the search it builds on."""
    if trial.phase == "search" or not trial.search_trial_id or record.code is None:
        return record
    search = store.read_record(trial.search_trial_id)
    if search is None or search.code is None:
        return record
    return record.update(code={**record.code.model_dump(), "method": search.code.method,
                               "method_source": search.code.method_source})


def _finished(store: Store, trial_id: str | None, what: str) -> TrialRecord:
    record = store.read_record(trial_id) if trial_id else None
    if record is None or record.status != "done":
        raise TrialFailed(f"its {what} {trial_id} has not finished")
    return record


def _set_aside_folder(store: Store, trial_id: str, why: Exception) -> None:
    from ..checkpoint import CHECKPOINT_NAME
    from ..files import move_aside

    folder = store.trial_dir(trial_id)
    for name in (RECORD_FILE, CHECKPOINT_NAME):
        if (folder / name).exists():
            move_aside(folder / name, ".other")
    print(f"lhdbench: {' '.join(str(why).split())}; set aside, {trial_id} starts over", file=sys.stderr)


def _failed_record(store: Store, trial: Trial, protocol: dict[str, Any], reason: str) -> TrialRecord:
    """The trial folder's own failed record when the loop wrote it for this failure (it has the
    environment and settings), else one from the plan. An earlier attempt's record with another
    reason is not this failure's."""
    path = store.trial_dir(trial.trial_id) / RECORD_FILE
    try:
        own = read_record(path) if path.exists() else None
    except (InvalidRecord, OSError):
        own = None
    if own is not None and own.status == "failed" and own.reason == reason:
        return own
    return TrialRecord.failed(reason, **trial.to_dict(), protocol=protocol)
