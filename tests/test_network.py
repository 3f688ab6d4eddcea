"""lhdbench.space.network: the final (discretized) network of the LHD code.

Upstream: chaoji90/LHD `eval/multi_path_concat_sum.py`, with the capacity loop of `eval/<dataset>/train.py`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import (
    DARTS_BILEVEL_FILE,
    PCDARTS_C100_GLOB,
    SKIP_MESSAGE,
    SPDARTS_SVHN_GLOB,
    num_classes_of,
    random_arch_weights,
    reference_file,
    reference_files,
    require_reference_archs,
)
from torch import nn

from lhdbench.space.discretize import discretize
from lhdbench.space.genotype import CellGenotype, Edge, Genotype
from lhdbench.space.network import (
    FinalCell,
    FinalNetwork,
    build_final_network,
    count_parameters,
    drop_path,
    network_shape,
)
from lhdbench.space.ops import FactorizedReduce
from lhdbench.space.policies import POLICIES
from lhdbench.space.upstream import load_upstream_pl

pytestmark = pytest.mark.usefixtures("single_thread_torch")

POLICY_NAMES = ("base", "1m", "3ops", "4out")
POOLS = ("max_pool_3x3", "avg_pool_3x3")

# --- an independent parameter count from the upstream op and network definitions -----------------------

def op_params(op: str, c: int, stride: int) -> int:
    if op in POOLS:
        return 0
    if op == "skip_connect":
        return 0 if stride == 1 else c * c + 2 * c
    kernel = int(op[-1])
    return kernel * kernel * c + 2 * c


def aux_params(channels: int, classes: int) -> int:
    return channels * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * classes + classes


def expected_params(genotype: Genotype, classes: int, c: int, layers: int, aux: bool = False) -> int:
    total = 27 * c + 2 * c + 27 * 3 * c + 2 * 3 * c  # the two stems
    c_sum, c_concat, c_cur = c, 3 * c, c
    reductions = (layers // 3, 2 * layers // 3)
    for index in range(layers):
        reduction = index in reductions
        if reduction:
            c_cur *= 2
            total += c_sum * c_cur + 2 * c_cur  # preprocess0
        cell = genotype.reduce if reduction else genotype.normal
        total += c_concat * c_cur + 2 * c_cur  # preprocess1
        total += sum(op_params(e.op, c_cur, 2 if reduction and e.input < 2 else 1) for e in cell.edges)
        c_sum, c_concat = c_cur, len(cell.concat) * c_cur
        if aux and index == reductions[1]:
            total += aux_params(c_sum + c_concat, classes)
    return total + (c_sum + c_concat) * classes + classes


def expected_shape(genotype: Genotype, policy_name: str, classes: int) -> tuple[int, int, int]:
    """(layers, channels, params) by the upstream capacity loop, using the count above."""
    policy = POLICIES[policy_name]
    c = 36
    while True:
        params = expected_params(genotype, classes, c, policy.layers)
        if policy.min_params is None or params >= policy.min_params:
            return policy.layers, c, params
        c += 2


def load_genotype(path, policy_name: str) -> Genotype:
    return discretize(load_upstream_pl(path), POLICIES[policy_name])


def n_all(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- sizes measured by building upstream's NetworkCIFAR from the published files -----------------------

# file -> classes, {policy: (channels, layers, params without aux, params with aux or None)}
SIZES = {
    DARTS_BILEVEL_FILE: (10, {
        "base": (36, 20, 710_218, 1_186_644),
        "1m": (48, 25, 1_505_098, 2_006_100),
        "3ops": (36, 20, 784_306, 1_260_732),
        "4out": (36, 20, 939_322, 1_434_180),
    }),
    SPDARTS_SVHN_GLOB: (10, {
        "base": (36, 20, 585_874, None),
        "1m": (56, 25, 1_567_226, None),
        "3ops": (36, 20, 683_290, None),
        "4out": (36, 20, 1_028_314, None),
    }),
    PCDARTS_C100_GLOB: (100, {
        "base": (36, 20, 642_556, None),
        "1m": (54, 25, 1_538_884, None),
        "3ops": (36, 20, 773_884, None),
        "4out": (36, 20, 1_062_100, None),
    }),
}
SIZE_CASES = [(f, p) for f in SIZES for p in POLICY_NAMES]


@pytest.mark.parametrize(("pattern", "policy_name"), SIZE_CASES,
                         ids=[f"{f.split('/')[1]}-{p}" for f, p in SIZE_CASES])
def test_reference_sizes_from_network_shape(pattern, policy_name):
    classes, table = SIZES[pattern]
    channels, layers, params, _ = table[policy_name]
    genotype = load_genotype(reference_file(pattern), policy_name)
    shape = network_shape(genotype, POLICIES[policy_name], classes)
    assert (shape.channels, shape.layers, shape.params) == (channels, layers, params)
    # The independent count agrees, and the capacity loop stops at the first width that is big enough.
    assert expected_shape(genotype, policy_name, classes) == (layers, channels, params)
    if POLICIES[policy_name].min_params is not None:
        assert expected_params(genotype, classes, channels - 2, layers) < 1_500_000 <= params


@pytest.mark.parametrize("policy_name", POLICY_NAMES)
def test_darts_bilevel_built_network_with_and_without_aux(policy_name):
    classes, table = SIZES[DARTS_BILEVEL_FILE]
    channels, layers, params, with_aux = table[policy_name]
    genotype = load_genotype(reference_file(DARTS_BILEVEL_FILE), policy_name)
    with torch.device("meta"):  # only counting; the real-memory build is covered below and in the slow test
        net = build_final_network(genotype, POLICIES[policy_name], classes)
        bare = build_final_network(genotype, POLICIES[policy_name], classes, auxiliary=False)
    assert (net.channels, net.layers) == (channels, layers)
    assert count_parameters(net) == params == n_all(bare) == count_parameters(bare)
    assert n_all(net) == with_aux
    assert bare.auxiliary_head is None


def test_real_build_matches_meta_count():
    genotype = load_genotype(reference_file(DARTS_BILEVEL_FILE), "base")
    torch.manual_seed(0)
    net = build_final_network(genotype, POLICIES["base"], 10)
    assert count_parameters(net) == 710_218
    assert n_all(net) == 1_186_644
    assert all(p.device.type == "cpu" for p in net.parameters())


def test_network_shape_over_all_reference_files_fast_ranges():
    """Measured upstream ranges over all 135 files x 4 policies, via the independent count
    (network_shape itself is compared with it on every file in the slow test below, and on three files
    above)."""
    require_reference_archs()
    files = reference_files()
    assert len(files) == 135
    params = {p: [] for p in POLICY_NAMES}
    widths = []
    for path in files:
        weights = load_upstream_pl(path)
        for policy_name in POLICY_NAMES:
            genotype = discretize(weights, POLICIES[policy_name])
            _, channels, count = expected_shape(genotype, policy_name, num_classes_of(path))
            params[policy_name].append(count)
            if policy_name == "1m":
                widths.append(channels)
    ranges = {name: (round(min(v) / 1e6, 2), round(max(v) / 1e6, 2)) for name, v in params.items()}
    assert ranges == {"base": (0.28, 1.09), "3ops": (0.28, 1.32), "4out": (0.81, 1.28),
                      "1m": (1.50, 1.63)}
    assert (min(widths), max(widths)) == (40, 82)


# --- forward behaviour ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_net() -> FinalNetwork:
    """A small but complete final network from a random genotype (8 cells, C=8, 10 classes)."""
    genotype = discretize(random_arch_weights(np.random.default_rng(3)), POLICIES["base"])
    torch.manual_seed(0)
    return FinalNetwork(genotype, 10, channels=8, layers=8)


def test_forward_train_and_eval_outputs(small_net):
    x = torch.randn(2, 3, 32, 32)
    small_net.train()
    logits, aux = small_net(x)
    assert logits.shape == (2, 10) and aux is not None and aux.shape == (2, 10)
    small_net.eval()
    with torch.no_grad():
        logits, aux = small_net(x)
    assert logits.shape == (2, 10) and aux is None


def test_forward_without_aux_head():
    genotype = discretize(random_arch_weights(np.random.default_rng(4)), POLICIES["4out"])
    net = FinalNetwork(genotype, 100, channels=8, layers=5, auxiliary=False).train()
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100) and aux is None


def test_reference_network_forward_shapes():
    genotype = load_genotype(reference_file(PCDARTS_C100_GLOB), "base")
    torch.manual_seed(0)
    net = build_final_network(genotype, POLICIES["base"], 100).train()
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100) and aux.shape == (2, 100)
    assert net.aux_index == 13
    assert [i for i, cell in enumerate(net.cells) if cell.reduction] == [6, 13]
    # Classifier input: (|normal concat| + 1) * 4C, as upstream.
    assert net.classifier.in_features == (len(genotype.normal.concat) + 1) * 4 * 36


def test_drop_path_in_train_mode_is_random_and_in_eval_mode_is_off(small_net):
    x = torch.randn(2, 3, 32, 32)
    small_net.drop_path_prob = 0.5
    try:
        small_net.train()
        outs = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            outs.append(small_net(x)[0].detach())
        assert not torch.allclose(outs[0], outs[1])
        small_net.eval()
        with torch.no_grad():
            torch.manual_seed(1)
            a = small_net(x)[0]
            torch.manual_seed(2)
            b = small_net(x)[0]
        assert torch.equal(a, b)
    finally:
        small_net.drop_path_prob = 0.0
    # Control: with no drop path, train mode is deterministic too.
    small_net.train()
    torch.manual_seed(1)
    a = small_net(x)[0].detach()
    torch.manual_seed(2)
    b = small_net(x)[0].detach()
    assert torch.equal(a, b)


def test_drop_path_function():
    torch.manual_seed(0)
    x = torch.ones(4000, 3, 2, 2)
    out = drop_path(x, 0.3)
    per_sample = out.flatten(1)
    # Whole samples are dropped or kept and rescaled by 1 / (1 - p).
    assert torch.all(per_sample.min(dim=1).values == per_sample.max(dim=1).values)
    values = per_sample[:, 0].unique()
    assert len(values) == 2 and values[0] == 0
    assert values[1].item() == pytest.approx(1 / 0.7)
    dropped = (per_sample[:, 0] == 0).float().mean().item()
    assert abs(dropped - 0.3) < 5 * (0.3 * 0.7 / 4000) ** 0.5
    assert x.eq(1).all()  # not in place on the input


# --- FinalCell -----------------------------------------------------------------------------------------

def make_cell(edges, sum_nodes, concat_nodes, reduction=False, c=4, c_prev_sum=4, c_prev_concat=12):
    torch.manual_seed(0)
    genotype = CellGenotype(tuple(Edge(*e) for e in edges), tuple(sum_nodes), tuple(concat_nodes))
    return FinalCell(genotype, c_prev_sum, c_prev_concat, c, reduction)


def cell_inputs(c_prev_sum=4, c_prev_concat=12, size=8):
    torch.manual_seed(1)
    return torch.randn(2, c_prev_sum, size, size), torch.randn(2, c_prev_concat, size, size)


SKIP_ONLY = [("skip_connect", 0, 0), ("skip_connect", 0, 1), ("skip_connect", 2, 1),
             ("skip_connect", 1, 2)]


def test_final_cell_unweighted_sums_and_concat_in_node_order():
    cell = make_cell(SKIP_ONLY, (0, 1), (2, 0)).eval()
    s0, s1 = cell_inputs()
    with torch.no_grad():
        sum_out, concat = cell(s0, s1)
        p1 = cell.preprocess1(s1)
    node0, node1, node2 = s0, 2 * s0, p1  # node 1 = skip(s0) + skip(node 0)
    torch.testing.assert_close(sum_out, node0 + node1)
    torch.testing.assert_close(concat, torch.cat([node0, node2], dim=1))  # node order, not given order
    assert cell.concat_multiplier == 2


def test_drop_path_is_not_applied_to_identity_edges():
    cell = make_cell(SKIP_ONLY, (1,), (0, 1, 2)).train()
    s0, s1 = cell_inputs()
    torch.manual_seed(5)
    ref = cell(s0, s1, 0.0)
    for seed in (5, 6, 7):
        torch.manual_seed(seed)
        out = cell(s0, s1, 0.9)
        assert all(torch.equal(a, b) for a, b in zip(ref, out, strict=True))


def test_drop_path_is_applied_to_pools_and_factorized_reduce():
    edges = [("avg_pool_3x3", 0, 0), ("max_pool_3x3", 1, 0), ("skip_connect", 2, 1)]
    for reduction in (False, True):
        cell = make_cell(edges, (1,), (0, 1), reduction=reduction).train()
        s0, s1 = cell_inputs()
        torch.manual_seed(5)
        ref = cell(s0, s1, 0.0)
        torch.manual_seed(5)
        dropped = cell(s0, s1, 0.9)
        assert not torch.equal(ref[0], dropped[0])
    reduce_skip = make_cell([("skip_connect", 0, 0)], (0,), (0,), reduction=True).train()
    assert isinstance(reduce_skip.ops[0], FactorizedReduce)
    s0, s1 = cell_inputs()
    torch.manual_seed(5)
    ref = reduce_skip(s0, s1, 0.0)
    torch.manual_seed(5)
    assert not torch.equal(ref[0], reduce_skip(s0, s1, 0.9)[0])


def test_reduction_cell_strides_and_shapes():
    edges = [("skip_connect", 0, 0), ("sep_conv_3x3", 1, 0), ("skip_connect", 2, 1),
             ("dil_conv_5x5", 2, 1)]
    cell = make_cell(edges, (0, 1), (0, 1), reduction=True, c=8, c_prev_sum=4, c_prev_concat=12)
    assert isinstance(cell.ops[0], FactorizedReduce)
    assert isinstance(cell.ops[2], nn.Identity)  # input >= 2: stride 1
    s0, s1 = cell_inputs()
    sum_out, concat = cell.eval()(s0, s1)
    assert sum_out.shape == (2, 8, 4, 4) and concat.shape == (2, 16, 4, 4)


def test_pruned_node_is_skipped():
    # Node 1 has no edges; node 2 reads node 0.
    cell = make_cell([("skip_connect", 0, 0), ("skip_connect", 2, 2)], (2,), (0, 2)).eval()
    s0, s1 = cell_inputs()
    with torch.no_grad():
        sum_out, concat = cell(s0, s1)
    torch.testing.assert_close(sum_out, s0)
    torch.testing.assert_close(concat, torch.cat([s0, s0], dim=1))


def test_final_cell_affine_ops_except_pools():
    cell = make_cell([("sep_conv_3x3", 0, 0), ("max_pool_3x3", 1, 0)], (0,), (0,))
    bns = {type(op).__name__: [m.affine for m in op.modules() if isinstance(m, nn.BatchNorm2d)]
           for op in cell.ops}
    assert bns == {"DepthwiseConv": [True], "PoolBN": [False]}


def test_edge_order_does_not_change_the_cell():
    ordered = [("skip_connect", 0, 0), ("skip_connect", 1, 0), ("avg_pool_3x3", 2, 1)]
    shuffled = [ordered[0], ordered[2], ordered[1]]  # still a valid CellGenotype
    s0, s1 = cell_inputs()
    outs = []
    for edges in (ordered, shuffled):
        cell = make_cell(edges, (1,), (0, 1)).eval()  # parameter-free ops: same weights either way
        with torch.no_grad():
            outs.append(cell(s0, s1))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b)


def unused_parameters(net: FinalNetwork) -> set[str]:
    """Names of the parameters that cannot reach the training loss: upstream builds a cell's
    preprocessing (and the stems) even when no kept edge reads that input, so they get no gradient.
    Worked out backwards from the classifier and the auxiliary head (which read both outputs)."""
    consumed = {"sum": True, "concat": True}  # what the classifier reads from the last cell
    unused: set[str] = set()
    for index in reversed(range(len(net.cells))):
        cell = net.cells[index]
        genotype = net.genotype.reduce if cell.reduction else net.genotype.normal
        if index == net.aux_index and net.auxiliary_head is not None:
            consumed = {"sum": True, "concat": True}
        live = (set(genotype.sum) if consumed["sum"] else set()) | (
            set(genotype.concat) if consumed["concat"] else set())
        for node in reversed(range(5)):
            if node in live:
                live |= {e.input - 2 for e in genotype.edges if e.node == node and e.input >= 2}
        used_edges = [e for e in genotype.edges if e.node in live]
        for position, edge in enumerate(genotype.edges):
            if edge not in used_edges:
                unused |= {f"cells.{index}.ops.{position}.{n}"
                           for n, _ in cell.ops[position].named_parameters()}
        reads = {e.input for e in used_edges}
        for source, module in ((0, "preprocess0"), (1, "preprocess1")):
            if source not in reads:
                unused |= {f"cells.{index}.{module}.{n}"
                           for n, _ in getattr(cell, module).named_parameters()}
        consumed = {"sum": 0 in reads, "concat": 1 in reads}
    for source, stem in ((0, "stem_0"), (1, "stem_1")):
        if not consumed["sum" if source == 0 else "concat"]:
            unused |= {f"{stem}.{n}" for n, _ in getattr(net, stem).named_parameters()}
    return unused


def test_unused_inputs_get_no_gradient():
    # No kept edge reads input 0 (the previous sum output): stem_0 and every reduction cell's
    # preprocess0 are built (and counted, as upstream does) but never reach the loss.
    normal = CellGenotype((Edge("sep_conv_3x3", 1, 0), Edge("skip_connect", 2, 1)), (1,), (0, 1))
    reduce = CellGenotype((Edge("sep_conv_5x5", 1, 0), Edge("avg_pool_3x3", 1, 0)), (0,), (0,))
    torch.manual_seed(0)
    net = FinalNetwork(Genotype(normal, reduce), 10, channels=8, layers=5).train()
    logits, aux = net(torch.randn(2, 3, 32, 32))
    (logits.sum() + aux.sum()).backward()
    without_grad = {name for name, p in net.named_parameters() if p.grad is None}
    assert "stem_0.0.weight" in without_grad and "cells.1.preprocess0.1.weight" in without_grad
    assert "stem_1.0.weight" not in without_grad
    assert without_grad == unused_parameters(net)


# --- every reference file under every policy (slow) ---------------------------------------------------

ALL_FILES = reference_files() or [None]


@pytest.mark.slow
@pytest.mark.parametrize("path", ALL_FILES,
                         ids=[str(p.relative_to(p.parents[2])) if p else "absent" for p in ALL_FILES])
def test_every_reference_file_builds_and_trains(path):
    if path is None:
        pytest.skip(SKIP_MESSAGE)
    ranges = {"base": (275_000, 1_095_000), "3ops": (275_000, 1_325_000), "4out": (805_000, 1_285_000),
              "1m": (1_500_000, 1_635_000)}
    classes = num_classes_of(path)
    weights = load_upstream_pl(path)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, classes - 1])
    for policy_name in POLICY_NAMES:
        genotype = discretize(weights, POLICIES[policy_name])
        torch.manual_seed(0)
        net = build_final_network(genotype, POLICIES[policy_name], classes).train()
        layers, channels, params = expected_shape(genotype, policy_name, classes)
        assert (net.layers, net.channels) == (layers, channels)
        assert count_parameters(net) == params
        assert n_all(net) == expected_params(genotype, classes, channels, layers, aux=True)
        low, high = ranges[policy_name]
        assert low <= params <= high, (policy_name, params)
        net.drop_path_prob = 0.1
        logits, aux = net(x)
        assert logits.shape == (2, classes) and aux.shape == (2, classes)
        loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
        loss.backward()
        assert torch.isfinite(loss)
        without_grad = {name for name, p in net.named_parameters() if p.grad is None}
        assert without_grad == unused_parameters(net), policy_name
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
