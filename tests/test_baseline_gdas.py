"""GDAS: one hard-sampled (input, op) pair per node and one sum node, independently per cell; only the
chosen op runs; straight-through gradients; tau linear from 10 to 0.1."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import smoke_search_moving_every_arch_parameter
from lhdbench.baselines.gdas import (
    GdasEdge,
    hard_gumbel_softmax,
    padded_node_logits,
    sample_cell_weights,
    tau_at,
)

from lhdbench.methods import get_method, resolve_settings
from lhdbench.protocol import ProtocolError, load_protocol
from lhdbench.space.layout import NUM_NODES, node_rows
from lhdbench.space.supernet import lhd_cell_weights, reduction_cells

SMOKE = load_protocol("smoke")


def make_method(epochs: int = 50, **hparams):
    cls = get_method("gdas")
    settings, checked = resolve_settings(cls, SMOKE.replace(methods={"gdas": hparams}))
    return cls(dataclasses.replace(settings, epochs=epochs), checked)


def small_net(method, layers: int = 5):
    """Width 4, `layers` cells (5: normal cells 0, 2, 4), random non-trivial alphas."""
    method.settings = dataclasses.replace(method.settings, layers=layers, init_channels=4)
    net = method.build_supernet(10)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    return net


def check_one_pair_per_node(nodes: torch.Tensor, outputs: torch.Tensor) -> None:
    """nodes (..., 20, 7), outputs (..., 2, 5) of hard GDAS samples."""
    for node in range(NUM_NODES):
        block = nodes[..., node_rows(node), :].flatten(-2)
        assert ((block != 0).sum(-1) == 1).all(), f"node {node}: not exactly one non-zero pair"
        torch.testing.assert_close(block.sum(-1), torch.ones(block.shape[:-1]))
    assert ((outputs[..., 0, :] != 0).sum(-1) == 1).all()
    torch.testing.assert_close(outputs[..., 0, :].sum(-1), torch.ones(outputs.shape[:-2]))


@pytest.mark.parametrize("tau", [10.0, 1.0, 0.1])
def test_every_sample_has_exactly_one_pair_per_node_and_one_sum_node(tau):
    torch.manual_seed(0)
    alphas, out = torch.randn(20, 7), torch.randn(2, 5)
    count = 500
    nodes, outputs, positions = sample_cell_weights(padded_node_logits(alphas).expand(count, -1, -1),
                                                    out.expand(count, -1, -1), tau)
    check_one_pair_per_node(nodes, outputs)
    # the concat gates are the plain sigmoid, not sampled
    torch.testing.assert_close(outputs[:, 1], torch.sigmoid(out[1]).expand(count, -1))
    # the reported position is the non-zero pair of each node
    for node in range(NUM_NODES):
        block = nodes[:, node_rows(node)].flatten(1)
        assert torch.equal(block.argmax(1), positions[:, node])


def test_hard_gumbel_softmax_is_torchs_straight_through_gumbel_softmax():
    logits = torch.randn(6, 42, requires_grad=True)
    torch.manual_seed(7)
    ours = hard_gumbel_softmax(logits, 0.5)
    torch.manual_seed(7)
    theirs = F.gumbel_softmax(logits, tau=0.5, hard=True, dim=-1)
    assert torch.equal(ours, theirs)
    g = torch.randn(6, 42)
    assert torch.equal(torch.autograd.grad((ours * g).sum(), logits)[0],
                       torch.autograd.grad((theirs * g).sum(), logits)[0])


def test_hard_samples_follow_the_joint_softmax_of_the_node_block():
    """Gumbel-max: the chosen pair is distributed as softmax over the node's whole (input, op) block."""
    torch.manual_seed(1)
    alphas = torch.randn(20, 7)
    count = 20000
    nodes, _, positions = sample_cell_weights(padded_node_logits(alphas).expand(count, -1, -1),
                                              torch.zeros(count, 2, 5), 10.0)
    for node in (0, 4):
        block = alphas[node_rows(node)].flatten()
        expected = F.softmax(block, 0)
        observed = torch.bincount(positions[:, node], minlength=block.numel())[: block.numel()] / count
        assert (observed - expected).abs().max() < 5 * (0.25 / count) ** 0.5


def test_each_cell_gets_its_own_sample_and_runs_only_the_chosen_ops():
    torch.manual_seed(2)
    method = make_method()
    method.on_epoch_start(0)
    net = small_net(method)
    assert [c.reduction for c in net.cells] == [i in reduction_cells(5) for i in range(5)]
    seen, calls = [], []
    for c, cell in enumerate(net.cells):
        cell.register_forward_pre_hook(lambda m, args, c=c: seen.append((c, args[2])))
        for row, edge in enumerate(cell.edges):
            for k, op in enumerate(edge.ops):
                op.register_forward_hook(lambda m, i, o, key=(c, row, k): calls.append(key))
    logits = method.forward(net, torch.randn(4, 3, 16, 16))
    assert logits.shape == (4, 10)
    assert [c for c, _ in seen] == list(range(5))
    for _, weights in seen:
        check_one_pair_per_node(weights.nodes, weights.outputs)
    # exactly one op per node ran in every cell: the one of the sampled non-zero entry
    for c, weights in seen:
        ran = sorted((row, k) for cc, row, k in calls if cc == c)
        chosen = sorted(tuple(ix) for ix in (weights.nodes != 0).nonzero().tolist())
        assert ran == chosen and len(ran) == NUM_NODES
    # the three normal cells were sampled independently (all equal has probability ~1e-7 per forward)
    normal = [w.nodes for c, w in seen if not net.cells[c].reduction]
    assert len(normal) == 3 and not (torch.equal(normal[0], normal[1]) and torch.equal(normal[1], normal[2]))
    # the per-forward plan is cleared afterwards
    assert all(edge.choice is None for cell in net.cells for edge in cell.edges)


