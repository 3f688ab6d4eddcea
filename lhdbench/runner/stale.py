"""Results a rerun will not reuse because the experiment changed since: the method's code, or its
settings. Said in one line per cause before the run starts; `--adopt-old-code` keeps results whose only
difference is the code, marked as adopted.

A planned trial that is not done is matched against the store's done records:
* same settings id, other trial id: the method's code changed (or the record predates lhdbench
  recording code at all: lhdbench 0.1);
* same slot (method, datasets, seed, policy, selection, protocol name), other settings id: its settings
  changed (a method's defaults, an edited protocol file of the same name).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from ..files import atomic_write_bytes
from ..plan import Plan, Trial
from ..record import TrialRecord
from ..store import Store, slot

CODE, LEGACY, SETTINGS = "code", "legacy", "settings"
# The files a later trial reads from a search's or a selection's folder (selection: the search's
# supernet in checkpoint.pt; evaluation: arch.npz or genotype.json).
CARRIED_FILES = ("arch.npz", "checkpoint.pt", "genotype.json")
PHASE_WORDS = {"search": "search", "select": "selection", "evaluate": "evaluation"}


@dataclass(frozen=True)
class Stale:
    """A planned trial that will run again, the result it does not reuse, and why."""

    trial: Trial
    record: TrialRecord
    why: str  # CODE, LEGACY or SETTINGS
    identity: dict[str, Any] | None = None  # what the planned trial's id hashes


def find_stale(plan: Plan, records: dict[str, TrialRecord]) -> list[Stale]:
    done = [r for r in records.values() if r.status == "done"]
    by_settings: dict[str, list[TrialRecord]] = defaultdict(list)
    by_slot: dict[tuple, list[TrialRecord]] = defaultdict(list)
    for record in done:
        if record.settings_id:
            by_settings[record.settings_id].append(record)
        by_slot[slot(record.model_dump())].append(record)
    out = []
    for trial in plan.trials:
        if trial.trial_id in records and records[trial.trial_id].status == "done":
            continue
        same = [r for r in by_settings.get(trial.settings_id or "", []) if r.trial_id != trial.trial_id]
        if same:
            record = _latest(same)
            out.append(Stale(trial, record, LEGACY if record.code is None else CODE,
                             plan.identities.get(trial.trial_id)))
            continue
        entry = {**trial.to_dict(), "protocol": plan.protocol.name}
        other = [r for r in by_slot.get(slot(entry), []) if r.trial_id != trial.trial_id]
        if other:
            out.append(Stale(trial, _latest(other), SETTINGS, plan.identities.get(trial.trial_id)))
    return out


def _latest(records: list[TrialRecord]) -> TrialRecord:
    return max(records, key=lambda r: (r.worker.finished_at if r.worker else 0.0, r.trial_id or ""))


def describe(stale: list[Stale], adopting: bool = False) -> list[str]:
    """One line per cause: how many trials, of which methods, and why."""
    lines = []
    for why in (CODE, LEGACY, SETTINGS):
        group = [s for s in stale if s.why == why]
        if not group:
            continue
        counts = _counts(group)
        if why == SETTINGS:
            lines.append(f"{len(group)} trial(s) run again because their settings changed since the results "
                         f"this store holds ({counts}; {_changed_settings(group)}); the report shows "
                         "only the current ones")
            continue
        cause = ("their method's code changed since the results this store holds" if why == CODE else
                 "this store's results of them were recorded before lhdbench kept the methods' code "
                 "(lhdbench 0.1)")
        if adopting:
            lines.append(f"{len(group)} trial(s) adopted from results of earlier code, as "
                         f"--adopt-old-code asks: {cause} ({counts})")
        else:
            lines.append(f"{len(group)} trial(s) run again because {cause} ({counts}); "
                         "--adopt-old-code keeps those results instead")
    return lines


def _counts(group: list[Stale]) -> str:
    per_method: dict[str, Counter] = defaultdict(Counter)
    for item in group:
        per_method[item.trial.baseline][item.trial.phase] += 1
    parts = []
    for method, phases in sorted(per_method.items()):
        words = [f"{n} {PHASE_WORDS[p]}{'s' if n != 1 else ''}" for p, n in sorted(
            phases.items(), key=lambda kv: list(PHASE_WORDS).index(kv[0]))]
        parts.append(f"{method}: {', '.join(words)}")
    return "; ".join(parts)


def _changed_settings(group: list[Stale]) -> str:
    """Which settings differ, as dotted keys, from the first trials of each method."""
    keys: set[str] = set()
    for item in group:
        if item.trial.phase == "search":
            keys |= _differences({"settings": item.record.settings, "hparams": item.record.hparams},
                                 item.identity)
        elif item.trial.phase == "evaluate":
            keys |= _differences({"evaluate": item.record.protocol.get("evaluate")}, item.identity)
    shown = sorted(keys)
    if not shown:
        return "changed: the search they build on"
    return "changed: " + ", ".join(shown[:4]) + (f" and {len(shown) - 4} more" if len(shown) > 4 else "")


def _differences(old: dict[str, Any], new: dict[str, Any] | None, prefix: str = "") -> set[str]:
    if new is None:
        return set()
    out = set()
    for key, value in old.items():
        other = new.get(key)
        if isinstance(value, dict) and isinstance(other, dict):
            out |= _differences(value, other, f"{prefix}{key}.")
        elif key in new and value != other and not (value is None and other is None):
            out.add(f"{prefix}{key}")
    return out


def version_note(records: dict[str, TrialRecord], version: str) -> str | None:
    """One line when the store's done results come from other lhdbench versions than this one, which
    the run is about to add results of."""
    others = Counter(r.environment.lhdbench for r in records.values() if r.status == "done"
                     and r.environment is not None and r.environment.lhdbench != version)
    if not others:
        return None
    held = ", ".join(f"{v} ({n} trials)" for v, n in sorted(others.items()))
    return (f"this store holds results of lhdbench {held}; this run adds results of lhdbench {version} "
            "(the report lists the versions it shows)")


def adopt(store: Store, stale: list[Stale]) -> int:
    """Keep the results of earlier code (CODE and LEGACY) as the planned trials' results: the trial
    folder's files a later trial reads are copied, then the record is written under the new id with
    `adopted_from` naming the trial it came from. Searches first, so their dependants find them.
    Returns how many were adopted."""
    order = {"search": 0, "select": 1, "evaluate": 2}
    count = 0
    for item in sorted((s for s in stale if s.why in (CODE, LEGACY)), key=lambda s: order[s.trial.phase]):
        source, target = store.trial_dir(item.record.trial_id), store.trial_dir(item.trial.trial_id)
        target.mkdir(parents=True, exist_ok=True)
        for name in CARRIED_FILES:
            if (source / name).is_file():
                _copy(source / name, target / name)
        trial = item.trial.to_dict()
        record = item.record.update(**{k: v for k, v in trial.items()},
                                    adopted_from=item.record.trial_id)
        store.write_record(record)
        store.log_event(item.trial.trial_id, {"event": "adopted", "from": item.record.trial_id})
        count += 1
    return count


def _copy(source: os.PathLike, target: os.PathLike) -> None:
    """Hard-link where the filesystem allows (checkpoints are large), else copy; atomic either way."""
    temporary = f"{os.fspath(target)}.adopting"
    try:
        if os.path.exists(temporary):
            os.unlink(temporary)
        os.link(source, temporary)
        os.replace(temporary, target)
    except OSError:
        with open(source, "rb") as handle:
            atomic_write_bytes(target, handle.read())
        shutil.copystat(source, target)
