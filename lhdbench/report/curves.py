"""How early a ranking settles: per condition, Kendall's tau-b between the baselines' ranking by their
mean test accuracy after each learning-curve fraction of the schedule (the record's `curve`,
`lhdbench/evaluate.py`) and the leaderboard's ranking. Nothing when no record has curve points."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pandas as pd
from scipy import stats

from .load import Trials, condition_name, short_condition
from .tables import COMPARE_DECIMALS, evaluations
from .text import NONE, Cell, Table, md_table

CURVE_COLUMNS = ("condition", "fraction", "epochs_trained", "baselines", "tau")


def curve_agreement(trials: Trials, matrix: pd.DataFrame, condition_names: list[str]) -> pd.DataFrame:
    """One row per (condition, fraction) with curve points, in condition then fraction order.

    A baseline's value at a fraction is the mean over its done evaluations (seeds) in the condition that
    recorded that point; the final ranking is the leaderboard's (`matrix`: mean of the report's metric).
    tau is over the baselines with both, NaN with fewer than 2 or when one ranking is all tied.
    `epochs_trained` is how many epochs the point came after (several, joined by `/`, where trials of the
    condition differ)."""
    ev = evaluations(trials)
    ev = ev[(ev["status"] == "done") & ev["trial_id"].isin(list(trials.curves))]
    points: dict[tuple[str, str], dict[str, list[float]]] = {}
    trained: dict[tuple[str, str], set[int]] = {}
    for row in ev.to_dict("records"):
        condition = condition_name(row["dataset"], row["policy"])
        for point in trials.curves[row["trial_id"]]:
            key = (condition, point["fraction"])
            points.setdefault(key, {}).setdefault(row["baseline"], []).append(float(point["test_acc"]))
            trained.setdefault(key, set()).add(int(point["epoch"]) + 1)
    fractions = sorted({f for _, f in points}, key=Fraction)
    rows = []
    for condition in condition_names:
        final = matrix[condition].dropna() if condition in matrix.columns else pd.Series(dtype=float)
        for fraction in fractions:
            by_baseline = points.get((condition, fraction))
            if not by_baseline:
                continue
            common = sorted(set(by_baseline) & set(final.index))
            early = [round(float(np.mean(by_baseline[b])), COMPARE_DECIMALS) for b in common]
            rows.append({"condition": condition, "fraction": fraction,
                         "epochs_trained": "/".join(str(e) for e in sorted(trained[(condition, fraction)])),
                         "baselines": len(common),
                         "tau": _tau(early, [float(final[b]) for b in common])})
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def _tau(a: list[float], b: list[float]) -> float:
    if len(a) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a ranking all tied: scipy warns, gives NaN
        return float(stats.kendalltau(a, b).statistic)


def curve_section(curve: pd.DataFrame, metric_label: str) -> list[str]:
    """The Markdown section: conditions as rows, fractions as columns; nothing without curve points."""
    if curve.empty:
        return []
    fractions = sorted(set(curve["fraction"]), key=Fraction)
    epochs = {f: "/".join(str(e) for e in sorted({int(x) for v in curve.loc[curve["fraction"] == f,
                                                                           "epochs_trained"]
                                                  for x in v.split("/")}))
              for f in fractions}
    rows = []
    for condition in dict.fromkeys(curve["condition"]):
        mine = curve[curve["condition"] == condition].set_index("fraction")
        most = int(mine["baselines"].max())
        cells = [Cell(short_condition(condition)), Cell(str(most))]
        for f in fractions:
            if f not in mine.index:
                cells.append(Cell(NONE))
                continue
            tau, n = float(mine.loc[f, "tau"]), int(mine.loc[f, "baselines"])
            cells.append(Cell(NONE if math.isnan(tau) else f"{tau:.2f}", "" if n == most else f"(n={n})"))
        rows.append(cells)
    means = [curve.loc[curve["fraction"] == f, "tau"].dropna() for f in fractions]
    rows.append([Cell("mean over conditions"), Cell("")]
                + [Cell(f"{m.mean():.2f}" if len(m) else NONE) for m in means])
    table = Table("curve_agreement",
                  "Kendall's tau-b between each condition's baseline ranking by mean test accuracy after a "
                  f"fraction of the schedule and its leaderboard ranking (by {metric_label}), over the "
                  "baselines with both (1: the same order; "
                  f"{NONE}: fewer than 2 in common or all tied; n where fewer baselines have that point). "
                  "The header gives the epochs trained at each fraction. A point part-way through a "
                  "schedule is not the result of a shorter protocol: its learning rate has not annealed.",
                  ["condition", "baselines"] + [f"{f} ({epochs[f]} ep.)" for f in fractions], rows)
    return ["## Statistics: learning-curve agreement", "", table.caption, "", md_table(table), ""]
