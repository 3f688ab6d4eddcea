"""The evaluation's training step (lhdbench/train_step.py) on the CPU: the plain step is the loop's own
ops, written out here independently; the graph-ready form (fused SGD with a device learning rate,
foreach clipping), which runs eagerly on a CPU, stays within float tolerance of it under the cosine
schedule; `speed.cuda_graphs` leaves every existing trial id alone; and an evaluation in the graph-ready
form resumes exactly. The capture itself needs CUDA: tests/gpu/test_train_step_cuda.py, run by
benchmarks/gpu.sh."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_arch_weights
from torch import nn

from lhdbench.evaluate import run_evaluation
from lhdbench.protocol import load_protocol
from lhdbench.space import POLICIES, FinalNetwork, discretize
from lhdbench.train_step import TrainStep, make_optimizer

LR, MOMENTUM, DECAY, CLIP, AUX = 0.1, 0.9, 3e-4, 5.0, 0.4


def network(seed: int = 0) -> FinalNetwork:
    weights = random_arch_weights(np.random.default_rng(seed))
    torch.manual_seed(seed)
    return FinalNetwork(discretize(weights, POLICIES["base"]), 10, channels=4, layers=5, auxiliary=True)


def batches(n: int, size: int = 8, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, 10, (size,), generator=g))
            for _ in range(n)]


def written_out(model: nn.Module, data, epochs_of: list[int], drop: list[float]) -> list[float]:
    """The upstream training step, op by op, with its float learning rate from the cosine formula."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=DECAY)
    losses = []
    for (x, y), epoch in zip(data, epochs_of, strict=True):
        for group in optimizer.param_groups:
            group["lr"] = 0.5 * LR * (1 + np.cos(np.pi * epoch / 3))
        model.drop_path_prob = drop[epoch]
        logits, aux = model(x)
        loss = F.cross_entropy(logits, y) + AUX * F.cross_entropy(aux, y)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def with_step(model: nn.Module, data, epochs_of: list[int], drop: list[float], graphs: bool) -> list[float]:
    optimizer = make_optimizer(model, LR, MOMENTUM, DECAY, graphs, torch.device("cpu"))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 3, eta_min=0.0)
    step = TrainStep(model, model, optimizer, AUX, CLIP, lambda: torch.autocast("cpu", enabled=False),
                     graphs=graphs)
    losses, current = [], 0
    for (x, y), epoch in zip(data, epochs_of, strict=True):
        while current < epoch:
            scheduler.step()
            current += 1
        model.drop_path_prob = drop[epoch]
        loss, logits = step.step(x, y)
        assert logits.shape == (x.shape[0], 10)
        losses.append(float(loss))
    return losses


EPOCHS = [0, 0, 1, 1, 2, 2]
DROP = [0.0, 0.1, 0.2]  # drop path switches on in the second epoch, as in the real loop


def test_the_plain_step_is_the_upstream_step_exactly():
    data = batches(len(EPOCHS))
    a, b = network().train(), network().train()
    torch.manual_seed(5)
    expected = written_out(a, data, EPOCHS, DROP)
    torch.manual_seed(5)
    got = with_step(b, data, EPOCHS, DROP, graphs=False)
    assert got == expected
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_the_graph_ready_step_stays_within_float_tolerance_of_the_plain_one():
    data = batches(len(EPOCHS))
    a, b = network().train(), network().train()
    torch.manual_seed(5)
    plain = with_step(a, data, EPOCHS, DROP, graphs=False)
    torch.manual_seed(5)
    ready = with_step(b, data, EPOCHS, DROP, graphs=True)
    assert ready == pytest.approx(plain, rel=1e-5, abs=1e-6)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6)
    # And not trivially: the parameters did move.
    assert any(not torch.equal(p, q) for p, q in zip(network().parameters(), a.parameters(), strict=True))


def test_the_learning_rate_tensor_follows_the_float_schedule():
    model = network()
    plain = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    ready = make_optimizer(copy.deepcopy(model), LR, MOMENTUM, 0.0, True, torch.device("cpu"))
    schedules = [torch.optim.lr_scheduler.CosineAnnealingLR(o, 600, eta_min=0.0) for o in (plain, ready)]
    lr = ready.param_groups[0]["lr"]
    for _ in range(600):
        assert float(ready.param_groups[0]["lr"]) == pytest.approx(plain.param_groups[0]["lr"], rel=1e-6,
                                                                   abs=1e-9)
        plain.step()  # no gradients: steps nothing, but keeps the scheduler's order check quiet
        ready.step()
        for s in schedules:
            s.step()
    assert ready.param_groups[0]["lr"] is lr  # updated in place: what a captured graph reads


def test_the_cuda_graphs_switch_leaves_existing_trial_ids_alone():
    for name in ("paper", "fast", "demo", "smoke"):
        protocol = load_protocol(name)
        assert "cuda_graphs" not in protocol.to_dict()["speed"]
        on = protocol.replace(speed={"cuda_graphs": True})
        assert on.to_dict()["speed"]["cuda_graphs"] is True and on.to_dict() != protocol.to_dict()


def stopped_and_resumed(protocol, tmp_path, device: str):
    """An evaluation of four epochs run through, and one stopped after its first epoch (three left,
    as Ctrl-C would: no record, the checkpoint kept) and resumed: (whole, resumed) records."""
    weights = random_arch_weights(np.random.default_rng(3))
    whole = run_evaluation(weights, POLICIES["base"], "digits", 0, protocol, tmp_path / "whole",
                           device=device, progress=False)

    def stop_after_first(entry):
        if entry["epoch"] == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_evaluation(weights, POLICIES["base"], "digits", 0, protocol, tmp_path / "part", device=device,
                       progress=False, on_epoch=stop_after_first)
    resumed = run_evaluation(weights, POLICIES["base"], "digits", 0, protocol, tmp_path / "part",
                             device=device, progress=False)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    return whole, resumed


def test_an_evaluation_in_the_graph_ready_form_resumes_exactly(tmp_path):
    protocol = load_protocol("smoke").replace(evaluate={"epochs": 4}, speed={"cuda_graphs": True})
    whole, resumed = stopped_and_resumed(protocol, tmp_path, "cpu")
    keep = ("history", "final_test_acc", "best_test_acc", "params")
    a, b = json.loads(whole.model_dump_json()), json.loads(resumed.model_dump_json())
    assert {k: a[k] for k in keep} == {k: b[k] for k in keep}
    assert a["history"][1]["train_loss"] != a["history"][0]["train_loss"]
