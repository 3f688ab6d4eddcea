"""lhdbench.space.policies: selection rules and the four evaluation policies.

As the LHD code has them: chaoji90/LHD `eval/gen_trans.py` and `eval/<dataset>/train_*.sh`.
"""

from __future__ import annotations

import numpy as np
import pytest

from lhdbench.space.policies import POLICIES, Above, AboveMean, Top, get_policy, ranked

POLICY_NAMES = ("base", "1m", "3ops", "4out")


def test_top4_ties_in_a_sum_row():
    values = np.array([0.1, 0.3, 0.3, 0.1, 0.2], dtype=np.float32)
    assert Top(4).select(values) == [1, 2, 4, 0]
    assert Top(4).select(np.full(5, 0.2, dtype=np.float32)) == [0, 1, 2, 3]
    assert Top(2).select(np.array([0.0, 0.0, 1.0, 0.0, 0.0], dtype=np.float32)) == [2, 0]


def test_above_is_strict():
    row = np.array([0.2, 0.3, 0.1, 0.2, 0.2], dtype=np.float32)
    assert Above(0.2).select(row) == [1]
    # A float32 row of exactly uniform sum weights has nothing above 1/5 (compared in float32,
    # as upstream numpy does; float32(0.2) is slightly above the float64 0.2).
    assert Above(0.2).select(np.full(5, 0.2, dtype=np.float32)) == []
    assert Above(0.2).select(np.array([0.5, 0.21, 0.09, 0.1, 0.1], dtype=np.float32)) == [0, 1]


def test_above_mean_is_strict():
    gates = np.array([0.5, 0.75, 0.25, 0.5, 0.5], dtype=np.float32)  # mean exactly 0.5
    assert AboveMean().select(gates) == [1]
    assert AboveMean().select(np.full(5, 0.7, dtype=np.float32)) == []
    assert AboveMean().select(np.array([0.9, 0.1, 0.8, 0.2, 0.6], dtype=np.float32)) == [0, 2, 4]


def test_selections_are_in_descending_order():
    values = np.array([0.3, 0.9, 0.6, 0.8, 0.1], dtype=np.float32)
    assert Above(0.2).select(values) == [1, 3, 2, 0]
    assert AboveMean().select(values) == [1, 3, 2]
    assert Top(3).select(values) == [1, 3, 2]


def test_ranked_is_stable_descending():
    assert list(ranked(np.array([1.0, 3.0, 3.0, 2.0, 3.0]))) == [1, 2, 4, 3, 0]
    assert list(ranked(np.zeros(4, dtype=np.float32))) == [0, 1, 2, 3]


def test_policy_registry():
    assert tuple(POLICIES) == POLICY_NAMES
    for name in POLICY_NAMES:
        assert get_policy(name) is POLICIES[name]
        assert POLICIES[name].name == name
    with pytest.raises(ValueError) as info:
        get_policy("2out")
    assert "'2out'" in str(info.value)
    for name in POLICY_NAMES:
        assert name in str(info.value)


def test_policy_settings_match_spec():
    # The settings of upstream `eval/<dataset>/train_*.sh` and the capacity loop of `train.py`.
    assert [POLICIES[n].node_inputs for n in POLICY_NAMES] == [2, 2, 3, 2]
    assert [POLICIES[n].layers for n in POLICY_NAMES] == [20, 25, 20, 20]
    assert [POLICIES[n].min_params for n in POLICY_NAMES] == [None, 1_500_000, None, None]
    assert all(POLICIES[n].init_channels == 36 for n in POLICY_NAMES)
    for name in ("base", "1m", "3ops"):
        assert POLICIES[name].sum_rule == Above(0.2)
        assert POLICIES[name].concat_rule == AboveMean()
    assert POLICIES["4out"].sum_rule == Top(4) and POLICIES["4out"].concat_rule == Top(4)
    for name in ("base", "3ops", "4out"):
        assert POLICIES[name].drop_path == {"cifar10": 0.01, "cifar100": 0.02, "svhn": 0.02}
    assert POLICIES["1m"].drop_path == {"cifar10": 0.015, "cifar100": 0.03, "svhn": 0.03}
