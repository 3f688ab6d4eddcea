"""The evaluation loop against the same training written out here (loss, clipping, SGD, cosine schedule,
drop-path ramp), and a resume with two epochs left against the uninterrupted run."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lhdbench.checkpoint
from lhdbench.data import GpuBatchStream, get_dataset, load_images
from lhdbench.evaluate import run_evaluation
from lhdbench.protocol import load_protocol
from lhdbench.space import ArchWeights, FinalNetwork, discretize, get_policy

SEED = 3
POLICY = "base"
# Every value differs from its default and from the others, so a setting read from the wrong place, or
# not at all, changes the result. grad_clip is far below the gradient norm, so every step is clipped
# (the reference asserts it); four epochs with drop path on make the ramp's steps count.
EVALUATE = {"epochs": 4, "lr": 0.07, "lr_min": 0.004, "momentum": 0.6, "weight_decay": 0.02,
            "grad_clip": 0.25, "auxiliary_weight": 0.3, "drop_path": True, "best_after_epoch": 1,
            "steps_per_epoch": 2, "max_train_images": 48, "max_test_images": 48}


def arch_weights() -> ArchWeights:
    rng = np.random.default_rng(11)
    return ArchWeights.from_logits(rng.normal(size=(20, 7)), rng.normal(size=(20, 7)),
                                   rng.normal(size=(2, 5)), rng.normal(size=(2, 5)))


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("smoke").replace(evaluate=EVALUATE)


def evaluate(protocol, out: Path) -> dict:
    run_evaluation(arch_weights(), get_policy(POLICY), "digits", SEED, protocol, out, progress=False)
    return json.loads((out / "record.json").read_text())


def final_model(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def whole(protocol, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evaluate") / "whole"
    evaluate(protocol, out)
    return out


def reference_training(protocol) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """The evaluation protocol written out: seeded network, CE + w * aux CE, clip by global norm, SGD
    with momentum and weight decay, cosine LR per epoch, linear drop-path ramp. Returns the history
    and the final state dict."""
    s = protocol.evaluate
    policy = get_policy(POLICY)
    genotype = discretize(arch_weights(), policy)
    spec = get_dataset("digits")
    torch.manual_seed(SEED)  # the network's initialization and every drop-path draw come from here
    model = FinalNetwork(genotype, spec.num_classes, s.init_channels, s.layers, auxiliary=True)
    train = load_images("digits", train=True).head(s.max_train_images)
    test = load_images("digits", train=False).head(s.max_test_images)
    train_stream = GpuBatchStream(train, spec, s.batch_size, augment=True, cutout=s.cutout, seed=SEED)
    test_stream = GpuBatchStream(test, spec, s.batch_size, shuffle=False)
    # Datasets outside the paper take the CIFAR-10 rate; p_max = normal concat count x rate.
    p_max = len(genotype.normal.concat) * policy.drop_path["cifar10"]
    assert p_max > 0
    params = list(model.parameters())
    momentum: list[torch.Tensor | None] = [None] * len(params)
    # The learning-curve points: the test set also after the first ceil(f x epochs) epochs.
    fractions = ("1/12", "1/6", "1/4", "1/3", "1/2")
    curve = {f: max(1, math.ceil(Fraction(f) * s.epochs)) - 1 for f in fractions}
    history = []
    for epoch in range(s.epochs):
        lr = s.lr_min + (s.lr - s.lr_min) * (1 + math.cos(math.pi * epoch / s.epochs)) / 2
        model.drop_path_prob = p_max * epoch / s.epochs
        model.train()
        loss_sum, correct, count = 0.0, 0, 0
        for _, (x, y) in zip(range(s.steps_per_epoch), train_stream.epoch(), strict=False):
            logits, aux = model(x)
            loss = F.cross_entropy(logits, y) + s.auxiliary_weight * F.cross_entropy(aux, y)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads if g is not None]))
            assert norm > s.grad_clip  # else the test could not tell clipping by norm from none
            scale = s.grad_clip / (norm + 1e-6)
            with torch.no_grad():
                for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                    if g is None:  # SGD leaves a parameter without a gradient alone, decay included
                        continue
                    d = g * scale + s.weight_decay * p
                    momentum[i] = d if momentum[i] is None else s.momentum * momentum[i] + d
                    p -= lr * momentum[i]
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
        entry = {"epoch": epoch, "train_loss": loss_sum / count, "train_acc": correct / count,
                 "drop_path_prob": p_max * epoch / s.epochs}
        if epoch > s.best_after_epoch or epoch == s.epochs - 1 or epoch in curve.values():
            model.eval()
            with torch.no_grad():
                hits = sum(int((model(x)[0].argmax(1) == y).sum()) for x, y in test_stream.epoch())
            entry["test_acc"] = hits / len(test)
        history.append(entry)
    points = [{"fraction": f, "epoch": e, "test_acc": history[e]["test_acc"]} for f, e in curve.items()]
    return history, points, model.state_dict()


def test_evaluation_matches_the_training_written_out(protocol, whole):
    record = json.loads((whole / "record.json").read_text())
    history, points, state = reference_training(protocol)
    got = record["history"]
    assert [h["epoch"] for h in got] == list(range(protocol.evaluate.epochs))
    for mine, theirs in zip(history, got, strict=True):
        assert theirs["drop_path_prob"] == pytest.approx(mine["drop_path_prob"], rel=1e-6, abs=1e-12)
        assert theirs["train_loss"] == pytest.approx(mine["train_loss"], rel=1e-5)
        assert theirs["train_acc"] == mine["train_acc"]
        assert ("test_acc" in theirs) == ("test_acc" in mine)
        if "test_acc" in mine:
            assert theirs["test_acc"] == mine["test_acc"]
    assert record["final_test_acc"] == history[-1]["test_acc"]
    best = max(history[protocol.evaluate.best_after_epoch + 1:], key=lambda h: h["test_acc"])
    assert record["best_test_acc"] == best["test_acc"]
    assert record["curve"] == points and [p["epoch"] for p in points] == [0, 0, 0, 1, 1]
    stored = final_model(whole)
    assert set(stored) == set(state)
    # Float noise only: the two compute gradients in another order (autograd.grad against backward),
    # and eight steps carry it to a few 1e-5 on weights of about 0.2, more on some CPUs than others. A
    # wrong setting (learning rate, decay, momentum, clipping) moves them by 1e-3 and more.
    for name, tensor in state.items():
        torch.testing.assert_close(stored[name], tensor, rtol=1e-3, atol=1e-4, msg=name)


def test_resume_with_two_epochs_left_equals_the_uninterrupted_run(protocol, whole, tmp_path):
    """Two epochs left: the optimizer's state carries the next epoch's lr, so only the epoch after it
    shows whether the schedule itself was restored."""
    real = lhdbench.checkpoint.save_checkpoint
    saved = []

    def save_then_stop(path, state):
        real(path, state)
        saved.append(state["loop"]["epoch"])
        if state["loop"]["epoch"] == 1:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lhdbench.checkpoint, "save_checkpoint", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            evaluate(protocol, cut)
    assert saved == [0, 1] and protocol.evaluate.epochs - len(saved) >= 2
    assert not (cut / "record.json").exists()
    resumed = evaluate(protocol, cut)
    uninterrupted = json.loads((whole / "record.json").read_text())
    assert resumed["history"] == uninterrupted["history"]
    assert resumed["curve"] == uninterrupted["curve"] and len(resumed["curve"]) == 5
    a, b = final_model(whole), final_model(cut)
    assert set(a) == set(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
