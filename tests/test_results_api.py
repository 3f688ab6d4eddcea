"""lhdbench.results: a store or bundle as a DataFrame, its helpers against computations written out
here, and docs/results.md's code, run as a notebook would."""

import io
import math
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from lhdbench import results
from lhdbench.plan import load_suite, make_plan
from lhdbench.runner import RunOptions, run_plan
from lhdbench.store import Store

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("api") / "store"
    plan = make_plan(load_suite("smoke").narrow(baselines=["random", "darts"], seeds=[0, 1],
                                               policies=["base", "4out"]))
    run_plan(plan, root, RunOptions(executor="serial"), progress_stream=io.StringIO())
    return root


def test_load_gives_one_row_per_record_with_the_documented_columns(store, tmp_path):
    frame = results.load(store)
    assert tuple(frame.columns) == results.COLUMNS
    records = Store(store).records()
    assert sorted(frame["trial_id"]) == sorted(records)
    for row in frame.itertuples():
        record = records[row.trial_id]
        assert row.method == record.baseline and row.seed == record.seed and row.status == "done"
        if record.phase == "evaluate":
            assert row.final_test_acc == record.final_test_acc and row.params == record.params
            assert row.eval_dataset == "digits" and row.selection == "magnitude"
            assert math.isclose(row.cpu_hours, record.wall_time_s / 3600 * record.resources.cpu)
        else:
            assert math.isnan(row.final_test_acc) and pd.isna(row.eval_dataset)
        assert row.code == record.code.method and row.source == str(store)
    from lhdbench.cli import main

    bundle = tmp_path / "b.zip"
    assert main(["export", "--storage", str(store), "--out", str(bundle)]) == 0
    from_bundle = results.load(bundle)
    assert from_bundle.drop(columns="source").equals(frame.drop(columns="source"))


def test_accuracy_table_is_the_mean_over_seeds(store):
    frame = results.load(store)
    table = results.accuracy_table(frame)
    records = [r for r in Store(store).records().values() if r.phase == "evaluate"]
    for method in ("random", "darts"):
        for policy in ("base", "4out"):
            values = [r.final_test_acc for r in records if r.baseline == method and r.policy == policy]
            assert len(values) == 2
            assert table.loc[method, f"digits/{policy}"] == pytest.approx(sum(values) / 2)
    with pytest.raises(ValueError, match="metric"):
        results.accuracy_table(frame, metric="params")


def test_evaluations_narrow_by_columns_and_name_the_condition(store):
    frame = results.load(store)
    picked = results.evaluations(frame, method="darts", policy=["4out"])
    assert set(picked["method"]) == {"darts"} and set(picked["condition"]) == {"digits/4out"}
    assert len(picked) == 2
    with pytest.raises(KeyError, match="no column 'dataset'"):
        results.evaluations(frame, dataset="digits")


def test_superseded_trials_are_left_out_unless_asked(store, tmp_path):
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    plan = Store(copy).read_plan()
    victim = sorted(plan["trials"])[0]
    plan["trials"][victim]["superseded_by"] = "something-newer"
    from lhdbench.files import atomic_write_json

    atomic_write_json(Store(copy).plan_path, plan)
    assert victim not in set(results.load(copy)["trial_id"])
    assert victim in set(results.load(copy, include_superseded=True)["trial_id"])


def test_a_path_that_is_neither_is_one_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(results.SourceError, match="neither a results store"):
        results.load(tmp_path / "notes.txt")
    with pytest.raises(results.SourceError, match="no such storage folder or bundle file"):
        results.load(tmp_path / "nothing")


def test_the_notebook_doc_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert "darts" in out and "digits16/base" in out
