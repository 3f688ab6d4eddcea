"""The report's learning-curve table against the same agreement computed here from the records."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from test_report import make_store

from lhdbench.report import build_report, write_report

FRACTIONS = ("1/12", "1/6", "1/4", "1/3", "1/2")
EPOCHS = {"1/12": 49, "1/6": 99, "1/4": 149, "1/3": 199, "1/2": 299}
CELLS = {("a", "cifar10", "base"): [0.90, 0.92, 0.91], ("b", "cifar10", "base"): [0.85, 0.88, 0.86],
         ("c", "cifar10", "base"): [0.80, 0.95, 0.70], ("d", "cifar10", "base"): [0.60, 0.61, 0.62],
         ("a", "cifar10", "1m"): [0.70, 0.72, 0.71], ("b", "cifar10", "1m"): [0.75, 0.78, 0.76],
         ("c", "cifar10", "1m"): [0.80, 0.81, 0.82], ("d", "cifar10", "1m"): [0.50, 0.40, 0.45]}


def curve_values(seed: int = 0) -> dict[str, dict[str, float]]:
    """Made-up curve points per evaluation trial id; d in 1m has none (a record of an older lhdbench),
    and at 1/2 every baseline of base ties (so that tau is undefined there)."""
    rng = np.random.default_rng(seed)
    out = {}
    for (baseline, dataset, policy), seeds in sorted(CELLS.items()):
        if (baseline, policy) == ("d", "1m"):
            continue
        for s in range(len(seeds)):
            values = {f: round(float(rng.uniform(0.1, 0.9)), 4) for f in FRACTIONS}
            if policy == "base":
                values["1/2"] = 0.5
            out[f"e-{baseline}-{dataset}-{policy}-{s}"] = values
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve") / "store"
    made = make_store(root, CELLS)
    for trial_id, values in curve_values().items():
        record = made.read_record(trial_id)
        made.write_record(record.update(curve=[{"fraction": f, "epoch": EPOCHS[f], "test_acc": v}
                                               for f, v in values.items()]))
    return root


def expected(policy: str, fraction: str) -> tuple[int, float]:
    """(baselines, tau) written out: per baseline the mean of its seeds' points and of its final
    accuracies, ranked against each other over the baselines that have both."""
    points = curve_values()
    early, final = [], []
    for baseline in sorted({b for b, _, _ in CELLS}):
        ids = [f"e-{baseline}-cifar10-{policy}-{s}" for s in range(3)]
        if not all(i in points for i in ids):
            continue
        early.append(sum(points[i][fraction] for i in ids) / 3)
        final.append(sum(CELLS[(baseline, "cifar10", policy)]) / 3)
    tau = stats.kendalltau(early, final).statistic if len(set(early)) > 1 else math.nan
    return len(early), tau


def test_agreement_per_condition_and_fraction_matches_the_records(store):
    curve = build_report(store).curve
    assert list(curve["condition"]) == ["cifar10/base"] * 5 + ["cifar10/1m"] * 5
    assert list(curve["fraction"]) == list(FRACTIONS) * 2
    assert list(curve["epochs_trained"]) == [str(EPOCHS[f] + 1) for f in FRACTIONS] * 2
    for row in curve.to_dict("records"):
        n, tau = expected(row["condition"].split("/")[1], row["fraction"])
        assert row["baselines"] == n
        if math.isnan(tau):
            assert math.isnan(row["tau"]), row
        else:
            assert row["tau"] == pytest.approx(tau, abs=1e-12), row
    assert curve["tau"].isna().sum() == 1  # base at 1/2: all tied
    assert set(curve.loc[curve["condition"] == "cifar10/1m", "baselines"]) == {3}


def test_table_and_csv_only_when_records_have_curve_points(store, tmp_path):
    write_report(build_report(store), tmp_path / "with", ("md", "csv"))
    text = (tmp_path / "with" / "leaderboard.md").read_text()
    assert "## Statistics: learning-curve agreement" in text
    assert "| condition | baselines | 1/12 (50 ep.) | 1/6 (100 ep.) | 1/4 (150 ep.) | 1/3 (200 ep.) | " \
           "1/2 (300 ep.) |" in text
    n, tau = expected("base", "1/12")
    section = text.split("## Statistics: learning-curve agreement")[1].split("\n## ")[0]
    row = next(line for line in section.splitlines() if line.startswith("| C10 base |"))
    assert row.startswith(f"| C10 base | {n} | {tau:.2f} |") and row.endswith("| \u2013 |")
    csv = (tmp_path / "with" / "tables" / "curve_agreement.csv").read_text().splitlines()
    assert csv[0] == "condition,fraction,epochs_trained,baselines,tau,metric"
    assert len(csv) == 11
    make_store(tmp_path / "plain", CELLS)
    write_report(build_report(tmp_path / "plain"), tmp_path / "without", ("md", "csv"))
    assert "learning-curve" not in (tmp_path / "without" / "leaderboard.md").read_text()
    assert not (tmp_path / "without" / "tables" / "curve_agreement.csv").exists()
