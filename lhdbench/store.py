"""The results store: one durable, validated record per finished or failed trial, plus the plan.

Layout under the storage folder (a local path, or a shared filesystem path on a cluster):

    plan.json               every trial ever planned into this store (union over runs) and the runs;
                            a trial replaced by a later plan of its slot says `superseded_by`
    records/<trial id>.json one TrialRecord per trial that ended, written atomically by the trial
    records/<id>.json.invalid  a record file that did not validate, moved aside by `benchmark`
    trials/<trial id>/      the trial's working folder: arch.npz, checkpoint.pt, its own record.json
    trials/<trial id>/.lock held (flock) while a process runs the trial; how `status` sees "running"
    trials/<trial id>/events.jsonl  one line per attempt's start and end (host, pid, time, outcome)
    .plan.lock              held while plan.json is merged, so concurrent drivers lose no trial
    ray/                    Ray Tune's own experiment folders (not the source of truth)

The store, not Ray's experiment folder, is the source of truth: `report` and `status` read only this.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import LockingUnsupported, atomic_write_json, file_lock, move_aside, probe_locking
from .record import InvalidRecord, TrialRecord, read_record, write_record

PLAN_FILE = "plan.json"
PLAN_LOCK = ".plan.lock"
RECORDS = "records"
TRIALS = "trials"
LOCK_FILE = ".lock"
EVENTS_FILE = "events.jsonl"
TRIAL_KEYS = ("trial_id", "phase", "baseline", "dataset", "seed", "policy", "search_trial_id", "protocol")
SUPERSEDED = "superseded_by"


class StoreError(ValueError):
    """A storage folder that cannot be used (not a store, a file, unreadable plan); one line."""


@dataclass(frozen=True)
class InvalidFile:
    """A record file that did not validate, and why."""

    path: Path
    message: str


class Store:
    def __init__(self, root: str | os.PathLike) -> None:
        # Absolute, because Ray trials run in other working directories (and on other machines).
        self.root = Path(root).expanduser().resolve()
        self.invalid: dict[Path, InvalidFile] = {}  # found by the last reads

    @property
    def records_dir(self) -> Path:
        return self.root / RECORDS

    @property
    def plan_path(self) -> Path:
        return self.root / PLAN_FILE

    def record_path(self, trial_id: str) -> Path:
        return self.records_dir / f"{trial_id}.json"

    def trial_dir(self, trial_id: str) -> Path:
        return self.root / TRIALS / trial_id

    # -- records -----------------------------------------------------------------------------------

    def write_record(self, record: TrialRecord) -> Path:
        if not record.trial_id:
            raise ValueError("a record in the store needs its trial_id")
        return write_record(self.record_path(record.trial_id), record)

    def read_record(self, trial_id: str) -> TrialRecord | None:
        """The trial's valid record, else None (a file that does not validate goes into `invalid`)."""
        path = self.record_path(trial_id)
        return self._read(path) if path.exists() else None

    def _read(self, path: Path) -> TrialRecord | None:
        try:
            record = read_record(path)
            if record.trial_id != path.stem:
                raise InvalidRecord(f"{path}: not a valid trial record (trial_id: {record.trial_id!r} "
                                    "is not the file's name)")
        except InvalidRecord as error:
            self.invalid[path] = InvalidFile(path, str(error))
            return None
        except OSError as error:
            self.invalid[path] = InvalidFile(path, f"{path}: unreadable ({error.strerror or error})")
            return None
        self.invalid.pop(path, None)
        return record

    def records(self) -> dict[str, TrialRecord]:
        """Every valid record, by trial id. Files that do not validate are left out and listed in
        `invalid`: they never count as done."""
        out: dict[str, TrialRecord] = {}
        if not self.records_dir.is_dir():
            return out
        for path in sorted(self.records_dir.glob("*.json")):
            record = self._read(path)
            if record is not None:
                out[path.stem] = record
        return out

    def set_aside_invalid(self) -> list[str]:
        """Move every record file found invalid to `<name>.invalid`, so its trial runs again; one line
        per file saying what was wrong and where it went."""
        self.records()
        lines = []
        for path, found in sorted(self.invalid.items()):
            if path.exists():
                aside = move_aside(path)
                lines.append(f"{found.message}; moved to {aside.name}, the trial runs again")
        self.invalid.clear()
        return lines

    # -- attempts ----------------------------------------------------------------------------------

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
        """The trial's events; a line torn by a crash mid-write is skipped."""
        path = self.trial_dir(trial_id) / EVENTS_FILE
        if not path.exists():
            return []
        events = []
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events

    def attempts(self, trial_id: str) -> int:
        """How many attempts the trial has started."""
        return sum(e.get("event") == "start" for e in self.events(trial_id))

    # -- plan --------------------------------------------------------------------------------------

    def read_plan(self) -> dict[str, Any]:
        """plan.json as {"runs": [...], "trials": {id: entry}}; StoreError (one line naming the file)
        when it is unreadable or not of that shape."""
        path = self.plan_path
        if not path.exists():
            return {"runs": [], "trials": {}}
        try:
            plan = json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StoreError(f"{path}: unreadable plan ({' '.join(str(error).split())})") from None
        problem = plan_problem(plan)
        if problem:
            raise StoreError(f"{path}: not a valid plan ({problem})")
        return plan

    def add_to_plan(self, run: dict[str, Any], trials: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Merge a run's trials into plan.json under the store's plan lock, so concurrent drivers
        adding trials all keep theirs. A trial planned before in the same slot (`slot`) under another
        id (the method's code or the settings changed since) is marked `superseded_by` the new one:
        `status` and the report count only current trials."""
        with file_lock(self.root / PLAN_LOCK):
            plan = self.read_plan()
            by_slot = {slot(entry): entry["trial_id"] for entry in trials.values()}
            for trial_id, entry in plan["trials"].items():
                newer = by_slot.get(slot(entry))
                if newer is not None and newer != trial_id:
                    entry["superseded_by"] = newer
            plan["trials"].update({trial_id: {k: v for k, v in entry.items() if k != SUPERSEDED}
                                   for trial_id, entry in trials.items()})
            plan["trials"] = dict(sorted(plan["trials"].items()))
            if run not in plan["runs"]:
                plan["runs"].append(run)
            atomic_write_json(self.plan_path, plan)
        return plan

    def is_store(self) -> bool:
        return self.plan_path.exists() or self.records_dir.is_dir()

    def check_usable(self) -> None:
        """Before anything is written: the folder is (or can become) a directory, it is writable, and
        its filesystem locks files. StoreError, one line, otherwise."""
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"--storage {self.root}: is a file, not a folder")
        existing = next((p for p in (self.root, *self.root.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise StoreError(f"--storage {self.root}: {existing} is a file, not a folder")
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            raise StoreError(f"--storage {self.root}: {existing} is not writable")

    def check_locking(self) -> None:
        """The store's filesystem must support flock (trial locks, the plan lock), or two processes
        could run one trial at once. Probed in the store folder, or the nearest folder above it that
        exists, so nothing is created first."""
        nearest = next(p for p in (self.root, *self.root.parents) if p.exists())
        try:
            probe_locking(nearest)
        except LockingUnsupported as error:
            raise StoreError(f"the store {self.root} is on a filesystem without file locks "
                             f"({error.strerror}); lhdbench needs flock so that no trial runs twice: use "
                             "a local disk or a shared filesystem with locking (NFSv4, CephFS, Lustre "
                             "mounted with -o flock)") from None

    # -- running trials ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def trial_lock(self, trial_id: str) -> Iterator[None]:
        """Hold the trial's lock while running it, so two processes (say an orphan of a killed driver
        and its rerun) never run the same trial at once."""
        with file_lock(self.trial_dir(trial_id) / LOCK_FILE):
            yield

    def is_running(self, trial_id: str) -> bool:
        path = self.trial_dir(trial_id) / LOCK_FILE
        if not path.exists():
            return False
        with file_lock(path, blocking=False) as taken:
            return not taken


def slot(entry: dict[str, Any]) -> tuple[Any, ...]:
    """What a trial is an instance of, whatever its settings and code: phase, method, datasets, seed,
    policy, selection and protocol name. Two trials of one slot are two versions of one experiment.
    `entry` is a plan.json entry or a record's fields (a record's protocol is a dict with its name)."""
    protocol = entry.get("protocol")
    if isinstance(protocol, dict):
        protocol = protocol.get("name")
    selection = entry.get("selection") or ("magnitude" if entry.get("phase") == "evaluate" else None)
    return (entry.get("phase"), entry.get("baseline"), entry.get("search_dataset") or entry.get("dataset"),
            entry.get("dataset"), entry.get("seed"), entry.get("policy"), selection, protocol)


def current_trials(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """plan.json's trials that no later plan superseded."""
    return {t: e for t, e in plan["trials"].items() if not e.get(SUPERSEDED)}


