"""lhdbench.space.discretize: the LHD code's discretization, chaoji90/LHD `eval/gen_trans.py` (the rules
themselves are tested in test_policies.py).

Property tests compare `discretize` against a small independent re-statement of `gen_trans.py` and check
the structural invariants of the result; explicit examples pin down tie-breaking and what the policies
keep of the published upstream files (measured by running upstream `gen_trans.py` on them).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    DARTS_BILEVEL_FILE,
    SPDARTS_SVHN_GLOB,
    arch_weights_from_logits,
    reference_file,
    reference_files,
    require_reference_archs,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lhdbench.space.arch_weights import ArchWeights
from lhdbench.space.discretize import discretize, live_edges
from lhdbench.space.genotype import CellGenotype, Edge
from lhdbench.space.ops import PRIMITIVES
from lhdbench.space.policies import POLICIES
from lhdbench.space.upstream import load_upstream_pl

POLICY_NAMES = ("base", "1m", "3ops", "4out")


# --- an independent re-statement of upstream `gen_trans.py` ---------------------------------------------

def order(values) -> list[int]:
    """Descending value, ties to the lower index."""
    return sorted(range(len(values)), key=lambda i: (-float(values[i]), i))


def oracle_outputs(policy_name: str, row: np.ndarray, path: str) -> set[int]:
    row = np.asarray(row, dtype=np.float32)
    if policy_name == "4out":
        chosen = order(row)[:4]
    elif path == "sum":
        chosen = [i for i in range(5) if row[i] > np.float32(0.2)]  # > 0.2 in float32, like upstream
    else:
        mean = float(np.mean(row, dtype=np.float64))
        chosen = [i for i in range(5) if float(row[i]) > mean]
    return set(chosen) if chosen else {order(row)[0]}  # empty -> strongest node (lowest index on ties)


def oracle_cell(nodes: np.ndarray, outputs: np.ndarray, policy_name: str) -> CellGenotype:
    k = 3 if policy_name == "3ops" else 2
    candidates = []
    for node in range(5):
        start = node * (node + 3) // 2
        block = nodes[start:start + node + 2].reshape(-1)
        for flat in order(block)[:k]:
            candidates.append(Edge(PRIMITIVES[flat % 7], flat // 7, node))
    sum_set = oracle_outputs(policy_name, outputs[0], "sum")
    concat_set = oracle_outputs(policy_name, outputs[1], "concat")
    out = sum_set | concat_set

    def reaches_output(node: int) -> bool:
        return node in out or any(reaches_output(e.node) for e in candidates if e.input == node + 2)

    kept = tuple(e for e in candidates if reaches_output(e.node))
    return CellGenotype(kept, tuple(sum_set), tuple(concat_set))


# --- strategies ---------------------------------------------------------------------------------------

def logits(shape):
    """Logit arrays with many exact ties: a small integer set, optionally spread far apart so that
    the softmax is near one-hot and small entries underflow to exactly 0 in float32."""
    return st.one_of(
        hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0, 2.0])),
        hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0, 2.0, 3.0])).map(
            lambda a: 60.0 * a),
        hnp.arrays(np.float64, shape, elements=st.floats(-4, 4, allow_nan=False, width=32)),
        st.just(np.zeros(shape)),
    )


@st.composite
def arch_weights(draw) -> ArchWeights:
    return arch_weights_from_logits(draw(logits((20, 7))), draw(logits((20, 7))),
                                    draw(logits((2, 5))), draw(logits((2, 5))))


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


def check_invariants(cell: CellGenotype, nodes: np.ndarray, outputs: np.ndarray, policy_name: str):
    policy = POLICIES[policy_name]
    assert cell.sum and cell.concat
    out = set(cell.sum) | set(cell.concat)
    live = cell.live_nodes()
    assert out <= live
    # Every kept edge enters an output node or an ancestor of one.
    ancestors = set(out)
    for node in reversed(range(5)):
        if node in ancestors:
            ancestors |= {e.input - 2 for e in cell.edges if e.node == node and e.input >= 2}
    for edge in cell.edges:
        assert edge.node in ancestors
        assert 0 <= edge.input < edge.node + 2
        if edge.input >= 2:
            assert edge.input - 2 in live
    # Every kept node has exactly node_inputs distinct (input, op) pairs: the strongest of its block.
    for node in live:
        pairs = [(e.input, e.op) for e in cell.edges if e.node == node]
        assert len(pairs) == len(set(pairs)) == policy.node_inputs
        start = node * (node + 3) // 2
        block = nodes[start:start + node + 2]
        kept_min = min(block[i, PRIMITIVES.index(op)] for i, op in pairs)
        dropped = [block[i, j] for i in range(node + 2) for j in range(7)
                   if (i, PRIMITIVES[j]) not in pairs]
        assert all(value <= kept_min for value in dropped)
    # Nodes that feed an output are all kept.
    assert ancestors == live
    if policy_name == "4out":
        assert len(cell.sum) == 4 and len(cell.concat) == 4


@pytest.mark.parametrize("policy_name", POLICY_NAMES)
@PROPERTY_SETTINGS
@given(weights=arch_weights())
def test_discretize_matches_spec_and_invariants(policy_name, weights):
    genotype = discretize(weights, POLICIES[policy_name])
    for cell_type in ("normal", "reduce"):
        nodes, outputs = weights.cell(cell_type)
        cell = getattr(genotype, cell_type)
        check_invariants(cell, nodes, outputs, policy_name)
        assert cell == oracle_cell(nodes, outputs, policy_name)


@PROPERTY_SETTINGS
@given(weights=arch_weights())
def test_discretize_is_pure_and_deterministic(weights):
    before = [m.copy() for m in weights.matrices()]
    first = discretize(weights, POLICIES["base"])
    assert discretize(weights, POLICIES["base"]) == first
    assert all(np.array_equal(a, b) for a, b in zip(before, weights.matrices(), strict=True))


@PROPERTY_SETTINGS
@given(weights=arch_weights())
def test_policies_nest(weights):
    # 1m selects exactly like base; 3ops keeps a superset of base's pairs before pruning, and with
    # the same output sets every base edge survives in 3ops.
    base, one_m = discretize(weights, POLICIES["base"]), discretize(weights, POLICIES["1m"])
    three = discretize(weights, POLICIES["3ops"])
    assert base == one_m
    for cell_type in ("normal", "reduce"):
        b, t = getattr(base, cell_type), getattr(three, cell_type)
        assert (b.sum, b.concat) == (t.sum, t.concat)
        assert set(b.edges) <= set(t.edges)


# --- explicit tie and fallback examples -----------------------------------------------------------------

def uniform_weights() -> ArchWeights:
    return arch_weights_from_logits(np.zeros((20, 7)), np.zeros((20, 7)), np.zeros((2, 5)),
                                    np.zeros((2, 5)))


def test_all_equal_node_block_keeps_lowest_flat_indices():
    genotype = discretize(uniform_weights(), POLICIES["base"])
    for cell in (genotype.normal, genotype.reduce):
        # All-equal gates and sum weights: the empty-output fallback keeps node 0 alone.
        assert cell.sum == (0,) and cell.concat == (0,)
        assert cell.edges == (Edge("max_pool_3x3", 0, 0), Edge("avg_pool_3x3", 0, 0))


def test_all_equal_node_block_under_3ops_keeps_first_three():
    genotype = discretize(uniform_weights(), POLICIES["3ops"])
    assert genotype.normal.edges == (Edge("max_pool_3x3", 0, 0), Edge("avg_pool_3x3", 0, 0),
                                     Edge("skip_connect", 0, 0))


def test_ties_in_4out_rows_go_to_lower_indices():
    genotype = discretize(uniform_weights(), POLICIES["4out"])
    assert genotype.normal.sum == (0, 1, 2, 3) and genotype.normal.concat == (0, 1, 2, 3)
    # All nodes read input 0 only, so node 4 (not an output) is pruned.
    assert {e.node for e in genotype.normal.edges} == {0, 1, 2, 3}
    assert all(e.input == 0 for e in genotype.normal.edges)


def test_tie_break_inside_a_block_prefers_lower_flat_index():
    # Node 2 (rows 5..8): the two largest values tie at (input 3, dil_conv_3x3) and (input 1, sep_conv_5x5);
    # flat indices 26 and 11: input 1 comes first, then input 3; a third, smaller entry loses.
    node_logits = np.zeros((20, 7))
    node_logits[5 + 3, 5] = 3.0
    node_logits[5 + 1, 4] = 3.0
    node_logits[5 + 0, 6] = 2.0
    output_logits = np.array([[0.0, 0.0, 5.0, 0.0, 0.0], [0.0, 0.0, 5.0, 0.0, 0.0]])
    weights = arch_weights_from_logits(node_logits, node_logits, output_logits, output_logits)
    cell = discretize(weights, POLICIES["base"]).normal
    assert cell.sum == (2,) and cell.concat == (2,)
    node2 = [e for e in cell.edges if e.node == 2]
    assert node2 == [Edge("sep_conv_5x5", 1, 2), Edge("dil_conv_3x3", 3, 2)]
    # Input 3 is node 1, whose block is uniform: it keeps (max_pool, 0) and (avg_pool, 0).
    assert [e for e in cell.edges if e.node == 1] == [Edge("max_pool_3x3", 0, 1),
                                                       Edge("avg_pool_3x3", 0, 1)]
    assert cell.live_nodes() == {1, 2}


def test_empty_output_fallback_keeps_node_zero():
    # All gates equal: nothing is strictly above the mean, so the strongest node (index 0) is kept.
    rng = np.random.default_rng(0)
    output = np.stack([rng.standard_normal(5), np.full(5, 0.3)])
    weights = arch_weights_from_logits(rng.standard_normal((20, 7)), rng.standard_normal((20, 7)),
                                       output, output)
    for name in ("base", "1m", "3ops"):
        cell = discretize(weights, POLICIES[name]).normal
        assert cell.concat == (0,)
        assert 0 in cell.live_nodes()


def test_live_edges_prunes_nodes_that_reach_no_output():
    edges = [Edge("skip_connect", 0, 0), Edge("skip_connect", 1, 0),
             Edge("skip_connect", 2, 1), Edge("skip_connect", 0, 1),
             Edge("skip_connect", 0, 2), Edge("skip_connect", 1, 2),
             Edge("skip_connect", 3, 3), Edge("skip_connect", 0, 3)]
    # Output {3}: node 3 reads node 1, node 1 reads node 0; node 2 is dropped.
    assert live_edges(edges, {3}) == [e for e in edges if e.node != 2]
    assert live_edges(edges, {2}) == [e for e in edges if e.node == 2]


# --- facts about the published upstream files ---------------------------------------------------------------

DARTS_FACTS = {
    # policy: (normal edges, sum, concat, reduce edges, sum, concat)
    "base": (10, (2, 4), (2, 3, 4), 8, (1, 2, 3), (0, 1, 2)),
    "1m": (10, (2, 4), (2, 3, 4), 8, (1, 2, 3), (0, 1, 2)),
    "3ops": (15, (2, 4), (2, 3, 4), 12, (1, 2, 3), (0, 1, 2)),
    "4out": (10, (0, 2, 3, 4), (0, 2, 3, 4), 10, (1, 2, 3, 4), (0, 1, 2, 3)),
}


@pytest.mark.parametrize("policy_name", POLICY_NAMES)
def test_darts_bilevel_reference_genotypes(policy_name):
    path = require_reference_archs() / DARTS_BILEVEL_FILE
    genotype = discretize(load_upstream_pl(path), POLICIES[policy_name])
    n_edges, n_sum, n_concat, r_edges, r_sum, r_concat = DARTS_FACTS[policy_name]
    assert (len(genotype.normal.edges), genotype.normal.sum, genotype.normal.concat) == (
        n_edges, n_sum, n_concat)
    assert (len(genotype.reduce.edges), genotype.reduce.sum, genotype.reduce.concat) == (
        r_edges, r_sum, r_concat)


def test_spdarts_svhn_parallel_ops_on_one_input():
    genotype = discretize(load_upstream_pl(reference_file(SPDARTS_SVHN_GLOB)), POLICIES["base"])
    node0 = [e for e in genotype.normal.edges if e.node == 0]
    assert node0 == [Edge("skip_connect", 1, 0), Edge("dil_conv_5x5", 1, 0)]


def is_spdarts(path) -> bool:
    return path.parent.name.replace("-", "").startswith("spdarts")


def test_all_reference_files_base_output_counts_and_oracle():
    require_reference_archs()
    files = reference_files()
    assert len(files) == 135
    assert sum(map(is_spdarts, files)) == 15
    for path in files:
        weights = load_upstream_pl(path)
        for policy_name in POLICY_NAMES:
            genotype = discretize(weights, POLICIES[policy_name])
            for cell_type in ("normal", "reduce"):
                nodes, outputs = weights.cell(cell_type)
                cell = getattr(genotype, cell_type)
                assert cell == oracle_cell(nodes, outputs, policy_name), (path, policy_name)
                check_invariants(cell, nodes, outputs, policy_name)
                if policy_name == "base":
                    assert 1 <= len(cell.sum) <= 4 and 1 <= len(cell.concat) <= 4, path
                    if is_spdarts(path):
                        assert len(cell.sum) == 1, path  # SP-DARTS files always keep one sum node
