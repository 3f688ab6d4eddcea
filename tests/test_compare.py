"""`lhdbench compare`: rank correlations per condition checked against scipy, the bootstrap against the
same resampling written out here, the edge cases (ties, two methods, one method, conditions and
methods in one source only), the files and the one-line errors."""

from __future__ import annotations

import math
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_report import make_store, record

from lhdbench.cli import main
from lhdbench.report import ReportError
from lhdbench.report.compare import (
    compare_sources,
    kendall_tau_b,
    load_records,
    resampled_correlations,
    spearman_rho,
)

FAST = {"name": "fast", "evaluate": {"epochs": 150, "best_after_epoch": 100}}
PAPER = {"name": "paper", "evaluate": {"epochs": 600, "best_after_epoch": 400}}
A_CELLS = {("a", "cifar10", "base"): [0.90, 0.92, 0.91], ("b", "cifar10", "base"): [0.85, 0.88, 0.86],
           ("c", "cifar10", "base"): [0.80, 0.95, 0.70], ("d", "cifar10", "base"): [0.60, 0.61, 0.62],
           # a and b tie in A
           ("a", "cifar10", "1m"): [0.70, 0.70], ("b", "cifar10", "1m"): [0.70, 0.70],
           ("c", "cifar10", "1m"): [0.50, 0.60],
           ("a", "cifar10", "3ops"): [0.50], ("b", "cifar10", "3ops"): [0.60],  # only in A
           ("a", "cifar10", "4out"): [0.80, 0.70], ("b", "cifar10", "4out"): [0.60, 0.65],  # two methods
           ("a", "svhn", "base"): [0.90]}  # one method in common
B_CELLS = {("a", "cifar10", "base"): [0.95, 0.96, 0.94], ("b", "cifar10", "base"): [0.93, 0.90, 0.91],
           ("c", "cifar10", "base"): [0.96, 0.97, 0.80], ("d", "cifar10", "base"): [0.70, 0.72, 0.69],
           ("e", "cifar10", "base"): [0.99, 0.98],  # only in B
           ("a", "cifar10", "1m"): [0.80, 0.82], ("b", "cifar10", "1m"): [0.81, 0.79],
           ("c", "cifar10", "1m"): [0.60, 0.70],
           ("a", "cifar10", "4out"): [0.70, 0.72], ("b", "cifar10", "4out"): [0.75, 0.74],
           ("a", "svhn", "base"): [0.85], ("x", "svhn", "base"): [0.90]}
# A condition of eight methods with five seeds each, so that tau and rho take many values and an
# interval moves with any change in the resampling.
_rng = np.random.default_rng(7)
for _cells in (A_CELLS, B_CELLS):
    _cells.update({(f"m{k}", "cifar100", "base"): [round(float(v), 4) for v in _rng.uniform(0.5, 0.9, 5)]
                   for k in range(8)})
RESAMPLES = 300


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("compare")
    make_store(root / "fast", A_CELLS, preset="fast", protocol=FAST)
    make_store(root / "paper", B_CELLS, protocol=PAPER)
    return root / "fast", root / "paper"


@pytest.fixture(scope="module")
def comparison(stores):
    return compare_sources(*stores, resamples=RESAMPLES)


def common(condition: str) -> list[str]:
    dataset, policy = condition.split("/")
    return sorted({b for b, d, p in A_CELLS if (d, p) == (dataset, policy)}
                  & {b for b, d, p in B_CELLS if (d, p) == (dataset, policy)})


def cell_values(cells: dict, condition: str) -> list[list[float]]:
    dataset, policy = condition.split("/")
    return [cells[(b, dataset, policy)] for b in common(condition)]


