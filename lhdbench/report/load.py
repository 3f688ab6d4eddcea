"""Read a results store into one tidy table of trials: every planned or recorded trial of one protocol,
with its status, metric value and cost."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..protocol import protocol_differences, protocol_id
from ..record import TrialRecord
from ..results.sources import SourceError, open_source
from ..store import current_trials, slot
from .options import METRICS

# The paper's order of datasets and policies (as its Table 2); names it does not know follow,
# alphabetically, so a new policy or dataset needs no edit here.
DATASET_ORDER = ("cifar10", "cifar100", "svhn", "digits")
POLICY_ORDER = ("base", "1m", "3ops", "4out")
DATASET_SHORT = {"cifar10": "C10", "cifar100": "C100", "svhn": "SVHN"}

# For an evaluation, `dataset` and `policy` name its condition (`dataset/policy` is the condition):
# `dataset` is the condition's dataset label (the evaluated dataset, `searched>evaluated` for a transfer
# condition) and `policy` carries the selection (`base`, or `base/pt` for a perturbation selection).
# `eval_dataset`, `search_dataset`, `selection` and `rule` keep the plain values.
TRIAL_COLUMNS = ("trial_id", "phase", "baseline", "dataset", "policy", "seed", "protocol", "status",
                 "reason", "value", "params", "best_after_epoch", "hours", "unit", "device_name",
                 "lhdbench", "search_trial_id", "eval_dataset", "search_dataset", "selection", "rule",
                 "selection_trial_id", "code", "source", "protocol_id")
SELECTION_SUFFIX = {"magnitude": "", "perturbation": "/pt"}
TRANSFER = ">"


class ReportError(ValueError):
    """A store that cannot be reported on (missing, empty, ambiguous); one line for the user."""


@dataclass(frozen=True)
class Trials:
    """The trials of one protocol in a store, one row each (TRIAL_COLUMNS), sorted by trial id."""

    frame: pd.DataFrame
    protocol: str
    metric: str
    runs: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    # What the frame has no column for, by trial id: a done evaluation's genotype (Genotype.to_dict()
    # form, as recorded) and a done search's arch_history (its exported weights after every epoch).
    genotypes: dict[str, dict[str, Any]] = field(default_factory=dict)
    arch_histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # A done evaluation's learning-curve points ({"fraction", "epoch", "test_acc"}), where it has any.
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def ordered(values: Any, order: tuple[str, ...]) -> list[str]:
    values = set(values)
    return [v for v in order if v in values] + sorted(values - set(order))


def dataset_order(values: Any) -> list[str]:
    """Datasets in paper order, each followed by its transfer labels (`cifar10>svhn`)."""
    values = set(values)
    plain = ordered({v.split(TRANSFER)[0] for v in values}, DATASET_ORDER)
    out = []
    for source in plain:
        if source in values:
            out.append(source)
        targets = {v.split(TRANSFER, 1)[1] for v in values if v.startswith(source + TRANSFER)}
        out += [f"{source}{TRANSFER}{t}" for t in ordered(targets, DATASET_ORDER)]
    return out


def policy_order(values: Any) -> list[str]:
    """Policies in paper order, magnitude selections first, then each selection's variants."""
    values = set(values)
    out = []
    for suffix in SELECTION_SUFFIX.values():
        group = {v[: len(v) - len(suffix)] if suffix else v for v in values
                 if (v.endswith(suffix) if suffix else "/" not in v)}
        out += [p + suffix for p in ordered(group, POLICY_ORDER)]
    return out + sorted(values - set(out))


def condition_name(dataset: str, policy: str) -> str:
    return f"{dataset}/{policy}"


def condition_labels(eval_dataset: str, search_dataset: str | None, policy: str,
                     selection: str | None) -> tuple[str, str]:
    """(dataset label, policy label) of an evaluation's condition."""
    dataset = eval_dataset if not search_dataset or search_dataset == eval_dataset else (
        f"{search_dataset}{TRANSFER}{eval_dataset}")
    return dataset, policy + SELECTION_SUFFIX.get(selection or "magnitude", f"/{selection}")


