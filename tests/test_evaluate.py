"""The evaluation loop on the embedded digits set with the smoke protocol (CPU, deterministic)."""

import json

import numpy as np
import pytest
import torch

from lhdbench.engine import TrialFailed
from lhdbench.evaluate import RECORD_FILE, build_network, drop_path_target, run_evaluation
from lhdbench.protocol import load_protocol
from lhdbench.space import ArchWeights, discretize, get_policy
from lhdbench.space.network import FinalNetwork


def weights(seed=0) -> ArchWeights:
    rng = np.random.default_rng(seed)
    nodes, outputs = rng.normal(size=(20, 7)), rng.normal(size=(2, 5))
    return ArchWeights.from_logits(nodes, nodes, outputs, outputs)


@pytest.fixture(scope="module")
def smoke():
    return load_protocol("smoke")


def test_smoke_evaluation_records_final_and_best_accuracy(tmp_path, smoke):
    record = run_evaluation(weights(), get_policy("base"), "digits", 0, smoke, tmp_path, progress=False)
    stored = json.loads((tmp_path / RECORD_FILE).read_text())
    assert stored["status"] == "done"
    for key in ("final_test_acc", "best_test_acc", "best_epoch", "params", "wall_time_s", "genotype",
                "environment", "history", "drop_path_max", "epochs_per_s", "peak_gpu_memory_bytes"):
        assert key in stored, key
    assert 0 <= record.final_test_acc <= 1
    # best_after_epoch 0 in smoke: the paper metric is the best over epochs 1.. (here only epoch 1)
    assert record.best_epoch == 1 and record.best_test_acc == record.history[1]["test_acc"]
    assert record.final_test_acc == record.history[-1]["test_acc"]
    # Epoch 0 is tested for the learning-curve points only (every fraction of 2 epochs falls on it);
    # the paper metric above still reads epoch 1 alone.
    assert [p.epoch for p in record.curve] == [0] * 5 and "test_acc" in record.history[0]


def test_resume_after_an_epoch_equals_an_uninterrupted_run(tmp_path, smoke):
    protocol = smoke.replace(evaluate={**smoke.to_dict()["evaluate"], "epochs": 3})
    whole = run_evaluation(weights(1), get_policy("3ops"), "digits", 2, protocol, tmp_path / "whole",
                           progress=False)
    original = FinalNetwork.train

    def stop_in_epoch_2(self, mode=True):
        if mode and getattr(self, "_stop_after", 0) == 2:
            raise KeyboardInterrupt
        if mode:
            self._stop_after = getattr(self, "_stop_after", 0) + 1
        return original(self, mode)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FinalNetwork, "train", stop_in_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            run_evaluation(weights(1), get_policy("3ops"), "digits", 2, protocol, tmp_path / "cut",
                           progress=False)
    assert (tmp_path / "cut" / "checkpoint.pt").exists() and not (tmp_path / "cut" / RECORD_FILE).exists()
    resumed = run_evaluation(weights(1), get_policy("3ops"), "digits", 2, protocol, tmp_path / "cut",
                             progress=False)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    assert resumed.final_test_acc == whole.final_test_acc


def test_non_finite_loss_fails_with_a_reason(tmp_path, smoke, monkeypatch):
    original = FinalNetwork.forward

    def poisoned(self, x):
        logits, aux = original(self, x)
        return logits * float("nan"), aux

    monkeypatch.setattr(FinalNetwork, "forward", poisoned)
    with pytest.raises(TrialFailed, match="non-finite"):
        run_evaluation(weights(), get_policy("base"), "digits", 0, smoke, tmp_path, progress=False)
    assert json.loads((tmp_path / RECORD_FILE).read_text())["status"] == "failed"


def test_drop_path_target_uses_the_normal_concat_count_and_policy_rate():
    genotype = discretize(weights(), get_policy("4out"))
    assert len(genotype.normal.concat) == 4
    assert drop_path_target(genotype, get_policy("4out"), "cifar100") == pytest.approx(4 * 0.02)
    one_m = discretize(weights(), get_policy("1m"))
    assert drop_path_target(one_m, get_policy("1m"), "svhn") == pytest.approx(len(one_m.normal.concat) * 0.03)
    # Datasets outside the paper take the CIFAR-10 rate.
    assert drop_path_target(genotype, get_policy("4out"), "digits") == pytest.approx(4 * 0.01)


def test_paper_settings_build_the_policy_network_and_smoke_overrides_it(smoke):
    genotype = discretize(weights(), get_policy("base"))
    paper = build_network(genotype, get_policy("base"), 10, load_protocol("paper").evaluate)
    assert (paper.layers, paper.channels) == (20, 36) and paper.auxiliary_head is not None
    small = build_network(genotype, get_policy("base"), 10, smoke.evaluate)
    assert (small.layers, small.channels) == (3, 8)
    no_aux = build_network(genotype, get_policy("base"), 10,
                           smoke.replace(evaluate={**smoke.to_dict()["evaluate"],
                                                   "auxiliary_weight": 0}).evaluate)
    assert no_aux.auxiliary_head is None


def test_test_images_are_never_augmented(tmp_path, smoke, monkeypatch):
    import lhdbench.evaluate as evaluate_module

    made = []
    real = evaluate_module.GpuBatchStream

    def recording(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "GpuBatchStream", recording)
    run_evaluation(weights(), get_policy("base"), "digits", 0, smoke, tmp_path,
                   progress=False)
    test_streams = [k for k in made if k.get("shuffle") is False]
    assert test_streams and all(not k.get("augment") and not k.get("cutout") for k in test_streams)


def test_channels_last_matches_contiguous_on_cpu():
    genotype = discretize(weights(), get_policy("base"))
    torch.manual_seed(0)
    net = FinalNetwork(genotype, 10, 8, 3).eval()
    x = torch.randn(4, 3, 32, 32)
    expected, _ = net(x)
    net = net.to(memory_format=torch.channels_last)
    got, _ = net(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
