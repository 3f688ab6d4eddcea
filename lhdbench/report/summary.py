"""The Report: every number the report's outputs show, computed once from the trials (`build.py` makes
it; the tables and the writers only read it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from .curves import CURVE_COLUMNS
from .load import Trials
from .stats import Friedman


@dataclass(frozen=True)
class Report:
    trials: Trials
    baselines: list[str]
    conditions: list[str]
    cells: pd.DataFrame          # tables.CELL_COLUMNS, one row per (baseline, condition)
    matrix: pd.DataFrame         # mean accuracy, baselines x conditions
    ranks: pd.DataFrame          # rank per condition, baselines x conditions
    board: pd.DataFrame          # leaderboard order with average ranks
    friedman: Friedman
    kendall: pd.DataFrame        # one row per pair of conditions
    kendall_matrix: pd.DataFrame
    transfer: pd.DataFrame       # stats.TRANSFER_COLUMNS, one row per transfer condition
    discernibility: pd.DataFrame
    cost: pd.DataFrame
    best: pd.DataFrame           # tables.BEST_COLUMNS, the best evaluation per condition
    result_costs: pd.DataFrame   # tables.RESULT_COST_COLUMNS, hours per result of every cell
    evolution: list[dict]        # the search per baseline whose arch history is plotted
    # curves.CURVE_COLUMNS, one row per (condition, learning-curve fraction); empty without curve points
    curve: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(CURVE_COLUMNS)))

    @property
    def order(self) -> list[str]:
        """Baselines in leaderboard order."""
        return list(self.board.index)

    @property
    def datasets(self) -> dict[str, list[str]]:
        """Each dataset's policies, both in condition order."""
        policies: dict[str, list[str]] = {}
        for condition in self.conditions:
            dataset, policy = condition.split("/", 1)
            policies.setdefault(dataset, []).append(policy)
        return policies

    @property
    def metric_label(self) -> str:
        if self.trials.metric == "final":
            return "final-epoch test accuracy"
        epochs = sorted({int(e) for e in self.trials.frame["best_after_epoch"].dropna()})
        after = "/".join(str(e) for e in epochs) or "best_after_epoch"
        return f"best test accuracy after epoch {after} (the paper's metric)"

    @property
    def metric_short(self) -> str:
        """The metric in a few words, for axis labels."""
        return self.metric_label.split(" (")[0].replace("test accuracy", "accuracy")
