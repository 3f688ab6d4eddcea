"""Significance and stability of the leaderboard: Friedman test with the Nemenyi post-hoc test and its
critical difference (Demšar, JMLR 2006), Kendall's tau between the rankings of every pair of conditions,
and how far apart the baselines are in each condition."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from .ranks import condition_ranks

ALPHA = 0.05


@dataclass(frozen=True)
class Friedman:
    """The Friedman test over the complete block design: the baselines with a result in every condition
    that has any result. `reason` says why there is no test when there is none."""

    baselines: list[str]
    conditions: list[str]
    left_out: list[str]
    alpha: float = ALPHA
    statistic: float = math.nan
    pvalue: float = math.nan
    iman_davenport: float = math.nan
    iman_davenport_pvalue: float = math.nan
    average_ranks: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    nemenyi: pd.DataFrame = field(default_factory=pd.DataFrame)
    critical_difference: float = math.nan
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference of average ranks for k groups over n blocks: the distribution is
    the same studentized range (infinite degrees of freedom) scikit-posthocs' Nemenyi test uses."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6.0 * n)))


def friedman(matrix: pd.DataFrame, alpha: float = ALPHA) -> Friedman:
    """`matrix`: mean accuracy, baselines x conditions, NaN where there is no result."""
    used = matrix.loc[:, matrix.notna().any(axis=0)]
    complete = used.dropna(axis=0, how="any")
    left_out = [b for b in matrix.index if b not in complete.index]
    base = dict(baselines=list(complete.index), conditions=list(used.columns), left_out=left_out,
                alpha=alpha)
    k, n = complete.shape
    if k < 3 or n < 2:
        return Friedman(**base, reason=f"not enough data: the test needs at least 3 baselines with a "
                        f"result in every condition and at least 2 conditions (have {k} and {n})")
    values = complete.to_numpy(dtype=float)
    if all(len(np.unique(column)) == 1 for column in values.T):
        return Friedman(**base, reason="not enough data: every condition ties all its baselines")
    # Friedman's statistic does not depend on the direction of ranking; scipy ranks ascending.
    result = stats.friedmanchisquare(*values)
    chi2 = float(result.statistic)
    # Iman and Davenport's F is less conservative than chi-square (Demšar 2006, §3.2.2).
    if chi2 < n * (k - 1):
        f_value = (n - 1) * chi2 / (n * (k - 1) - chi2)
        f_p = float(stats.f.sf(f_value, k - 1, (k - 1) * (n - 1)))
    else:
        f_value, f_p = math.inf, 0.0
    # Ranked again within the complete block: the left-out baselines take no rank here.
    average = condition_ranks(complete).mean(axis=1).rename("average_rank")
    import scikit_posthocs  # noqa: PLC0415  (slow to import; only the statistics need it)

    nemenyi = scikit_posthocs.posthoc_nemenyi_friedman(
        pd.DataFrame(values.T, columns=complete.index))
    nemenyi = nemenyi.loc[list(complete.index), list(complete.index)]
    return Friedman(**base, statistic=chi2, pvalue=float(result.pvalue), iman_davenport=float(f_value),
                    iman_davenport_pvalue=f_p, average_ranks=average, nemenyi=nemenyi,
                    critical_difference=critical_difference(k, n, alpha))


def kendall(matrix: pd.DataFrame) -> pd.DataFrame:
    """Kendall's tau-b between the rankings of every pair of conditions, over the baselines with a result
    in both. One row per pair (in condition order); tau is NaN with fewer than 2 common baselines or
    when one ranking is all ties."""
    rows = []
    for a, b in combinations(matrix.columns, 2):
        both = matrix[[a, b]].dropna()
        tau = p = math.nan
        if len(both) >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                result = stats.kendalltau(both[a].to_numpy(), both[b].to_numpy())
            tau, p = float(result.statistic), float(result.pvalue)
        rows.append({"condition_a": a, "condition_b": b, "baselines": len(both), "tau": tau, "pvalue": p})
    return pd.DataFrame(rows, columns=["condition_a", "condition_b", "baselines", "tau", "pvalue"])


def kendall_matrix(pairs: pd.DataFrame, condition_names: list[str]) -> pd.DataFrame:
    matrix = pd.DataFrame(math.nan, index=condition_names, columns=condition_names)
    for row in pairs.itertuples():
        matrix.loc[row.condition_a, row.condition_b] = row.tau
        matrix.loc[row.condition_b, row.condition_a] = row.tau
    for name in condition_names:
        matrix.loc[name, name] = 1.0
    return matrix


TRANSFER_COLUMNS = ("condition", "searched_on", "evaluated_on", "target", "tau_target", "source",
                    "tau_source")


def transfer(pairs_matrix: pd.DataFrame, condition_names: list[str]) -> pd.DataFrame:
    """Per transfer condition (`a>b/policy`): Kendall's tau of its ranking against the transductive
    ranking on the dataset it was evaluated on (`b/policy`: do architectures found on a rank the methods
    as those found on b do?) and against the one on the dataset it was searched on (`a/policy`: the same
    architectures, other data). NaN where that condition is not in the report or tau is undefined."""
    rows = []
    for condition in condition_names:
        dataset, policy = condition.split("/", 1)
        if ">" not in dataset:
            continue
        source, target = dataset.split(">", 1)
        row = {"condition": condition, "searched_on": source, "evaluated_on": target,
               "target": f"{target}/{policy}", "source": f"{source}/{policy}"}
        for key in ("target", "source"):
            other = row[key]
            known = other in pairs_matrix.index
            row[f"tau_{key}"] = float(pairs_matrix.loc[condition, other]) if known else math.nan
            if not known:
                row[key] = None
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TRANSFER_COLUMNS))


def discernibility(cells: pd.DataFrame, condition_names: list[str]) -> pd.DataFrame:
    """Per condition: how many baselines have a result, the best and worst mean, their range, and the
    median seed standard deviation (a range far above it separates the baselines)."""
    rows = []
    for condition in condition_names:
        group = cells[(cells["condition"] == condition) & cells["mean"].notna()]
        if group.empty:
            rows.append({"condition": condition, "baselines": 0, "best_baseline": None,
                         "best": math.nan, "worst": math.nan, "range": math.nan, "median_std": math.nan})
            continue
        best_row = group.sort_values(["mean", "baseline"], ascending=[False, True]).iloc[0]
        stds = group["std"].dropna()
        rows.append({"condition": condition, "baselines": len(group),
                     "best_baseline": best_row["baseline"], "best": float(group["mean"].max()),
                     "worst": float(group["mean"].min()),
                     "range": float(group["mean"].max() - group["mean"].min()),
                     "median_std": float(stds.median()) if len(stds) else math.nan})
    return pd.DataFrame(rows, columns=["condition", "baselines", "best_baseline", "best", "worst", "range",
                                       "median_std"])
