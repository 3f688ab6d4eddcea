"""Learning-curve points: every evaluation records its test accuracy after fixed fractions of its
schedule, without changing its training or its identity."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import torch

import lhdbench.evaluate as evaluate_module
from lhdbench.checkpoint import CHECKPOINT_NAME
from lhdbench.evaluate import RECORD_FILE, curve_epochs, curve_points, run_evaluation
from lhdbench.plan import load_suite, make_plan
from lhdbench.protocol import load_protocol
from lhdbench.record import TrialRecord, read_record
from lhdbench.space import ArchWeights, get_policy


def weights(seed: int = 3) -> ArchWeights:
    rng = np.random.default_rng(seed)
    nodes, outputs = rng.normal(size=(20, 7)), rng.normal(size=(2, 5))
    return ArchWeights.from_logits(nodes, nodes, outputs, outputs)


def test_fractions_fall_on_the_epoch_after_which_that_share_is_trained():
    # ceil(f x epochs) epochs trained, as a 0-based index
    assert curve_epochs(600) == {"1/12": 49, "1/6": 99, "1/4": 149, "1/3": 199, "1/2": 299}
    assert curve_epochs(150) == {"1/12": 12, "1/6": 24, "1/4": 37, "1/3": 49, "1/2": 74}
    # A short schedule: several fractions share an epoch; never before the first epoch.
    assert curve_epochs(3) == {"1/12": 0, "1/6": 0, "1/4": 0, "1/3": 0, "1/2": 1}
    assert curve_epochs(1) == dict.fromkeys(("1/12", "1/6", "1/4", "1/3", "1/2"), 0)
    assert curve_epochs(7, (Fraction(2, 7),)) == {"2/7": 1}  # exact: no float rounding at the edge


def test_a_fraction_without_a_test_accuracy_in_the_history_is_left_out():
    history = [{"epoch": 0, "train_loss": 1.0}, {"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": 0.7}]
    points = curve_points(history, {"1/12": 0, "1/3": 1, "1/2": 1})
    assert points == [{"fraction": "1/3", "epoch": 1, "test_acc": 0.5},
                      {"fraction": "1/2", "epoch": 1, "test_acc": 0.5}]


@pytest.fixture(scope="module")
def protocol():
    # Five epochs, tested only in the last one otherwise (best_after_epoch 3), so the curve's passes
    # after epochs 0, 1 and 2 are extra; drop path is on, so training draws from the global RNG.
    smoke = load_protocol("smoke")
    chosen = smoke.replace(evaluate={**smoke.to_dict()["evaluate"], "epochs": 5, "best_after_epoch": 3})
    assert chosen.evaluate.drop_path
    return chosen


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, protocol):
    """The same evaluation with the curve points and without them (the fraction list emptied)."""
    root = tmp_path_factory.mktemp("curve")
    with_curve = run_evaluation(weights(), get_policy("base"), "digits", 1, protocol, root / "curve",
                                progress=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate_module, "CURVE_FRACTIONS", ())
        without = run_evaluation(weights(), get_policy("base"), "digits", 1, protocol, root / "plain",
                                 progress=False)
    return root, with_curve, without


def _bytes(value) -> object:
    """A checkpoint's content with every tensor as its raw bytes, dtype and shape."""
    if isinstance(value, torch.Tensor):
        return (str(value.dtype), tuple(value.shape), value.detach().cpu().contiguous().numpy().tobytes())
    if isinstance(value, dict):
        return {k: _bytes(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_bytes(v) for v in value]
    return value


def test_curve_passes_leave_the_final_weights_bitwise_unchanged(two_runs):
    root, with_curve, without = two_runs
    # The extra passes happened: test accuracy after epochs 0, 1 and 2 in one run only.
    assert [("test_acc" in h) for h in with_curve.history] == [True, True, True, False, True]
    assert [("test_acc" in h) for h in without.history] == [False, False, False, False, True]
    a = torch.load(root / "curve" / CHECKPOINT_NAME, weights_only=True)
    b = torch.load(root / "plain" / CHECKPOINT_NAME, weights_only=True)
    # Weights and BN statistics, optimizer, scheduler, the training stream and the global RNG.
    for part in ("model", "optimizer", "scheduler", "train_stream", "rng"):
        assert _bytes(a[part]) == _bytes(b[part]), part
    assert [h["train_loss"] for h in with_curve.history] == [h["train_loss"] for h in without.history]
    assert with_curve.final_test_acc == without.final_test_acc


def test_curve_points_are_recorded_and_shared_where_fractions_fall_on_one_epoch(two_runs):
    root, with_curve, without = two_runs
    tested = {h["epoch"]: h["test_acc"] for h in with_curve.history if "test_acc" in h}
    assert [(p.fraction, p.epoch) for p in with_curve.curve] == [
        ("1/12", 0), ("1/6", 0), ("1/4", 1), ("1/3", 1), ("1/2", 2)]
    assert all(p.test_acc == tested[p.epoch] for p in with_curve.curve)
    assert without.curve == []
    stored = json.loads((root / "curve" / RECORD_FILE).read_text())
    assert stored["curve"][3] == {"fraction": "1/3", "epoch": 1, "test_acc": tested[1]}
    assert read_record(root / "curve" / RECORD_FILE) == with_curve
    # The paper metric still reads only the epochs after best_after_epoch.
    assert with_curve.best_epoch == without.best_epoch == 4


def test_curve_fractions_are_not_part_of_any_trial_identity(two_runs, monkeypatch):
    root, with_curve, without = two_runs
    assert with_curve.inputs == without.inputs
    a = torch.load(root / "curve" / CHECKPOINT_NAME, weights_only=True)
    b = torch.load(root / "plain" / CHECKPOINT_NAME, weights_only=True)
    assert a["inputs"] == b["inputs"]
    suite = load_suite("demo")
    planned = [(t.trial_id, t.settings_id) for t in make_plan(suite).trials]
    monkeypatch.setattr(evaluate_module, "CURVE_FRACTIONS", (Fraction(1, 2),))
    assert [(t.trial_id, t.settings_id) for t in make_plan(suite).trials] == planned


def test_records_without_curve_points_still_read(tmp_path):
    from pathlib import Path

    folder = Path(__file__).parent / "data" / "store-0.1" / "records"
    path = next(p for p in sorted(folder.glob("eval-*.json")))
    assert "curve" not in json.loads(path.read_text())
    assert read_record(path).curve == []
    with pytest.raises(ValueError, match="fraction"):
        TrialRecord.model_validate({**json.loads(read_record(path).to_json()),
                                    "curve": [{"fraction": "half", "epoch": 0, "test_acc": 0.5}]})
