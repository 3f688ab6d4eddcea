"""PC-DARTS with a partial_channels other than the default 4: every edge of the supernet mixes the ops
on the first C/K channels and shuffles with K groups, and a smoke search runs with it."""

from __future__ import annotations

import functools
import json

import pytest
import torch
import torch.nn.functional as F
from lhdbench.baselines.pcdarts import PartialMixedOp

from lhdbench.methods import get_method, resolve_settings
from lhdbench.protocol import load_protocol
from lhdbench.search import run_search
from lhdbench.space import Supernet


def with_partial(k: int, **search):
    smoke = load_protocol("smoke")
    return smoke.replace(search=search, methods={"pcdarts": {"partial_channels": k}})


def reference_edge(edge: PartialMixedOp, x: torch.Tensor, weights: torch.Tensor, k: int) -> torch.Tensor:
    """A PC-DARTS edge written out: ops on channels [0, C/K), the rest bypassing them (2x2 max pool on
    a stride-2 edge), op part first, then out channel i*K + g = pre-shuffle channel g*(C/K) + i."""
    c = x.shape[1]
    part = c // k
    mixed = sum(w * op(x[:, :part]) for w, op in zip(weights, edge.ops, strict=True))
    passive = x[:, part:]
    if mixed.shape[-1] != x.shape[-1]:
        passive = F.max_pool2d(passive, 2, 2)
    pre = torch.cat([mixed, passive], dim=1)
    order = [g * part + i for i in range(part) for g in range(k)]
    return pre[:, order]


@pytest.mark.parametrize(("k", "channels"), [(2, 4), (8, 8)])
def test_every_edge_uses_c_over_k_channels_and_k_shuffle_groups(k, channels):
    cls = get_method("pcdarts")
    method = cls(*resolve_settings(cls, with_partial(k, init_channels=channels)))
    torch.manual_seed(0)
    net = method.build_supernet(10)
    calls = []
    edges = [m for m in net.modules() if isinstance(m, PartialMixedOp)]
    assert edges
    for edge in edges:
        edge.register_forward_hook(lambda module, args, out: calls.append((module, *args, out)))
    net.eval()  # BN on running statistics, so re-running an op gives the same values
    with torch.no_grad():
        method.forward(net, torch.randn(2, 3, 32, 32))
        assert len(calls) == len(edges)
        for edge, x, weights, out in calls:
            c = x.shape[1]
            assert c // k >= 1 and c % k == 0
            for op in edge.ops:  # every op maps C/K channels to C/K channels
                try:
                    width = op(x[:, : c // k]).shape[1]
                except RuntimeError as error:
                    pytest.fail(f"an op of a {c}-channel edge does not take C/K = {c // k} channels: {error}")
                assert width == c // k
            torch.testing.assert_close(out, reference_edge(edge, x, weights, k), rtol=0, atol=0)


def test_smoke_search_trains_the_partial_supernet(tmp_path):
    k = 2
    protocol = with_partial(k)
    run_search("pcdarts", "digits", 0, protocol, tmp_path, progress=False)
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["status"] == "done" and record["hparams"]["partial_channels"] == k
    stored = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["supernet"]
    s = protocol.search

    def shapes(partial: int) -> dict[str, tuple[int, ...]]:
        edge = functools.partial(PartialMixedOp, partial=partial)
        net = Supernet(10, s.init_channels, s.layers, mixed_op=edge)
        return {name: tuple(t.shape) for name, t in net.state_dict().items()}

    assert shapes(k) != shapes(4)  # the check below can tell the two apart
    assert {name: tuple(t.shape) for name, t in stored.items()} == shapes(k)
