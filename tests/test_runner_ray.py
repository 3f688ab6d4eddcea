"""The runner on Ray (local instance on loopback only). Slow: each test starts Ray."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lhdbench import methods
from lhdbench.methods import registry
from lhdbench.plan import load_suite, make_plan
from lhdbench.runner import RunOptions, run_plan
from lhdbench.store import Store

pytestmark = pytest.mark.slow
PLUGIN = Path(__file__).resolve().parent / "plugins" / "faulty_methods.py"
LHDBENCH = str(Path(sys.executable).with_name("lhdbench"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def cli(args, cwd, **kwargs):
    return subprocess.run([LHDBENCH, *args], capture_output=True, text=True, env=ENV, cwd=cwd,
                          timeout=900, **kwargs)


def test_a_benchmark_survives_a_killed_driver_and_a_rerun_adds_nothing(tmp_path):
    """The demo suite at smoke scale (every registered method, two seeds) through Ray, its driver
    SIGKILLed mid-run."""
    storage = tmp_path / "s1"
    args = ["benchmark", "--suite", "smoke", "--preset", "smoke", "--storage", str(storage)]
    planned = len(make_plan(load_suite("smoke").narrow()).trials)
    driver = subprocess.Popen([LHDBENCH, *args], env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    records = storage / "records"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(records.glob("*.json"))) < 12:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = {p.name: p.read_bytes() for p in records.glob("*.json")}
    assert 12 <= len(before) < planned, "the driver should be killed mid-run"

    rerun = cli(args, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    status = json.loads(cli(["status", "--storage", str(storage), "--json"], tmp_path).stdout)
    assert {k: status[k] for k in ("planned", "done", "failed", "running", "pending")} == {
        "planned": planned, "done": planned, "failed": 0, "running": 0, "pending": 0}
    store = Store(storage)
    after = {p.name: p.read_bytes() for p in records.glob("*.json")}
    assert len(after) == planned
    assert all(after[name] == content for name, content in before.items()), \
        "a record finished before the kill was rewritten"
    for trial_id in store.records():
        ends = [e for e in store.events(trial_id) if e["event"] == "done"]
        assert len(ends) == 1, f"{trial_id} finished {len(ends)} times"

    third = cli(args, tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in records.glob("*.json")} == after
    assert f"done {planned}/{planned} ({planned} before this run)" in third.stderr
    assert "running 0" in third.stderr.splitlines()[-1]


@pytest.mark.parametrize("executor", ["ray", "serial"])
def test_ctrl_c_stops_with_130_says_how_to_resume_and_the_rerun_finishes(tmp_path, executor):
    storage = tmp_path / "s"
    args = ["benchmark", "--suite", "smoke", "--preset", "smoke", "--baselines", "darts,gdas,drnas",
            "--executor", executor,
            "--storage", str(storage)]
    # Ctrl-C as a terminal delivers it: a suite started in the background (`.ci/run &`) passes SIGINT on
    # ignored, and Python then installs no KeyboardInterrupt handler.
    driver = subprocess.Popen([LHDBENCH, *args], env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list((storage / "records").glob("*.json"))) < 3:
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == 130, err[-3000:]
    assert "Rerun the same command to resume" in err
    stopped = len(list((storage / "records").glob("*.json")))
    assert 3 <= stopped < 30
    rerun = cli(args, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"({stopped} before this run)" in rerun.stderr
    assert len(list((storage / "records").glob("*.json"))) == 30


def test_failing_trials_on_ray_are_retried_and_recorded(tmp_path):
    storage = tmp_path / "s"
    result = cli(["benchmark", "--suite", "smoke", "--baselines", "test-raises,test-nan,random",
                  "--seeds", "0", "--policies", "base", "--retries", "1", "--plugin", str(PLUGIN),
                  "--storage", str(storage)], tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    # One line per failed search, with its reason, and none of Tune's tracebacks.
    assert "Traceback" not in result.stderr and "Trials did not complete" not in result.stderr
    failures = [line for line in result.stderr.splitlines() if line.startswith("lhdbench: trial ")]
    assert len(failures) == 2 and any(line.endswith("RuntimeError: injected failure") for line in failures)
    assert len(result.stderr.strip().splitlines()) < 20, result.stderr
    records = {(r.phase, r.baseline): r for r in Store(storage).records().values()}
    assert records["search", "test-raises"].reason == "RuntimeError: injected failure"
    assert "non-finite" in records["search", "test-nan"].reason
    for baseline in ("test-raises", "test-nan"):
        assert records["search", baseline].attempts == 2  # Tune retried once
        assert records["evaluate", baseline].reason.startswith("not run: its search")
    assert records["search", "random"].status == records["evaluate", "random"].status == "done"


@pytest.fixture
def faulty_methods(monkeypatch):
    """Register the test plugin in this process (the driver) and pass it to the Ray workers,
    leaving the registry as it was afterwards."""
    methods.discover()
    for name in ("_REGISTRY", "_SOURCES", "_FAILURES"):
        monkeypatch.setattr(registry, name, dict(getattr(registry, name)))
    monkeypatch.setattr(registry, "_FILE_ERRORS", [])
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.setenv(methods.PLUGINS_ENV, str(PLUGIN))
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    methods.discover()
    assert "test-sleepy" in methods.method_names(), methods.plugin_failures()


def test_fractional_gpu_trials_run_concurrently_each_on_one_device_slot(tmp_path, faulty_methods):
    """Ray accepts declared GPUs without hardware: four of them, half a GPU per trial."""
    plan = make_plan(load_suite("smoke").narrow(baselines=["test-sleepy"], seeds=[0, 1, 2, 3],
                                               policies=["base"]))
    options = RunOptions(executor="ray", gpus_per_trial=0.5, ray_init={"num_cpus": 4, "num_gpus": 4})
    dispatch = run_plan(plan, tmp_path, options, progress_stream=io.StringIO())
    assert dispatch.counts == {"done": 8, "failed": 0}
    searches = [r for r in Store(tmp_path).records().values() if r.phase == "search"]
    for record in searches:
        assert record.resources.model_dump() == {"cpu": 1.0, "gpu": 0.5}
        visible = record.worker.cuda_visible_devices
        assert visible is not None and len(visible.split(",")) == 1 and visible.isdigit()
    intervals = [(r.worker.started_at, r.worker.finished_at) for r in searches]
    most = max(sum(start <= t < end for start, end in intervals) for t, _ in intervals)
    assert most >= 2, f"the 3-second searches did not overlap: {intervals}"


def test_the_extended_suite_runs_the_new_methods_and_perturbation_selection_through_ray(tmp_path):
    """The methods of the LHD line of work, each searched, selected by perturbation and by magnitude,
    and evaluated, through Ray at smoke scale; the report shows them and the selection axis."""
    storage = tmp_path / "s"
    new = "ss-darts,pcd-darts,edd-darts,dropnas"
    result = cli(["benchmark", "--suite", "lhd-extended", "--preset", "smoke", "--datasets", "digits",
                  "--baselines", new, "--seeds", "0", "--policies", "base", "--storage", str(storage)],
                 tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    records = Store(storage).records()
    phases = sorted(r.phase for r in records.values())
    assert phases == ["evaluate"] * 8 + ["search"] * 4 + ["select"] * 4
    assert all(r.status == "done" for r in records.values())
    selections = [r for r in records.values() if r.phase == "select"]
    assert all(r.epochs == 7 and len(r.decisions) == 14 for r in selections)  # smoke: interval 1
    report = cli(["report", "--storage", str(storage), "--out", str(tmp_path / "r"), "--formats", "md,csv"],
                 tmp_path)
    assert report.returncode == 0, report.stderr
    board = (tmp_path / "r" / "leaderboard.md").read_text()
    assert "digits/base/pt" in board and "digits base pt" in board
    for name in new.split(","):
        assert f"| {name} |" in board