def method_sources(store: Store) -> dict[str, str]:
    """Where each method of a store's trials was defined (a module, or a plugin file), as its runs and
    records say; empty for a folder that is not a readable store."""
    sources: dict[str, str] = {}
    try:
        runs = store.read_plan()["runs"] if store.plan_path.exists() else []
    except StoreError:
        runs = []
    for run in runs:
        if isinstance(run.get("sources"), dict):
            sources.update({k: v for k, v in run["sources"].items() if isinstance(v, str)})
    return sources


def plan_problem(plan: Any) -> str | None:
    """What is wrong with a plan.json's content, or None."""
    if not isinstance(plan, dict) or set(plan) != {"runs", "trials"}:
        return 'expected an object with the keys "runs" and "trials"'
    if not isinstance(plan["runs"], list) or not all(isinstance(r, dict) for r in plan["runs"]):
        return '"runs" must be a list of objects'
    if not isinstance(plan["trials"], dict):
        return '"trials" must be an object of trial id -> trial'
    for trial_id, entry in plan["trials"].items():
        if not isinstance(entry, dict) or entry.get("trial_id") != trial_id:
            return f"trial {trial_id!r} is not an object with its own trial_id"
        missing = [k for k in TRIAL_KEYS if k not in entry]
        if missing:
            return f"trial {trial_id!r} lacks {missing[0]!r}"
        if entry["phase"] not in ("search", "select", "evaluate") or not isinstance(entry["protocol"], str):
            return f"trial {trial_id!r} has a bad phase or protocol"
    return None
