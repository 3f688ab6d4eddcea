"""Results as data: a store or a bundle as a pandas DataFrame, and bundles that travel between machines.

    from lhdbench import results
    trials = results.load("results/demo/demo-bundle.zip")   # a bundle file or a store folder
    results.accuracy_table(trials)                           # methods x conditions, mean over seeds

`load` gives one row per trial that ended (done or failed), with the flat columns of `COLUMNS`;
docs/results.md shows it as a notebook would use it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..protocol import protocol_id
from .sources import Source, SourceError, open_source

# The columns of `load`, in order.
COLUMNS = ("method", "phase", "search_dataset", "eval_dataset", "policy", "selection", "seed", "protocol",
           "protocol_id", "status", "final_test_acc", "best_test_acc", "params", "gpu_hours",
           "cpu_hours", "device", "lhdbench", "code", "source", "trial_id", "search_trial_id",
           "settings_id", "reason")
METRICS = ("final_test_acc", "best_test_acc")

__all__ = ["COLUMNS", "METRICS", "Source", "SourceError", "accuracy_table", "condition", "evaluations",
           "load", "open_source"]


def load(paths: str | os.PathLike | Sequence[str | os.PathLike], *,
         include_superseded: bool = False) -> pd.DataFrame:
    """One row per trial that ended in the store(s) or bundle(s) at `paths` (COLUMNS), sorted by
    source and trial id. Trials a later plan superseded (an earlier code or settings version of the
    same experiment) are left out unless `include_superseded`. SourceError for a path that is
    neither a store nor a valid bundle."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    rows = []
    for path in paths:
        source = open_source(path)
        superseded = {t for t, e in source.plan["trials"].items() if e.get("superseded_by")}
        for trial_id, record in sorted(source.records.items()):
            if include_superseded or trial_id not in superseded:
                rows.append(_row(record, source))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _row(record: Any, source: Source) -> dict[str, Any]:
    env, resources = record.environment, record.resources
    hours = record.wall_time_s / 3600.0 if record.wall_time_s is not None else math.nan
    on_gpu = env is not None and env.device.startswith("cuda")
    evaluation = record.phase == "evaluate"
    return {
        "method": record.baseline, "phase": record.phase,
        "search_dataset": record.search_dataset or record.dataset,
        "eval_dataset": record.dataset if evaluation else None, "policy": record.policy,
        "selection": (record.selection or "magnitude") if evaluation else None, "seed": record.seed,
        "protocol": record.protocol_name, "protocol_id": protocol_id(record.protocol),
        "status": record.status, "final_test_acc": _number(record.final_test_acc),
        "best_test_acc": _number(record.best_test_acc), "params": _number(record.params),
        "gpu_hours": hours * (resources.gpu if resources else 1.0) if on_gpu else (0.0 if env else math.nan),
        "cpu_hours": hours * (resources.cpu if resources else 1.0) if env and not on_gpu else 0.0,
        "device": env.device_name if env else None, "lhdbench": env.lhdbench if env else None,
        "code": record.code.method if record.code else None, "source": str(source.path),
        "trial_id": record.trial_id, "search_trial_id": record.search_trial_id,
        "settings_id": record.settings_id, "reason": record.reason}


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def condition(frame: pd.DataFrame) -> pd.Series:
    """Each evaluation's condition as the report names it: `cifar10/base`, `cifar10/base/pt`
    (perturbation selection), `cifar10>svhn/base` (searched on CIFAR-10, evaluated on SVHN)."""
    def name(row: pd.Series) -> str:
        dataset = row["eval_dataset"] if row["search_dataset"] == row["eval_dataset"] else (
            f"{row['search_dataset']}>{row['eval_dataset']}")
        return f"{dataset}/{row['policy']}" + ("/pt" if row["selection"] == "perturbation" else "")

    return frame.apply(name, axis=1) if len(frame) else pd.Series([], dtype=object)


def evaluations(frame: pd.DataFrame, **where: Any) -> pd.DataFrame:
    """The done evaluations, with a `condition` column, narrowed by column values:
    `evaluations(trials, method="darts", policy="1m")`; a list means any of its values."""
    unknown = sorted(set(where) - set(frame.columns))
    if unknown:
        raise KeyError(f"no column {unknown[0]!r} (columns: {', '.join(frame.columns)})")
    done = frame[(frame["phase"] == "evaluate") & (frame["status"] == "done")].copy()
    for column, value in where.items():
        values = list(value) if isinstance(value, (list, tuple, set)) else [value]
        done = done[done[column].isin(values)]
    done.insert(0, "condition", condition(done))
    return done.reset_index(drop=True)


def accuracy_table(frame: pd.DataFrame, metric: str = "final_test_acc") -> pd.DataFrame:
    """Mean test accuracy over seeds, methods x conditions (NaN where a method has none); `metric` is
    final_test_acc (the last epoch's) or best_test_acc (the paper's best after its epoch window)."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: one of {', '.join(METRICS)}")
    done = evaluations(frame)
    return done.pivot_table(index="method", columns="condition", values=metric, aggfunc="mean")
