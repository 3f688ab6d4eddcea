"""discretize(weights, policy) -> Genotype, the LHD code's discretization (chaoji90/LHD `eval/gen_trans.py`).

Pure numpy, no torch.
"""

from __future__ import annotations

import numpy as np

from .arch_weights import ArchWeights
from .genotype import CellGenotype, Edge, Genotype
from .layout import NUM_NODES, NUM_OPS, PRIMITIVES, node_rows
from .policies import Policy, Rule, ranked


def _outputs(rule: Rule, values: np.ndarray) -> list[int]:
    # An empty output set, which upstream `eval/gen_trans.py` lets through, crashes its network
    # (`torch.cat([])`); only exactly equal weights produce one.
    # Keeping the strongest node (lowest index on a tie) is the smallest change that stays valid.
    return rule.select(values) or [int(ranked(values)[0])]


def live_edges(edges: list[Edge], outputs: set[int]) -> list[Edge]:
    """Drop edges into nodes that neither are outputs nor feed one (as upstream `eval/gen_trans.py`)."""
    live = set(outputs)
    # Edges only run from lower to higher nodes, so one backward sweep finds every ancestor.
    for node in reversed(range(NUM_NODES)):
        if node in live:
            live.update(e.input - 2 for e in edges if e.node == node and e.input >= 2)
    return [e for e in edges if e.node in live]


def discretize_cell(nodes: np.ndarray, outputs: np.ndarray, policy: Policy) -> CellGenotype:
    edges = []
    for node in range(NUM_NODES):
        block = nodes[node_rows(node)].reshape(-1)
        for flat in ranked(block)[: policy.node_inputs]:
            edges.append(Edge(PRIMITIVES[flat % NUM_OPS], int(flat // NUM_OPS), node))
    sum_nodes = _outputs(policy.sum_rule, outputs[0])
    concat_nodes = _outputs(policy.concat_rule, outputs[1])
    return CellGenotype(tuple(live_edges(edges, set(sum_nodes) | set(concat_nodes))),
                        tuple(sum_nodes), tuple(concat_nodes))


def discretize(weights: ArchWeights, policy: Policy) -> Genotype:
    return Genotype(normal=discretize_cell(*weights.cell("normal"), policy),
                    reduce=discretize_cell(*weights.cell("reduce"), policy))
