"""Faults in a trial's files and surroundings, each seen to break before (the second outside fault
round): a selection on a store copied without the search's checkpoint, a checkpoint of an older
layout, a selection's genotype file gone, a full disk under Ray's folder; and a resumed trial saying
so."""

from __future__ import annotations

import errno
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lhdbench.checkpoint import CHECKPOINT_NAME, Checkpointer, LoopState, save_checkpoint
from lhdbench.methods import get_method
from lhdbench.plan import load_suite, make_plan
from lhdbench.protocol import load_protocol
from lhdbench.record import TrialRecord
from lhdbench.runner import run_trial
from lhdbench.search import ARCH_FILE, run_search
from lhdbench.space import discretize, get_policy, load_arch_weights
from lhdbench.store import Store


def smoke_plan(baseline: str, selections=("magnitude",)):
    return make_plan(load_suite("smoke").narrow(baselines=[baseline], seeds=[0], policies=["base"],
                                                selections=list(selections)))


def stopping_at(cls, epoch: int):
    original = cls.on_epoch_start

    def on_epoch_start(self, e):
        if e == epoch:
            raise KeyboardInterrupt
        return original(self, e)

    return on_epoch_start


# -- a perturbation selection needs the searched supernet -------------------------------------------

def test_a_selection_whose_search_left_no_final_checkpoint_fails_and_selects_nothing(tmp_path):
    plan = smoke_plan("darts", selections=("perturbation",))
    search, selection = plan.of_phase("search")[0], plan.of_phase("select")[0]
    protocol = plan.protocol.to_dict()
    assert run_trial(search, protocol, tmp_path).status == "done"
    store = Store(tmp_path)
    checkpoint = store.trial_dir(search.trial_id) / CHECKPOINT_NAME
    state = torch.load(checkpoint, weights_only=True)

    checkpoint.unlink()  # a store copied without its checkpoints
    record = run_trial(selection, protocol, tmp_path)
    assert record.status == "failed" and str(checkpoint) in record.reason and "missing" in record.reason
    assert not (store.trial_dir(selection.trial_id) / "genotype.json").exists()

    state["loop"]["epoch"] = 0  # a checkpoint of the search's first epoch, not its last
    save_checkpoint(checkpoint, state)
    record = run_trial(selection, protocol, tmp_path)
    assert record.status == "failed" and "holds epoch 0, not the search's last (1)" in record.reason


def test_a_method_that_trains_nothing_is_selected_on_its_rebuilt_supernet(tmp_path):
    """random's search writes no checkpoint; its supernet is the seeded initialization, rebuilt."""
    import lhdbench.select as select
    from lhdbench.methods import resolve_settings

    protocol = load_protocol("smoke")
    cls = get_method("random")
    settings, hparams = resolve_settings(cls, protocol)
    torch.manual_seed(0)
    _, supernet, _ = select._searched_supernet(cls, settings, hparams, 10, tmp_path, protocol.speed,
                                               torch.device("cpu"))
    torch.manual_seed(0)
    expected = cls(settings, hparams).build_supernet(10)
    torch.testing.assert_close(supernet.alphas_normal, expected.alphas_normal)


# -- checkpoints that load but lack a part ---------------------------------------------------------