def file_label(dataset: str) -> str:
    """A dataset label as part of a file name (`cifar10>svhn` -> `cifar10-to-svhn`)."""
    return dataset.replace(TRANSFER, "-to-")


def short_condition(condition: str) -> str:
    """`C10 base`, `C10 base pt`, `C10>SVHN base`."""
    dataset, policy = condition.split("/", 1)
    short = TRANSFER.join(DATASET_SHORT.get(d, d) for d in dataset.split(TRANSFER))
    return f"{short} {policy.replace('/', ' ')}"


def _protocol_name(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("name")
    return value if isinstance(value, str) and value else None


def _hours(record: TrialRecord) -> tuple[float, str | None]:
    """Cost as recorded: GPU-hours on a GPU trial (its GPU fraction), CPU-hours otherwise."""
    if record.wall_time_s is None or record.environment is None or record.resources is None:
        return math.nan, None
    on_gpu = record.environment.device.startswith("cuda")
    share = record.resources.gpu if on_gpu else record.resources.cpu
    return record.wall_time_s / 3600.0 * share, "GPU" if on_gpu else "CPU"


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _row(record: TrialRecord, metric: str) -> dict[str, Any]:
    hours, unit = _hours(record)
    environment = record.environment
    dataset, policy = record.dataset, record.policy if record.phase == "select" else None
    if record.phase == "evaluate":
        dataset, policy = condition_labels(record.dataset, record.search_dataset, record.policy,
                                           record.selection)
    return {
        "eval_dataset": record.dataset if record.phase == "evaluate" else None,
        "search_dataset": record.search_dataset or record.dataset, "selection": record.selection,
        "rule": record.policy,
        "trial_id": record.trial_id, "phase": record.phase, "baseline": record.baseline,
        "dataset": dataset, "policy": policy,
        "seed": record.seed, "protocol": record.protocol_name, "status": record.status,
        "reason": record.reason, "value": _number(getattr(record, METRICS[metric])),
        "params": _number(record.params), "best_after_epoch": _number(record.best_after_epoch),
        "hours": hours, "unit": unit, "device_name": environment.device_name if environment else None,
        "lhdbench": environment.lhdbench if environment else None,
        "search_trial_id": record.search_trial_id, "selection_trial_id": record.selection_trial_id,
        "code": record.code.method if record.code is not None else None}


def load_trials(storage: str | os.PathLike, metric: str = "final", protocol: str | None = None,
                references: Sequence[str | os.PathLike] = (), mix_protocols: bool = False) -> Trials:
    """The trials of one protocol from a store (or bundle) and any reference stores or bundles.

    The sources are read in order and the first wins: a reference's trial that the store holds
    already, or another version of an experiment the store holds (same method, condition, seed and
    protocol name), is left out with a note. Trials of other protocols, or of one protocol name whose
    settings differ between sources, are never put in one table unless `mix_protocols` (then every
    cell with a trial of another protocol says so)."""
    if metric not in METRICS:
        raise ReportError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
    try:
        sources = [open_source(storage)] + [open_source(path, label=_label(path)) for path in references]
    except SourceError as error:
        raise ReportError(str(error)) from None
    primary = sources[0]
    if not primary.records and not current_trials(primary.plan):
        raise ReportError(f"{storage}: the store holds no trials (nothing planned, nothing recorded)")
    records, planned, origin, notes = _merged(sources)
    runs: list[dict[str, Any]] = [run for source in sources for run in source.plan.get("runs") or []]

    rows = {trial_id: {**_row(record, metric), "source": origin[trial_id],
                       "protocol_id": protocol_id(record.protocol)} for trial_id, record in records.items()}

    for trial_id, entry in sorted(planned.items()):
        if trial_id in rows:
            continue
        needed = rows.get(entry.get("selection_trial_id") or entry.get("search_trial_id") or "")
        blocked = needed is not None and needed["status"] == "failed"
        dataset, policy = entry.get("dataset"), entry.get("policy")
        if entry.get("phase") == "evaluate":
            dataset, policy = condition_labels(dataset, entry.get("search_dataset"), policy,
                                               entry.get("selection"))
        what = "selection" if entry.get("selection_trial_id") else "search"
        rows[trial_id] = {
            "trial_id": trial_id, "phase": entry.get("phase"), "baseline": entry.get("baseline"),
            "dataset": dataset, "policy": policy, "seed": entry.get("seed"),
            "protocol": _protocol_name(entry.get("protocol")),
            # A trial whose dependency failed can never run: it counts as failed, not as pending.
            "status": "failed" if blocked else "missing",
            "reason": f"its {what} failed" if blocked else None, "value": math.nan,
            "params": math.nan, "best_after_epoch": math.nan, "hours": math.nan, "unit": None,
            "device_name": None, "lhdbench": None, "search_trial_id": entry.get("search_trial_id"),
            "eval_dataset": entry.get("dataset") if entry.get("phase") == "evaluate" else None,
            "search_dataset": entry.get("search_dataset") or entry.get("dataset"),
            "selection": entry.get("selection"), "rule": entry.get("policy"),
            "selection_trial_id": entry.get("selection_trial_id"), "code": None,
            "source": origin[trial_id], "protocol_id": None}

    known = sorted({r["protocol"] for r in rows.values() if r["protocol"]})
    mine = sorted({r["protocol"] for r in rows.values() if r["protocol"] and r["source"] == primary.label})
    if protocol is None:
        if len(known) > 1 and not (mix_protocols and len(mine) == 1):
            where = "the store" if len(sources) == 1 else "the sources"
            raise ReportError(f"{where} hold(s) trials of several protocols ({', '.join(known)}); "
                              "choose one with --protocol" + (
                                  ", or pass --mix-protocols to report them together (marked)"
                                  if len(sources) > 1 else ""))
        protocol = (mine or known or ["unknown"])[0]
    elif protocol not in known:
        raise ReportError(f"no trials of protocol {protocol!r} in the store "
                          f"(it holds: {', '.join(known) or 'none with a known protocol'})")
    # Relative names, so a report is the same wherever the store lies.
    notes = [f"left out, not a valid trial record: {message}" for message in primary.invalid] + notes
    unattributed = sum(1 for r in rows.values() if not r["protocol"])
    if unattributed and known:
        notes.append(f"{unattributed} planned trial(s) of unknown protocol are left out")
    scope = [r for r in rows.values() if r["protocol"] == protocol or (not known and not r["protocol"])
             or (mix_protocols and r["protocol"])]
    others = sorted({r["protocol"] for r in rows.values() if r["protocol"] and r not in scope})
    if others and len(sources) > 1:
        notes.append(f"left out the trials of protocol(s) {', '.join(others)} (--protocol chooses one; "
                     "--mix-protocols reports them together)")
    main_id = _main_protocol_id(scope, protocol)
    notes += _protocol_check(scope, records, protocol, main_id, mix_protocols)
    table = pd.DataFrame(sorted(scope, key=lambda r: r["trial_id"]), columns=list(TRIAL_COLUMNS))
    if table.empty or not (table["phase"] == "evaluate").any():
        raise ReportError(f"{storage}: no evaluation trials of protocol {protocol!r} in the store")
    table["other_protocol"] = table["protocol_id"].notna() & (table["protocol_id"] != main_id)
    notes += _code_notes(table) + _source_notes(table, sources)
    chosen = {r["trial_id"] for r in scope}
    done = {trial_id: record for trial_id, record in sorted(records.items())
            if trial_id in chosen and record.status == "done"}
    return Trials(frame=table.reset_index(drop=True), protocol=protocol, metric=metric, runs=runs,
                  notes=notes,
                  genotypes={t: r.genotype for t, r in done.items() if r.phase == "evaluate" and r.genotype},
                  arch_histories={t: r.arch_history for t, r in done.items()
                                  if r.phase == "search" and r.arch_history},
                  curves={t: [p.model_dump() for p in r.curve] for t, r in done.items() if r.curve})


def _label(path: str | os.PathLike) -> str:
    """A reference as the report names it: its file or folder name, not where it lies."""
    return Path(path).name or str(path)


def _merged(sources: list) -> tuple[dict[str, TrialRecord], dict[str, dict[str, Any]], dict[str, str],
                                    list[str]]:
    """(records, planned entries, source label by trial id, notes) of the sources, the first winning."""
    records: dict[str, TrialRecord] = {}
    planned: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    slots: dict[tuple, str] = {}
    notes: list[str] = []
    for index, source in enumerate(sources):
        entries = current_trials(source.plan)
        mine, own_notes = _current_records(source.records, set(source.plan["trials"]) - set(entries))
        notes += own_notes if index == 0 else [f"{source.label}: {n}" for n in own_notes]
        differ, versions = [], set()
        for trial_id, record in sorted(mine.items()):
            key = slot(record.model_dump())
            if trial_id in records:
                if _result(records[trial_id]) != _result(record):
                    differ.append(trial_id)
                continue
            if key in slots and slots[key] != trial_id:
                versions.add(record.baseline or "?")
                continue
            records[trial_id], origin[trial_id], slots[key] = record, source.label, trial_id
        for trial_id, entry in sorted(entries.items()):
            key = slot(entry)
            if trial_id in planned or trial_id in records and origin[trial_id] != source.label:
                continue
            if key in slots and slots[key] != trial_id:
                continue
            planned[trial_id] = entry
            origin.setdefault(trial_id, source.label)
            slots.setdefault(key, trial_id)
        if differ:
            notes.append(f"{source.label}: {len(differ)} trial(s) with other results than an earlier "
                         f"source's for the same trial id, left out (never merged): {', '.join(differ[:3])}"
                         + (" ..." if len(differ) > 3 else ""))
        if versions:
            notes.append(f"{source.label}: left out trials of {', '.join(sorted(versions))} that are other "
                         "versions (code or settings) of experiments an earlier source holds")
    return records, planned, origin, notes


# Fields that say where and when a record was stored, not what it found.
_BOOKKEEPING = {"attempts", "resources", "worker", "adopted_from"}


def _result(record: TrialRecord) -> dict[str, Any]:
    return record.model_dump(exclude=_BOOKKEEPING)


def _main_protocol_id(scope: list[dict[str, Any]], protocol: str) -> str | None:
    """The settings the report's protocol stands for: those of its first source's evaluations."""
    ids = [r["protocol_id"] for r in sorted(scope, key=lambda r: r["trial_id"])
           if r["protocol"] == protocol and r["protocol_id"] and r["phase"] == "evaluate"]
    by_source: dict[str, list[str]] = {}
    for row in sorted(scope, key=lambda r: r["trial_id"]):
        if row["protocol"] == protocol and row["protocol_id"] and row["phase"] == "evaluate":
            by_source.setdefault(row["source"], []).append(row["protocol_id"])
    first = next(iter(by_source.values()), ids)
    return max(sorted(set(first)), key=first.count) if first else None


def _protocol_check(scope: list[dict[str, Any]], records: dict[str, TrialRecord], protocol: str,
                    main_id: str | None, mix: bool) -> list[str]:
    """Refuse (ReportError) evaluations of the report's protocol name with other settings, naming the
    settings that differ; with `mix`, a note instead."""
    other = [r for r in scope
             if r["phase"] == "evaluate" and r["protocol_id"] and r["protocol_id"] != main_id]
    if not other:
        return []
    reference = next(records[r["trial_id"]] for r in sorted(scope, key=lambda r: r["trial_id"])
                     if r["phase"] == "evaluate" and r["protocol_id"] == main_id)
    odd = records[sorted(other, key=lambda r: r["trial_id"])[0]["trial_id"]]
    differences = protocol_differences(reference.protocol, odd.protocol) or ["the protocol name"]
    shown = "; ".join(differences[:3]) + (f" and {len(differences) - 3} more" if len(differences) > 3 else "")
    sources = sorted({r["source"] for r in other})
    if not mix:
        raise ReportError(f"the evaluations of protocol {protocol!r} do not all share its settings "
                          f"({shown}; {len(other)} trial(s) from {', '.join(sources)}): report them "
                          "separately, or pass --mix-protocols to put them in one table, marked")
    return [f"--mix-protocols: {len(other)} evaluation(s) from {', '.join(sources)} ran under other "
            f"settings ({odd.protocol_name}: {shown}); their cells say 'other protocol'"]


def _source_notes(table: pd.DataFrame, sources: list) -> list[str]:
    """Where each method's trials came from, when the report reads more than one source."""
    if len(sources) == 1:
        return []
    notes = []
    for source in sources:
        mine = table[(table["source"] == source.label) & (table["status"] == "done")]
        if mine.empty:
            continue
        methods = ", ".join(sorted(set(mine["baseline"].dropna())))
        devices = ", ".join(sorted(set(mine["device_name"].dropna()))) or "unknown"
        versions = ", ".join(sorted(set(mine["lhdbench"].dropna()))) or "unknown"
        where = "this store" if source is sources[0] else f"reference {source.label} ({source.kind})"
        notes.append(f"from {where}: {methods} ({len(mine)} done trials; devices: {devices}; "
                     f"lhdbench {versions})")
    return notes


def _current_records(records: dict[str, TrialRecord],
                     superseded: set[str]) -> tuple[dict[str, TrialRecord], list[str]]:
    """The records a report may use: not of a trial a later plan superseded (the method's code or the
    settings changed since), and one per slot (method, condition, seed, protocol), so two versions of
    one experiment are never averaged as two seeds. Notes say what was left out."""
    notes = []
    left = {t: r for t, r in records.items() if t not in superseded}
    dropped = sorted({r.baseline or "?" for t, r in records.items() if t in superseded})
    if len(left) < len(records):
        notes.append(f"left out {len(records) - len(left)} result(s) of trials superseded by a later plan "
                     f"(the code or settings of {', '.join(dropped)} changed since)")
    by_slot: dict[tuple, list[TrialRecord]] = {}
    for record in left.values():
        by_slot.setdefault(slot(record.model_dump()), []).append(record)
    twins = [group for group in by_slot.values() if len(group) > 1]
    for group in twins:
        # The newest attempt wins: a done result over a failed one, then the later finish.
        keep = max(group, key=lambda r: (r.status == "done", r.worker.finished_at if r.worker else 0.0,
                                         r.trial_id or ""))
        for record in group:
            if record is not keep:
                left.pop(record.trial_id or "", None)
    if twins:
        methods = sorted({g[0].baseline or "?" for g in twins})
        notes.append(f"{sum(len(g) - 1 for g in twins)} result(s) left out as earlier versions of the same "
                     f"method, condition, seed and protocol ({', '.join(methods)}): each keeps its latest")
    return left, notes


def _code_notes(table: pd.DataFrame) -> list[str]:
    """Methods whose reported results come from more than one version of their code, and results
    of several lhdbench versions."""
    done = table[(table["status"] == "done") & table["code"].notna()]
    notes = []
    for method, versions in done.groupby("baseline")["code"].nunique().items():
        if versions > 1:
            notes.append(f"the results of {method} come from {versions} versions of its code; rerun its "
                         "trials to bring them to one")
    versions = sorted(set(table.loc[table["status"] == "done", "lhdbench"].dropna()))
    if len(versions) > 1:
        notes.append(f"the results come from lhdbench {', '.join(versions)}; what changed between "
                     "versions is in CHANGELOG.md")
    return notes
