"""Ranks per condition and the leaderboard order (average rank)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from .tables import COMPARE_DECIMALS


def rank_within(values: np.ndarray) -> np.ndarray:
    """Rank 1 for the highest value; tied values share the average of the ranks they span."""
    return rankdata(-np.asarray(values, dtype=float), method="average")


def condition_ranks(matrix: pd.DataFrame) -> pd.DataFrame:
    """Baselines x conditions: each baseline's rank among those with a result in that condition."""
    ranks = pd.DataFrame(math.nan, index=matrix.index, columns=matrix.columns)
    for condition in matrix.columns:
        present = matrix[condition].dropna()
        if len(present):
            ranks.loc[present.index, condition] = rank_within(present.to_numpy())
    return ranks


def leaderboard(ranks: pd.DataFrame) -> pd.DataFrame:
    """Average rank over the conditions where a baseline has a result, best first. Ties in the average
    rank go to the baseline ranked in more conditions, then by name, so the order is total."""
    table = pd.DataFrame({
        "average_rank": ranks.mean(axis=1, skipna=True),
        "ranked": ranks.notna().sum(axis=1).astype(int),
        "conditions": len(ranks.columns),
    }, index=ranks.index)
    key = table.assign(_missing=table["average_rank"].isna(),
                       _avg=table["average_rank"].round(COMPARE_DECIMALS).fillna(math.inf),
                       _neg=-table["ranked"], _name=table.index)
    order = key.sort_values(["_missing", "_avg", "_neg", "_name"]).index
    table = table.loc[order]
    table.insert(0, "position", range(1, len(table) + 1))
    return table
