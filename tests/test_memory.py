"""The memory model (lhdbench/memory.py): what it counts on the meta device is what a real step saves,
byte for byte, for the final network and the supernet; its parts add up to a trial's peak as the model
says (a step's parts, the fixed costs per process, the data streams, the graph pool); the data streams'
bytes are those of real streams; and a plan's figures are cached in the store's memory.json, keyed by
everything they are computed from, validated when read and merged under a lock when written. How close
the figure comes to a GPU's measured peak is checked on a GPU (tests/gpu/test_memory_cuda.py, run by
benchmarks/gpu.sh)."""

from __future__ import annotations

import dataclasses
import json
import math
import threading

import numpy as np
import pytest
import torch
from conftest import random_arch_weights
from torch import nn

from lhdbench import memory
from lhdbench.data import get_dataset, load_images
from lhdbench.data.stream import GpuBatchStream
from lhdbench.files import file_lock
from lhdbench.memory import (
    CONTEXT_GB,
    GB,
    WORKSPACE_GB,
    Logits,
    StepMemory,
    TrialMemory,
    plan_figures,
    step_memory,
    stream_bytes,
)
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


def test_the_step_of_a_small_network_counted_by_hand():
    """Linear(8, 16), ReLU, Linear(16, 4) on a batch of 2: autograd keeps the input (2 x 8 floats) for
    the first layer's weight gradient and the ReLU's output (2 x 16), which the second layer keeps
    too (one storage, counted once); the weights are left out of the saved tensors."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        step = step_memory(model, (torch.empty(2, 8),))
    assert step == StepMemory(parameter_bytes=4 * (8 * 16 + 16 + 16 * 4 + 4), saved_bytes=4 * (16 + 32),
                              input_bytes=4 * 16, largest_saved_bytes=4 * 32)
    assert step.peak_bytes == 4 * 848 + 192 + 64 + 2 * 128


def test_the_parts_add_up_to_a_trial_peak():
    step = StepMemory(parameter_bytes=1_000_003, saved_bytes=20_011, input_bytes=3_001,
                      largest_saved_bytes=401)
    assert step.peak_bytes == 4 * 1_000_003 + 20_011 + 3_001 + 2 * 401
    fixed = round((CONTEXT_GB + WORKSPACE_GB) * GB)
    eager = TrialMemory(step, step.parameter_bytes, data_bytes=7_000_001, graphs=False)
    assert eager.peak_bytes == fixed + 7_000_001 + step.peak_bytes
    # With graphs: the graph's pool holds the step's activations, input, gradient temporaries and the
    # gradients a second time.
    graphed = TrialMemory(step, step.parameter_bytes, data_bytes=7_000_001, graphs=True)
    assert graphed.peak_bytes == eager.peak_bytes + 20_011 + 3_001 + 2 * 401 + 1_000_003
    # Nothing trained: the context and the weights, no workspace, no data.
    idle = TrialMemory(None, weight_bytes=5_003, data_bytes=0, graphs=True)
    assert idle.peak_bytes == round(CONTEXT_GB * GB) + 5_003
    assert graphed.peak_gb == graphed.peak_bytes / 1e9


@pytest.mark.parametrize("augment,cutout,shuffle", [(True, True, True), (True, False, True),
                                                    (False, False, False), (False, False, True)])
def test_the_data_streams_bytes_are_a_real_streams(augment, cutout, shuffle):
    """The upload and one prepared pass of a real stream, tensor by tensor, against stream_bytes (which
    adds a second pass and the chunk temporaries of preparing one, which leave no tensor behind)."""
    from lhdbench.data.stream import CHUNK, CROP_PADDING

    data = load_images("digits", train=True).head(100)
    stream = GpuBatchStream(data, get_dataset("digits"), 16, augment=augment, cutout=16 if cutout else 0,
                            shuffle=shuffle)
    stream.next_batch()
    p = stream._stream
    held = [stream.images, stream.labels, p.order, p.labels, *p.params.values()]
    if p.images.untyped_storage().data_ptr() != stream.images.untyped_storage().data_ptr():
        held.append(p.images)
    if p.erase is not None:
        held.append(p.erase)
    upload_and_pass = sum(t.nbytes for t in held)
    one_pass = upload_and_pass - (stream.images.nbytes + stream.labels.nbytes)
    chunk = min(100, CHUNK) * (14 * 32 * 32 + 3 * (32 + 2 * CROP_PADDING) ** 2) if augment else 0
    assert stream_bytes(100, 32, augment=augment, cutout=cutout, shuffle=shuffle) == (
        upload_and_pass + one_pass + chunk)


def small_plan(**narrow):
    return make_plan(load_suite("smoke").narrow(**{"baselines": ["darts"], "seeds": [0], "policies": ["base"],
                                                   **narrow}))


def test_a_plans_figures_are_computed_once_and_kept_in_the_store(tmp_path):
    plan = make_plan(load_suite("smoke").narrow(baselines=["darts", "random"], seeds=[0]))
    announced = []
    figures = plan_figures(plan, tmp_path / "memory.json", announce=announced.append)
    by_phase = {(t.phase, t.baseline, t.policy): figures[t.trial_id] for t in plan.trials}
    # random trains nothing: its process holds its context and its supernet's weights.
    assert CONTEXT_GB < by_phase["search", "random", None] < CONTEXT_GB + 0.01
    assert by_phase["search", "darts", None] > CONTEXT_GB + WORKSPACE_GB
    assert all(by_phase["evaluate", "darts", p] > CONTEXT_GB + WORKSPACE_GB
               for p in ("base", "1m", "3ops", "4out"))
    # Two methods share each policy's evaluation kind: 2 search kinds + 4 evaluation kinds.
    assert announced == [6]
    stored = json.loads((tmp_path / "memory.json").read_text())
    assert len(stored) == 6
    assert plan_figures(plan, tmp_path / "memory.json", announce=announced.append) == figures
    assert announced == [6]  # nothing sized the second time


def test_selections_get_a_figure_of_their_own():
    plan = make_plan(load_suite("smoke").narrow(baselines=["darts"], seeds=[0], policies=["base"],
                                                selections=["perturbation"]))
    figures = plan_figures(plan)
    search = next(t for t in plan.trials if t.phase == "search")
    select = next(t for t in plan.trials if t.phase == "select")
    # The search's supernet at the search's batch, over its two halves and a measuring stream.
    assert figures[select.trial_id] > figures[search.trial_id] > CONTEXT_GB + WORKSPACE_GB


def shapes_of(plan):
    return {(t.phase, t.policy): f for t, f in zip(plan.trials, plan_figures(plan).values(), strict=True)}


@pytest.mark.parametrize("section,change", [
    ("evaluate", {"batch_size": 24}), ("evaluate", {"init_channels": 12}), ("evaluate", {"layers": 4}),
    ("evaluate", {"auxiliary_weight": 0.0}), ("evaluate", {"max_train_images": 48}),
    ("search", {"batch_size": 24}), ("search", {"init_channels": 6}), ("speed", {"cuda_graphs": True})])
def test_two_plans_differing_in_one_shape_share_a_cache_without_sharing_figures(tmp_path, section, change):
    cache = tmp_path / "memory.json"
    first = small_plan()
    other = dataclasses.replace(first, protocol=first.protocol.replace(**{section: change}))
    before = plan_figures(first, cache)
    after = plan_figures(other, cache)
    assert after == plan_figures(other)  # what the other plan computes without a cache
    changed = [t.trial_id for t in first.trials if before[t.trial_id] != after[t.trial_id]]
    assert changed, "the change moves no figure: the test would not see a key that misses it"
    assert plan_figures(first, cache) == before  # and the first plan's figures are still there


def write_figures(path, plan, value) -> None:
    keys = {memory.figure_key(t, plan.protocol) for t in plan.trials}
    path.write_text(json.dumps(dict.fromkeys(keys, value), allow_nan=True))


@pytest.mark.parametrize("value", [0, 0.0, float("nan"), -3.2, float("inf"), True, 1e9, "2.5", None])
def test_figures_that_are_not_figures_are_recomputed_with_one_line_naming_the_file(tmp_path, value):
    plan, path = small_plan(), tmp_path / "memory.json"
    expected = plan_figures(plan)
    write_figures(path, plan, value)
    lines = []
    assert plan_figures(plan, path, warn=lines.append) == expected
    assert len(lines) == 1 and str(path) in lines[0], lines
    assert all(memory.valid_figure(v) for v in json.loads(path.read_text()).values())
    lines.clear()
    assert plan_figures(plan, path, warn=lines.append) == expected and lines == []


def test_an_unreadable_memory_json_is_recomputed_with_one_line(tmp_path):
    plan, path = small_plan(), tmp_path / "memory.json"
    for text in ("{not json", "[1, 2]"):
        path.write_text(text)
        lines = []
        assert plan_figures(plan, path, warn=lines.append) == plan_figures(plan)
        assert len(lines) == 1 and str(path) in lines[0]


def test_figures_of_another_model_version_are_not_served(tmp_path, monkeypatch):
    plan, path = small_plan(), tmp_path / "memory.json"
    write_figures(path, plan, 0.001)  # the current version's keys, a plausible-looking figure
    assert set(plan_figures(plan, path).values()) == {0.001}
    monkeypatch.setattr(memory, "MODEL_VERSION", memory.MODEL_VERSION + 1)
    figures = plan_figures(plan, path)
    assert 0.001 not in figures.values() and all(math.isfinite(v) for v in figures.values())
    assert all(k.startswith(f"v{memory.MODEL_VERSION}/") for k in json.loads(path.read_text()))


def test_two_drivers_sizing_into_one_memory_json_keep_each_others_figures(tmp_path, monkeypatch):
    """Driver B reads memory.json, then driver A writes its figures while B is still sizing: B's
    write keeps A's figures."""
    path = tmp_path / "memory.json"
    plan_a, plan_b = small_plan(), small_plan(baselines=["gdas"], policies=["3ops"])
    sizing = memory.trial_gb
    done = []

    def b_sizes(trial, protocol):
        if not done:
            done.append(True)
            plan_figures(plan_a, path)  # driver A, finishing in between
        return sizing(trial, protocol)

    monkeypatch.setattr(memory, "trial_gb", b_sizes)
    figures_b = plan_figures(plan_b, path)
    monkeypatch.setattr(memory, "trial_gb", sizing)
    stored = json.loads(path.read_text())
    keys = {memory.figure_key(t, p.protocol) for p in (plan_a, plan_b) for t in p.trials}
    assert set(stored) == keys
    assert plan_figures(plan_b, path) == figures_b


def test_memory_json_is_written_under_its_lock(tmp_path):
    plan, path = small_plan(), tmp_path / "memory.json"
    plan_figures(plan)  # sized once in this process: the driver below goes straight to writing
    with file_lock(tmp_path / "memory.json.lock"):
        driver = threading.Thread(target=plan_figures, args=(plan, path))
        driver.start()
        driver.join(timeout=1.0)
        assert driver.is_alive() and not path.exists()  # waiting for the lock
    driver.join(timeout=30)
    assert not driver.is_alive() and path.is_file()
