"""The report's rank statistics at their edges, pinned against scipy: Kendall's tau over exactly two
common baselines, the Kendall matrix's diagonal and its placement of each pair, and which tau the
transfer table prints under which heading (Markdown, CSV and LaTeX)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_report import make_store, record

from lhdbench.report import build_report, write_report
from lhdbench.report.load import short_condition
from lhdbench.report.stats import kendall, kendall_matrix
from lhdbench.report.text import tex_condition
from lhdbench.store import Store

NAN = math.nan


def tau(x, y) -> float:
    return float(stats.kendalltau(x, y).statistic)


def test_two_common_baselines_give_a_tau_and_one_gives_none():
    matrix = pd.DataFrame({"x": [0.9, 0.8, 0.7], "y": [0.6, 0.7, NAN], "z": [NAN, 0.5, 0.4]},
                          index=["a", "b", "c"])
    pairs = kendall(matrix).set_index(["condition_a", "condition_b"])
    # x and y share a and b, in opposite orders; x and z share b and c, in the same order.
    for (a, b), common in {("x", "y"): ["a", "b"], ("x", "z"): ["b", "c"]}.items():
        reference = stats.kendalltau(matrix.loc[common, a], matrix.loc[common, b])
        assert pairs.loc[(a, b), "baselines"] == 2
        assert pairs.loc[(a, b), "tau"] == pytest.approx(reference.statistic)
        assert pairs.loc[(a, b), "pvalue"] == pytest.approx(reference.pvalue)
    assert pairs.loc[("x", "y"), "tau"] == -1.0 and pairs.loc[("x", "z"), "tau"] == 1.0
    assert pairs.loc[("y", "z"), "baselines"] == 1 and math.isnan(pairs.loc[("y", "z"), "tau"])


def test_two_common_baselines_through_the_report(tmp_path):
    make_store(tmp_path, {("a", "cifar10", "base"): [0.90], ("b", "cifar10", "base"): [0.80],
                          ("c", "cifar10", "base"): [0.70],
                          ("a", "cifar10", "4out"): [0.60], ("b", "cifar10", "4out"): [0.70]})
    report = build_report(tmp_path)
    expected = tau([0.90, 0.80], [0.60, 0.70])
    row = report.kendall.iloc[0]
    assert (row["baselines"], row["tau"]) == (2, pytest.approx(expected))
    assert report.kendall_matrix.loc["cifar10/base", "cifar10/4out"] == pytest.approx(expected)
    assert report.kendall_matrix.loc["cifar10/4out", "cifar10/base"] == pytest.approx(expected)


def test_the_kendall_matrix_has_ones_on_its_diagonal_and_each_pair_in_its_place(tmp_path):
    """Four baselines in three conditions whose three pairwise taus all differ; each condition's
    ranking against itself is 1 (scipy's tau of a ranking with itself)."""
    values = {"cifar10/base": [0.94, 0.93, 0.92, 0.91], "cifar10/1m": [0.93, 0.94, 0.92, 0.91],
              "cifar10/3ops": [0.92, 0.91, 0.94, 0.93]}
    baselines = ["a", "b", "c", "d"]
    make_store(tmp_path, {(b, "cifar10", c.split("/")[1]): [v[i]] for c, v in values.items()
                          for i, b in enumerate(baselines)})
    report = build_report(tmp_path)
    matrix = report.kendall_matrix
    names = list(values)
    assert sorted(matrix.index) == sorted(matrix.columns) == sorted(names)
    expected = {(a, b): tau(values[a], values[b]) for a in names for b in names}
    assert len({round(expected[(a, b)], 9) for a in names for b in names if a < b}) == 3
    for a in names:
        assert expected[(a, a)] == 1.0
        for b in names:
            assert matrix.loc[a, b] == pytest.approx(expected[(a, b)]), (a, b)
    # the function alone: the diagonal is 1 even where no pair involves a condition
    alone = kendall_matrix(report.kendall, names + ["cifar10/4out"])
    assert [alone.loc[c, c] for c in names + ["cifar10/4out"]] == [1.0] * 4


# -- the transfer table --------------------------------------------------------------------------------

# Accuracies per condition for baselines a, b, c, d. The transfer condition ranks them a > b > c > d;
# the transductive ranking on the dataset it was evaluated on (svhn) is b > a > d > c, on the dataset it
# was searched on (cifar10) a > c > b > d: two different taus, neither 1.
BASELINES = ("a", "b", "c", "d")
ACCURACIES = {("cifar10", "cifar10"): [0.90, 0.80, 0.85, 0.70],
              ("svhn", "svhn"): [0.95, 0.96, 0.93, 0.94],
              ("cifar10", "svhn"): [0.93, 0.92, 0.91, 0.90]}


def transfer_store(root) -> Store:
    """Per baseline a search on cifar10 and one on svhn, each evaluated under base where it was
    searched, and the cifar10 search evaluated on svhn as well."""
    store = Store(root)
    planned = {}
    for i, baseline in enumerate(BASELINES):
        for searched in ("cifar10", "svhn"):
            search_id = f"search-{baseline}-{searched}"
            store.write_record(record(search_id, "search", baseline, searched, 0))
            planned[search_id] = {"trial_id": search_id, "phase": "search", "baseline": baseline,
                                  "dataset": searched, "seed": 0, "policy": None, "search_trial_id": None,
                                  "protocol": "paper"}
        for (searched, evaluated), accuracies in ACCURACIES.items():
            search_id = f"search-{baseline}-{searched}"
            eval_id = f"eval-{baseline}-{searched}-to-{evaluated}"
            store.write_record(record(eval_id, "evaluate", baseline, evaluated, 0, policy="base",
                                      search_trial_id=search_id, acc=accuracies[i]).update(
                selection="magnitude", selection_trial_id=None, search_dataset=searched))
            planned[eval_id] = {"trial_id": eval_id, "phase": "evaluate", "baseline": baseline,
                                "dataset": evaluated, "seed": 0, "policy": "base",
                                "search_trial_id": search_id, "protocol": "paper", "selection": "magnitude",
                                "selection_trial_id": None, "search_dataset": searched}
    store.add_to_plan({"suite": "test", "preset": "paper", "protocol": "paper", "baselines": list(BASELINES),
                       "datasets": ["cifar10", "svhn"], "policies": ["base"], "seeds": [0]}, planned)
    return store


@pytest.fixture(scope="module")
def transfer_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("pins-transfer")
    transfer_store(root / "store")
    report = build_report(root / "store")
    write_report(report, root / "out", command="test", formats=("md", "csv", "tex"))
    target = tau(ACCURACIES[("cifar10", "svhn")], ACCURACIES[("svhn", "svhn")])
    source = tau(ACCURACIES[("cifar10", "svhn")], ACCURACIES[("cifar10", "cifar10")])
    assert round(target, 2) != round(source, 2) and 1.0 not in (target, source)
    return report, root / "out", target, source


def markdown_section(text: str, heading: str) -> list[list[str]]:
    """The rows (cells, stripped) of the first table under `## heading`."""
    lines = text.splitlines()
    start = lines.index(f"## {heading}")
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_the_transfer_frame_holds_both_taus(transfer_report):
    report, _, target, source = transfer_report
    row = report.transfer.set_index("condition").loc["cifar10>svhn/base"]
    assert (row["target"], row["source"]) == ("svhn/base", "cifar10/base")
    assert row["tau_target"] == pytest.approx(target) and row["tau_source"] == pytest.approx(source)


def test_the_markdown_transfer_table_prints_each_tau_under_its_heading(transfer_report):
    _, out, target, source = transfer_report
    rows = markdown_section((out / "leaderboard.md").read_text(),
                            "Statistics: transfer against transductive rankings")
    header, body = rows[0], rows[2:]
    assert header == ["transfer condition", "searched where evaluated", "tau", "evaluated where searched",
                      "tau"]
    assert len(body) == 1
    condition, target_name, target_tau, source_name, source_tau = body[0]
    assert condition == short_condition("cifar10>svhn/base")
    assert (target_name, source_name) == (short_condition("svhn/base"), short_condition("cifar10/base"))
    assert float(target_tau) == pytest.approx(target, abs=0.005)
    assert float(source_tau) == pytest.approx(source, abs=0.005)


def test_the_csv_and_latex_transfer_tables_agree(transfer_report):
    _, out, target, source = transfer_report
    with open(out / "tables" / "transfer.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["target"], row["source"]) == ("svhn/base", "cifar10/base")
    assert float(row["tau_target"]) == pytest.approx(target) and float(row["tau_source"]) == pytest.approx(
        source)
    tex = (out / "tables" / "transfer.tex").read_text()
    header = next(line for line in tex.splitlines() if line.startswith("Transfer &"))
    assert [c.strip(" \\") for c in header.split("&")][1:] == ["Searched on target", r"$\tau_b$",
                                                             "Evaluated on source", r"$\tau_b$"]
    line = next(line for line in tex.splitlines() if r"$\to$" in line and "&" in line)
    cells = [c.strip(" \\") for c in line.split("&")]
    assert cells[0] == tex_condition("cifar10>svhn/base")
    assert (cells[1], cells[3]) == (tex_condition("svhn/base"), tex_condition("cifar10/base"))
    as_number = [float(c.replace("$-$", "-")) for c in (cells[2], cells[4])]
    assert as_number == [pytest.approx(target, abs=0.005), pytest.approx(source, abs=0.005)]


def test_expected_taus_are_the_hand_counted_ones():
    """The fixture's taus, counted by hand: against svhn 2 of 6 pairs discordant (a-b, c-d), against
    cifar10 1 of 6 (b-c)."""
    t = ACCURACIES[("cifar10", "svhn")]
    assert tau(t, ACCURACIES[("svhn", "svhn")]) == pytest.approx((4 - 2) / 6)
    assert tau(t, ACCURACIES[("cifar10", "cifar10")]) == pytest.approx((5 - 1) / 6)
    assert np.isclose(tau(t, t), 1.0)
