"""The graphed training step on a GPU: it computes the plain step (fp32, to float tolerance, a smaller
last batch and learning-rate changes included), draws fresh drop-path masks on every replay, captures
again when drop path switches on, and a graphed evaluation resumes like an uninterrupted one."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import random_arch_weights
from test_train_step import stopped_and_resumed

from lhdbench.protocol import load_protocol
from lhdbench.space import POLICIES, FinalNetwork, discretize
from lhdbench.train_step import TrainStep, make_optimizer

DEVICE = torch.device("cuda", 0) if torch.cuda.is_available() else None
pytestmark = pytest.mark.skipif(DEVICE is None,
                                reason="needs a CUDA GPU (benchmarks/gpu.sh runs these on one)")


def network() -> FinalNetwork:
    weights = random_arch_weights(np.random.default_rng(0))
    torch.manual_seed(0)
    return FinalNetwork(discretize(weights, POLICIES["base"]), 10, 16, 8).to(DEVICE).train()


def steps_for(model, graphs: bool, lr: float = 0.05):
    optimizer = make_optimizer(model, lr, 0.9, 3e-4, graphs, DEVICE)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 4)
    return TrainStep(model, model, optimizer, 0.4, 5.0, lambda: torch.autocast("cuda", enabled=False),
                     graphs=graphs), scheduler


def batches(n: int, last: int = 24):
    g = torch.Generator().manual_seed(1)
    sizes = [32] * (n - 1) + [last]
    return [(torch.randn(b, 3, 32, 32, generator=g).to(DEVICE),
             torch.randint(0, 10, (b,), generator=g).to(DEVICE)) for b in sizes]


def test_the_graphed_step_computes_the_plain_one():
    torch.backends.cudnn.deterministic = True
    plain_model = network()
    graphed_model = copy.deepcopy(plain_model)
    data = batches(16)
    results = {}
    for name, model in (("plain", plain_model), ("graphed", graphed_model)):
        step, scheduler = steps_for(model, graphs=name == "graphed")
        model.drop_path_prob = 0.0
        losses = []
        for i, (x, y) in enumerate(data):
            loss, logits = step.step(x, y)
            losses.append(float(loss))
            if i % 5 == 4:
                scheduler.step()
        results[name] = losses
        if name == "graphed":
            assert len(step._captured) == 2  # the full batches and the smaller last one
    assert results["graphed"] == pytest.approx(results["plain"], rel=2e-4, abs=1e-5)
    for p, q in zip(plain_model.parameters(), graphed_model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-5)


def test_drop_path_masks_are_drawn_afresh_on_every_replay_and_switching_it_on_captures_again():
    model = network()
    step, _ = steps_for(model, graphs=True, lr=0.0)  # lr 0: the weights stay, only the masks change
    x, y = batches(2)[0]
    model.drop_path_prob = 0.0
    for _ in range(5):
        step.step(x, y)
    assert [k[2] for k in step._captured] == [False]
    model.drop_path_prob = 0.3
    losses = [float(step.step(x, y)[0]) for _ in range(8)]
    assert [k[2] for k in step._captured] == [True]
    replayed = losses[4:]  # after the warm-up steps and the capture
    assert len(set(replayed)) == len(replayed), replayed
    assert all(np.isfinite(replayed))


def test_a_graphed_evaluation_resumes_like_an_uninterrupted_one(tmp_path):
    protocol = load_protocol("smoke").replace(evaluate={"epochs": 4, "steps_per_epoch": 6},
                                              speed={"cuda_graphs": True})
    whole, resumed = stopped_and_resumed(protocol, tmp_path, "cuda")
    for a, b in zip(whole.history, resumed.history, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
