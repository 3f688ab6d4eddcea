"""The runner with the serial executor, the store under concurrent writers, and `status`.
Ray runs are in test_runner_ray.py (slow)."""

import io
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lhdbench.cli import main
from lhdbench.plan import load_suite, make_plan
from lhdbench.record import TrialRecord
from lhdbench.runner import RunOptions, run_plan, run_trial
from lhdbench.status import store_status
from lhdbench.store import Store

PLUGIN = Path(__file__).resolve().parent / "plugins" / "faulty_methods.py"
LHDBENCH = str(Path(sys.executable).with_name("lhdbench"))


def small_plan(baselines=("random", "darts"), seeds=(0,), policies=("base", "4out")):
    return make_plan(load_suite("smoke").narrow(baselines=list(baselines), seeds=list(seeds),
                                               policies=list(policies)))


def record_bytes(store: Store) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.records_dir.glob("*.json"))}


def test_serial_run_stores_every_trial_and_a_rerun_adds_nothing(tmp_path):
    plan = small_plan()
    dispatch = run_plan(plan, tmp_path, RunOptions(executor="serial"), progress_stream=io.StringIO())
    assert dispatch.counts == {"done": 6, "failed": 0}
    store = Store(tmp_path)
    records = store.records()
    assert set(records) == {t.trial_id for t in plan.trials}
    for trial in plan.trials:
        record = records[trial.trial_id]
        assert record.status == "done" and record.attempts == 1
        assert (record.phase, record.baseline, record.seed) == (
            trial.phase, trial.baseline, trial.seed)
        if trial.phase == "evaluate":
            assert record.search_trial_id == trial.search_trial_id and record.policy == trial.policy
            assert 0.0 <= record.final_test_acc <= 1.0 and record.params > 0
            assert record.arch_file == str(store.trial_dir(trial.search_trial_id) / "arch.npz")
    assert store_status(tmp_path) | {"failed_trials": None, "storage": None} == {
        "planned": 6, "done": 6, "failed": 0, "running": 0, "pending": 0, "invalid_records": [],
        "failed_trials": None, "storage": None, "superseded": 0, "code_versions": {}}

    before = record_bytes(store)
    again = run_plan(plan, tmp_path, RunOptions(executor="serial"), progress_stream=io.StringIO())
    assert again.counts == {"done": 0, "failed": 0} and again.skipped == 6
    assert record_bytes(store) == before
    # Each trial ran once: one start and one end in its history.
    for trial in plan.trials:
        assert [e["event"] for e in store.events(trial.trial_id)] == ["start", "done"]


