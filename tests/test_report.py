"""The report's numbers on hand-made record sets with known answers: cells, ranks, ties, failed and
missing trials, partial baselines, and the statistics checked against scipy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from lhdbench.record import TrialRecord
from lhdbench.report import ReportError, build_report
from lhdbench.report.ranks import condition_ranks, leaderboard
from lhdbench.report.stats import critical_difference, friedman
from lhdbench.store import Store

FAILED = "failed"
MISSING = None
PAPER = {"name": "paper", "evaluate": {"epochs": 600, "best_after_epoch": 400}}


def record(trial_id: str, phase: str, baseline: str, dataset: str, seed: int, *, policy: str | None = None,
           acc: float | None = None, status: str = "done", search_trial_id: str | None = None,
           wall_time_s: float = 3600.0, device: str = "cuda:0", gpu: float = 0.5, cpu: int = 2,
           protocol: dict | None = None, params: int = 2_000_000, version: str = "0.1.0") -> TrialRecord:
    """A trial record as the runner writes it (the TrialRecord contract), with made-up inputs."""
    out = {"trial_id": trial_id, "phase": phase, "attempts": 1, "baseline": baseline,
           "dataset": dataset, "seed": seed, "protocol": protocol or PAPER, "wall_time_s": wall_time_s,
           "epochs": 600, "peak_gpu_memory_bytes": None if device == "cpu" else 2**30, "settings": {},
           "environment": {"device": device, "device_name": "cpu" if device == "cpu" else "Test GPU",
                           "lhdbench": version, "torch": "2.9", "cuda": None, "python": "3.11",
                           "host": "secret-host"},
           "resources": {"cpu": float(cpu), "gpu": 0.0 if device == "cpu" else gpu}}
    if phase == "search":
        out.update(hparams={}, arch_file="arch.npz")
    else:
        out.update(policy=policy, search_trial_id=search_trial_id, best_after_epoch=400,
                   genotype={}, arch_sha256="0" * 64,
                   final_test_acc=acc if status == "done" else None,
                   best_test_acc=None if acc is None or status != "done" else min(acc + 0.001, 1.0),
                   params=params if status == "done" else None)
    if status == "failed":
        return TrialRecord.failed("CUDA out of memory\nwhile training", **out)
    return TrialRecord.done(**out)


def make_store(root: Path, cells: dict[tuple[str, str, str], list], *, preset: str = "paper",
               protocol: dict | None = None, suite: str = "test", **kwargs) -> Store:
    """cells maps (baseline, dataset, policy) to one entry per seed: an accuracy, FAILED or MISSING.
    Each (baseline, dataset, seed) gets a done search; every trial is in the plan, naming its protocol
    as the runner's entries do."""
    store = Store(root)
    name = (protocol or PAPER)["name"]
    planned: dict[str, dict] = {}
    for (baseline, dataset, policy), seeds in sorted(cells.items()):
        for seed, entry in enumerate(seeds):
            search_id = f"s-{baseline}-{dataset}-{seed}"
            if search_id not in planned:
                planned[search_id] = {"trial_id": search_id, "phase": "search", "baseline": baseline,
                                      "dataset": dataset, "seed": seed, "policy": None,
                                      "search_trial_id": None, "protocol": name}
                store.write_record(record(search_id, "search", baseline, dataset, seed, protocol=protocol,
                                          **kwargs))
            trial_id = f"e-{baseline}-{dataset}-{policy}-{seed}"
            planned[trial_id] = {"trial_id": trial_id, "phase": "evaluate", "baseline": baseline,
                                 "dataset": dataset, "seed": seed, "policy": policy,
                                 "search_trial_id": search_id, "protocol": name}
            if entry is MISSING:
                continue
            store.write_record(record(
                trial_id, "evaluate", baseline, dataset, seed, policy=policy, search_trial_id=search_id,
                acc=None if entry == FAILED else entry, status="failed" if entry == FAILED else "done",
                protocol=protocol, **kwargs))
    baselines = sorted({b for b, _, _ in cells})
    store.add_to_plan({"suite": suite, "preset": preset, "protocol": name,
                       "baselines": baselines,
                       "datasets": sorted({d for _, d, _ in cells}),
                       "policies": sorted({p for _, _, p in cells}), "seeds": [0, 1]}, planned)
    return store


