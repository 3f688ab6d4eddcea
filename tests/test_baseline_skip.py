"""DARTS- and SurgeNAS (baselines/darts_minus.py, surgenas.py, _skip.py): the decaying auxiliary skip,
unweighted (DARTS-) or scaled by the edge's weight mass (SurgeNAS), and SurgeNAS's single-level step."""

import contextlib
import json
import math

import pytest
import torch
from lhdbench.baselines._skip import SkipBeta, SkipMixedOp, skip_beta
from lhdbench.baselines.darts_minus import DartsMinus
from lhdbench.baselines.surgenas import SurgeNas

from lhdbench.methods import SearchContext, SearchMethod, get_method, resolve_settings
from lhdbench.protocol import ProtocolError, load_protocol
from lhdbench.search import ARCH_FILE, RECORD_FILE, run_search
from lhdbench.space import load_arch_weights
from lhdbench.space.ops import PRIMITIVES, FactorizedReduce

SKIP = PRIMITIVES.index("skip_connect")


@pytest.fixture(scope="module")
def smoke():
    return load_protocol("smoke")


def make_method(name, protocol, **overrides):
    if overrides:
        protocol = protocol.replace(methods={name: overrides})
    cls = get_method(name)
    settings, hparams = resolve_settings(cls, protocol)
    return cls(settings, hparams)


def test_registered_with_the_upstream_settings():
    assert get_method("darts-minus") is DartsMinus and get_method("surgenas") is SurgeNas
    assert DartsMinus.bilevel and not SurgeNas.bilevel
    paper = load_protocol("paper")
    minus_settings, minus_hparams = resolve_settings(DartsMinus, paper)
    surge_settings, surge_hparams = resolve_settings(SurgeNas, paper)
    assert minus_settings.batch_size == 176 and surge_settings.batch_size == 160
    assert minus_hparams == surge_hparams == {"skip_beta": 1.0, "decay": "linear"}


@pytest.mark.parametrize("name", ["darts-minus", "surgenas"])
def test_weight_count_includes_the_auxiliary_reductions(name):
    net = make_method(name, load_protocol("paper")).build_supernet(10)  # C=16, 8 cells
    assert sum(p.numel() for p in net.weight_parameters()) == 611_914  # 560,714 + 51,200 aux


def test_linear_decay_runs_from_one_to_two_hundredths():
    assert skip_beta(1.0, 0, 50) == 1.0
    assert skip_beta(1.0, 49, 50) == pytest.approx(0.02)
    assert skip_beta(1.0, 25, 50) == pytest.approx(0.5)
    assert skip_beta(2.0, 1, 2) == pytest.approx(1.0)
    assert skip_beta(1.0, 0, 50, "cosine") == 1.0
    assert skip_beta(1.0, 25, 50, "cosine") == pytest.approx(0.5)
    assert skip_beta(1.0, 49, 50, "cosine") == pytest.approx((1 + math.cos(math.pi * 49 / 50)) / 2)
    assert skip_beta(1.0, 25, 50, "slow_cosine") == pytest.approx(math.cos(math.pi / 4))
    assert skip_beta(0.7, 30, 50, "none") == 0.7


@pytest.mark.parametrize("name", ["darts-minus", "surgenas"])
def test_every_edge_reads_the_epoch_coefficient(name):
    method = make_method(name, load_protocol("smoke").replace(search={"epochs": 50}))
    net = method.build_supernet(10)
    edges = [m for m in net.modules() if isinstance(m, SkipMixedOp)]
    assert len(edges) == 3 * 20
    for epoch, expected in ((0, 1.0), (49, 0.02), (10, 0.8)):
        method.on_epoch_start(epoch)
        assert all(edge.beta.value.item() == pytest.approx(expected) for edge in edges)
    method.load_state_dict({"epoch": 49})  # a resumed method sets the coefficient of its epoch
    assert edges[0].beta.value.item() == pytest.approx(0.02)


def test_bad_hyperparameters_are_named(smoke):
    with pytest.raises(ProtocolError, match="methods.darts-minus.decay"):
        make_method("darts-minus", smoke, decay="exp")
    with pytest.raises(ProtocolError, match="methods.surgenas.skip_beta"):
        make_method("surgenas", smoke, skip_beta=-1.0)


