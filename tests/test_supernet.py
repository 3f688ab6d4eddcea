"""lhdbench.space.supernet: the LHD search network (chaoji90/LHD `search/concate_sum_five_sig.py`)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lhdbench.space.layout import node_rows
from lhdbench.space.ops import PRIMITIVES
from lhdbench.space.supernet import (
    CellWeights,
    MixedOp,
    SearchCell,
    Supernet,
    joint_node_softmax,
    lhd_cell_weights,
    reduction_cells,
)

pytestmark = pytest.mark.usefixtures("single_thread_torch")

SKIP = PRIMITIVES.index("skip_connect")
ARCH_SHAPES = {"alphas_normal": (20, 7), "alphas_reduce": (20, 7),
               "alphas_normal_output": (2, 5), "alphas_reduce_output": (2, 5)}
# Upstream channels at search settings:
# cell -> (reduction, preprocess0 (in, out) or None, preprocess1 (in, out), sum, concat, size)
CHANNEL_TABLE = {
    0: (False, None, (48, 16), 16, 80, 32),
    1: (False, None, (80, 16), 16, 80, 32),
    2: (True, (16, 32), (80, 32), 32, 160, 16),
    3: (False, None, (160, 32), 32, 160, 16),
    4: (False, None, (160, 32), 32, 160, 16),
    5: (True, (32, 64), (160, 64), 64, 320, 8),
    6: (False, None, (320, 64), 64, 320, 8),
    7: (False, None, (320, 64), 64, 320, 8),
}

@pytest.fixture(scope="module")
def supernet() -> Supernet:
    torch.manual_seed(0)
    return Supernet(10)


def n_weights(net: Supernet) -> int:
    return sum(p.numel() for p in net.weight_parameters())


@pytest.mark.parametrize(("classes", "count"), [(10, 560_714), (100, 595_364)])
def test_weight_parameter_count(classes, count):
    assert n_weights(Supernet(classes)) == count


@pytest.mark.parametrize(("mixed_op", "edge_modules"), [(None, ".groups."), (MixedOp, ".edges.")],
                         ids=["fused", "reference"])
def test_weight_parameter_breakdown(mixed_op, edge_modules):
    # Upstream: stems 1,856; preprocess1 66,048; preprocess0 2,560; MixedOps 486,400; classifier 3,850.
    net = Supernet(10, mixed_op=mixed_op)

    def count(prefix_test):
        return sum(p.numel() for name, p in net.named_parameters() if prefix_test(name))

    assert count(lambda n: n.startswith("stem_")) == 1_856
    assert count(lambda n: ".preprocess1." in n) == 66_048
    assert count(lambda n: ".preprocess0." in n) == 2_560
    assert count(lambda n: edge_modules in n) == 486_400
    assert count(lambda n: n.startswith("classifier.")) == 3_850


def test_arch_parameters_are_registered_and_checkpointed(supernet):
    named = dict(supernet.named_parameters())
    state = supernet.state_dict()
    arch = supernet.arch_parameters()
    assert len(arch) == 4
    for (name, shape), param in zip(ARCH_SHAPES.items(), arch, strict=True):
        assert isinstance(param, nn.Parameter)
        assert param.requires_grad
        assert named[name] is param
        assert tuple(param.shape) == shape
        assert name in state and torch.equal(state[name], param.detach())
        # DARTS-style init 1e-3 * N(0, 1), as upstream: tiny but not all zero.
        assert param.abs().max() < 1e-2
        assert param.abs().max() > 0


def test_arch_and_weight_parameters_partition_parameters(supernet):
    arch = {id(p) for p in supernet.arch_parameters()}
    weights = [id(p) for p in supernet.weight_parameters()]
    assert len(weights) == len(set(weights))
    assert arch.isdisjoint(weights)
    assert arch | set(weights) == {id(p) for p in supernet.parameters()}


def test_state_dict_round_trip_restores_arch_parameters():
    torch.manual_seed(1)
    a = Supernet(10)
    torch.manual_seed(2)
    b = Supernet(10)
    assert not torch.equal(a.alphas_normal, b.alphas_normal)
    b.load_state_dict(a.state_dict())
    for pa, pb in zip(a.arch_parameters(), b.arch_parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize(("layers", "expected"), [(8, (2, 5)), (20, (6, 13)), (25, (8, 16)), (3, (1, 2))])
def test_reduction_cells(layers, expected):
    assert reduction_cells(layers) == expected


def test_channel_table_and_forward_shape(supernet):
    records: dict[int, dict] = {}

    def hook_for(index, part):
        def hook(module, inputs, output):
            entry = records.setdefault(index, {})
            if part == "cell":
                entry["out"] = tuple(t.shape for t in output)
            else:
                entry[part] = (inputs[0].shape[1], output.shape[1])
        return hook

    handles = []
    for index, cell in enumerate(supernet.cells):
        handles.append(cell.register_forward_hook(hook_for(index, "cell")))
        handles.append(cell.preprocess0.register_forward_hook(hook_for(index, "pre0")))
        handles.append(cell.preprocess1.register_forward_hook(hook_for(index, "pre1")))
    try:
        supernet.eval()
        with torch.no_grad():
            logits = supernet(torch.randn(2, 3, 32, 32))
    finally:
        for handle in handles:
            handle.remove()
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    assert len(records) == 8
    for index, (reduction, pre0, pre1, c_sum, c_concat, size) in CHANNEL_TABLE.items():
        cell = supernet.cells[index]
        entry = records[index]
        assert cell.reduction is reduction
        if pre0 is None:
            assert isinstance(cell.preprocess0, nn.Identity)
            assert entry["pre0"] == (c_sum, c_sum)
        else:
            assert entry["pre0"] == pre0
        assert entry["pre1"] == pre1
        assert entry["out"] == ((2, c_sum, size, size), (2, c_concat, size, size))
    assert supernet.classifier.in_features == 384


def test_joint_node_softmax_is_one_softmax_per_node_block():
    torch.manual_seed(0)
    alphas = torch.randn(20, 7)
    weights = joint_node_softmax(alphas)
    assert weights.shape == (20, 7)
    for node in range(5):
        block = weights[node_rows(node)]
        torch.testing.assert_close(block.sum(), torch.tensor(1.0))
        expected = F.softmax(alphas[node_rows(node)].flatten(), dim=0).view_as(block)
        torch.testing.assert_close(block, expected)
        # Not a per-row softmax: rows compete, so a row alone does not sum to 1.
        per_row = F.softmax(alphas[node_rows(node)], dim=1)
        assert not torch.allclose(block, per_row)
        assert not torch.allclose(block.sum(dim=1), torch.ones(block.shape[0]))


def test_joint_node_softmax_temperature():
    torch.manual_seed(0)
    alphas = torch.randn(20, 7)
    hot, cold = joint_node_softmax(alphas, 1.0), joint_node_softmax(alphas, 0.1)
    assert not torch.allclose(hot, cold)
    torch.testing.assert_close(cold, joint_node_softmax(alphas / 0.1))
    for node in range(5):
        rows = node_rows(node)
        assert cold[rows].max() > hot[rows].max()  # lower temperature sharpens
        assert cold[rows].argmax() == hot[rows].argmax()
        torch.testing.assert_close(cold[rows].sum(), torch.tensor(1.0))
    # A very low temperature is near one-hot per node (upstream SP-DARTS saves at T = 0.0015).
    frozen = joint_node_softmax(alphas, 0.0015)
    for node in range(5):
        assert frozen[node_rows(node)].max() > 0.99


def test_lhd_cell_weights_transforms():
    torch.manual_seed(0)
    nodes, outputs = torch.randn(20, 7), torch.randn(2, 5)
    for temperature in (1.0, 0.5):
        weights = lhd_cell_weights(nodes, outputs, temperature)
        torch.testing.assert_close(weights.nodes, joint_node_softmax(nodes, temperature))
        torch.testing.assert_close(weights.outputs[0], F.softmax(outputs[0] / temperature, dim=0))
        # The gates take no temperature, as upstream.
        torch.testing.assert_close(weights.outputs[1], torch.sigmoid(outputs[1]))


def test_mixed_op_is_weighted_sum_of_all_primitives():
    torch.manual_seed(0)
    op = MixedOp(4, 1).eval()
    x = torch.randn(2, 4, 8, 8)
    w = torch.rand(7)
    expected = sum(w[i] * op.ops[i](x) for i in range(7))
    torch.testing.assert_close(op(x, w), expected)
    one_hot = torch.zeros(7)
    one_hot[SKIP] = 1.0
    torch.testing.assert_close(op(x, one_hot), x)


def make_cell_weights(edges: dict[int, list[tuple[int, int]]], sum_weights, gates) -> CellWeights:
    """Node weights: node -> [(input, op)] pairs, the pairs of a node share weight 1/len."""
    nodes = torch.zeros(20, 7)
    for node, pairs in edges.items():
        start = node_rows(node).start
        for source, op in pairs:
            nodes[start + source, op] = 1.0 / len(pairs)
    return CellWeights(nodes, torch.tensor([sum_weights, gates], dtype=torch.float32))


@pytest.fixture
def normal_cell() -> SearchCell:
    torch.manual_seed(0)
    return SearchCell(4, 12, 4, reduction=False).eval()


def cell_inputs():
    torch.manual_seed(1)
    return torch.randn(2, 4, 8, 8), torch.randn(2, 12, 8, 8)


# Every node wired to skip_connect edges so node values are easy to predict:
# node0 = s0, node1 = node0 (input 2), node2..4 = s0 (input 0).
SKIP_WIRING = {0: [(0, SKIP)], 1: [(2, SKIP)], 2: [(0, SKIP)], 3: [(0, SKIP)], 4: [(0, SKIP)]}


def test_zero_gate_zeroes_concat_slice_and_later_uses_but_not_sum(normal_cell):
    s0, s1 = cell_inputs()
    weights = make_cell_weights(SKIP_WIRING, [1.0, 0, 0, 0, 0], [0.0, 1.0, 1.0, 1.0, 1.0])
    with torch.no_grad():
        sum_out, concat = normal_cell(s0, s1, weights)
    assert sum_out.shape == (2, 4, 8, 8) and concat.shape == (2, 20, 8, 8)
    # The sum path takes node 0 ungated, although its gate is 0.
    torch.testing.assert_close(sum_out, s0)
    assert torch.count_nonzero(sum_out) > 0
    # Node 0's concat slice is zero, and so is node 1, which reads the gated node 0.
    assert torch.count_nonzero(concat[:, 0:4]) == 0
    assert torch.count_nonzero(concat[:, 4:8]) == 0
    for node in (2, 3, 4):
        torch.testing.assert_close(concat[:, 4 * node: 4 * node + 4], s0)


def test_gates_scale_concat_and_sum_weights_scale_ungated_nodes(normal_cell):
    s0, s1 = cell_inputs()
    gates = [0.25, 0.5, 0.75, 0.1, 0.9]
    sums = [0.4, 0.3, 0.1, 0.1, 0.1]
    weights = make_cell_weights(SKIP_WIRING, sums, gates)
    with torch.no_grad():
        sum_out, concat = normal_cell(s0, s1, weights)
    raw = [s0, 0.25 * s0, s0, s0, s0]  # node 1 reads node 0 after its gate
    torch.testing.assert_close(sum_out, sum(w * r for w, r in zip(sums, raw, strict=True)))
    for node in range(5):
        torch.testing.assert_close(concat[:, 4 * node: 4 * node + 4], gates[node] * raw[node])


def test_joint_weights_spread_over_inputs(normal_cell):
    # Node 0 takes half of s0 and half of preprocessed s1 through skip_connect.
    s0, s1 = cell_inputs()
    edges = dict(SKIP_WIRING)
    edges[0] = [(0, SKIP), (1, SKIP)]
    weights = make_cell_weights(edges, [1.0, 0, 0, 0, 0], [1.0] * 5)
    with torch.no_grad():
        sum_out, _ = normal_cell(s0, s1, weights)
        expected = 0.5 * s0 + 0.5 * normal_cell.preprocess1(s1)
    torch.testing.assert_close(sum_out, expected)


def test_reduction_cell_shapes_and_strides():
    torch.manual_seed(0)
    cell = SearchCell(4, 20, 8, reduction=True).eval()
    assert not isinstance(cell.preprocess0, nn.Identity)
    strides = []
    for node in range(5):
        for source, row in enumerate(range(node_rows(node).start, node_rows(node).stop)):
            strides.append((source, cell.edges[row].ops[SKIP].__class__.__name__))
    assert all((name == "FactorizedReduce") == (source < 2) for source, name in strides)
    weights = make_cell_weights({n: [(0, 3)] for n in range(5)}, [0.2] * 5, [0.5] * 5)
    with torch.no_grad():
        sum_out, concat = cell(torch.randn(2, 4, 16, 16), torch.randn(2, 20, 16, 16), weights)
    assert sum_out.shape == (2, 8, 8, 8)
    assert concat.shape == (2, 40, 8, 8)


def test_backward_reaches_all_arch_parameters():
    torch.manual_seed(0)
    net = Supernet(10)
    net.train()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    F.cross_entropy(net(x), y).backward()
    for name, param in zip(Supernet.ARCH_NAMES, net.arch_parameters(), strict=True):
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert all(p.grad is not None for p in net.weight_parameters() if p.requires_grad
               and p.dim() > 1)


def test_weights_fn_is_called_once_per_cell(supernet):
    calls = []

    def weights_fn(net, reduction, temperature):
        calls.append((reduction, temperature))
        return net.cell_weights(reduction, temperature)

    supernet.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        custom = supernet(x, temperature=0.7, weights_fn=weights_fn)
        default = supernet(x, temperature=0.7)
    assert calls == [(r, 0.7) for r in (False, False, True, False, False, True, False, False)]
    torch.testing.assert_close(custom, default)


def last_cell_output(net: Supernet, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """The last cell's concat output. Use train mode: in eval mode a fresh net's activations shrink
    towards zero cell after cell, and its logits are dominated by the classifier bias."""
    seen = []
    handle = net.cells[-1].register_forward_hook(lambda m, i, out: seen.append(out[1]))
    try:
        with torch.no_grad():
            net(x, **kwargs)
    finally:
        handle.remove()
    return seen[0]


def test_weights_fn_output_is_used(supernet):
    # Two different weight choices must give different features: forward really uses weights_fn.
    supernet.train()
    x = torch.randn(2, 3, 32, 32)

    def uniform(net, reduction, temperature):
        return CellWeights(torch.full((20, 7), 1.0 / 14), torch.tensor([[0.2] * 5, [0.5] * 5]))

    def skip_only(net, reduction, temperature):
        return make_cell_weights({n: [(0, SKIP)] for n in range(5)}, [0.2] * 5, [0.5] * 5)

    a = last_cell_output(supernet, x, weights_fn=uniform)
    b = last_cell_output(supernet, x, weights_fn=skip_only)
    assert not torch.allclose(a, b, rtol=1e-3, atol=1e-3)


def test_temperature_changes_forward_output():
    torch.manual_seed(0)
    net = Supernet(10).train()
    with torch.no_grad():
        for param in net.arch_parameters():
            param.normal_()
    x = torch.randn(2, 3, 32, 32)
    hot = last_cell_output(net, x, temperature=1.0)
    cold = last_cell_output(net, x, temperature=0.2)
    assert not torch.allclose(hot, cold, rtol=1e-3, atol=1e-3)


def test_cell_weights_use_the_cell_type_alphas():
    torch.manual_seed(0)
    net = Supernet(10, channels=4, layers=3)
    with torch.no_grad():
        for param in net.arch_parameters():
            param.normal_()
    normal, reduce = net.cell_weights(False), net.cell_weights(True)
    torch.testing.assert_close(normal.nodes, joint_node_softmax(net.alphas_normal))
    torch.testing.assert_close(reduce.nodes, joint_node_softmax(net.alphas_reduce))
    torch.testing.assert_close(normal.outputs, lhd_cell_weights(net.alphas_normal, net.alphas_normal_output)
                               .outputs)
    torch.testing.assert_close(reduce.outputs[1], torch.sigmoid(net.alphas_reduce_output[1]))
    assert not torch.allclose(normal.nodes, reduce.nodes)
