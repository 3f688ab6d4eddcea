"""Beta-DARTS: the Beta-Decay regularizer reaches the architecture gradient (upstream it did not)."""

import contextlib
import math

import numpy as np
import pytest
import torch
from conftest import assert_resume_equals_whole
from lhdbench.baselines.beta_darts import beta_regularizer

from lhdbench.data import get_dataset
from lhdbench.methods import SearchContext, get_method, resolve_settings
from lhdbench.protocol import load_protocol
from lhdbench.search import ARCH_FILE, run_search
from lhdbench.space import Supernet, load_arch_weights
from lhdbench.space.layout import node_rows


@pytest.fixture(scope="module")
def smoke():
    return load_protocol("smoke")


def make(smoke, epoch=0, **hparams):
    torch.manual_seed(0)
    cls = get_method("beta-darts")
    settings, defaults = resolve_settings(cls, smoke)
    method = cls(settings, {**defaults, **hparams})
    method.on_epoch_start(epoch)
    net = Supernet(10, 4, 3)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    weight_opt, arch_opt = method.configure_optimizers(net)
    ctx = SearchContext(net, lambda x: method.forward(net, x), weight_opt, arch_opt, settings,
                        contextlib.nullcontext)
    return method, net, ctx


def test_regularizer_is_differentiable_and_reaches_all_four_matrices():
    torch.manual_seed(0)
    net = Supernet(10, 4, 3)
    reg = beta_regularizer(net)
    assert reg.requires_grad and reg.grad_fn is not None
    grads = torch.autograd.grad(reg, net.arch_parameters())
    for name, g in zip(Supernet.ARCH_NAMES, grads, strict=True):
        if name.endswith("_output"):
            assert g[0].abs().sum() > 0, name  # the sum-path row of the normal AND the reduce cell
            assert torch.equal(g[1], torch.zeros_like(g[1])), name  # gates are not regularized
        else:
            assert (g.abs() > 0).all(), name


def test_regularizer_value_matches_the_lhd_definition():
    net = Supernet(10, 4, 3)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.zero_()
    # At alpha = 0 every term is log 14 (node i: log(2/n) + log(7n); outputs: log(14/5) + log 5).
    torch.testing.assert_close(beta_regularizer(net), torch.tensor(math.log(14)))
    torch.manual_seed(3)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    terms = []
    for alphas in (net.alphas_normal, net.alphas_reduce):
        for node in range(5):
            block = alphas[node_rows(node)].detach().double().flatten()
            terms.append(math.log(2 / (node + 2)) + float(torch.logsumexp(block, 0)))
    for out in (net.alphas_normal_output, net.alphas_reduce_output):
        terms.append(math.log(14 / 5) + float(torch.logsumexp(out[0].detach().double(), 0)))
    assert len(terms) == 12
    assert abs(float(beta_regularizer(net).detach()) - sum(terms) / 12) < 1e-5


def test_regularizer_changes_the_architecture_gradient(smoke):
    g = torch.Generator().manual_seed(1)
    arch = torch.randn(6, 3, 16, 16, generator=g), torch.randint(0, 10, (6,), generator=g)
    grads = {}
    for epoch in (0, 10):
        method, net, ctx = make(smoke, epoch=epoch)
        assert method.regularizer_weight() == 0.5 * epoch
        loss = method.arch_loss(ctx, *arch)
        assert loss.grad_fn is not None
        grads[epoch] = torch.autograd.grad(loss, net.arch_parameters())
        reg_grads = torch.autograd.grad(beta_regularizer(net), net.arch_parameters())
    for g0, g10, r in zip(grads[0], grads[10], reg_grads, strict=True):
        assert not torch.allclose(g0, g10)
        torch.testing.assert_close(g10 - g0, 5.0 * r, rtol=1e-4, atol=1e-6)


def test_beta_weight_is_the_coefficient_and_the_default_ramp_is_upstreams(smoke):
    cls = get_method("beta-darts")
    settings, hparams = resolve_settings(cls, smoke.replace(methods={"beta-darts": {}}))
    assert hparams == {"beta_weight": 0.5}
    assert resolve_settings(cls, load_protocol("paper"))[0].batch_size == 128
    method = cls(settings, hparams)
    for epoch, expected in ((0, 0.0), (1, 0.5), (49, 24.5)):
        method.on_epoch_start(epoch)
        assert method.regularizer_weight() == expected
    method = cls(settings, {"beta_weight": 2.0})
    method.load_state_dict({"epoch": 3})
    assert method.regularizer_weight() == 6.0


def test_step_moves_the_architecture_against_the_regularizer(smoke):
    """With a huge lambda the Adam step follows the regularizer: the smooth max decreases."""
    g = torch.Generator().manual_seed(2)
    data = [(torch.randn(6, 3, 16, 16, generator=g), torch.randint(0, 10, (6,), generator=g))
            for _ in range(2)]
    method, net, ctx = make(smoke, epoch=1, beta_weight=1e4)
    before = float(beta_regularizer(net).detach())
    for _ in range(3):
        method.step(ctx, *data)
    assert float(beta_regularizer(net).detach()) < before


@pytest.mark.slow
def test_smoke_search_completes_and_moves_the_architecture(tmp_path, smoke):
    record = run_search("beta-darts", "digits", 0, smoke, tmp_path, progress=False)
    assert record.status == "done" and len(record.history) == smoke.search.epochs
    assert record.hparams == {"beta_weight": 0.5}
    cls = get_method("beta-darts")
    method = cls(*resolve_settings(cls, smoke))
    torch.manual_seed(0)
    initial = method.export(method.build_supernet(get_dataset("digits").num_classes))
    final = load_arch_weights(tmp_path / ARCH_FILE)
    assert any(not np.allclose(a, b, rtol=0, atol=1e-7)
               for a, b in zip(initial.matrices(), final.matrices(), strict=True))


@pytest.mark.slow
def test_resume_keeps_the_regularizer_schedule(tmp_path, smoke):
    assert_resume_equals_whole("beta-darts", smoke.replace(search={"epochs": 3}), tmp_path, seed=1, stop=2)
