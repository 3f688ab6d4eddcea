"""DrNAS: reparameterized Dirichlet(ELU(alpha) + 1) samples, one per edge row and per output row, one
draw per cell type and forward pass; softmax export by default, Dirichlet-mean export as an option."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ARCH_NAMES, smoke_search_moving_every_arch_parameter
from lhdbench.baselines.drnas import concentration, dirichlet_cell_weights, dirichlet_mean_weights

from lhdbench.methods import get_method, resolve_settings
from lhdbench.protocol import ProtocolError, load_protocol
from lhdbench.space import PRIMITIVES, discretize, get_policy
from lhdbench.space.layout import NUM_NODES, node_rows
from lhdbench.space.supernet import lhd_cell_weights

SMOKE = load_protocol("smoke")


def make_method(**hparams):
    cls = get_method("drnas")
    settings, checked = resolve_settings(cls, SMOKE.replace(methods={"drnas": hparams}))
    return cls(dataclasses.replace(settings, layers=5), checked)


def random_net(method):
    net = method.build_supernet(10)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    return net


def test_edge_and_output_samples_lie_on_the_simplex_per_row():
    torch.manual_seed(0)
    alphas, out = 2 * torch.randn(20, 7), 2 * torch.randn(2, 5)
    for _ in range(200):
        w = dirichlet_cell_weights(alphas, out)
        assert w.nodes.shape == (20, 7) and w.outputs.shape == (2, 5)
        assert (w.nodes >= 0).all() and (w.outputs >= 0).all()
        torch.testing.assert_close(w.nodes.sum(1), torch.ones(20))  # one Dirichlet per edge row
        torch.testing.assert_close(w.outputs.sum(1), torch.ones(2))  # sum row and gate row
        for node in range(NUM_NODES):  # so a node's weights sum to its number of inputs
            torch.testing.assert_close(w.nodes[node_rows(node)].sum(), torch.tensor(float(node + 2)))


def test_sample_mean_is_the_dirichlet_mean_of_elu_plus_one():
    torch.manual_seed(1)
    alphas, out = torch.randn(20, 7), torch.randn(2, 5)
    count = 4000
    w = dirichlet_cell_weights(alphas.expand(count, -1, -1), out.expand(count, -1, -1))
    beta, beta_out = F.elu(alphas) + 1, F.elu(out) + 1
    torch.testing.assert_close(w.nodes.mean(0), beta / beta.sum(1, keepdim=True), atol=0.01, rtol=0)
    torch.testing.assert_close(w.outputs.mean(0), beta_out / beta_out.sum(1, keepdim=True), atol=0.01, rtol=0)
    assert torch.equal(concentration(alphas), beta)


def test_one_sample_per_cell_type_and_forward_and_a_new_one_each_forward():
    torch.manual_seed(2)
    method = make_method()
    net = random_net(method)
    seen = []
    for cell in net.cells:
        cell.register_forward_pre_hook(lambda m, args: seen.append((m.reduction, args[2])))
    x = torch.randn(2, 3, 16, 16)
    method.forward(net, x)
    first, seen[:] = list(seen), []
    method.forward(net, x)
    assert [r for r, _ in first] == [False, True, False, True, False]
    normal = [w for r, w in first if not r]
    reduce = [w for r, w in first if r]
    for group in (normal, reduce):
        assert all(torch.equal(w.nodes, group[0].nodes) and torch.equal(w.outputs, group[0].outputs)
                   for w in group)
    assert not torch.equal(normal[0].nodes, reduce[0].nodes)
    # the next forward (the weight step after the arch step) draws again
    assert not torch.equal(seen[0][1].nodes, normal[0].nodes)
    assert not torch.equal(seen[0][1].outputs, normal[0].outputs)


def test_gradients_reach_all_alphas_through_rsample():
    torch.manual_seed(3)
    method = make_method()
    net = random_net(method)
    F.cross_entropy(method.forward(net, torch.randn(4, 3, 16, 16)), torch.randint(0, 10, (4,))).backward()
    for name in ARCH_NAMES:
        grad = getattr(net, name).grad
        assert grad is not None and torch.isfinite(grad).all(), name
        assert (grad != 0).float().mean() > 0.9, name
    # the gate row is a Dirichlet sample too, so it is trained through the sample
    assert (net.alphas_normal_output.grad[1] != 0).all()


def test_default_export_is_the_plain_softmax_sigmoid_at_t1():
    torch.manual_seed(4)
    method = make_method()
    net = random_net(method)
    weights = method.export(net)
    assert weights.metadata["export"] == "softmax" and weights.metadata["export_temperature"] == 1.0
    expected = lhd_cell_weights(net.alphas_normal, net.alphas_normal_output, 1.0)
    np.testing.assert_allclose(weights.normal, expected.nodes.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(weights.normal_output, expected.outputs.detach().numpy(), rtol=1e-6)


def test_dirichlet_mean_export_is_a_valid_arch_file_with_the_search_ranking():
    torch.manual_seed(5)
    method = make_method(export="dirichlet_mean")
    net = random_net(method)
    weights = method.export(net)  # ArchWeights validates: node blocks and the sum row sum to 1
    assert weights.metadata["export"] == "dirichlet_mean"
    for cell, prefix in (("normal", "alphas_normal"), ("reduce", "alphas_reduce")):
        nodes, outputs = weights.cell(cell)
        alphas, out = getattr(net, prefix).detach(), getattr(net, f"{prefix}_output").detach()
        beta, beta_out = F.elu(alphas) + 1, F.elu(out) + 1
        mean = (beta / beta.sum(1, keepdim=True)).numpy()
        for node in range(NUM_NODES):  # the per-edge means, divided by the node's input count
            rows = node_rows(node)
            np.testing.assert_allclose(nodes[rows], mean[rows] / (node + 2), rtol=1e-5)
        np.testing.assert_allclose(outputs, (beta_out / beta_out.sum(1, keepdim=True)).numpy(), rtol=1e-5)
        assert ((outputs[1] > 0) & (outputs[1] < 1)).all()
    # discretization reads the same ranking as the expected search weights (scale per node / per row)
    direct = dirichlet_mean_weights(net.alphas_normal.detach(), net.alphas_normal_output.detach())
    for name in ("base", "4out"):
        genotype = discretize(weights, get_policy(name))
        unscaled = np.concatenate([direct.nodes.numpy()[node_rows(n)] * (n + 2) for n in range(NUM_NODES)])
        for node in range(NUM_NODES):
            block = unscaled[node_rows(node)].reshape(-1)
            top = {(int(i) // 7, int(i) % 7) for i in np.argsort(-block, kind="stable")[:2]}
            kept = {(e.input, PRIMITIVES.index(e.op)) for e in genotype.normal.edges if e.node == node}
            assert kept <= top


def test_unknown_export_is_rejected():
    with pytest.raises(ProtocolError, match="export"):
        make_method(export="mean")


def test_defaults_and_flags():
    cls = get_method("drnas")
    settings, hparams = resolve_settings(cls, SMOKE)
    assert hparams == {"export": "softmax"}
    assert settings.arch_lr == 3e-4 and settings.batch_size == SMOKE.search.batch_size
    assert cls.bilevel and cls.trains and not cls.static_graph


@pytest.mark.slow
def test_smoke_search_completes_and_moves_the_architecture(tmp_path):
    _, weights, _ = smoke_search_moving_every_arch_parameter("drnas", SMOKE, tmp_path)
    assert weights.metadata["method"] == "drnas" and weights.metadata["export"] == "softmax"