def edge_pair(stride, beta=0.3):
    """The same edge twice (shared parameters): DARTS- (unweighted) and SurgeNAS (weighted) form."""
    torch.manual_seed(0)
    holder = SkipBeta(beta)
    minus = SkipMixedOp(8, stride, holder, weighted=False)
    surge = SkipMixedOp(8, stride, holder, weighted=True)
    surge.load_state_dict(minus.state_dict())
    return minus, surge


@pytest.mark.parametrize("stride", [1, 2])
def test_darts_minus_skip_is_unweighted(stride):
    minus, surge = edge_pair(stride)
    if stride == 2:
        assert isinstance(minus.aux, FactorizedReduce) and not minus.aux.bn.affine
        assert minus.aux.conv_1.weight.requires_grad
    x = torch.randn(4, 8, 8, 8)
    out = minus(x, torch.zeros(7))
    torch.testing.assert_close(out, 0.3 * minus.aux(x))
    assert torch.count_nonzero(out) > 0
    # The SurgeNAS skip is scaled by the edge's weight mass, here 0.
    assert torch.count_nonzero(surge(x, torch.zeros(7))) == 0


def test_skip_only_weight_on_a_stride_one_edge():
    minus, surge = edge_pair(1)
    x = torch.randn(2, 8, 5, 5)
    weights = torch.zeros(7)
    weights[SKIP] = 0.25
    torch.testing.assert_close(minus(x, weights), 0.25 * x + 0.3 * x)
    torch.testing.assert_close(surge(x, weights), 0.25 * (1 + 0.3) * x)


@pytest.mark.parametrize("stride", [1, 2])
def test_surgenas_skip_scales_with_the_weight_mass(stride):
    """sum_o w_o (op_o(x) + beta aux(x)) = [DARTS- edge] + beta (sum_o w_o - 1) aux(x)."""
    minus, surge = edge_pair(stride)
    x = torch.randn(4, 8, 8, 8)
    weights = torch.rand(7) / 10
    expected = minus(x, weights) + 0.3 * (weights.sum() - 1) * minus.aux(x)
    torch.testing.assert_close(surge(x, weights), expected)
    # ... which is upstream's form, the skip inside every op term.
    upstream = sum(w * (op(x) + 0.3 * surge.aux(x)) for w, op in zip(weights, surge.ops, strict=True))
    torch.testing.assert_close(surge(x, weights), upstream)


def test_surgenas_arch_gradient_sees_the_skip():
    """d/dw_o of the SurgeNAS edge is op_o(x) + beta aux(x); of the DARTS- edge only op_o(x)."""
    minus, surge = edge_pair(1)
    x = torch.randn(2, 8, 5, 5)
    grads = []
    for edge in (minus, surge):
        weights = torch.full((7,), 0.1, requires_grad=True)
        edge(x, weights).sum().backward()
        grads.append(weights.grad)
    torch.testing.assert_close(grads[1] - grads[0], torch.full((7,), 0.3 * x.sum().item()),
                               rtol=1e-4, atol=1e-4)


