"""GAEA: simplex parameters, the exponentiated-gradient update, ERM on the whole training set."""

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_resume_equals_whole
from lhdbench.baselines.gaea import MIN_ALPHA, exponentiated_gradient_

from lhdbench.data import get_dataset
from lhdbench.methods import SearchContext, get_method, resolve_settings
from lhdbench.protocol import load_protocol
from lhdbench.search import ARCH_FILE, run_search
from lhdbench.space import load_arch_weights

NAMES = ("gaea-erm", "gaea-bilevel")


@pytest.fixture(scope="module")
def smoke():
    return load_protocol("smoke")


def make(name, smoke):
    torch.manual_seed(0)
    cls = get_method(name)
    settings, hparams = resolve_settings(cls, smoke)
    method = cls(settings, hparams)
    net = method.build_supernet(10)
    weight_opt, arch_opt = method.configure_optimizers(net)
    ctx = SearchContext(net, lambda x: method.forward(net, x), weight_opt, arch_opt, settings,
                        contextlib.nullcontext)
    return method, net, ctx


def batch(g):
    return torch.randn(6, 3, 16, 16, generator=g), torch.randint(0, 10, (6,), generator=g)


def assert_rows_on_simplex(p):
    assert (p >= MIN_ALPHA).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[0]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_parameters_start_uniform_on_the_simplex_with_no_arch_optimizer(name, smoke):
    method, net, ctx = make(name, smoke)
    assert ctx.arch_optimizer is None and isinstance(ctx.weight_optimizer, torch.optim.SGD)
    assert method.settings.arch_lr == 0.1
    for p in (net.alphas_normal, net.alphas_reduce):
        torch.testing.assert_close(p, torch.full((20, 7), 1 / 7))
    for p in (net.alphas_normal_output, net.alphas_reduce_output):
        torch.testing.assert_close(p, torch.full((2, 5), 0.2))


@pytest.mark.parametrize("name", NAMES)
def test_rows_stay_on_the_simplex_and_move(name, smoke):
    method, net, ctx = make(name, smoke)
    assert get_method(name).bilevel == (name == "gaea-bilevel")
    before = [p.detach().clone() for p in net.arch_parameters()]
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        arch = batch(g) if get_method(name).bilevel else None
        metrics = method.step(ctx, batch(g), arch)
        assert set(metrics) >= {"loss_sum", "correct", "count"}
        for p in net.arch_parameters():
            assert_rows_on_simplex(p.detach())
            assert p.grad is None  # EG consumed the gradient
    for b, p in zip(before, net.arch_parameters(), strict=True):
        assert (b - p).abs().max() > 1e-6
    # Rows are renormalized, node blocks are not: a node block sums to its number of inputs.
    assert abs(float(net.alphas_normal[14:20].detach().sum()) - 6.0) < 1e-5


def test_erm_step_is_one_backward_then_eg_on_the_same_gradient(smoke):
    method, net, ctx = make("gaea-erm", smoke)
    with torch.no_grad():  # start away from uniform, still on the simplex
        for p in net.arch_parameters():
            p.copy_(torch.softmax(torch.randn(p.shape), -1))
    g = torch.Generator().manual_seed(2)
    x, y = batch(g)
    arch = [p.detach().clone() for p in net.arch_parameters()]
    grads = torch.autograd.grad(F.cross_entropy(net(x), y), net.arch_parameters())
    method.step(ctx, (x, y), None)
    for a0, grad, p in zip(arch, grads, net.arch_parameters(), strict=True):
        expected = (a0 * torch.exp(-0.1 * grad)).clamp(min=MIN_ALPHA)
        expected = expected / expected.sum(-1, keepdim=True)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-8)


def test_eg_update_clamps_and_renormalizes_each_row():
    p = torch.nn.Parameter(torch.full((2, 5), 0.2))
    p.grad = torch.tensor([[1000.0, 0, 0, 0, 0], [0, 1, 2, 3, 4]])
    exponentiated_gradient_([p], 0.1)
    assert p.grad is None
    torch.testing.assert_close(p.sum(-1), torch.ones(2))
    # exp(-100) underflows past the floor: the entry is clamped to 1e-5, then the row renormalized.
    expected = torch.tensor(MIN_ALPHA / (0.8 + MIN_ALPHA))
    torch.testing.assert_close(p[0, 0].detach(), expected, rtol=1e-5, atol=0)
    assert (p[0, 1:] > 0.2).all()
    row = torch.exp(-0.1 * torch.arange(5.0))
    torch.testing.assert_close(p[1].detach(), row / row.sum())
    untouched = torch.nn.Parameter(torch.full((2, 5), 0.2))
    exponentiated_gradient_([untouched], 0.1)  # no gradient: left as it is
    torch.testing.assert_close(untouched.detach(), torch.full((2, 5), 0.2))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_smoke_search_completes_moves_the_architecture_and_feeds_the_right_batches(
        name, tmp_path, smoke, monkeypatch):
    cls = get_method(name)
    seen = []
    original = cls.step

    def recording(self, ctx, train, arch):
        seen.append(arch)
        return original(self, ctx, train, arch)

    monkeypatch.setattr(cls, "step", recording)
    record = run_search(name, "digits", 0, smoke, tmp_path, progress=False)
    assert record.status == "done" and len(record.history) == smoke.search.epochs
    assert len(seen) == smoke.search.epochs * smoke.search.steps_per_epoch
    if name == "gaea-erm":
        assert all(a is None for a in seen)  # single level: the whole training set, no arch batch
        assert record.arch_half_acc is None
    else:
        assert all(a is not None for a in seen)
    final = load_arch_weights(tmp_path / ARCH_FILE)
    method = cls(*resolve_settings(cls, smoke))
    torch.manual_seed(0)
    initial = method.export(method.build_supernet(get_dataset("digits").num_classes))
    assert any(not np.allclose(a, b, rtol=0, atol=1e-7)
               for a, b in zip(initial.matrices(), final.matrices(), strict=True))
    # The export is softmax/sigmoid of simplex rows: a gate is sigmoid of a value in [0, 1].
    for cell in ("normal", "reduce"):
        gates = final.cell(cell)[1][1]
        assert (gates >= 0.5 - 1e-6).all() and (gates <= 1 / (1 + np.exp(-1)) + 1e-6).all()


@pytest.mark.slow
def test_erm_resume_after_an_epoch_equals_an_uninterrupted_run(tmp_path, smoke):
    """The single-level path: no arch optimizer and no arch stream in the checkpoint."""
    assert_resume_equals_whole("gaea-erm", smoke.replace(search={"epochs": 3}), tmp_path, seed=1, stop=2)
