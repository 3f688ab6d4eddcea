"""The GPU benchmarks' variants on the CPU, where they run eagerly: the torch.compile variants are the
plain step exactly, and several networks trained together (one process, a CUDA stream each on a GPU)
train exactly as each alone. And each benchmark keeps going past a failing measurement: a variant
(train_step.py), a method (methods.py), a search path (throughput.py) or a packing worker (packing.py)
that fails is recorded under `errors`, and the others are measured and written."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_arch_weights

from lhdbench.space import POLICIES, FinalNetwork, discretize

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
CPU = torch.device("cpu")


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_step():
    return load("train_step")


def batches(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g))
            for _ in range(n)]


def trained(train_step, variant: str, data, drop: float = 0.1):
    model = train_step.network(CPU, train_step.REHEARSAL)
    model.drop_path_prob = drop
    step, _ = train_step.make_step(model, variant, CPU)
    torch.manual_seed(3)
    losses = [float(step.step(x, y)[0]) for x, y in data]
    return losses, model


@pytest.mark.parametrize("variant", ["compiled", "compiled-cudagraphs"])
def test_the_compiled_variants_are_the_plain_step_on_a_cpu(train_step, variant):
    data = batches(4)
    plain, a = trained(train_step, "plain", data)
    compiled, b = trained(train_step, variant, data)
    assert compiled == plain
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_the_graphed_variants_are_the_graph_ready_step_on_a_cpu(train_step):
    data = batches(4)
    fp32, _ = trained(train_step, "graphed-fp32", data)
    bf16, _ = trained(train_step, "graphed-bf16", data)  # bf16 autocast is CUDA only
    plain, _ = trained(train_step, "plain", data)
    assert bf16 == fp32 and fp32 == pytest.approx(plain, rel=1e-4)


@pytest.mark.parametrize("graphs", [False, True])
def test_networks_trained_together_train_as_each_alone(train_step, graphs):
    """The four policies' networks of one architecture in one process (benchmarks/streams.py): each
    network's losses and weights are those of the same network trained alone with the same batches.
    Drop path off: with it, the networks would share one random generator in a different order."""
    streams = load("streams")
    from throughput import stream

    weights = random_arch_weights(np.random.default_rng(4))
    variant = "graphed-fp32" if graphs else "plain"

    def build(policy):
        torch.manual_seed(0)
        model = FinalNetwork(discretize(weights, POLICIES[policy]), 10, 6, 5)
        return model, train_step.make_step(model, variant, CPU)[0]

    policies = ("base", "1m", "3ops", "4out")
    alone = {}
    for i, policy in enumerate(policies):
        model, step = build(policy)
        data = stream(64, 8, CPU, False, 16)
        data._generator.manual_seed(i)
        alone[policy] = ([float(step.step(*data.next_batch())[0]) for _ in range(3)], model)
    built = [build(p) for p in policies]
    data = [stream(64, 8, CPU, False, 16) for _ in policies]
    for i, d in enumerate(data):
        d._generator.manual_seed(i)
    together = streams.Together([s for _, s in built], data, CPU)
    losses = [[float(loss) for loss, _ in together.step()] for _ in range(3)]
    for i, policy in enumerate(policies):
        assert [row[i] for row in losses] == alone[policy][0], policy
        for p, q in zip(alone[policy][1].parameters(), built[i][0].parameters(), strict=True):
            assert torch.equal(p, q), policy


def run_main(module, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [module.__file__, *argv])
    module.main()


def test_a_failing_variant_leaves_the_others_measured_and_written(train_step, tmp_path, monkeypatch):
    real = train_step.timed

    def timed(variant, *args, **kwargs):
        if variant == "graphed-bf16":
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        return real(variant, *args, **kwargs)

    monkeypatch.setattr(train_step, "timed", timed)
    out = tmp_path / "train.json"
    run_main(train_step, ["--out", str(out), "--rehearse", "--variants", "plain,graphed-bf16,graphed-fp32"],
             monkeypatch)
    written = json.loads(out.read_text())
    assert written["status"] == "done"
    assert written["variants"]["plain"]["step_s"] > 0 and written["variants"]["graphed-fp32"]["step_s"] > 0
    assert written["variants"]["graphed-bf16"]["status"] == "failed"
    assert "stream is capturing" in written["errors"]["graphed-bf16"]["error"]
    assert written["equality_fp32"]["max_rel_loss_diff"] < 1e-3
    assert set(written["speedup"]) == {"plain", "graphed-fp32"}


def test_a_failing_equality_check_keeps_the_plain_timing(train_step, tmp_path, monkeypatch):
    def equality(*args):
        raise RuntimeError("capture failed")

    monkeypatch.setattr(train_step, "equality", equality)
    out = tmp_path / "train.json"
    run_main(train_step, ["--out", str(out), "--rehearse", "--variants", "plain,graphed-fp32"], monkeypatch)
    written = json.loads(out.read_text())
    assert written["variants"]["plain"]["step_s"] > 0 and written["equality_fp32"] is None
    assert written["errors"]["equality_fp32"]["error"] == "RuntimeError: capture failed"


def test_a_failing_method_leaves_the_next_ones_measured(tmp_path, monkeypatch):
    methods = load("methods")
    real = methods.measure

    def measure(name, *args, **kwargs):
        if name == "gdas":
            raise ValueError("gdas broke")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(methods, "measure", measure)
    out = tmp_path / "methods.json"
    run_main(methods, ["--out", str(out), "--rehearse", "--methods", "gdas,darts,random"], monkeypatch)
    written = json.loads(out.read_text())
    assert written["status"] == "done" and written["errors"]["gdas"]["error"] == "ValueError: gdas broke"
    assert written["methods"]["darts"]["step_s"] > 0 and written["methods"]["random"]["trains"] is False


def test_a_failing_search_path_leaves_the_others_measured(tmp_path, monkeypatch):
    throughput = load("throughput")
    real = throughput.search_step

    def search_step(speed, device, batch, warmup, steps, fused=True, **kwargs):
        if not fused:
            raise MemoryError("out of memory")
        return real(speed, device, batch, warmup, steps, fused=fused, **kwargs)

    monkeypatch.setattr(throughput, "search_step", search_step)
    out = tmp_path / "search.json"
    run_main(throughput, ["--out", str(out), "--rehearse", "--parts", "search", "--paths",
                          "plain,fused-fp32"], monkeypatch)
    written = json.loads(out.read_text())
    assert list(written["results"]) == ["search/fused-fp32"] and "search/plain" in written["errors"]


class StandInWorker:
    def __init__(self, spec, rate=None, error=None, ready=True):
        self.spec, self.rate, self.error = spec, rate, error
        self.ready = {"ready": True} if ready else None
        self.sent = []

    def send(self, text):
        self.sent.append(text)

    def answer(self, deadline):
        if self.rate is None:
            return {"error": "RuntimeError: CUDA out of memory"}
        return {"steps": 10, "networks": 1, "images_per_s": self.rate, "started_late": False}


def test_a_failing_packing_worker_fails_only_the_phases_that_need_it():
    packing = load("packing")
    workers = [StandInWorker("net:a", 100.0), StandInWorker("net:b", 90.0), StandInWorker("net:c"),
               StandInWorker("net:d", error="exited (1): ImportError", ready=False)]
    assert packing.phase(workers, [0, 1], 0.0)["aggregate_images_per_s"] == 190.0
    failed = packing.phase(workers, [0, 2], 0.0)
    assert failed["aggregate_images_per_s"] is None and "out of memory" in failed["errors"][0]
    never = packing.phase(workers, [0, 3], 0.0)
    assert never["aggregate_images_per_s"] is None and "ImportError" in never["errors"][0]
    assert workers[3].sent == []  # a worker that never got ready is not asked


def test_the_packing_phases_are_one_two_and_four_trials_and_the_streams_pair():
    packing = load("packing")
    modes = packing.modes()
    specs, phases = modes["packing"]
    assert phases == {"1": [0], "2": [0, 1], "4": [0, 1, 2, 3]} and len(specs) == 4
    specs, phases = modes["streams"]
    assert specs[-1] == "streams:graphed-fp32:base+1m+3ops+4out"
    assert phases == {"processes": [0, 1, 2, 3], "streams": [4]}