def test_surgenas_step_is_one_forward_backward_on_the_training_batch(smoke):
    torch.manual_seed(0)
    method = make_method("surgenas", smoke)
    net = method.build_supernet(10)
    weight_opt, arch_opt = method.configure_optimizers(net)
    calls = []

    def forward(x):
        calls.append(x.shape[0])
        return method.forward(net, x)

    ctx = SearchContext(net, forward, weight_opt, arch_opt, method.settings, contextlib.nullcontext)
    before_w = [p.detach().clone() for p in net.weight_parameters()]
    before_a = [p.detach().clone() for p in net.arch_parameters()]
    batch = (torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    metrics = method.step(ctx, batch, None)
    assert calls == [8] and metrics["count"].item() == 8
    assert all(not torch.equal(a, p) for a, p in zip(before_a, net.arch_parameters(), strict=True))
    aux = [m.aux.conv_1.weight for m in net.modules() if isinstance(m, SkipMixedOp)
           and isinstance(m.aux, FactorizedReduce)]
    assert aux and all(w.grad is not None and w.grad.abs().sum() > 0 for w in aux)
    assert sum(not torch.equal(a, p) for a, p in zip(before_w, net.weight_parameters(), strict=True)) \
        > len(before_w) // 2
    with pytest.raises(ValueError, match="single-level"):
        method.step(ctx, batch, batch)


def watch(monkeypatch, cls):
    """Capture the supernet, the arch parameters at each epoch start and at export, the skip
    coefficient of each epoch, and the `arch` argument of every step."""
    seen = {"nets": [], "arch": {}, "beta": {}, "arch_batches": []}
    build, start, export, step = cls.build_supernet, cls.on_epoch_start, cls.export, cls.step

    def building(self, classes):
        seen["nets"].append(build(self, classes))
        return seen["nets"][-1]

    def starting(self, epoch):
        seen["arch"][epoch] = [p.detach().clone() for p in seen["nets"][0].arch_parameters()]
        start(self, epoch)
        seen["beta"][epoch] = self.beta.value.item()

    def exporting(self, supernet):
        seen["arch"]["end"] = [p.detach().clone() for p in supernet.arch_parameters()]
        return export(self, supernet)

    def stepping(self, ctx, train, arch):
        seen["arch_batches"].append(arch)
        return step(self, ctx, train, arch)

    for name, value in (("build_supernet", building), ("on_epoch_start", starting), ("export", exporting),
                        ("step", stepping)):
        monkeypatch.setattr(cls, name, value)
    return seen


def test_surgenas_smoke_search_is_single_level_and_moves_the_architecture(tmp_path, smoke, monkeypatch):
    seen = watch(monkeypatch, SurgeNas)
    record = run_search("surgenas", "digits", 0, smoke, tmp_path, progress=False)
    assert record.status == "done" and record.arch_half_acc is None  # no arch half
    # Its own batch 160 follows smoke's 16/176 of the paper's: 15 of the 64 images, so the smoke cap
    # of 2 steps an epoch, 4 in all, with no architecture batch.
    assert len(seen["arch_batches"]) == 4 and all(arch is None for arch in seen["arch_batches"])
    assert seen["beta"] == {0: 1.0, 1: 0.5}
    assert all(not torch.equal(a, b) for a, b in zip(seen["arch"][0], seen["arch"]["end"], strict=True))


def test_darts_minus_smoke_search_is_bilevel_and_moves_the_architecture(tmp_path, smoke, monkeypatch):
    seen = watch(monkeypatch, DartsMinus)
    record = run_search("darts-minus", "digits", 0, smoke, tmp_path, progress=False)
    assert record.status == "done" and record.arch_half_acc is not None
    assert len(seen["arch_batches"]) == 4 and all(arch is not None for arch in seen["arch_batches"])
    assert seen["beta"] == {0: 1.0, 1: 0.5}
    assert all(not torch.equal(a, b) for a, b in zip(seen["arch"][0], seen["arch"]["end"], strict=True))
    assert load_arch_weights(tmp_path / ARCH_FILE).metadata["method"] == "darts-minus"


def test_darts_minus_resumes_with_the_coefficient_of_its_epoch(tmp_path, smoke, monkeypatch):
    """Stopped before epoch 1 and resumed: beta is set again from the epoch (it is not checkpointed),
    so the run ends exactly as an uninterrupted one."""
    run_search("darts-minus", "digits", 1, smoke, tmp_path / "whole", progress=False)

    stopped = tmp_path / "stopped"
    original = SearchMethod.on_epoch_start

    def stop_at_epoch_1(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        original(self, epoch)

    monkeypatch.setattr(SearchMethod, "on_epoch_start", stop_at_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        run_search("darts-minus", "digits", 1, smoke, stopped, progress=False)
    monkeypatch.undo()
    resumed = run_search("darts-minus", "digits", 1, smoke, stopped, progress=False)
    whole = json.loads((tmp_path / "whole" / RECORD_FILE).read_text())
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole["history"]]
    a, b = load_arch_weights(tmp_path / "whole" / ARCH_FILE), load_arch_weights(stopped / ARCH_FILE)
    for x, y in zip(a.matrices(), b.matrices(), strict=True):
        assert (x == y).all()
