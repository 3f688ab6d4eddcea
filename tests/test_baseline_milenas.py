"""MiLeNAS: the architecture gradient is grad(val loss) + lambda * grad(train loss) at the same weights."""

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lhdbench.data import get_dataset
from lhdbench.methods import SearchContext, get_method, resolve_settings
from lhdbench.protocol import load_protocol
from lhdbench.search import ARCH_FILE, run_search
from lhdbench.space import Supernet, load_arch_weights


@pytest.fixture(scope="module")
def smoke():
    return load_protocol("smoke")


class RecordingOptimizer(torch.optim.SGD):
    """An arch optimizer that changes nothing and records the gradients its `step` sees."""

    def __init__(self, params):
        super().__init__(params, lr=0.0)
        self.seen: list[list[torch.Tensor]] = []

    def step(self, closure=None):
        self.seen.append([p.grad.detach().clone() for p in self.param_groups[0]["params"]])


def initial_export(name, protocol, seed):
    """What the search starts from: the loop seeds torch with the trial seed, then builds the supernet."""
    cls = get_method(name)
    method = cls(*resolve_settings(cls, protocol))
    torch.manual_seed(seed)
    return method.export(method.build_supernet(get_dataset("digits").num_classes))


def batches(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    make = lambda: (torch.randn(6, 3, 16, 16, generator=g), torch.randint(0, 10, (6,), generator=g))  # noqa: E731
    return make(), make()


def one_step(smoke, lam: float):
    torch.manual_seed(0)
    cls = get_method("milenas")
    settings, hparams = resolve_settings(cls, smoke)
    method = cls(settings, {**hparams, "mixed_level_lambda": lam})
    net = Supernet(10, 4, 3)
    with torch.no_grad():  # arch params away from ~0 so that both gradients are clearly non-zero
        for p in net.arch_parameters():
            p.normal_()
    train, val = batches()
    arch = net.arch_parameters()
    g_val = torch.autograd.grad(F.cross_entropy(net(val[0]), val[1]), arch)
    train_loss = F.cross_entropy(net(train[0]), train[1])
    g_train = torch.autograd.grad(train_loss, arch + net.weight_parameters())
    weight_opt, _ = method.configure_optimizers(net)
    arch_opt = RecordingOptimizer(arch)
    ctx = SearchContext(net, lambda x: method.forward(net, x), weight_opt, arch_opt, settings,
                        contextlib.nullcontext)
    before = [p.detach().clone() for p in net.weight_parameters()]
    method.step(ctx, train, val)
    return net, arch_opt, g_val, g_train[:4], g_train[4:], before, settings


def test_architecture_gradient_is_val_plus_train_gradient_at_the_same_weights(smoke):
    net, arch_opt, g_val, g_train, _, _, _ = one_step(smoke, 1.0)
    assert len(arch_opt.seen) == 1
    for got, gv, gt in zip(arch_opt.seen[0], g_val, g_train, strict=True):
        assert gv.abs().sum() > 0 and gt.abs().sum() > 0
        torch.testing.assert_close(got, gv + gt, rtol=1e-5, atol=1e-7)
        # and it is really the sum, not one of the two
        assert not torch.allclose(got, gv) and not torch.allclose(got, gt)


def test_mixed_level_lambda_scales_only_the_train_part(smoke):
    _, arch_opt, g_val, g_train, _, _, _ = one_step(smoke, 0.25)
    for got, gv, gt in zip(arch_opt.seen[0], g_val, g_train, strict=True):
        torch.testing.assert_close(got, gv + 0.25 * gt, rtol=1e-5, atol=1e-7)


def test_weights_step_on_the_clipped_train_gradient_only(smoke):
    net, _, _, _, g_weights, before, settings = one_step(smoke, 1.0)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in g_weights]))
    scale = min(1.0, settings.grad_clip / (float(norm) + 1e-6))
    for p, g in zip(net.weight_parameters(), g_weights, strict=True):
        torch.testing.assert_close(p.grad, g * scale, rtol=1e-4, atol=1e-7)
    moved = sum(not torch.equal(b, p) for b, p in zip(before, net.weight_parameters(), strict=True))
    assert moved > len(before) // 2


def test_defaults_are_the_lhd_protocol_with_lambda_1(smoke):
    cls = get_method("milenas")
    settings, hparams = resolve_settings(cls, smoke)
    assert hparams == {"mixed_level_lambda": 1.0}
    assert cls.bilevel and cls.trains and cls.static_graph
    assert settings.arch_lr == 3e-4 and settings.batch_size == smoke.search.batch_size


@pytest.mark.slow
def test_smoke_search_completes_and_moves_the_architecture(tmp_path, smoke):
    record = run_search("milenas", "digits", 0, smoke, tmp_path, progress=False)
    assert record.status == "done" and len(record.history) == smoke.search.epochs
    initial = initial_export("milenas", smoke, seed=0)
    final = load_arch_weights(tmp_path / ARCH_FILE)
    assert final.metadata["method"] == "milenas"
    assert any(not np.allclose(a, b, rtol=0, atol=1e-7)
               for a, b in zip(initial.matrices(), final.matrices(), strict=True))