def grid(accuracies: dict[str, list[list]], dataset: str = "cifar10",
         policies: tuple[str, ...] = ("base", "1m", "3ops", "4out")) -> dict:
    """{baseline: [seeds of policy 0, seeds of policy 1, ...]} -> make_store's cells."""
    return {(b, dataset, p): seeds for b, rows in accuracies.items()
            for p, seeds in zip(policies, rows, strict=False)}


def cell(report, baseline: str, condition: str) -> dict:
    rows = report.cells[(report.cells["baseline"] == baseline) & (report.cells["condition"] == condition)]
    assert len(rows) == 1
    return rows.iloc[0].to_dict()


# -- cells --------------------------------------------------------------------------------------------

def test_cell_mean_std_and_counts_over_done_seeds_only(tmp_path):
    make_store(tmp_path, {("a", "cifar10", "base"): [0.90, 0.92, FAILED, MISSING],
                          ("b", "cifar10", "base"): [0.80, 0.84]})
    report = build_report(tmp_path)
    a = cell(report, "a", "cifar10/base")
    assert (a["trials"], a["done"], a["failed"], a["missing"]) == (4, 2, 1, 1)
    assert a["mean"] == pytest.approx(0.91)
    assert a["std"] == pytest.approx(np.std([0.90, 0.92], ddof=1))
    assert a["best"] and not cell(report, "b", "cifar10/base")["best"]


def test_all_failed_and_all_missing_cells_have_no_mean_and_no_rank(tmp_path):
    make_store(tmp_path, {("a", "cifar10", "base"): [FAILED, FAILED], ("b", "cifar10", "base"): [MISSING],
                          ("c", "cifar10", "base"): [0.5]})
    report = build_report(tmp_path)
    a, b = cell(report, "a", "cifar10/base"), cell(report, "b", "cifar10/base")
    assert (a["done"], a["failed"], b["missing"]) == (0, 2, 1)
    assert math.isnan(a["mean"]) and math.isnan(b["mean"])
    assert math.isnan(report.ranks.loc["a", "cifar10/base"]) and report.ranks.loc["c", "cifar10/base"] == 1
    assert list(report.board.index) == ["c", "a", "b"]  # unranked baselines last, by name


def test_an_evaluation_whose_search_failed_counts_as_failed_not_missing(tmp_path):
    store = make_store(tmp_path, {("a", "cifar10", "base"): [0.9, MISSING],
                                  ("b", "cifar10", "base"): [0.8, 0.8]})
    store.write_record(record("s-a-cifar10-1", "search", "a", "cifar10", 1, status="failed"))
    a = cell(build_report(tmp_path), "a", "cifar10/base")
    assert (a["failed"], a["missing"]) == (1, 0)


def test_cost_is_gpu_hours_on_gpu_and_cpu_hours_on_cpu_failed_trials_included(tmp_path):
    make_store(tmp_path / "gpu", {("a", "cifar10", "base"): [0.9, FAILED]}, wall_time_s=7200, gpu=0.25)
    report = build_report(tmp_path / "gpu")
    row = report.cost.iloc[0]
    assert row["search_gpu_hours"] == pytest.approx(2 * 2 * 0.25)  # 2 searches x 2 h x 0.25 GPU
    assert row["eval_gpu_hours"] == pytest.approx(2 * 2 * 0.25)  # the failed one cost too
    assert row["eval_cpu_hours"] == 0
    make_store(tmp_path / "cpu", {("a", "cifar10", "base"): [0.9]}, wall_time_s=1800, device="cpu", cpu=4)
    row = build_report(tmp_path / "cpu").cost.iloc[0]
    assert (row["search_cpu_hours"], row["eval_cpu_hours"], row["eval_gpu_hours"]) == (2.0, 2.0, 0.0)
    # Evaluation cost is also kept per cell (baseline, dataset, policy).
    cpu = build_report(tmp_path / "cpu")
    assert cell(cpu, "a", "cifar10/base")["eval_cpu_hours"] == pytest.approx(2.0)