def test_sample_per_cell_false_shares_one_sample_per_cell_type_as_the_gdas_paper():
    torch.manual_seed(6)
    method = make_method(sample_per_cell=False)
    method.on_epoch_start(0)
    net = small_net(method)
    seen = []
    for cell in net.cells:
        cell.register_forward_pre_hook(lambda m, args: seen.append((m.reduction, args[2])))
    method.forward(net, torch.randn(2, 3, 16, 16))
    for reduction in (False, True):
        group = [w for r, w in seen if r == reduction]
        assert len(group) >= 2 and all(torch.equal(w.nodes, group[0].nodes) for w in group)
        check_one_pair_per_node(group[0].nodes, group[0].outputs)
    with pytest.raises(ProtocolError):
        make_method(sample_per_cell="yes")


def test_gradients_reach_every_node_block_and_both_output_rows_straight_through():
    torch.manual_seed(3)
    method = make_method()
    method.on_epoch_start(10)
    net = small_net(method, layers=3)
    # One sample can leave a node without gradient (when nothing downstream reads it, e.g. no node of
    # the next cell picked the concat input), so accumulate a few samples.
    for _ in range(8):
        x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
        F.cross_entropy(method.forward(net, x), y).backward()
    for name in ("alphas_normal", "alphas_reduce"):
        grad = getattr(net, name).grad
        assert torch.isfinite(grad).all()
        for node in range(NUM_NODES):  # the soft relaxation reaches every entry of every node block
            assert (grad[node_rows(node)] != 0).all(), (name, node)
    for name in ("alphas_normal_output", "alphas_reduce_output"):
        grad = getattr(net, name).grad
        assert torch.isfinite(grad).all() and (grad[0] != 0).all() and (grad[1] != 0).all()
    # ops that did not run get no gradient


def test_ops_that_were_not_sampled_get_no_gradient():
    torch.manual_seed(5)
    method = make_method()
    method.on_epoch_start(0)
    net = small_net(method, layers=3)
    F.cross_entropy(method.forward(net, torch.randn(4, 3, 16, 16)), torch.randint(0, 10, (4,))).backward()
    ops = [op for cell in net.cells for e in cell.edges for op in e.ops if any(True for _ in op.parameters())]
    untouched = [op for op in ops if all(p.grad is None for p in op.parameters())]
    assert len(untouched) > len(ops) // 2


def test_edge_without_a_plan_reads_its_own_weight_row():
    torch.manual_seed(4)
    edge = GdasEdge(4, 1)
    x = torch.randn(2, 4, 8, 8)
    zero = torch.zeros(7, requires_grad=True)
    out = edge(x, zero)
    assert out.dim() == 0 and float(out.detach()) == 0.0
    out.backward()
    assert torch.equal(zero.grad, torch.ones(7))  # the zero edge still carries the gradient
    calls = []
    for k, op in enumerate(edge.ops):
        op.register_forward_hook(lambda m, i, o, k=k: calls.append(k))
    w = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    torch.testing.assert_close(edge(x, w), edge.ops[4](x))
    assert calls == [4, 4]


def test_tau_falls_linearly_from_10_at_epoch_0_to_0_1_at_the_last_epoch():
    method = make_method(epochs=50)
    method.on_epoch_start(0)
    assert method.tau == 10.0
    method.on_epoch_start(49)
    assert method.tau == pytest.approx(0.1)
    method.on_epoch_start(25)
    assert method.tau == pytest.approx(10 - 9.9 * 25 / 49)
    assert tau_at(0, 1, 10.0, 0.1) == 10.0  # a one-epoch search stays at tau_max
    smoke = make_method(epochs=2)
    smoke.on_epoch_start(1)
    assert smoke.tau == pytest.approx(0.1)
    resumed = make_method(epochs=50)
    resumed.load_state_dict(method.state_dict())  # tau follows the restored epoch
    assert resumed.epoch == 25 and resumed.tau == method.tau
    with pytest.raises(ProtocolError):
        make_method(tau_min=0.0)


def test_defaults_and_flags():
    cls = get_method("gdas")
    settings, hparams = resolve_settings(cls, SMOKE)
    assert resolve_settings(cls, load_protocol("paper"))[0].batch_size == 256
    # smoke's batch is 16 for the paper's 176: GDAS's own 256 follows by the same factor.
    assert settings.batch_size == round(256 * 16 / 176) and settings.weight_lr == 0.05
    assert settings.weight_lr_min == 3e-4 and settings.arch_lr == 3e-4
    assert hparams == {"tau_max": 10.0, "tau_min": 0.1, "sample_per_cell": True}
    assert cls.bilevel and cls.trains and not cls.static_graph


@pytest.mark.slow
def test_smoke_search_completes_moves_the_architecture_and_exports_softmax_at_t1(tmp_path):
    _, weights, final = smoke_search_moving_every_arch_parameter("gdas", SMOKE, tmp_path)
    assert weights.metadata["method"] == "gdas" and weights.metadata["export_temperature"] == 1.0
    for cell, prefix in (("normal", "alphas_normal"), ("reduce", "alphas_reduce")):
        expected = lhd_cell_weights(final[prefix], final[f"{prefix}_output"], 1.0)
        nodes, outputs = weights.cell(cell)
        torch.testing.assert_close(torch.from_numpy(nodes), expected.nodes)
        torch.testing.assert_close(torch.from_numpy(outputs), expected.outputs)
