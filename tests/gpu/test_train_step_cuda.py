"""The graphed training step on a GPU: it computes the plain step (fp32, to float tolerance, over three
epochs whose short last batch runs eagerly between replays, learning-rate changes included), draws fresh
drop-path masks on every replay, captures again when drop path switches on, and a graphed evaluation
resumes like an uninterrupted one."""

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


def test_the_graphed_step_computes_the_plain_one(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # restored for later tests
    # In float64, so that the comparison checks the arithmetic: in float32 a rounding difference can
    # flip a max-pool choice of this small random network and part the runs (tests/test_train_step.py).
    # benchmarks/train_step.py records the fp32 difference on the paper's network.
    plain_model = network().double()
    graphed_model = copy.deepcopy(plain_model)
    # Three epochs of five full batches and a short one: the full batches warm up, are captured and
    # replayed; the short one runs eagerly between replays, once per epoch.
    epochs = [[(x.double(), y) for x, y in batches(6)] for _ in range(3)]
    results = {}
    for name, model in (("plain", plain_model), ("graphed", graphed_model)):
        step, scheduler = steps_for(model, graphs=name == "graphed")
        model.drop_path_prob = 0.0
        losses = []
        for data in epochs:
            for x, y in data:
                loss, logits = step.step(x, y)
                losses.append(float(loss))
            scheduler.step()
        results[name] = losses
        if name == "graphed":
            assert [k.shape[0] for k in step._captured] == [32]  # the short batch has no graph
    # The learning rate tensor is float32 (fused SGD's), 1e-8 apart from the float one.
    assert results["graphed"] == pytest.approx(results["plain"], rel=1e-6, abs=1e-9)
    for p, q in zip(plain_model.parameters(), graphed_model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)


def test_drop_path_masks_are_drawn_afresh_on_every_replay_and_switching_it_on_captures_again():
    model = network()
    step, _ = steps_for(model, graphs=True, lr=0.0)  # lr 0: the weights stay, only the masks change
    x, y = batches(2)[0]
    model.drop_path_prob = 0.0
    for _ in range(5):
        step.step(x, y)
    assert [k.drop_path for k in step._captured] == [False]
    model.drop_path_prob = 0.3
    losses = [float(step.step(x, y)[0]) for _ in range(8)]
    assert [k.drop_path for k in step._captured] == [True]
    replayed = losses[4:]  # after the warm-up steps and the capture
    assert len(set(replayed)) == len(replayed), replayed
    assert all(np.isfinite(replayed))


def test_a_graphed_evaluation_resumes_like_an_uninterrupted_one(tmp_path):
    protocol = load_protocol("smoke").replace(evaluate={"epochs": 4, "steps_per_epoch": 6},
                                              speed={"cuda_graphs": True})
    whole, resumed = stopped_and_resumed(protocol, tmp_path, "cuda")
    for a, b in zip(whole.history, resumed.history, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
