"""Per-condition cells (accuracy over seeds, counts, parameters, cost) and the search/evaluation cost
per baseline and dataset, as plain numeric DataFrames; formatting is render.py's job."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .load import Trials, condition_name, dataset_order, policy_order

CELL_COLUMNS = ("baseline", "dataset", "policy", "condition", "trials", "done", "failed", "missing",
                "no_value", "mean", "std", "params", "eval_gpu_hours", "eval_cpu_hours", "best")
COST_COLUMNS = ("baseline", "dataset", "search_trials", "search_failed", "search_gpu_hours",
                "search_cpu_hours", "select_gpu_hours", "select_cpu_hours", "eval_gpu_hours",
                "eval_cpu_hours")

# Means (of accuracies, and of ranks) are compared after rounding far below any meaningful difference,
# so that two equal sets of values summed in a different order still tie exactly.
COMPARE_DECIMALS = 9


def evaluations(trials: Trials) -> pd.DataFrame:
    return trials.frame[trials.frame["phase"] == "evaluate"]


def conditions(trials: Trials) -> list[str]:
    ev = evaluations(trials)
    pairs = set(zip(ev["dataset"], ev["policy"], strict=True))
    return [condition_name(d, p) for d in dataset_order({d for d, _ in pairs})
            for p in policy_order({p for d2, p in pairs if d2 == d})]


def baselines(trials: Trials) -> list[str]:
    return sorted(set(trials.frame["baseline"].dropna()))


def _sum_hours(group: pd.DataFrame, unit: str) -> float:
    hours = group.loc[group["unit"] == unit, "hours"].dropna()
    return float(math.fsum(hours)) if len(hours) else 0.0


def condition_cells(trials: Trials) -> pd.DataFrame:
    """One row per (baseline, condition) with at least one planned or recorded evaluation, in condition
    then baseline order. mean/std are over the done seeds with a value (sample std, ddof 1)."""
    ev = evaluations(trials)
    order = {c: i for i, c in enumerate(conditions(trials))}
    rows = []
    for (baseline, dataset, policy), group in ev.groupby(["baseline", "dataset", "policy"], sort=True):
        group = group.sort_values(["seed", "trial_id"])
        done = group[group["status"] == "done"]
        values = done["value"].dropna().to_numpy(dtype=float)
        params = done["params"].dropna().to_numpy(dtype=float)
        rows.append({
            "baseline": baseline, "dataset": dataset, "policy": policy,
            "condition": condition_name(dataset, policy), "trials": len(group), "done": len(values),
            "failed": int((group["status"] == "failed").sum()),
            "missing": int((group["status"] == "missing").sum()),
            "no_value": len(done) - len(values),
            "mean": float(np.mean(values)) if len(values) else math.nan,
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
            "params": float(np.mean(params)) if len(params) else math.nan,
            "eval_gpu_hours": _sum_hours(group, "GPU"), "eval_cpu_hours": _sum_hours(group, "CPU"),
            "best": False})
    cells = pd.DataFrame(rows, columns=list(CELL_COLUMNS))
    if cells.empty:
        return cells
    cells["_order"] = cells["condition"].map(order)
    cells = cells.sort_values(["_order", "baseline"]).drop(columns="_order").reset_index(drop=True)
    rounded = cells["mean"].round(COMPARE_DECIMALS)
    top = rounded.groupby(cells["condition"]).transform("max")
    cells["best"] = rounded.notna() & (rounded == top)
    return cells


def accuracy_matrix(cells: pd.DataFrame, baseline_names: list[str], condition_names: list[str]
                    ) -> pd.DataFrame:
    """Mean accuracy, baselines x conditions; NaN where a baseline has no result in a condition."""
    matrix = pd.DataFrame(math.nan, index=pd.Index(baseline_names, name="baseline"),
                          columns=pd.Index(condition_names, name="condition"))
    for row in cells.itertuples():
        matrix.loc[row.baseline, row.condition] = round(row.mean, COMPARE_DECIMALS)
    return matrix


def cost_table(trials: Trials) -> pd.DataFrame:
    """Hours spent per (baseline, searched dataset): its searches, the selections and evaluations of
    what they found (transfer evaluations included), failed trials included: they used the hardware
    too."""
    frame = trials.frame
    names = baselines(trials)
    rows = []
    for dataset in dataset_order(set(frame["search_dataset"].dropna())):
        for baseline in names:
            group = frame[(frame["baseline"] == baseline) & (frame["search_dataset"] == dataset)]
            if group.empty:
                continue
            search = group[group["phase"] == "search"]
            select = group[group["phase"] == "select"]
            ev = group[group["phase"] == "evaluate"]
            rows.append({"baseline": baseline, "dataset": dataset, "search_trials": len(search),
                         "search_failed": int((search["status"] == "failed").sum()),
                         "search_gpu_hours": _sum_hours(search, "GPU"),
                         "search_cpu_hours": _sum_hours(search, "CPU"),
                         "select_gpu_hours": _sum_hours(select, "GPU"),
                         "select_cpu_hours": _sum_hours(select, "CPU"),
                         "eval_gpu_hours": _sum_hours(ev, "GPU"), "eval_cpu_hours": _sum_hours(ev, "CPU")})
    return pd.DataFrame(rows, columns=list(COST_COLUMNS))
