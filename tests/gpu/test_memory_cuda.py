"""The memory model against what a GPU measures. The step's figure must cover PyTorch's peak of
allocated memory (with cuDNN's workspaces, which PyTorch allocates, within their allowance); with CUDA
graphs the reserved memory (the graph's pool included) must stay within the step, the pool and the
workspaces; and the whole process, as the driver counts it, within the trial's figure without its
data streams (none here). Each figure must also not be so far above the measurement that packing is
wasted. The numbers go into benchmarks/results/gpu-tests.json (benchmarks/gpu_tests.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_arch_weights

from lhdbench.memory import CONTEXT_GB, GB, WORKSPACE_GB, Logits, TrialMemory, step_memory, supernet_step
from lhdbench.protocol import load_protocol
from lhdbench.space import POLICIES, FinalNetwork, discretize
from lhdbench.train_step import TrainStep, make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from gpu_memory import memory_figures  # noqa: E402

DEVICE = torch.device("cuda", 0) if torch.cuda.is_available() else None
pytestmark = pytest.mark.skipif(DEVICE is None,
                                reason="needs a CUDA GPU (benchmarks/gpu.sh runs these on one)")
WORKSPACE = round(WORKSPACE_GB * GB)


def fresh() -> None:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(DEVICE)


def evaluation(graphs: bool, record_property) -> None:
    genotype = discretize(random_arch_weights(np.random.default_rng(0)), POLICIES["base"])
    with torch.device("meta"):
        meta = FinalNetwork(genotype, 10, 36, 20).train()
        meta.drop_path_prob = 0.2
        step = step_memory(Logits(meta), (torch.empty(64, 3, 32, 32),))
    trial = TrialMemory(step, step.parameter_bytes, 0, graphs)
    fresh()
    torch.manual_seed(0)
    model = FinalNetwork(genotype, 10, 36, 20).to(DEVICE).train()
    model.drop_path_prob = 0.2
    optimizer = make_optimizer(model, 0.025, 0.9, 3e-4, graphs, DEVICE)
    train = TrainStep(model, model, optimizer, 0.4, 5.0, lambda: torch.autocast("cuda", enabled=False),
                      graphs=graphs)
    x, y = torch.randn(64, 3, 32, 32, device=DEVICE), torch.randint(0, 10, (64,), device=DEVICE)
    for _ in range(6):
        train.step(x, y)
    measured = memory_figures(DEVICE)
    label = "graphed" if graphs else "plain"
    record_property(f"evaluation_{label}", json.dumps({"step_figure_bytes": step.peak_bytes,
                                                     "trial_figure_bytes": trial.peak_bytes, **measured}))
    print(f"evaluation ({label}): step figure {step.peak_bytes / GB:.2f} GB, trial figure "
          f"{trial.peak_bytes / GB:.2f} GB, measured {json.dumps(measured)}")
    if not graphs:
        assert measured["peak_allocated_bytes"] <= step.peak_bytes + WORKSPACE
        assert step.peak_bytes <= 2.5 * measured["peak_allocated_bytes"]
    assert measured["peak_reserved_bytes"] <= trial.peak_bytes - round(CONTEXT_GB * GB)
    process = measured["driver_process_bytes"] or measured["device_used_bytes"]
    assert process <= trial.peak_bytes
    assert trial.peak_bytes <= 2.5 * process


def test_the_evaluation_figure_covers_the_measured_peak(record_property):
    evaluation(False, record_property)


def test_the_graphed_evaluation_figure_covers_the_graph_pool(record_property):
    evaluation(True, record_property)


def test_the_darts_search_figure_covers_the_measured_peak(record_property):
    from lhdbench.methods import SearchContext, get_method, resolve_settings
    from lhdbench.search import _MethodForward

    protocol = load_protocol("paper").replace(speed={"precision": "fp32"})
    figure = supernet_step("darts", "cifar10", json.dumps(protocol.to_dict(), sort_keys=True)).peak_bytes
    cls = get_method("darts")
    settings, hparams = resolve_settings(cls, protocol)
    method = cls(settings, hparams)
    fresh()
    torch.manual_seed(0)
    supernet = method.build_supernet(10).to(DEVICE).train()
    weight_opt, arch_opt = method.configure_optimizers(supernet)
    method.supernet = supernet
    ctx = SearchContext(supernet, _MethodForward(method, supernet), weight_opt, arch_opt, settings,
                        lambda: torch.autocast("cuda", enabled=False))
    b = settings.batch_size
    batch = (torch.randn(b, 3, 32, 32, device=DEVICE), torch.randint(0, 10, (b,), device=DEVICE))
    arch = (torch.randn(b, 3, 32, 32, device=DEVICE), torch.randint(0, 10, (b,), device=DEVICE))
    for _ in range(2):
        method.step(ctx, batch, arch)
    measured = memory_figures(DEVICE)
    record_property("darts_search", json.dumps({"step_figure_bytes": figure, **measured}))
    print(f"darts search: figure {figure / GB:.2f} GB, measured {json.dumps(measured)}")
    assert measured["peak_allocated_bytes"] <= figure + WORKSPACE
    assert figure <= 2.5 * measured["peak_allocated_bytes"]