def test_best_metric_reads_best_test_acc(tmp_path):
    make_store(tmp_path, {("a", "cifar10", "base"): [0.90], ("b", "cifar10", "base"): [0.95]})
    report = build_report(tmp_path, metric="best")
    assert cell(report, "a", "cifar10/base")["mean"] == pytest.approx(0.901)
    assert "after epoch 400" in report.metric_label
    assert build_report(tmp_path).metric_label == "final-epoch test accuracy"


def test_done_record_without_the_metric_counts_as_no_value(tmp_path):
    store = make_store(tmp_path, {("a", "cifar10", "base"): [0.90, MISSING]})
    short = record("e-a-cifar10-base-1", "evaluate", "a", "cifar10", 1, policy="base", acc=0.5,
                   search_trial_id="s-a-cifar10-1")
    store.write_record(short.update(best_test_acc=None))  # a protocol too short for the best-after window
    a = cell(build_report(tmp_path, metric="best"), "a", "cifar10/base")
    assert (a["trials"], a["done"], a["no_value"], a["missing"]) == (2, 1, 1, 0)
    assert a["mean"] == pytest.approx(0.901)
    assert cell(build_report(tmp_path), "a", "cifar10/base")["no_value"] == 0


# -- ranks --------------------------------------------------------------------------------------------

def test_ranks_and_average_ranks_known_answer(tmp_path):
    make_store(tmp_path, grid({"a": [[0.9], [0.7], [0.6]], "b": [[0.8], [0.8], [0.5]],
                               "c": [[0.7], [0.9], [0.4]]}, policies=("base", "1m", "3ops")))
    report = build_report(tmp_path)
    assert report.ranks.loc["a"].tolist() == [1, 3, 1]
    assert report.ranks.loc["b"].tolist() == [2, 2, 2]
    assert report.ranks.loc["c"].tolist() == [3, 1, 3]
    assert report.board["average_rank"].to_dict() == pytest.approx({"a": 5 / 3, "b": 2, "c": 7 / 3})
    assert list(report.board.index) == ["a", "b", "c"]
    assert report.board["position"].tolist() == [1, 2, 3]


def test_ties_share_the_average_rank_even_when_summed_in_another_order(tmp_path):
    # Same seed results in another order: float sums may differ in the last bit; they must still tie.
    a, b = [0.9141, 0.9691, 0.9433], [0.9691, 0.9433, 0.9141]
    assert np.mean(a) != np.mean(b)  # the last bit differs
    make_store(tmp_path, {("a", "cifar10", "base"): a, ("b", "cifar10", "base"): b,
                          ("c", "cifar10", "base"): [0.99] * 3, ("d", "cifar10", "base"): [0.5] * 3})
    report = build_report(tmp_path)
    assert report.ranks["cifar10/base"].to_dict() == {"a": 2.5, "b": 2.5, "c": 1.0, "d": 4.0}
    best = report.cells.set_index("baseline")["best"]
    assert best.to_dict() == {"a": False, "b": False, "c": True, "d": False}


def test_tied_best_cells_are_all_marked(tmp_path):
    make_store(tmp_path, {("a", "svhn", "base"): [0.9], ("b", "svhn", "base"): [0.9],
                          ("c", "svhn", "base"): [0.8]})
    assert build_report(tmp_path).cells.set_index("baseline")["best"].tolist() == [True, True, False]


def test_baseline_present_in_some_conditions_averages_over_those_only(tmp_path):
    cells = grid({"a": [[0.9], [0.9]], "b": [[0.8], [0.8]], "c": [[0.7], [0.95]]}, policies=("base", "1m"))
    cells[("p", "cifar10", "base")] = [0.85]  # p ran in one condition only
    make_store(tmp_path, cells)
    report = build_report(tmp_path)
    assert report.ranks.loc["p", "cifar10/base"] == 2 and math.isnan(report.ranks.loc["p", "cifar10/1m"])
    assert report.board.loc["p", "ranked"] == 1 and report.board.loc["p", "average_rank"] == 2
    assert report.ranks.loc["b", "cifar10/base"] == 3  # p takes part in the condition it ran in
    assert report.friedman.left_out == ["p"]


