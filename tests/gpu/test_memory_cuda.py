"""The memory model against the peaks a GPU measures: the figure the runner packs by must cover the
measured peak within the headroom it adds, and must not be so far above it that packing is wasted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_arch_weights

from lhdbench.memory import MEMORY_HEADROOM, Logits, search_gb, step_memory
from lhdbench.protocol import load_protocol
from lhdbench.space import POLICIES, FinalNetwork, discretize

DEVICE = torch.device("cuda", 0) if torch.cuda.is_available() else None
pytestmark = pytest.mark.skipif(DEVICE is None,
                                reason="needs a CUDA GPU (benchmarks/gpu.sh runs these on one)")


def test_the_evaluation_figure_covers_the_measured_peak():
    genotype = discretize(random_arch_weights(np.random.default_rng(0)), POLICIES["base"])
    with torch.device("meta"):
        meta = FinalNetwork(genotype, 10, 36, 20).train()
        meta.drop_path_prob = 0.2
        figure = step_memory(Logits(meta), (torch.empty(64, 3, 32, 32),)).peak_bytes
    torch.manual_seed(0)
    model = FinalNetwork(genotype, 10, 36, 20).to(DEVICE).train()
    model.drop_path_prob = 0.2
    optimizer = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    x, y = torch.randn(64, 3, 32, 32, device=DEVICE), torch.randint(0, 10, (64,), device=DEVICE)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(DEVICE)
    for _ in range(3):
        logits, aux = model(x)
        loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
    torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated(DEVICE)
    print(f"evaluation: figure {figure / 1e9:.2f} GB, measured {measured / 1e9:.2f} GB")
    assert measured <= figure * MEMORY_HEADROOM
    assert figure <= 2.5 * measured


def test_the_darts_search_figure_covers_the_measured_peak():
    import json

    from lhdbench.methods import SearchContext, get_method, resolve_settings
    from lhdbench.search import _MethodForward

    protocol = load_protocol("paper").replace(speed={"precision": "fp32"})
    figure = search_gb("darts", "cifar10", json.dumps(protocol.to_dict(), sort_keys=True)) * 1e9
    cls = get_method("darts")
    settings, hparams = resolve_settings(cls, protocol)
    method = cls(settings, hparams)
    torch.manual_seed(0)
    supernet = method.build_supernet(10).to(DEVICE).train()
    weight_opt, arch_opt = method.configure_optimizers(supernet)
    method.supernet = supernet
    ctx = SearchContext(supernet, _MethodForward(method, supernet), weight_opt, arch_opt, settings,
                        lambda: torch.autocast("cuda", enabled=False))
    b = settings.batch_size
    batch = (torch.randn(b, 3, 32, 32, device=DEVICE), torch.randint(0, 10, (b,), device=DEVICE))
    arch = (torch.randn(b, 3, 32, 32, device=DEVICE), torch.randint(0, 10, (b,), device=DEVICE))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(DEVICE)
    for _ in range(2):
        method.step(ctx, batch, arch)
    torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated(DEVICE)
    print(f"darts search: figure {figure / 1e9:.2f} GB, measured {measured / 1e9:.2f} GB")
    assert measured <= figure * MEMORY_HEADROOM
    assert figure <= 2.5 * measured
