"""The evaluation's training step (lhdbench/train_step.py) on the CPU: the plain step is the loop's own
ops, written out here independently; the graph-ready form (fused SGD with a device learning rate,
foreach clipping), which runs eagerly on a CPU, stays within float tolerance of it under the cosine
schedule; `speed.cuda_graphs` leaves every existing trial id alone; and an evaluation in the graph-ready
form resumes exactly. The capture bookkeeping (warm-up, capture, replay, which batches run eagerly, one
side stream) is checked here with a stand-in for CUDA's calls; the capture itself needs CUDA:
tests/gpu/test_train_step_cuda.py, run by benchmarks/gpu.sh."""

from __future__ import annotations

import contextlib
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
from lhdbench.train_step import WARMUP_STEPS, TrainStep, make_optimizer

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
    # In float64: in float32 a rounding difference of 1e-7 can flip a max-pool choice or a ReLU of this
    # tiny random network, after which the two runs part by 1e-3 within a step (seen with torch 2.14),
    # which says nothing about the step's arithmetic.
    data = [(x.double(), y) for x, y in batches(len(EPOCHS))]
    a, b = network().train().double(), network().train().double()
    torch.manual_seed(5)
    plain = with_step(a, data, EPOCHS, DROP, graphs=False)
    torch.manual_seed(5)
    ready = with_step(b, data, EPOCHS, DROP, graphs=True)
    # The learning rate tensor is float32 (what fused SGD takes on a GPU): 1e-8 apart from the float.
    assert ready == pytest.approx(plain, rel=1e-6, abs=1e-9)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)
    # And not trivially: the parameters did move.
    assert any(not torch.equal(p, q) for p, q in
               zip(network().double().parameters(), a.parameters(), strict=True))


class StandInCuda:
    """CUDA's calls for the graphed step, on a CPU. A capture records kernels without running them: here
    it runs the step once and then undoes everything it did (weights, buffers, optimizer state, random
    generator). A replay runs the captured step again on the static inputs and writes its results into
    the static outputs, as a graph's replay does."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer
        self.streams, self.captures, self.replays, self.released = 0, 0, 0, 0

    def handles(self, x):
        return True

    def new_stream(self, device):
        self.streams += 1
        return StandInStream()

    def current_stream(self, device):
        return StandInStream()

    def use_stream(self, stream):
        return contextlib.nullcontext()

    def _live(self) -> list[torch.Tensor]:
        state = [t for s in self.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
        return [*self.model.state_dict().values(), *state]

    def capture(self, body):
        saved = [t.clone() for t in self._live()]
        rng = torch.get_rng_state()
        outputs = body()
        with torch.no_grad():
            for t, before in zip(self._live(), saved, strict=True):
                t.copy_(before)
        torch.set_rng_state(rng)
        self.captures += 1
        return StandInGraph(self, body, outputs), outputs

    def release_cached(self):
        self.released += 1


class StandInStream:
    def wait_stream(self, other):
        pass


class StandInGraph:
    def __init__(self, cuda: StandInCuda, body, outputs) -> None:
        self.cuda, self.body, self.outputs = cuda, body, outputs

    def replay(self) -> None:
        self.cuda.replays += 1
        for static, new in zip(self.outputs, self.body(), strict=True):
            static.copy_(new)


def epochs_of_batches(epochs: int, full: int, short: int) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    g = torch.Generator().manual_seed(2)
    return [[(torch.randn(b, 3, 32, 32, generator=g), torch.randint(0, 10, (b,), generator=g))
             for b in [8] * full + [short]] for _ in range(epochs)]


def graphed_run(stand_in: bool, data, drop: list[float]):
    model = network().train()
    optimizer = make_optimizer(model, LR, MOMENTUM, DECAY, True, torch.device("cpu"))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, len(data), eta_min=0.0)
    step = TrainStep(model, model, optimizer, AUX, CLIP, lambda: torch.autocast("cpu", enabled=False),
                     graphs=True)
    if stand_in:
        step.cuda = StandInCuda(model, optimizer)
    torch.manual_seed(5)
    losses = []
    for epoch, batches_ in enumerate(data):
        model.drop_path_prob = drop[epoch]
        for x, y in batches_:
            loss, logits = step.step(x, y)
            assert logits.shape == (x.shape[0], 10)
            losses.append(float(loss))
        scheduler.step()
    return model, step, losses


def test_the_capture_bookkeeping_with_cuda_stood_in_trains_as_the_eager_steps_do():
    """Three epochs of four full batches and a short one, drop path switching on in the second: the
    stand-in's captures and replays give the eager graph-ready steps' numbers exactly, so nothing is
    trained twice or skipped (a capture does not train; a replay trains on this batch)."""
    data = epochs_of_batches(3, full=4, short=5)
    drop = [0.0, 0.1, 0.2]
    eager_model, _, eager = graphed_run(False, data, drop)
    model, step, graphed = graphed_run(True, data, drop)
    assert graphed == eager
    for p, q in zip(eager_model.parameters(), model.parameters(), strict=True):
        assert torch.equal(p, q)
    cuda = step.cuda
    assert cuda.streams == 1  # one side stream for every warm-up
    # One capture without drop path, one with it (the first one dropped then); the short batches never.
    assert cuda.captures == 2 and cuda.released == 2
    assert [(k.shape[0], k.drop_path) for k in step._captured] == [(8, True)]
    assert {k.shape[0] for k in step._warm} == {8}
    # Epoch 0: 3 warm-ups, a capture and its replay; epoch 1 likewise; epoch 2: four replays.
    assert cuda.replays == (4 - WARMUP_STEPS) * 2 + 4


def test_a_graph_is_replayed_only_for_the_mode_and_layout_it_was_captured_in():
    data = epochs_of_batches(1, full=WARMUP_STEPS + 2, short=8)[0]
    model, step, _ = graphed_run(True, [data], [0.0])
    captured = dict(step._captured)
    x, y = data[0]
    for change in ("eval", "channels_last"):
        if change == "eval":
            model.eval()
            batch = x
        else:
            model.train()
            batch = x.contiguous(memory_format=torch.channels_last)
        replays = step.cuda.replays
        step.step(batch, y)
        assert step.cuda.replays == replays  # warms up for its own graph instead
        assert step._warm[step.key(batch)] == 1
    assert step._captured == captured


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