def scipy_pair(x: list[float], y: list[float]) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.kendalltau(x, y).statistic), float(stats.spearmanr(x, y).statistic)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def test_tau_and_rho_per_condition_match_scipy(comparison):
    rows = {r["condition"]: r for r in comparison.agreement.to_dict("records")}
    assert list(rows) == ["cifar10/base", "cifar10/1m", "cifar10/4out", "cifar100/base", "svhn/base"]
    for condition, row in rows.items():
        means = [[round(sum(v) / len(v), 9) for v in cell_values(cells, condition)]
                 for cells in (A_CELLS, B_CELLS)]
        assert row["methods"] == len(common(condition))
        if row["methods"] < 2:
            assert math.isnan(row["tau"]) and math.isnan(row["rho"])
            continue
        tau, rho = scipy_pair(*means)
        assert same(row["tau"], tau) and same(row["rho"], rho), condition
    assert rows["cifar10/4out"]["tau"] == -1 and rows["cifar10/4out"]["rho"] == -1  # two methods, swapped
    assert rows["cifar10/1m"]["tau"] == pytest.approx(2 / math.sqrt(6))  # a tie in A: tau-b, not tau-a
    assert rows["svhn/base"]["methods"] == 1 and rows["svhn/base"]["resamples"] == 0


def test_vectorised_correlations_match_scipy_row_by_row():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, size=(200, 6)).astype(float)  # many ties, some rows all tied
    y = rng.integers(0, 4, size=(200, 6)).astype(float)
    x[0] = 1.0
    taus, rhos = kendall_tau_b(x, y), spearman_rho(x, y)
    for k in range(len(x)):
        tau, rho = scipy_pair(list(x[k]), list(y[k]))
        assert same(taus[k], tau) and same(rhos[k], rho), k
    assert math.isnan(taus[0]) and math.isnan(rhos[0])


def written_out(condition: str) -> tuple[list[float], list[float]]:
    """Every resample's tau and rho: one generator per condition, seeded with (0, crc32 of its name);
    A's methods by name, then B's, each drawing an index array of (resamples, seeds); a resample's
    mean of a method is the mean of its drawn seeds, rounded to 9 decimals; scipy correlates them."""
    rng = np.random.default_rng([0, zlib.crc32(condition.encode())])
    draws = [[(v, rng.integers(0, len(v), size=(RESAMPLES, len(v)))) for v in cell_values(cells, condition)]
             for cells in (A_CELLS, B_CELLS)]
    taus, rhos = [], []
    for r in range(RESAMPLES):
        a, b = ([round(sum(v[i] for i in index[r]) / len(v), 9) for v, index in side] for side in draws)
        tau, rho = scipy_pair(a, b)
        taus.append(tau)
        rhos.append(rho)
    return taus, rhos


def test_bootstrap_matches_the_resampling_written_out(comparison):
    checked = 0
    for row in comparison.agreement.to_dict("records"):
        condition = row["condition"]
        if row["methods"] < 2:
            assert math.isnan(row["tau_low"]) and row["defined_tau"] == 0
            continue
        taus, rhos = written_out(condition)
        seeds = [[np.array(v) for v in cell_values(cells, condition)] for cells in (A_CELLS, B_CELLS)]
        got = resampled_correlations(condition, seeds, RESAMPLES)
        for name, values, mine in (("tau", taus, got[0]), ("rho", rhos, got[1])):
            assert all(same(x, y) for x, y in zip(mine, values, strict=True)), (condition, name)
            defined = [v for v in values if not math.isnan(v)]
            assert row[f"defined_{name}"] == len(defined)
            low, high = np.percentile(defined, [2.5, 97.5])
            assert row[f"{name}_low"] == pytest.approx(low, abs=1e-9), (condition, name)
            assert row[f"{name}_high"] == pytest.approx(high, abs=1e-9), (condition, name)
        checked += 1
    assert checked == 4
    wide = comparison.agreement.set_index("condition").loc["cifar100/base"]
    assert wide["tau_low"] < wide["tau"] < wide["tau_high"] and wide["rho_low"] < wide["rho_high"]


