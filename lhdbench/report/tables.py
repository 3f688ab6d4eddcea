"""Per-condition cells (accuracy over seeds, counts, parameters, cost) and the search/evaluation cost
per baseline and dataset, as plain numeric DataFrames; formatting is text.py's and content.py's job."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .load import Trials, condition_name, dataset_order, policy_order

CELL_COLUMNS = ("baseline", "dataset", "policy", "condition", "trials", "done", "failed", "missing",
                "no_value", "mean", "std", "params", "eval_gpu_hours", "eval_cpu_hours", "best",
                "other_protocol")
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
            "best": False,
            # Trials of another protocol's settings, only with `report --mix-protocols`.
            "other_protocol": int(done["other_protocol"].sum()) if "other_protocol" in done else 0})
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


BEST_COLUMNS = ("condition", "dataset", "policy", "trial_id", "baseline", "seed", "value", "params")
RESULT_COST_COLUMNS = ("baseline", "condition", "dataset", "policy", "results", "mean", "params",
                       "gpu_hours", "cpu_hours")


def _done_with_value(trials: Trials) -> pd.DataFrame:
    ev = evaluations(trials)
    return ev[(ev["status"] == "done") & ev["value"].notna()]


def best_architectures(trials: Trials, condition_names: list[str]) -> pd.DataFrame:
    """Per condition (in condition order), the done evaluation with the highest metric value; equal
    values (after rounding to COMPARE_DECIMALS) go to the lowest trial id."""
    done = _done_with_value(trials)
    rows = []
    for condition in condition_names:
        dataset, policy = condition.split("/", 1)
        here = done[(done["dataset"] == dataset) & (done["policy"] == policy)]
        if here.empty:
            continue
        best = here.assign(_key=-here["value"].round(COMPARE_DECIMALS)).sort_values(
            ["_key", "trial_id"]).iloc[0]
        rows.append({"condition": condition, "dataset": dataset, "policy": policy,
                     "trial_id": best["trial_id"], "baseline": best["baseline"], "seed": int(best["seed"]),
                     "value": float(best["value"]), "params": float(best["params"])})
    return pd.DataFrame(rows, columns=list(BEST_COLUMNS))


def result_costs(trials: Trials, cells: pd.DataFrame) -> pd.DataFrame:
    """Per cell with a result: its mean metric value and parameters (as in `cells`) and the mean hours
    one of its results took, over its done evaluations with a value: the evaluation itself, the search
    it trained the result of, and for a perturbation condition the selection in between (a search or a
    selection serves several evaluations; each result is charged all of it, what obtaining that one
    result alone would cost)."""
    frame = trials.frame.set_index("trial_id", drop=False)
    done = _done_with_value(trials)
    rows = []
    for cell in cells[cells["mean"].notna()].to_dict("records"):
        group = done[(done["baseline"] == cell["baseline"]) & (done["dataset"] == cell["dataset"])
                     & (done["policy"] == cell["policy"])].sort_values(["seed", "trial_id"])
        gpu, cpu = [], []
        for row in group.to_dict("records"):
            ids = [row["trial_id"], row["search_trial_id"], row["selection_trial_id"]]
            parts = frame.loc[[i for i in ids if isinstance(i, str) and i in frame.index]]
            gpu.append(_sum_hours(parts, "GPU"))
            cpu.append(_sum_hours(parts, "CPU"))
        rows.append({"baseline": cell["baseline"], "condition": cell["condition"], "dataset": cell["dataset"],
                     "policy": cell["policy"], "results": len(group), "mean": cell["mean"],
                     "params": cell["params"], "gpu_hours": float(np.mean(gpu)),
                     "cpu_hours": float(np.mean(cpu))})
    return pd.DataFrame(rows, columns=list(RESULT_COST_COLUMNS))


def cost_unit(costs: pd.DataFrame) -> str:
    """The unit of `result_costs`' hours: `GPU`, `CPU`, or `GPU- and CPU` where both occur (summed)."""
    gpu, cpu = bool((costs["gpu_hours"] > 0).any()), bool((costs["cpu_hours"] > 0).any())
    return "GPU- and CPU" if gpu and cpu else "CPU" if cpu else "GPU"


def plottable_history(history: list[dict]) -> bool:
    """Every epoch with its number and a (20, 7) normal-cell matrix of finite, non-negative weights."""
    try:
        return bool(history) and all(
            isinstance(entry.get("epoch"), int) and np.asarray(entry["normal"], dtype=float).shape == (20, 7)
            and np.all(np.isfinite(entry["normal"])) and np.asarray(entry["normal"]).min() >= 0
            and np.asarray(entry["normal"], dtype=float).sum() > 0 for entry in history)
    except (KeyError, TypeError, ValueError):
        return False


def representative_searches(trials: Trials) -> list[dict]:
    """Per baseline with an arch history (by name): the search whose history the evolution plot shows,
    the first dataset (paper order) and then the lowest seed (then the lowest trial id). A history that
    cannot be plotted (not the recorded format) counts as none."""
    frame = trials.frame
    usable = [t for t, history in trials.arch_histories.items() if plottable_history(history)]
    searches = frame[(frame["phase"] == "search") & (frame["status"] == "done")
                     & frame["trial_id"].isin(usable)]
    out = []
    for baseline in sorted(set(searches["baseline"].dropna())):
        mine = searches[searches["baseline"] == baseline]
        first = dataset_order(set(mine["dataset"]))[0]
        pick = mine[mine["dataset"] == first].sort_values(["seed", "trial_id"]).iloc[0]
        out.append({"baseline": baseline, "dataset": first, "seed": int(pick["seed"]),
                    "trial_id": pick["trial_id"]})
    return out
