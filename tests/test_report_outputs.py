"""The report's files: what leaderboard.md says, the CLI's errors, LaTeX escaping, and byte-identical
output for the same records."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_report import FAILED, MISSING, make_store, record

from lhdbench.cli import main
from lhdbench.report import build_report, write_report
from lhdbench.store import Store

CELLS = {("darts", "cifar10", "base"): [0.90, 0.92], ("darts", "cifar10", "1m"): [0.91, FAILED],
         ("gdas", "cifar10", "base"): [0.85, 0.86], ("gdas", "cifar10", "1m"): [MISSING, MISSING],
         ("pc_darts", "cifar10", "base"): [0.88, 0.80], ("pc_darts", "cifar10", "1m"): [0.93, 0.94],
         ("new", "cifar10", "base"): [0.50, 0.60]}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> tuple[Path, Path]:
    """The same store reported twice, into two folders, with every format."""
    root = tmp_path_factory.mktemp("report")
    make_store(root / "store", CELLS, suite="lhd-test")
    for name in ("a", "b"):
        write_report(build_report(root / "store"), root / name, command="lhdbench report (test)")
    return root / "a", root / "b"


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_records_give_byte_identical_files(outputs):
    a, b = outputs
    first, second = files(a), files(b)
    assert first.keys() == second.keys()
    assert {"leaderboard.md", "tables/accuracy.csv", "tables/leaderboard.tex", "plots/ranks.png",
            "plots/ranks.pdf", "plots/accuracy_cifar10.png", "plots/kendall.png"} <= set(first)
    different = [name for name in first if first[name] != second[name]]
    assert different == []


def test_markdown_header_says_how_it_was_produced(outputs):
    text = (outputs[0] / "leaderboard.md").read_text()
    assert "lhdbench report (test)" in text
    assert "| suites | lhd-test (preset paper) |" in text
    assert "| protocol | paper |" in text
    assert "| seeds | 0, 1 |" in text
    assert "| lhdbench versions | 0.1.0 (" in text
    assert "final-epoch test accuracy" in text
    assert "secret-host" not in text  # the host is in the records, never in the report


def test_markdown_cells_show_failed_missing_and_absent_cells(outputs):
    text = (outputs[0] / "leaderboard.md").read_text()
    rows = text.splitlines()
    assert "| gdas | 85.50 \u00b1 0.71 (n=2) | missing |" in rows
    assert "| darts | **91.00 \u00b1 1.41** (n=2) | 91.00 (n=1; failed 1/2) |" in rows
    # new ran in one condition only: its other cell is not part of the suite, not "missing".
    assert "| new | 55.00 \u00b1 7.07 (n=2) | \u2013 |" in rows
    assert "| pc_darts | 84.00 \u00b1 5.66 (n=2) | **93.50 \u00b1 0.71** (n=2) |" in rows
    assert "## Failed trials" in text and "CUDA out of memory while training" in text


def test_a_failed_search_is_listed_with_the_evaluations_it_fails(tmp_path):
    # A search row has no policy: the failed table must show it, not break on it.
    make_store(tmp_path / "s", CELLS)
    Store(tmp_path / "s").write_record(record("s-gdas-cifar10-1", "search", "gdas", "cifar10", 1,
                                              status="failed"))
    write_report(build_report(tmp_path / "s"), tmp_path / "o", ("md", "tex"))
    rows = (tmp_path / "o" / "leaderboard.md").read_text().splitlines()
    assert "| gdas | 85.50 \u00b1 0.71 (n=2) | failed 1/2, missing 1/2 |" in rows  # no done seed in 1m
    assert "| search | gdas | cifar10 | \u2013 | 1 | CUDA out of memory while training |" in rows
    assert "| evaluate | gdas | cifar10 | 1m | 1 | its search failed |" in rows
    tex = (tmp_path / "o" / "tables" / "failed.tex").read_text().splitlines()
    assert r"search & GDAS & CIFAR-10 & -- & 1 & CUDA out of memory while training \\" in tex


def test_markdown_reports_friedman_not_possible_and_the_leaderboard(outputs):
    text = (outputs[0] / "leaderboard.md").read_text()
    # Only darts and pc_darts have results in both conditions: too few for the test.
    assert "not enough data" in text and "gdas, new" in text
    board = [line for line in text.split("## Leaderboard")[1].splitlines() if line.startswith("| 1 |")]
    assert board == ["| 1 | darts | 1.50 | 2/2 | 1 | 2 |"]  # pc_darts: 3 and 1


def test_latex_escapes_names_and_symbols(outputs):
    tex = (outputs[0] / "tables" / "accuracy_cifar10.tex").read_text()
    assert r"pc\_darts" in tex and r"\textbf{93.50 $\pm$ 0.71}" in tex
    assert tex.startswith(r"\begin{table}[t]") and r"\toprule" in tex
    body = "\n".join(line for line in tex.splitlines() if not line.startswith(r"\label"))
    assert "_" not in body.replace(r"\_", "")


def test_csv_keeps_fractions_and_counts(outputs):
    lines = (outputs[0] / "tables" / "accuracy.csv").read_text().splitlines()
    assert lines[0].startswith("baseline,dataset,policy,condition,trials,done,failed,missing,no_value,mean")
    assert "darts,cifar10,1m,cifar10/1m,2,1,1,0,0,0.91," in "\n".join(lines)


def test_cli_writes_the_chosen_formats_only(tmp_path, capsys):
    make_store(tmp_path / "s", CELLS)
    assert main(["report", "--storage", str(tmp_path / "s"), "--out", str(tmp_path / "o"),
                 "--formats", "md,csv", "--metric", "best"]) == 0
    written = sorted(str(p.relative_to(tmp_path / "o")) for p in (tmp_path / "o").rglob("*") if p.is_file())
    assert "leaderboard.md" in written and "tables/accuracy.csv" in written
    assert not any(name.endswith((".png", ".pdf", ".tex")) for name in written)
    text = (tmp_path / "o" / "leaderboard.md").read_text()
    assert "best test accuracy after epoch 400 (the paper's metric)" in text
    assert f"--storage {tmp_path / 's'} --out {tmp_path / 'o'} --metric best --formats md,csv" in text
    assert "![" not in text  # no plots asked for: none embedded


@pytest.mark.parametrize("setup,argv,message", [
    (None, ["--storage", "{tmp}/nope"], "no such storage folder"),
    ("empty", ["--storage", "{tmp}/s"], "holds no trials"),
    ("store", ["--storage", "{tmp}/s", "--formats", "md,html"], "unknown format(s) html"),
    ("two", ["--storage", "{tmp}/s"], "several protocols"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, setup, argv, message):
    if setup == "empty":
        (tmp_path / "s" / "records").mkdir(parents=True)
    elif setup in ("store", "two"):
        make_store(tmp_path / "s", CELLS)
    if setup == "two":
        Store(tmp_path / "s").write_record(record("x", "evaluate", "darts", "cifar10", 0, policy="base",
                                                  acc=0.5, protocol={"name": "smoke"}))
    args = ["report", *[a.format(tmp=tmp_path) for a in argv], "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("lhdbench: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("hours,text", [(0.0, "0"), (4e-6, "<0.001"), (0.0123456, "0.0123"), (2.5, "2.50"),
                                        (37.51, "37.5"), (1234.5, "1234")])
def test_hours_keep_three_significant_figures(hours, text):
    from lhdbench.report.text import hours_text

    assert hours_text(hours) == text