def test_a_search_checkpoint_from_before_arch_history_is_set_aside_and_the_search_starts_over(
        tmp_path, capsys):
    """A checkpoint written before the loop kept `arch_history` loads, but lacks that value: the
    search starts over (and ends as an uninterrupted one) instead of failing every rerun."""
    protocol = load_protocol("smoke").replace(search={"epochs": 3})
    whole = run_search("darts", "digits", 0, protocol, tmp_path / "whole", progress=False)
    cls = get_method("darts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cls, "on_epoch_start", stopping_at(cls, 1))  # two epochs left
        with pytest.raises(KeyboardInterrupt):
            run_search("darts", "digits", 0, protocol, tmp_path / "old", progress=False)
    checkpoint = tmp_path / "old" / CHECKPOINT_NAME
    state = torch.load(checkpoint, weights_only=True)
    del state["loop"]["values"]["arch_history"]
    save_checkpoint(checkpoint, state)
    capsys.readouterr()

    resumed = run_search("darts", "digits", 0, protocol, tmp_path / "old", progress=False)
    assert resumed.status == "done"
    assert (tmp_path / "old" / "checkpoint.pt.invalid").is_file()
    err = capsys.readouterr().err
    assert "arch_history" in err and "starts over" in err
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    assert len(resumed.arch_history) == 3
    for a, b in zip(load_arch_weights(tmp_path / "whole" / ARCH_FILE).matrices(),
                    load_arch_weights(tmp_path / "old" / ARCH_FILE).matrices(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_part_that_fails_half_way_leaves_every_part_as_a_fresh_trial_has_it(tmp_path):
    """The first part loads, the second does not fit: the first is put back, and the trial starts
    over in this attempt."""
    torch.manual_seed(0)
    first, second = nn.Linear(2, 2), nn.Linear(3, 3)
    fresh = {k: v.clone() for k, v in first.state_dict().items()}
    path = tmp_path / CHECKPOINT_NAME
    torch.manual_seed(1)
    Checkpointer(path, {"trial": 1}, {"a": nn.Linear(2, 2), "b": nn.Linear(4, 4),
                                      "loop": LoopState(epoch=3)}).save()
    loop = LoopState()
    assert Checkpointer(path, {"trial": 1}, {"a": first, "b": second, "loop": loop}).resume(
        torch.device("cpu")) is False
    for key, value in first.state_dict().items():
        torch.testing.assert_close(value, fresh[key], rtol=0, atol=0)
    assert loop.epoch == -1
    assert not path.exists() and (tmp_path / "checkpoint.pt.invalid").is_file()


# -- a resumed trial says so -----------------------------------------------------------------------

def test_a_resumed_trial_logs_an_event_and_says_after_how_many_epochs(tmp_path, capsys):
    protocol = load_protocol("smoke")
    plan = make_plan(load_suite("smoke").narrow(baselines=["darts"], seeds=[0], policies=["base"]),
                     protocol)
    search = plan.of_phase("search")[0]
    cls = get_method("darts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cls, "on_epoch_start", stopping_at(cls, 1))
        with pytest.raises(KeyboardInterrupt):
            run_trial(search, plan.protocol.to_dict(), tmp_path)
    notes = []
    assert run_trial(search, plan.protocol.to_dict(), tmp_path, note=notes.append).status == "done"
    assert notes == [f"lhdbench: trial {search.trial_id} resumed from its checkpoint after 1 epoch(s)"]
    events = Store(tmp_path).events(search.trial_id)
    assert [(e["event"], e.get("epochs_done")) for e in events] == [
        ("start", None), ("start", None), ("resume", 1), ("done", None)]

    # Outside a store (`lhdbench search --out DIR`): a line on stderr.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cls, "on_epoch_start", stopping_at(cls, 1))
        with pytest.raises(KeyboardInterrupt):
            run_search("darts", "digits", 0, protocol, tmp_path / "single", progress=False)
    capsys.readouterr()
    run_search("darts", "digits", 0, protocol, tmp_path / "single", progress=False)
    assert "after 1 epoch(s); continuing with epoch 1" in capsys.readouterr().err


# -- a done selection whose genotype file is gone --------------------------------------------------

def test_an_evaluation_of_a_selection_whose_genotype_file_is_gone_trains_the_recorded_genotype(tmp_path):
    plan = smoke_plan("random", selections=("perturbation",))
    search, selection = plan.of_phase("search")[0], plan.of_phase("select")[0]
    evaluation = plan.of_phase("evaluate")[0]
    protocol = plan.protocol.to_dict()
    assert run_trial(search, protocol, tmp_path).status == "done"
    # The selection's record as a finished selection leaves it, its genotype.json not copied along.
    genotype = discretize(load_arch_weights(Store(tmp_path).trial_dir(search.trial_id) / ARCH_FILE),
                          get_policy("base"))
    store = Store(tmp_path)
    store.write_record(TrialRecord.done(**selection.to_dict(), protocol=protocol, settings=protocol["select"],
                                        genotype=genotype.to_dict(), measurements=0, epochs=0,
                                        wall_time_s=0.0))
    record = run_trial(evaluation, protocol, tmp_path)
    assert record.status == "done", record.reason
    assert record.genotype == genotype.to_dict()
    assert record.arch_file == str(store.record_path(selection.trial_id))


# -- a full disk under Ray's folder ----------------------------------------------------------------

def test_a_full_disk_met_by_tune_names_the_folder_in_one_line(tmp_path, monkeypatch, capsys):
    """pyarrow's writes (Tune's experiment state) raise ENOSPC without a file name."""
    from lhdbench.cli import _report
    from lhdbench.runner import Dispatch, RunOptions, ray_tune
    from lhdbench.runner.progress import ProgressLine

    plan = smoke_plan("random")
    store = Store(tmp_path / "store")
    executor = object.__new__(ray_tune.RayExecutor)  # the cluster part is not what is tested here
    executor.plan, executor.store, executor.options, executor.private = plan, store, RunOptions(), None
    executor.resources = {t.trial_id: ray_tune.Resources() for t in plan.trials}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left")

    monkeypatch.setattr(ray_tune.tune, "Tuner", full)
    # Both would put the trial's arguments into Ray's object store, which needs a running Ray.
    monkeypatch.setattr(ray_tune.tune, "with_parameters", lambda trainable, **kwargs: trainable)
    monkeypatch.setattr(ray_tune.tune, "with_resources", lambda trainable, resources: trainable)
    dispatch = Dispatch(plan, store)
    with pytest.raises(OSError) as raised:
        executor.run(dispatch, ProgressLine(dispatch, stream=io.StringIO()))
    assert raised.value.filename == str(store.root / "ray")
    assert _report(raised.value) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(store.root / "ray") in lines[0] and "No space left" in lines[0]


def test_the_folder_named_is_the_one_whose_disk_is_full(tmp_path, monkeypatch):
    from lhdbench.runner.ray_tune import located

    roomy, full = tmp_path / "roomy", tmp_path / "full"
    roomy.mkdir()
    full.mkdir()
    real = __import__("os").statvfs

    class Stats:
        f_bavail = 0

    monkeypatch.setattr("os.statvfs", lambda p: Stats() if Path(p) == full else real(p))
    error = located(OSError(errno.ENOSPC, "No space left on device"), [roomy, full])
    assert error.filename == str(full) and error.errno == errno.ENOSPC
    named = OSError(errno.ENOSPC, "No space left on device", "/some/file")
    assert located(named, [roomy]) is named  # a file name already: kept
    other = OSError(errno.ECONNREFUSED, "refused")
    assert located(other, [roomy]) is other  # not the disk: kept

