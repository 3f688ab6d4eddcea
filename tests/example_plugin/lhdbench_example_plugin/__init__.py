"""DARTS with an entropy penalty on each node's joint (input, op) distribution.

Written as its difference from DARTS: only the architecture loss changes. The penalty pushes every
node towards a single (input, op) pair, so that the top-k discretization loses less of what the
supernet learned.
"""

import torch

from lhdbench.methods import SearchContext, SearchMethod, register
from lhdbench.space.layout import NUM_NODES, node_rows
from lhdbench.space.supernet import joint_node_softmax


def node_entropy(alphas: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the joint softmax of each node's (input, op) block."""
    weights = joint_node_softmax(alphas)
    entropies = []
    for node in range(NUM_NODES):
        p = weights[node_rows(node)].flatten()
        entropies.append(-(p * p.clamp_min(1e-12).log()).sum())
    return torch.stack(entropies).mean()


@register
class EntropyDarts(SearchMethod):
    name = "entropy-darts"
    description = "DARTS plus an entropy penalty that sharpens each node's (input, op) distribution"
    paper = "example plugin of the lhdbench test suite (not a published method)"
    defaults = {"entropy_weight": 0.1}

    def arch_loss(self, ctx: SearchContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        net = ctx.supernet
        penalty = node_entropy(net.alphas_normal) + node_entropy(net.alphas_reduce)
        return super().arch_loss(ctx, x, y) + self.hparams["entropy_weight"] * penalty