def test_status_cli_json_keys_and_a_store_that_is_not_one(tmp_path, capsys):
    run_plan(small_plan(baselines=("random",), policies=("base",)), tmp_path,
             RunOptions(executor="serial"), progress_stream=io.StringIO())
    assert main(["status", "--storage", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {k: summary[k] for k in ("planned", "done", "failed", "running", "pending")} == {
        "planned": 2, "done": 2, "failed": 0, "running": 0, "pending": 0}
    assert main(["status", "--storage", str(tmp_path / "nothing")]) == 2
    assert "not a results store" in capsys.readouterr().err


def test_an_interrupted_evaluation_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """A trial stopped after its first epoch (say its driver was killed) resumes from the checkpoint
    and ends exactly as an uninterrupted one."""
    import lhdbench.checkpoint as checkpoint_module

    plan = small_plan(baselines=("random",), policies=("base",))
    search, evaluation = plan.trials
    protocol = plan.protocol.to_dict()
    for root in (tmp_path / "whole", tmp_path / "stopped"):
        run_trial(search, protocol, root)
    whole = run_trial(evaluation, protocol, tmp_path / "whole")

    save = checkpoint_module.save_checkpoint
    epochs_saved = []

    def save_then_stop(path, state):
        save(path, state)
        epochs_saved.append(state["loop"]["epoch"])
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_trial(evaluation, protocol, tmp_path / "stopped")
    assert epochs_saved == [0]
    store = Store(tmp_path / "stopped")
    assert store.read_record(evaluation.trial_id) is None  # an interrupt writes no record
    monkeypatch.setattr(checkpoint_module, "save_checkpoint", save)
    resumed = run_trial(evaluation, protocol, tmp_path / "stopped")
    assert resumed.history == whole.history
    assert resumed.final_test_acc == whole.final_test_acc


def done_search(trial_id: str, seed: int = 0, **fields) -> TrialRecord:
    """A valid done search record (made up: what matters is that it validates)."""
    return TrialRecord.done(trial_id=trial_id, phase="search", baseline="darts", dataset="digits", seed=seed,
                            protocol={"name": "smoke"}, settings={}, hparams={}, arch_file="arch.npz",
                            wall_time_s=1.0, epochs=2, **fields)


def _write_records(root: str, worker: int, count: int) -> None:
    store = Store(root)
    for i in range(count):
        store.write_record(done_search(f"t{worker}-{i}", seed=worker,
                                       history=[{"epoch": 0, "note": "x" * 5000}]))
        store.records()  # readers run while others write: they must never see a partial file
        assert not store.invalid


def test_concurrent_writers_never_lose_or_corrupt_a_record(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_write_records, args=(str(tmp_path), w, 40)) for w in range(6)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    records = Store(tmp_path).records()
    assert len(records) == 6 * 40
    assert all(r.history[0]["note"] == "x" * 5000 and r.trial_id == f"t{r.seed}-{tid.split('-')[1]}"
               for tid, r in records.items())
    assert not list((tmp_path / "records").glob(".*tmp"))


def _run_same_trial(root: str, queue) -> None:
    plan = small_plan(baselines=("random",), policies=("base",))
    record = run_trial(plan.trials[0], plan.protocol.to_dict(), root)
    queue.put(record.worker.pid)


def test_two_processes_never_run_the_same_trial_twice(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_run_same_trial, args=(str(tmp_path), queue)) for _ in range(3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    pids = {queue.get() for _ in workers}
    assert len(pids) == 1  # all three got the one record that the first writer stored
    trial_id = small_plan(baselines=("random",), policies=("base",)).trials[0].trial_id
    assert [e["event"] for e in Store(tmp_path).events(trial_id)] == ["start", "done"]




def run_cli(args, tmp_path, **env):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **env}
    return subprocess.run([LHDBENCH, *args], capture_output=True, text=True, env=environment, cwd=tmp_path,
                          timeout=600)


def test_failing_trials_are_recorded_retried_and_do_not_stop_the_rest(tmp_path):
    store_dir = tmp_path / "store"
    done = run_cli(["benchmark", "--suite", "smoke", "--baselines", "test-raises,test-nan,random",
                    "--seeds", "0", "--policies", "base", "--executor", "serial", "--retries", "1",
                    "--plugin", str(PLUGIN), "--storage", str(store_dir)], tmp_path)
    assert done.returncode == 1, done.stderr
    assert "4 trial(s) failed" in done.stderr  # two searches and the evaluation of each
    records = {(r.phase, r.baseline): r for r in Store(store_dir).records().values()}
    raised, nan = records["search", "test-raises"], records["search", "test-nan"]
    assert raised.status == "failed" and raised.reason == "RuntimeError: injected failure"
    assert nan.status == "failed" and "non-finite" in nan.reason
    assert raised.attempts == nan.attempts == 2  # one retry, as configured
    for baseline in ("test-raises", "test-nan"):
        blocked = records["evaluate", baseline]
        assert blocked.status == "failed" and blocked.reason.startswith("not run: its search")
    assert records["search", "random"].status == records["evaluate", "random"].status == "done"
    status = json.loads(run_cli(["status", "--storage", str(store_dir), "--json"], tmp_path).stdout)
    assert (status["done"], status["failed"], status["pending"]) == (2, 4, 0)
    assert {f["reason"] for f in status["failed_trials"]} >= {"RuntimeError: injected failure"}


def test_a_retry_that_succeeds_ends_done_with_its_attempts_counted(tmp_path):
    store_dir = tmp_path / "store"
    done = run_cli(["benchmark", "--suite", "smoke", "--baselines", "test-flaky", "--seeds", "0",
                    "--policies", "base", "--executor", "serial", "--plugin", str(PLUGIN),
                    "--storage", str(store_dir)], tmp_path, LHDBENCH_TEST_FLAKY_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    search = next(r for r in Store(store_dir).records().values() if r.phase == "search")
    assert search.status == "done" and search.attempts == 2
    events = [e["event"] for e in Store(store_dir).events(search.trial_id)]
    assert events == ["start", "failed", "start", "done"]


def test_benchmark_usage_errors_exit_2(tmp_path):
    for args, message in [(["--suite", "nope"], "unknown suite"),
                          (["--suite", "smoke", "--baselines", "dart"], "unknown baseline 'dart'"),
                          (["--suite", "smoke", "--seeds", "a"], "--seeds"),
                          (["--suite", "smoke", "--gpus-per-trial", "2"], "--gpus-per-trial")]:
        result = run_cli(["benchmark", *args, "--storage", str(tmp_path / "s")], tmp_path)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