def test_left_out_conditions_and_methods_are_noted(comparison):
    notes = comparison.notes
    assert "left out, only in A: condition(s) cifar10/3ops" in notes
    assert "left out, only in B: e in cifar10/base" in notes
    assert "left out, only in B: x in svhn/base" in notes
    assert "fewer than 2 methods in common, so no correlation: svhn/base" in notes
    assert set(comparison.ranks.loc[comparison.ranks["condition"] == "cifar10/base", "baseline"]) == {
        "a", "b", "c", "d"}
    ties = comparison.ranks[comparison.ranks["condition"] == "cifar10/1m"].set_index("baseline")
    assert (ties.loc["a", "rank_a"], ties.loc["b", "rank_a"], ties.loc["c", "rank_a"]) == (1.5, 1.5, 3)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_cli_writes_the_same_files_twice_and_names_both_protocols(stores, tmp_path, capsys):
    fast, paper = stores
    for name in ("run-x", "run-y"):
        assert main(["compare", str(fast), str(paper), "--out", str(tmp_path / name),
                     "--resamples", "50"]) == 0
    first, second = files(tmp_path / "run-x"), files(tmp_path / "run-y")
    assert set(first) == {"compare.md", "compare.csv", "compare_ranks.csv", "compare.png"}
    # Byte for byte, but for the command line the Markdown repeats (its --out).
    second["compare.md"] = second["compare.md"].replace(b"run-y", b"run-x")
    assert [n for n in first if first[n] != second[n]] == []
    text = first["compare.md"].decode()
    assert "| protocol | fast | paper |" in text
    assert "| `evaluate.epochs` | 150 | 600 |" in text
    assert "| `evaluate.best_after_epoch` | 100 | 400 |" in text
    assert "| C10 4out | 2 | -1.00 |" in text
    assert "| C10 base | 4 | " in text and "| SVHN base | 1 | \u2013 | \u2013 | \u2013 | \u2013 |" in text
    assert "Note: left out, only in B: e in cifar10/base" in text
    assert "protocol fast against paper, 5 condition(s) in common" in capsys.readouterr().err


def test_load_records_keeps_the_current_record_of_each_slot(stores, tmp_path):
    fast, _ = stores
    records = load_records(fast)
    assert len([r for r in records.values() if r.phase == "evaluate"]) == sum(map(len, A_CELLS.values()))
    notes: list[str] = []
    (fast / "records" / "broken.json").write_text("{")
    try:
        load_records(fast, notes)
    finally:
        (fast / "records" / "broken.json").unlink()
    assert any(n.startswith("left out, not a valid trial record: records/broken.json") for n in notes)


@pytest.mark.parametrize("case", ["missing", "no common condition", "two protocols", "no resamples",
                                  "unknown protocol"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(stores, tmp_path, capsys, case):
    fast, paper = stores
    args = [str(fast), str(paper)]
    if case == "missing":
        args = [str(tmp_path / "nowhere"), str(paper)]
    elif case == "no common condition":
        make_store(tmp_path / "other", {("a", "svhn", "1m"): [0.5]})
        args = [str(fast), str(tmp_path / "other")]
    elif case == "two protocols":
        make_store(tmp_path / "mixed", {("a", "cifar10", "base"): [0.5]})
        from lhdbench.store import Store

        Store(tmp_path / "mixed").write_record(record("e-extra", "evaluate", "a", "cifar10", 0, policy="base",
                                                      acc=0.6, protocol=FAST))
        args = [str(tmp_path / "mixed"), str(paper)]
    elif case == "no resamples":
        args += ["--resamples", "0"]
    elif case == "unknown protocol":
        args += ["--protocol-b", "smoke"]
    assert main(["compare", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lhdbench: error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_two_protocols_in_one_store_are_chosen_by_name(tmp_path):
    from lhdbench.store import Store

    make_store(tmp_path / "mixed", {("a", "cifar10", "base"): [0.5], ("b", "cifar10", "base"): [0.7]})
    store = Store(tmp_path / "mixed")
    for baseline, acc in (("a", 0.8), ("b", 0.6)):
        store.write_record(record(f"e-fast-{baseline}", "evaluate", baseline, "cifar10", 0, policy="base",
                                  acc=acc, protocol=FAST))
    with pytest.raises(ReportError, match="several protocols"):
        compare_sources(tmp_path / "mixed", tmp_path / "mixed")
    result = compare_sources(tmp_path / "mixed", tmp_path / "mixed", protocol_a="fast", protocol_b="paper",
                             resamples=10)
    assert (result.a.protocol, result.b.protocol) == ("fast", "paper")
    assert result.agreement.iloc[0]["tau"] == -1
