"""The progress line counts a trial handed to Ray Tune as running only once its process holds the
trial's lock; before that it is queued (on a 2-core machine Tune hands out a third trial that waits)."""

from __future__ import annotations

import io

from lhdbench.plan import load_suite, make_plan
from lhdbench.runner.dispatch import Dispatch
from lhdbench.runner.progress import ProgressLine
from lhdbench.store import Store


def test_handed_out_trials_that_have_not_started_are_queued(tmp_path):
    plan = make_plan(load_suite("smoke").narrow(baselines=["darts", "gdas", "random"], seeds=[0]))
    store = Store(tmp_path / "store")
    dispatch = Dispatch(plan, store)
    handed = [dispatch.next_trial().trial_id for _ in range(3)]
    started = {handed[0], handed[2]}
    line = ProgressLine(dispatch, io.StringIO(), started=started.__contains__).counts_line()
    assert "| running 2 (+1 queued) |" in line
    names = line.split("| now: ")[1].split(", ")
    assert len(names) == 2 and not any(handed[1].startswith(n) for n in names)
    # Without a way to tell (the serial executor runs what it hands out), every handed-out trial runs.
    assert "| running 3 |" in ProgressLine(dispatch, io.StringIO()).counts_line()


def test_a_trial_runs_while_its_process_holds_its_lock(tmp_path):
    store = Store(tmp_path / "store")
    store.trial_dir("t").mkdir(parents=True)
    assert not store.is_running("t")
    with store.trial_lock("t"):
        assert store.is_running("t")
    assert not store.is_running("t")
