"""The four LHD evaluation policies, each one typed value.

As the LHD code's evaluation scripts set them (chaoji90/LHD `eval/<dataset>/train_*.sh`).

A policy says how many (input, op) pairs each node keeps, which nodes feed the sum and concat outputs,
and how big the final network is. A new policy is one more entry in POLICIES.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Above:
    """Keep entries strictly above `threshold` (the element-wise rule of upstream `eval/gen_trans.py`)."""

    threshold: float

    def select(self, values: np.ndarray) -> list[int]:
        return [int(i) for i in ranked(values) if values[i] > self.threshold]


@dataclass(frozen=True)
class AboveMean:
    """Keep entries strictly above the mean of the row (`eval/gen_trans.py` with concat threshold 0)."""

    def select(self, values: np.ndarray) -> list[int]:
        mean = values.astype(np.float64).mean()
        return [int(i) for i in ranked(values) if values[i] > mean]


@dataclass(frozen=True)
class Top:
    """Keep the `k` largest entries; ties go to the lower index."""

    k: int

    def select(self, values: np.ndarray) -> list[int]:
        return [int(i) for i in ranked(values)[: self.k]]


Rule = Above | AboveMean | Top


def ranked(values: np.ndarray) -> np.ndarray:
    """Indices by descending value; equal values keep index order (a stable sort)."""
    return np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    node_inputs: int  # (input, op) pairs kept per node
    sum_rule: Rule
    concat_rule: Rule
    layers: int = 20
    init_channels: int = 36
    # Grow the width in steps of 2 until the parameter count (without the auxiliary head)
    # reaches this many, as upstream `eval/<dataset>/train.py` does; None keeps init_channels.
    min_params: int | None = None
    # Drop-path base rate per dataset; the ramp target is (normal concat count) x rate (upstream
    # `eval/<dataset>/train.py`).
    drop_path: Mapping[str, float] = field(default_factory=dict)


_BASE_DROP = {"cifar10": 0.01, "cifar100": 0.02, "svhn": 0.02}

POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("base", "top-2 pairs per node; sum nodes > 0.2; concat nodes > mean gate",
               node_inputs=2, sum_rule=Above(0.2), concat_rule=AboveMean(), drop_path=_BASE_DROP),
        Policy("1m", "base selection in 25 cells, widened to >= 1.5M parameters",
               node_inputs=2, sum_rule=Above(0.2), concat_rule=AboveMean(), layers=25,
               min_params=1_500_000,
               drop_path={"cifar10": 0.015, "cifar100": 0.03, "svhn": 0.03}),
        Policy("3ops", "top-3 pairs per node; outputs as base",
               node_inputs=3, sum_rule=Above(0.2), concat_rule=AboveMean(), drop_path=_BASE_DROP),
        Policy("4out", "top-2 pairs per node; top-4 sum nodes and top-4 concat nodes",
               node_inputs=2, sum_rule=Top(4), concat_rule=Top(4), drop_path=_BASE_DROP),
    )
}


def get_policy(name: str) -> Policy:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known policies: {', '.join(POLICIES)}") from None
