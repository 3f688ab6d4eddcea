"""A suite with transfer conditions, end to end at smoke scale: it plans, runs, and reports. Architectures
searched on `digits` are also trained on `digits16`; a transfer evaluation trains the very genotype its
transductive sibling trains, on the other dataset, and the report compares the rankings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lhdbench.cli import main
from lhdbench.plan import load_suite, make_plan
from lhdbench.report import build_report

# The smoke protocol without the auxiliary head, which 16x16 images are too small for.
SMOKE = Path(__file__).resolve().parents[1] / "conditions" / "protocols" / "smoke.yaml"
PROTOCOL = SMOKE.read_text().replace("  cutout: 16\n", "  cutout: 16\n  auxiliary_weight: 0.0\n")

SUITE = """\
name: transfer-smoke
preset: {preset}
baselines: [darts, gdas, random]
datasets: [digits, digits16]
policies: [base, 4out]
seeds: [0]
transfer: {{digits: [digits16]}}
"""


@pytest.mark.slow
def test_a_transfer_suite_plans_runs_and_reports(tmp_path, capsys):
    (tmp_path / "smoke-no-aux.yaml").write_text(PROTOCOL)
    suite_file = tmp_path / "transfer-smoke.yaml"
    suite_file.write_text(SUITE.format(preset=tmp_path / "smoke-no-aux.yaml"))
    plan = make_plan(load_suite(str(suite_file)))
    searches, evaluations = plan.searches, plan.of_phase("evaluate")
    # 3 methods x 2 datasets searched; each evaluated under 2 policies where searched, and the digits
    # searches under 2 more on digits16.
    assert len(searches) == 6 and len(evaluations) == 6 * 2 + 3 * 2
    transfer = [t for t in evaluations if "-to-" in t.trial_id]
    assert len(transfer) == 6 and {t.dataset for t in transfer} == {"digits16"}
    by_id = {t.trial_id: t for t in plan.trials}
    assert {by_id[t.search_trial_id].dataset for t in transfer} == {"digits"}

    storage = tmp_path / "store"
    assert main(["benchmark", "--suite", str(suite_file), "--storage", str(storage),
                 "--executor", "serial"]) == 0
    capsys.readouterr()
    records = {p.stem: json.loads(p.read_text()) for p in (storage / "records").glob("*.json")}
    assert len(records) == len(plan.trials) and all(r["status"] == "done" for r in records.values())
    for t in transfer:
        r = records[t.trial_id]
        assert (r["dataset"], r["search_dataset"]) == ("digits16", "digits")
        sibling = next(e for e in evaluations if e.search_trial_id == t.search_trial_id
                       and e.policy == t.policy and e.dataset == "digits")
        assert r["genotype"] == records[sibling.trial_id]["genotype"]

    report = build_report(storage)
    assert "digits>digits16/base" in report.conditions and "digits16/base" in report.conditions
    rows = {r["condition"]: r for r in report.transfer.to_dict("records")}
    assert set(rows) == {"digits>digits16/base", "digits>digits16/4out"}
    assert rows["digits>digits16/base"]["target"] == "digits16/base"
    assert rows["digits>digits16/base"]["source"] == "digits/base"
    out = tmp_path / "report"
    assert main(["report", "--storage", str(storage), "--out", str(out), "--formats", "md,csv"]) == 0
    text = (out / "leaderboard.md").read_text()
    assert "## Statistics: transfer against transductive rankings" in text
    assert "| digits>digits16 base | digits16 base |" in text
