"""The store against bad files, concurrent writers and a full disk: what never counts as done, what is
moved aside and run again, and what every command says about it (one line, naming file and field)."""

from __future__ import annotations

import errno
import io
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lhdbench.cli import main
from lhdbench.plan import load_suite, make_plan
from lhdbench.record import InvalidRecord, TrialRecord, read_record
from lhdbench.runner import RunOptions, run_plan
from lhdbench.status import store_status
from lhdbench.store import Store

SMALL = ["--suite", "smoke", "--baselines", "random", "--seeds", "0", "--policies", "base,4out",
         "--executor", "serial"]


def small_plan():
    return make_plan(load_suite("smoke").narrow(baselines=["random"], seeds=[0], policies=["base", "4out"]))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A store where the small plan ran to the end (copied by each test that spoils it)."""
    root = tmp_path_factory.mktemp("finished")
    dispatch = run_plan(small_plan(), root, RunOptions(executor="serial"), progress_stream=io.StringIO())
    assert dispatch.counts == {"done": 3, "failed": 0}
    return root


def copy_store(finished: Path, tmp_path: Path) -> Store:
    shutil.copytree(finished, tmp_path / "s")
    return Store(tmp_path / "s")


BAD_FILES = {
    "done without results": lambda tid, valid: json.dumps({"trial_id": tid, "status": "done"}).encode(),
    "not UTF-8": lambda tid, valid: b"\xff\xfe{" + valid[:40],
    "not JSON": lambda tid, valid: valid[: len(valid) // 2],
    "a string for a number": lambda tid, valid: json.dumps(
        {**json.loads(valid), "wall_time_s": "x"}).encode(),
    "a float for a count": lambda tid, valid: json.dumps({**json.loads(valid), "params": 1.5}).encode(),
    "an accuracy above 1": lambda tid, valid: json.dumps(
        {**json.loads(valid), "final_test_acc": 3.0}).encode(),
    "another trial's id": lambda tid, valid: json.dumps({**json.loads(valid), "trial_id": "other"}).encode(),
    "a JSON list": lambda tid, valid: b"[]",
}
EXPECTED = {"done without results": "phase", "not UTF-8": "not UTF-8", "not JSON": "not JSON",
            "a string for a number": "wall_time_s", "a float for a count": "params",
            "an accuracy above 1": "final_test_acc", "another trial's id": "trial_id",
            "a JSON list": "not a trial record"}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_a_record_that_does_not_validate_never_counts_as_done_and_runs_again(finished, tmp_path, kind,
                                                                            capsys, monkeypatch):
    store = copy_store(finished, tmp_path)
    monkeypatch.chdir(tmp_path)
    tid = next(t for t in sorted(store.records()) if "-base-" in t)
    path = store.record_path(tid)
    path.write_bytes(BAD_FILES[kind](tid, path.read_bytes()))
    fresh = Store(store.root)
    assert tid not in fresh.records()
    message = fresh.invalid[path].message
    assert message.startswith(f"{path}: ") and EXPECTED[kind] in message and "\n" not in message
    if kind != "another trial's id":  # a valid record of another trial: only the store can tell
        with pytest.raises(InvalidRecord, match=EXPECTED[kind]):
            read_record(path)

    # status: counted as pending, with a warning naming the file and the field
    summary = store_status(store.root)
    assert (summary["done"], summary["pending"]) == (2, 1)
    assert len(summary["invalid_records"]) == 1 and EXPECTED[kind] in summary["invalid_records"][0]
    assert main(["status", "--storage", str(store.root)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and path.name in err[0] and "counts as not done" in err[0]

    # report: the method's cell shows the trial missing, and a note names the file
    assert main(["report", "--storage", "s", "--out", "r", "--formats", "md"]) == 0
    assert path.name in capsys.readouterr().err
    board = (tmp_path / "r" / "leaderboard.md").read_text()
    assert f"records/{path.name}" in board and str(store.root) not in board

    # benchmark: moved aside, the trial runs again, the others are not touched
    others = {p.name: p.read_bytes() for p in store.records_dir.glob("*.json") if p != path}
    assert main(["benchmark", *SMALL, "--storage", str(store.root)]) == 0
    err = capsys.readouterr().err
    assert f"moved to {path.name}.invalid, the trial runs again" in err
    assert (store.records_dir / f"{path.name}.invalid").exists()
    assert read_record(path).status == "done"
    assert {p.name: p.read_bytes() for p in store.records_dir.glob("*.json") if p != path} == others


def test_a_died_trial_keeps_its_inputs_and_is_listed_among_the_failed(finished, tmp_path):
    store = copy_store(finished, tmp_path)
    plan = small_plan()
    evaluation = next(t for t in plan.trials if t.phase == "evaluate" and t.policy == "base")
    store.write_record(TrialRecord.died(evaluation.to_dict(), plan.protocol.to_dict(), attempts=1))
    record = store.read_record(evaluation.trial_id)
    assert (record.baseline, record.dataset, record.policy, record.protocol_name) == (
        "random", "digits", "base", "smoke")
    assert main(["report", "--storage", str(store.root), "--out", str(tmp_path / "r"),
                 "--formats", "csv"]) == 0
    listed = (tmp_path / "r" / "tables" / "incomplete.csv").read_text().splitlines()
    row = next(line for line in listed if evaluation.trial_id in line)
    assert ",failed," in row and "ended without writing a record" in row


def _add_to_plan(root: str, worker: int, count: int) -> None:
    entries = {f"t{worker}-{i}": {"trial_id": f"t{worker}-{i}", "phase": "search", "baseline": "darts",
                                  "dataset": "digits", "seed": i, "policy": None, "search_trial_id": None,
                                  "protocol": "smoke"} for i in range(count)}
    for i in range(0, count, 20):  # many small runs, as many drivers would add them
        Store(root).add_to_plan({"run": worker, "part": i}, dict(list(entries.items())[i:i + 20]))


def test_concurrent_plan_additions_all_survive(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_add_to_plan, args=(str(tmp_path), w, 300)) for w in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    plan = Store(tmp_path).read_plan()
    assert len(plan["trials"]) == 600 and len(plan["runs"]) == 30


@pytest.mark.parametrize("content", ["[]", "{}", '{"runs": [], "trials": []}', "{", '{"runs": [], '
                                     '"trials": {"a": {"trial_id": "b"}}}', "\xff"])
def test_a_broken_plan_is_one_line_naming_the_file_in_every_command(finished, tmp_path, capsys, content):
    store = copy_store(finished, tmp_path)
    store.plan_path.write_bytes(content.encode("latin-1"))
    for argv in (["status", "--storage", str(store.root)],
                 ["report", "--storage", str(store.root), "--out", str(tmp_path / "r")],
                 ["benchmark", *SMALL, "--storage", str(store.root)]):
        assert main(argv) == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "plan.json" in lines[0], (argv, lines)
    assert not (tmp_path / "r").exists()


def test_a_truncated_checkpoint_is_moved_aside_and_the_trial_starts_over(tmp_path, capsys):
    from lhdbench.protocol import load_protocol
    from lhdbench.search import run_search

    protocol = load_protocol("smoke")
    whole = run_search("darts", "digits", 0, protocol, tmp_path / "whole", progress=False)
    folder = tmp_path / "broken"
    folder.mkdir()
    data = (tmp_path / "whole" / "checkpoint.pt").read_bytes()
    (folder / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    again = run_search("darts", "digits", 0, protocol, folder, progress=False)
    assert "unreadable checkpoint" in capsys.readouterr().err
    assert (folder / "checkpoint.pt.invalid").exists()
    assert again.status == "done" and again.history == whole.history


def test_a_checkpoint_with_other_parts_is_moved_aside_not_trusted(tmp_path, capsys):
    import torch

    from lhdbench.protocol import load_protocol
    from lhdbench.search import run_search

    protocol = load_protocol("smoke")
    whole = run_search("darts", "digits", 0, protocol, tmp_path / "whole", progress=False)
    folder = tmp_path / "other"
    folder.mkdir()
    state = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    del state["scheduler"]
    torch.save(state, folder / "checkpoint.pt")
    again = run_search("darts", "digits", 0, protocol, folder, progress=False)
    assert "expected" in capsys.readouterr().err
    assert again.history == whole.history


def test_a_full_disk_is_one_line_exit_1_and_keeps_every_record(finished, tmp_path, monkeypatch, capsys):
    """The disk fills while trials run: the command stops with one line, exit 1; every record written
    before stays valid, no temporary file is left, and a rerun (disk freed) finishes."""
    store = copy_store(finished, tmp_path)
    for trial_id in [t for t in store.records() if "-4out-" in t]:
        store.record_path(trial_id).unlink()
        shutil.rmtree(store.trial_dir(trial_id))
    before = {p.name: p.read_bytes() for p in store.records_dir.glob("*.json")}
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    assert main(["benchmark", *SMALL, "--storage", str(store.root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "lhdbench: error: No space left on device"
    assert not any("Traceback" in line for line in err)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert {p.name: p.read_bytes() for p in store.records_dir.glob("*.json")} == before
    assert not list(store.root.rglob("*.tmp"))
    assert all(r.status == "done" for r in store.records().values())
    assert main(["benchmark", *SMALL, "--storage", str(store.root)]) == 0


def test_a_real_full_filesystem_is_one_line_exit_1(tmp_path):
    """The same on a real 3 MB filesystem (tmpfs; needs root to mount, skipped otherwise)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip() or 'not root'}); the simulated "
                    "full-disk test covers the code path")
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        result = subprocess.run([str(Path(sys.executable).with_name("lhdbench")), "benchmark", *SMALL,
                                 "--storage", str(mount / "s")], capture_output=True, text=True, env=env,
                                timeout=300)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("lhdbench: error: No space left on device"), lines
        assert "Traceback" not in result.stderr
        store = Store(mount / "s")
        assert not store.invalid and all(r.status == "done" for r in store.records().values())
        assert not store.invalid
    finally:
        subprocess.run(["umount", str(mount)], check=False)