def test_leaderboard_breaks_average_rank_ties_by_coverage_then_name():
    import pandas as pd

    # All of a, b and z average 2.5: a over two conditions comes first, then b and z by name.
    ranks = condition_ranks(pd.DataFrame({"x": [0.9, 0.8, 0.7, 0.8], "y": [0.9, np.nan, 0.95, np.nan]},
                                         index=["m", "z", "a", "b"]))
    board = leaderboard(ranks)
    assert board["average_rank"].to_dict() == {"m": 1.5, "a": 2.5, "b": 2.5, "z": 2.5}
    assert list(board.index) == ["m", "a", "b", "z"]


# -- statistics ---------------------------------------------------------------------------------------

def random_matrix(k: int, n: int, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    values = np.round(rng.uniform(0.8, 0.95, size=(k, n)), 3)
    values[1, 2] = values[0, 2]  # a tie
    return pd.DataFrame(values, index=[f"m{i}" for i in range(k)], columns=[f"c{j}" for j in range(n)])


def test_friedman_matches_scipy_and_the_rank_formula():
    matrix = random_matrix(6, 8)
    result = friedman(matrix)
    reference = stats.friedmanchisquare(*matrix.to_numpy())
    assert result.ok
    assert result.statistic == pytest.approx(reference.statistic, rel=1e-12)
    assert result.pvalue == pytest.approx(reference.pvalue, rel=1e-12)
    # Without the tie correction, chi2 = 12N/(k(k+1)) * (sum R_j^2 - k(k+1)^2/4) from our own ranks;
    # the single tie makes scipy's corrected value slightly larger.
    k, n = matrix.shape
    r = result.average_ranks.to_numpy()
    uncorrected = 12 * n / (k * (k + 1)) * (np.sum(r**2) - k * (k + 1) ** 2 / 4)
    assert uncorrected == pytest.approx(reference.statistic, rel=0.01) and uncorrected < reference.statistic
    # Iman and Davenport's F is the repeated-measures ANOVA F on the ranks within each condition.
    ranks = np.column_stack([stats.rankdata(-matrix[c]) for c in matrix.columns])
    means = ranks.mean(axis=1, keepdims=True)
    between = n * np.sum((means - (k + 1) / 2) ** 2) / (k - 1)
    within = np.sum((ranks - means) ** 2) / ((k - 1) * (n - 1))
    f_value = between / within
    assert result.iman_davenport == pytest.approx(f_value, rel=1e-12)
    assert result.iman_davenport_pvalue == pytest.approx(stats.f.sf(f_value, k - 1, (k - 1) * (n - 1)))
    assert result.critical_difference == pytest.approx(critical_difference(6, 8))


def test_friedman_on_a_store_uses_only_complete_baselines(tmp_path):
    matrix = random_matrix(4, 4, seed=3)
    cells = grid({b: [[v] for v in matrix.loc[b]] for b in matrix.index})
    cells[("partial", "cifar10", "base")] = [0.99]
    cells[("broken", "cifar10", "base")] = [FAILED]
    make_store(tmp_path, cells)
    report = build_report(tmp_path)
    assert report.friedman.baselines == ["m0", "m1", "m2", "m3"]
    assert report.friedman.left_out == ["broken", "partial"]
    reference = stats.friedmanchisquare(*matrix.to_numpy())
    assert report.friedman.statistic == pytest.approx(reference.statistic)


def test_nemenyi_critical_difference_matches_demsar_table():
    # Demšar (2006), Table 5(a): q_0.05 for k = 12 is 3.268; CD = q * sqrt(k(k+1)/(6N)).
    assert critical_difference(12, 12) == pytest.approx(3.268 * math.sqrt(12 * 13 / 72), rel=1e-3)


@pytest.mark.parametrize("k,n", [(2, 5), (5, 1)])
def test_friedman_with_too_little_data_says_so(k, n):
    result = friedman(random_matrix(k + 1, n + 2).iloc[:k, :n])
    assert not result.ok and result.reason.startswith("not enough data")


def test_kendall_tau_matches_scipy_over_common_baselines(tmp_path):
    matrix = random_matrix(5, 3, seed=7)
    cells = grid({b: [[v] for v in matrix.loc[b]] for b in matrix.index}, policies=("base", "1m", "3ops"))
    cells[("extra", "cifar10", "base")] = [0.5]  # only in one condition: not in its pairs with others
    make_store(tmp_path, cells)
    report = build_report(tmp_path)
    pairs = report.kendall.set_index(["condition_a", "condition_b"])
    condition = {"c0": "cifar10/base", "c1": "cifar10/1m", "c2": "cifar10/3ops"}
    for a, b in [("c0", "c1"), ("c0", "c2"), ("c1", "c2")]:
        ca, cb = condition[a], condition[b]
        reference = stats.kendalltau(matrix[a], matrix[b])
        assert pairs.loc[(ca, cb), "tau"] == pytest.approx(reference.statistic)
        assert pairs.loc[(ca, cb), "pvalue"] == pytest.approx(reference.pvalue)
        assert pairs.loc[(ca, cb), "baselines"] == 5
        assert report.kendall_matrix.loc[cb, ca] == report.kendall_matrix.loc[ca, cb] \
            == pytest.approx(reference.statistic)


def test_discernibility_range_per_condition(tmp_path):
    make_store(tmp_path, {("a", "svhn", "1m"): [0.96, 0.97], ("b", "svhn", "1m"): [0.90, 0.94],
                          ("c", "svhn", "1m"): [FAILED]})
    row = build_report(tmp_path).discernibility.iloc[0]
    assert (row["condition"], row["baselines"], row["best_baseline"]) == ("svhn/1m", 2, "a")
    assert row["range"] == pytest.approx(0.965 - 0.92)
    assert row["median_std"] == pytest.approx(np.median([np.std([0.96, 0.97], ddof=1),
                                                         np.std([0.90, 0.94], ddof=1)]))


def test_conditions_in_paper_order(tmp_path):
    cells = {(b, d, p): [0.5] for b in ("a", "b") for d in ("svhn", "cifar100", "cifar10")
             for p in ("4out", "base", "3ops", "1m")}
    make_store(tmp_path, cells)
    assert build_report(tmp_path).conditions == [f"{d}/{p}" for d in ("cifar10", "cifar100", "svhn")
                                                 for p in ("base", "1m", "3ops", "4out")]


# -- protocols and bad stores ---------------------------------------------------------------------------

def test_several_protocols_need_a_choice(tmp_path):
    make_store(tmp_path, {("a", "cifar10", "base"): [0.9]})
    store = Store(tmp_path)
    store.write_record(record("x-smoke", "evaluate", "a", "cifar10", 0, policy="base", acc=0.1,
                              protocol={"name": "smoke"}))
    with pytest.raises(ReportError, match="several protocols .*paper, smoke.*--protocol"):
        build_report(tmp_path)
    assert cell(build_report(tmp_path, protocol="smoke"), "a", "cifar10/base")["mean"] == pytest.approx(0.1)
    assert cell(build_report(tmp_path, protocol="paper"), "a", "cifar10/base")["mean"] == pytest.approx(0.9)
    with pytest.raises(ReportError, match="no trials of protocol 'fast'"):
        build_report(tmp_path, protocol="fast")


def test_missing_empty_and_unknown_metric_are_report_errors(tmp_path):
    with pytest.raises(ReportError, match="no such storage folder"):
        build_report(tmp_path / "nope")
    with pytest.raises(ReportError, match="not a results store"):
        build_report(tmp_path)
    (tmp_path / "records").mkdir()
    with pytest.raises(ReportError, match="holds no trials"):
        build_report(tmp_path)
    with pytest.raises(ReportError, match="unknown metric"):
        build_report(tmp_path, metric="top5")
