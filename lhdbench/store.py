"""The results store: one durable JSON record per finished or failed trial, plus the plan.

Layout under the storage folder (a local path, or a shared filesystem path on a cluster):

    plan.json               every trial ever planned into this store (union over runs) and the runs
    records/<trial id>.json one record per trial that ended, written atomically by the trial itself
    trials/<trial id>/      the trial's working folder: arch.npz, checkpoint.pt, its own record.json
    trials/<trial id>/.lock held (flock) while a process runs the trial; how `status` sees "running"
    trials/<trial id>/events.jsonl  one line per attempt's start and end (host, pid, time, outcome)
    ray/                    Ray Tune's own experiment folders (not the source of truth)

The store, not Ray's experiment folder, is the source of truth: `report` and `status` read only this.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .files import atomic_write_json, read_json

PLAN_FILE = "plan.json"
RECORDS = "records"
TRIALS = "trials"
LOCK_FILE = ".lock"
EVENTS_FILE = "events.jsonl"

# The flat columns of Store.frame(): one row per record. Nested fields stay in the record files.
COLUMNS = (
    "trial_id", "phase", "status", "reason", "attempts", "baseline", "dataset", "policy", "seed",
    "search_trial_id", "protocol", "final_test_acc", "best_test_acc", "best_after_epoch", "params",
    "wall_time_s", "epochs", "epochs_per_s", "peak_gpu_memory_bytes", "device", "device_name",
    "gpus", "cpus", "lhdbench",
)


class StoreError(ValueError):
    """A storage folder that cannot be used (not a store, unreadable plan)."""


class Store:
    def __init__(self, root: str | os.PathLike) -> None:
        # Absolute, because Ray trials run in other working directories (and on other machines).
        self.root = Path(root).expanduser().resolve()

    @property
    def records_dir(self) -> Path:
        return self.root / RECORDS

    def record_path(self, trial_id: str) -> Path:
        return self.records_dir / f"{trial_id}.json"

    def trial_dir(self, trial_id: str) -> Path:
        return self.root / TRIALS / trial_id

    # -- records -----------------------------------------------------------------------------------

    def write_record(self, record: dict[str, Any]) -> Path:
        return atomic_write_json(self.record_path(record["trial_id"]), record)

    def read_record(self, trial_id: str) -> dict[str, Any] | None:
        path = self.record_path(trial_id)
        return read_json(path) if path.exists() else None

    def records(self) -> dict[str, dict[str, Any]]:
        """Every record, by trial id. A file that is not a valid record is an error naming it: the
        store is written atomically, so a broken file means someone else edited it."""
        out: dict[str, dict[str, Any]] = {}
        if not self.records_dir.is_dir():
            return out
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                record = read_json(path)
            except (OSError, json.JSONDecodeError) as error:
                raise StoreError(f"{path}: not a readable trial record ({error})") from None
            if not isinstance(record, dict) or record.get("trial_id") != path.stem:
                raise StoreError(f"{path}: not a trial record of this store (trial_id does not match)")
            out[path.stem] = record
        return out

    def frame(self):
        """The records as a pandas DataFrame with COLUMNS, sorted by trial id."""
        import pandas as pd

        rows = [flat_row(r) for _, r in sorted(self.records().items())]
        return pd.DataFrame(rows, columns=list(COLUMNS))

    def log_event(self, trial_id: str, event: dict[str, Any]) -> None:
        """Append one line to the trial's history of attempts (trials/<id>/events.jsonl): who ran it,
        when, and how it ended. One short write per line, so concurrent appends do not interleave."""
        path = self.trial_dir(trial_id) / EVENTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(event, sort_keys=True) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def events(self, trial_id: str) -> list[dict[str, Any]]:
        path = self.trial_dir(trial_id) / EVENTS_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # -- plan --------------------------------------------------------------------------------------

    def read_plan(self) -> dict[str, Any]:
        path = self.root / PLAN_FILE
        if not path.exists():
            return {"runs": [], "trials": {}}
        try:
            plan = read_json(path)
        except (OSError, json.JSONDecodeError) as error:
            raise StoreError(f"{path}: unreadable plan ({error})") from None
        return plan

    def add_to_plan(self, run: dict[str, Any], trials: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Merge a run's trials into plan.json. Only the driver writes it, once per run."""
        plan = self.read_plan()
        plan["trials"].update(trials)
        plan["trials"] = dict(sorted(plan["trials"].items()))
        if run not in plan["runs"]:
            plan["runs"].append(run)
        atomic_write_json(self.root / PLAN_FILE, plan)
        return plan

    def is_store(self) -> bool:
        return (self.root / PLAN_FILE).exists() or self.records_dir.is_dir()

    # -- running trials ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def trial_lock(self, trial_id: str) -> Iterator[None]:
        """Hold the trial's lock while running it, so two processes (say an orphan of a killed driver
        and its rerun) never run the same trial at once. The kernel drops the lock when the holder
        dies, so a crash leaves no stale lock."""
        folder = self.trial_dir(trial_id)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / LOCK_FILE, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def is_running(self, trial_id: str) -> bool:
        path = self.trial_dir(trial_id) / LOCK_FILE
        if not path.exists():
            return False
        with open(path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False


def flat_row(record: dict[str, Any]) -> dict[str, Any]:
    environment = record.get("environment") or {}
    resources = record.get("resources") or {}
    protocol = record.get("protocol")
    row = {key: record.get(key) for key in COLUMNS}
    row.update(protocol=protocol.get("name") if isinstance(protocol, dict) else protocol,
               device=environment.get("device"), device_name=environment.get("device_name"),
               lhdbench=environment.get("lhdbench"), gpus=resources.get("gpu", 0.0),
               cpus=resources.get("cpu"))
    return row
