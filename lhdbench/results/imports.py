"""`lhdbench import`: a bundle's trials added to a store, after every check, never over local results.

Everything is checked before anything is written (`bundle.read_bundle`, then the store: a folder that
can be written, with file locks). Then, in this order, so that a store stopped half-way is consistent
and a rerun of the import completes it: the trial files (architectures, genotypes, checkpoints), the
plan entries, the records (a record is what makes a trial count as done). Each file is written
atomically.

A trial this store holds done already is kept; where the bundle's result for it differs, that is
reported and nothing is merged. A bundle trial that is another version of an experiment this store
holds (the same method, condition, seed and protocol name under another id: other code or settings)
is imported as superseded by the local one, so the report keeps showing this store's.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..files import atomic_write_bytes, atomic_write_json, file_lock
from ..record import TrialRecord
from ..store import PLAN_LOCK, SUPERSEDED, Store, StoreError, current_trials, slot
from .bundle import Bundle, read_bundle

# What an import compares: the results, not where and when a record was stored.
BOOKKEEPING = {"attempts", "resources", "worker", "adopted_from"}


@dataclass
class ImportSummary:
    imported: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # done here already, the same result
    differing: list[str] = field(default_factory=list)  # done here already, another result: kept ours
    superseded: list[str] = field(default_factory=list)  # other versions of experiments held here

    def lines(self, bundle: Bundle, storage: Path) -> list[str]:
        phases = Counter(bundle.records[t].phase for t in self.imported)
        words = ", ".join(f"{phases[p]} {w}" for p, w in (("search", "searches"), ("select", "selections"),
                                                          ("evaluate", "evaluations")) if phases[p])
        out = [f"imported {len(self.imported)} trial record(s) from {bundle.path.name} into {storage}"
               + (f" ({words})" if words else "")]
        if self.kept:
            out.append(f"kept {len(self.kept)} trial(s) this store holds done with the same results")
        if self.differing:
            shown = ", ".join(self.differing[:3]) + (" ..." if len(self.differing) > 3 else "")
            out.append(f"kept this store's result of {len(self.differing)} trial(s) whose result in the "
                       f"bundle differs (not merged): {shown}")
        if self.superseded:
            out.append(f"{len(self.superseded)} imported trial(s) are other versions (code or settings) of "
                       "experiments this store holds: imported as superseded, the report shows this store's")
        return out


def import_bundle(path: str | os.PathLike, storage: str | os.PathLike) -> tuple[Bundle, ImportSummary]:
    """Check the bundle and the store, then add the bundle's trials (the module docstring)."""
    bundle = read_bundle(path)
    store = Store(storage)
    store.check_usable()
    store.check_locking()
    local = store.records() if store.root.is_dir() else {}
    if store.invalid:
        first = sorted(store.invalid.values(), key=lambda f: str(f.path))[0]
        raise StoreError(f"{first.message}; `lhdbench benchmark` moves such files aside, fix the store "
                         "before importing into it")
    plan = store.read_plan()
    summary = _decide(bundle, local, plan)

    store.root.mkdir(parents=True, exist_ok=True)
    taken = set(summary.imported)
    for name, blob in sorted(bundle.files.items()):
        trial_id = name.split("/")[1]
        if trial_id in taken:
            atomic_write_bytes(store.root / name, blob)
    if bundle.checkpoints:
        with zipfile.ZipFile(bundle.path) as archive:
            for name in bundle.checkpoints:
                if name.split("/")[1] in taken:
                    _extract(archive, name, store.root / name)
    _merge_plan(store, bundle, summary)
    for trial_id in sorted(taken, key=lambda t: ("search", "select", "evaluate").index(
            bundle.records[t].phase)):
        atomic_write_bytes(store.record_path(trial_id), bundle.record_bytes[trial_id])
        store.log_event(trial_id, {"event": "imported", "from": bundle.path.name})
    return bundle, summary


def _decide(bundle: Bundle, local: dict[str, TrialRecord], plan: dict) -> ImportSummary:
    summary = ImportSummary()
    slots = {slot(entry): trial_id for trial_id, entry in current_trials(plan).items()}
    slots.update({slot(r.model_dump()): t for t, r in local.items() if r.status == "done"})
    for trial_id, record in sorted(bundle.records.items()):
        mine = local.get(trial_id)
        if mine is not None and mine.status == "done":
            same = mine.model_dump(exclude=BOOKKEEPING) == record.model_dump(exclude=BOOKKEEPING)
            (summary.kept if same else summary.differing).append(trial_id)
            continue
        if mine is not None and record.status != "done":
            continue  # a failure from elsewhere does not replace this store's own attempt
        summary.imported.append(trial_id)
        other = slots.get(slot(record.model_dump()))
        if other is not None and other != trial_id:
            summary.superseded.append(trial_id)
    return summary


def _merge_plan(store: Store, bundle: Bundle, summary: ImportSummary) -> None:
    """Add the imported trials' plan entries (and the bundle's runs) without touching local ones;
    trials the bundle planned but never ran are not added (they are not this store's plan)."""
    imported = set(summary.imported)
    with file_lock(store.root / PLAN_LOCK):
        plan = store.read_plan()
        slots = {slot(entry): trial_id for trial_id, entry in current_trials(plan).items()}
        for trial_id in sorted(imported - set(plan["trials"])):
            # A trial the bundle's own store had superseded stays superseded.
            entry = dict(bundle.plan["trials"].get(trial_id) or _entry(bundle.records[trial_id]))
            other = slots.get(slot(entry))
            if other is not None and other != trial_id and not entry.get(SUPERSEDED):
                entry[SUPERSEDED] = other
            plan["trials"][trial_id] = entry
        plan["trials"] = dict(sorted(plan["trials"].items()))
        for run in bundle.plan["runs"]:
            run = {**run, "imported_from": bundle.path.name}
            if run not in plan["runs"]:
                plan["runs"].append(run)
        atomic_write_json(store.plan_path, plan)


def _entry(record: TrialRecord) -> dict:
    fields = ("trial_id", "phase", "baseline", "dataset", "seed", "policy", "search_trial_id", "selection",
              "selection_trial_id", "search_dataset", "settings_id")
    return {**{k: getattr(record, k) for k in fields}, "protocol": record.protocol_name}


def _extract(archive: zipfile.ZipFile, name: str, target: Path) -> None:
    """A checkpoint streamed to a temporary file beside its place, then renamed into it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.importing")
    with archive.open(name) as source, open(temporary, "wb") as sink:
        shutil.copyfileobj(source, sink, 1 << 20)
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(temporary, target)
