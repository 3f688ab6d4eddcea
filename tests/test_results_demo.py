"""The committed demo leaderboard regenerates byte for byte from its committed records."""

from pathlib import Path

import pytest

from lhdbench.report import build_report, write_report

DEMO = Path(__file__).resolve().parents[1] / "results" / "demo"


@pytest.mark.skipif(not (DEMO / "store" / "records").is_dir(), reason="results/demo/store is not there")
def test_committed_demo_leaderboard_regenerates_identically(tmp_path):
    committed = (DEMO / "leaderboard.md").read_text()
    command = next(line.strip() for line in committed.splitlines()
                   if line.strip().startswith("lhdbench report"))
    write_report(build_report(DEMO / "store"), tmp_path, command=command)
    assert (tmp_path / "leaderboard.md").read_text() == committed
    assert "not the paper's numbers" in committed
    tables = sorted((tmp_path / "tables").glob("*.*"))
    assert {p.name for p in tables} == {p.name for p in (DEMO / "tables").glob("*.*")}
    for path in tables:
        assert path.read_bytes() == (DEMO / "tables" / path.name).read_bytes(), path.name
    # Plot pixels depend on the installed matplotlib and FreeType, so only their presence is checked.
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {p.name for p in (DEMO / "plots").iterdir()}
