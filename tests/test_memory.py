"""The memory model (lhdbench/memory.py): what it counts on the meta device is what a real step saves,
byte for byte, for the final network and the supernet; its parts scale as they must; and a plan's
figures are cached in the store. How close the figure comes to a GPU's measured peak is checked on a
GPU (tests/gpu/test_memory_cuda.py, run by benchmarks/gpu.sh)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import random_arch_weights

from lhdbench.memory import Logits, plan_figures, step_memory
from lhdbench.plan import load_suite, make_plan
from lhdbench.space import POLICIES, FinalNetwork, Supernet, discretize


def genotype(seed: int = 0):
    return discretize(random_arch_weights(np.random.default_rng(seed)), POLICIES["base"])


def saved_on_cpu(module, x) -> int:
    """The bytes autograd keeps for backward in a real CPU forward, each storage once, parameters
    left out: counted independently of lhdbench.memory, by data pointer."""
    parameters = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in parameters:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    assert out is not None
    return sum(seen.values())


@pytest.mark.parametrize("build", ["final", "supernet"])
def test_the_meta_count_is_the_real_count(build):
    def make():
        torch.manual_seed(0)
        if build == "final":
            net = FinalNetwork(genotype(), 10, channels=6, layers=5, auxiliary=True).train()
            net.drop_path_prob = 0.2
            return net
        return Supernet(10, 4, 5).train()

    real = make()
    x = torch.randn(4, 3, 32, 32)
    expected = saved_on_cpu(Logits(real), x)
    with torch.device("meta"):
        meta = make()
        figure = step_memory(Logits(meta), (torch.empty(4, 3, 32, 32),))
    assert figure.saved_bytes == expected
    assert figure.parameter_bytes == 4 * sum(p.numel() for p in real.parameters())
    assert figure.input_bytes == x.numel() * 4
    assert 0 < figure.largest_saved_bytes < figure.saved_bytes


def test_activations_grow_with_the_batch_and_parameters_do_not():
    with torch.device("meta"):
        net = FinalNetwork(genotype(), 10, channels=8, layers=6, auxiliary=True).train()
        small = step_memory(Logits(net), (torch.empty(8, 3, 32, 32),))
        large = step_memory(Logits(net), (torch.empty(16, 3, 32, 32),))
    assert large.parameter_bytes == small.parameter_bytes
    assert large.saved_bytes == pytest.approx(2 * small.saved_bytes, rel=0.01)
    assert large.peak_bytes > small.peak_bytes


def test_a_plans_figures_are_computed_once_and_kept_in_the_store(tmp_path):
    plan = make_plan(load_suite("smoke").narrow(baselines=["darts", "random"], seeds=[0]))
    announced = []
    figures = plan_figures(plan, tmp_path / "memory.json", announce=announced.append)
    by_phase = {(t.phase, t.baseline, t.policy): figures[t.trial_id] for t in plan.trials}
    assert by_phase["search", "random", None] is None  # trains nothing
    assert by_phase["search", "darts", None] > 0
    assert all(by_phase["evaluate", "darts", p] > 0 for p in ("base", "1m", "3ops", "4out"))
    # Two methods share each policy's evaluation kind: 1 search kind + 4 evaluation kinds (+ random's).
    assert announced == [6]
    stored = json.loads((tmp_path / "memory.json").read_text())
    assert len(stored) == 6
    assert plan_figures(plan, tmp_path / "memory.json", announce=announced.append) == figures
    assert announced == [6]  # nothing sized the second time
