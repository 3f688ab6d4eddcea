"""Stopping a run at the trials' next checkpoints on SIGUSR1 (a Slurm job's warning before its time
limit) or SIGTERM (a pre-emption), and resuming it: nothing finished is lost, no epoch runs twice.
Slurm itself is in test_slurm.py; these need neither Slurm nor root."""

from __future__ import annotations

import importlib.resources
import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from lhdbench.checkpoint import load_checkpoint
from lhdbench.methods import add_plugin_files
from lhdbench.plan import load_suite, make_plan
from lhdbench.runner import STOPPED_EXIT, RunOptions, run_plan
from lhdbench.runner.stop import STOP_FOLDER, StopRequest
from lhdbench.space import load_arch_weights
from lhdbench.store import Store

PLUGIN = Path(__file__).resolve().parent / "plugins" / "slow_methods.py"
LHDBENCH = str(Path(sys.executable).with_name("lhdbench"))


def four_epoch_protocol(folder: Path) -> Path:
    """The smoke protocol with four search epochs, so that a stop after epoch 1 leaves two."""
    text = (importlib.resources.files("lhdbench.conditions") / "protocols" / "smoke.yaml").read_text()
    path = folder / "smoke4.yaml"
    path.write_text(text.replace("search:\n  epochs: 2\n", "search:\n  epochs: 4\n", 1))
    assert "epochs: 4" in path.read_text()
    return path


def epoch_runs(log: Path) -> Counter:
    return Counter(tuple(map(int, line.split())) for line in log.read_text().splitlines())


def test_a_second_signal_stops_at_once():
    request = StopRequest(Path("/nonexistent-store"))
    before = signal.getsignal(signal.SIGTERM)
    with request.on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        assert request.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGUSR1)
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigusr1_stops_a_serial_run_after_a_checkpoint_and_the_rerun_resumes_it(tmp_path, monkeypatch):
    add_plugin_files([str(PLUGIN)])
    plan = make_plan(load_suite("smoke").narrow(baselines=["test-slow"], seeds=[0], policies=["base"],
                                                preset=str(four_epoch_protocol(tmp_path))))
    search = plan.searches[0]
    log = tmp_path / "epochs.log"
    monkeypatch.setenv("LHDBENCH_TEST_EPOCH_LOG", str(log))
    monkeypatch.setenv("LHDBENCH_TEST_SIGNAL_EPOCH", "1")
    monkeypatch.setenv("LHDBENCH_TEST_SIGNAL_PID", str(os.getpid()))
    handler = signal.getsignal(signal.SIGUSR1)

    stopped = run_plan(plan, tmp_path / "store", RunOptions(executor="serial"), progress_stream=io.StringIO())
    store = Store(tmp_path / "store")
    assert stopped.stopping and stopped.stop.signal_name == "SIGUSR1"
    assert stopped.counts == {"done": 0, "failed": 0} and stopped.stopped == 1 and stopped.to_run == 2
    assert store.read_record(search.trial_id) is None  # stopped is not failed: no record
    assert [e["event"] for e in store.events(search.trial_id)] == ["start", "stopped"]
    checkpoint = load_checkpoint(store.trial_dir(search.trial_id) / "checkpoint.pt", torch.device("cpu"))
    assert checkpoint["loop"]["epoch"] == 1  # two of four epochs left
    assert signal.getsignal(signal.SIGUSR1) == handler and not (store.root / STOP_FOLDER).exists()

    monkeypatch.delenv("LHDBENCH_TEST_SIGNAL_EPOCH")
    resumed = run_plan(plan, store.root, RunOptions(executor="serial"), progress_stream=io.StringIO())
    assert resumed.counts == {"done": 2, "failed": 0} and not resumed.stopping
    assert epoch_runs(log) == Counter({(0, 0): 1, (0, 1): 1, (0, 2): 1, (0, 3): 1})
    trail = store.events(search.trial_id)
    assert [e["event"] for e in trail] == ["start", "stopped", "start", "resume", "done"]
    assert trail[3]["epochs_done"] == 2

    whole = run_plan(plan, tmp_path / "whole", RunOptions(executor="serial"), progress_stream=io.StringIO())
    assert whole.counts["done"] == 2
    a, b = (load_arch_weights(Store(root).trial_dir(search.trial_id) / "arch.npz")
            for root in (tmp_path / "whole", store.root))
    for x, y in zip(a.matrices(), b.matrices(), strict=True):
        np.testing.assert_array_equal(x, y)
    losses = [[h["train_loss"] for h in Store(root).read_record(search.trial_id).history]
              for root in (tmp_path / "whole", store.root)]
    assert losses[0] == losses[1]


@pytest.mark.slow
def test_sigterm_ends_a_ray_run_cleanly_and_the_rerun_runs_no_epoch_twice(tmp_path):
    """The Ray executor: the trials see the driver's request through the store and stop after their
    next checkpoint; the driver exits with 75 and one line saying what is left."""
    log = tmp_path / "epochs.log"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "OMP_NUM_THREADS": "1",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "LHDBENCH_TEST_EPOCH_LOG": str(log),
           "LHDBENCH_TEST_EPOCH_SECONDS": "1"}
    command = [LHDBENCH, "benchmark", "--suite", "smoke", "--baselines", "test-slow", "--seeds", "0,1",
               "--policies", "base", "--preset", str(four_epoch_protocol(tmp_path)), "--plugin", str(PLUGIN),
               "--storage", str(tmp_path / "store")]
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (log.exists() and log.read_text().strip()):
            assert driver.poll() is None, driver.stderr.read()[-3000:]
            time.sleep(0.2)
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == STOPPED_EXIT, err[-3000:]
    assert "stopped on SIGTERM: this run finished" in err.strip().splitlines()[-1]
    store = Store(tmp_path / "store")
    plan_ids = list(store.read_plan()["trials"])
    events = {t: [e["event"] for e in store.events(t)] for t in plan_ids}
    assert any("stopped" in e for e in events.values()), events
    assert not any("failed" in e for e in events.values()) and not list(store.records_dir.glob("*.invalid"))
    done_before = {p.name: p.read_bytes() for p in store.records_dir.glob("*.json")}
    assert len(done_before) < len(plan_ids)

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {t: r.status for t, r in store.records().items()} == {t: "done" for t in plan_ids}
    assert all(store.record_path(name[:-5]).read_bytes() == data for name, data in done_before.items())
    assert epoch_runs(log) == Counter({(s, e): 1 for s in (0, 1) for e in range(4)})
    for trial_id in plan_ids:  # each trial ended once; a second start only ever follows a stop
        trail = [e["event"] for e in store.events(trial_id)]
        assert trail.count("done") == 1 and trail[-1] == "done"
        assert all(trail[i - 1] == "stopped" for i, e in enumerate(trail) if e == "start" and i)
