"""Where a results store stands: how many planned trials are done, failed, running and pending."""

from __future__ import annotations

import os
from typing import Any

from .record import TrialRecord
from .store import Store, StoreError, current_trials


def store_status(storage: str | os.PathLike) -> dict[str, Any]:
    """Counts over the planned trials (they sum to `planned`) and the failed trials with reasons.
    A trial is running while some process holds its lock, even when an earlier attempt failed."""
    store = Store(storage)
    if not store.is_store():
        raise StoreError(f"{store.root} is not a results store (no plan.json or records/); "
                         "`lhdbench benchmark --storage` creates one")
    plan = store.read_plan()
    planned = current_trials(plan)
    superseded = len(plan["trials"]) - len(planned)
    records = store.records()
    invalid = [found.message for _, found in sorted(store.invalid.items())]
    counts = {"planned": len(planned), "done": 0, "failed": 0, "running": 0, "pending": 0}
    failed = []
    for trial_id in planned:
        record = records.get(trial_id)
        status = record.status if record else None
        if status == "done":
            counts["done"] += 1
        elif store.is_running(trial_id):
            counts["running"] += 1
        elif status == "failed":
            counts["failed"] += 1
            failed.append({"trial_id": trial_id, "reason": record.reason, "attempts": record.attempts})
        else:
            counts["pending"] += 1
    summary = {**counts, "failed_trials": failed, "invalid_records": invalid, "storage": str(store.root),
               "superseded": superseded, "code_versions": code_versions(records)}
    from .slurm.chain import chain_summary

    slurm = chain_summary(store.root)  # only for a store submitted with `lhdbench slurm`
    return {**summary, "slurm": slurm} if slurm is not None else summary


def code_versions(records: dict[str, TrialRecord]) -> dict[str, dict[str, int]]:
    """The methods whose done results in the store come from more than one version of their code:
    {method: {fingerprint (or "unrecorded" for lhdbench 0.1 records): done records}}."""
    versions: dict[str, dict[str, int]] = {}
    for record in records.values():
        if record.status != "done" or not record.baseline:
            continue
        key = record.code.method if record.code is not None and record.code.method else "unrecorded"
        per = versions.setdefault(record.baseline, {})
        per[key] = per.get(key, 0) + 1
    return {m: v for m, v in sorted(versions.items()) if len(v) > 1}


def format_status(summary: dict[str, Any]) -> str:
    lines = [f"{summary['storage']}: {summary['planned']} planned, {summary['done']} done, "
             f"{summary['failed']} failed, {summary['running']} running, {summary['pending']} pending"]
    if summary.get("superseded"):
        lines.append(f"  {summary['superseded']} earlier trial(s) superseded by a later plan of the same "
                     "experiment (the method's code or settings changed); not counted above")
    for method, versions in summary.get("code_versions", {}).items():
        counts = ", ".join(f"{n} of {v}" for v, n in sorted(versions.items(), key=lambda kv: -kv[1]))
        lines.append(f"  {method}: done results of {len(versions)} code versions ({counts}); the report "
                     "uses only the current trials")
    for failure in summary["failed_trials"]:
        lines.append(f"  failed {failure['trial_id']} (attempts {failure['attempts']}): {failure['reason']}")
    if summary.get("slurm"):
        from .slurm.chain import format_chains

        lines += format_chains(summary["slurm"])
    return "\n".join(lines)
