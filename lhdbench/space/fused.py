"""A faster implementation of the LHD search cell with the same arithmetic as `SearchCell`.

The reference cell runs 7 ops on each of its 20 edges: about 140 small modules per cell, which leaves
a GPU waiting on the host (benchmarks/results/profile-h100.txt). Edges that read the same input share
most of that work, so here the edges are grouped by their source:

* the ReLU of the source, its max and avg pools and their (non-affine, batch-statistic) BatchNorms
  are computed once per source, since every edge would compute the same values;
* the four depthwise convs of all edges of a source run as four grouped convs with one filter per
  (channel, edge), followed by one BatchNorm call over all of them;
* stride-2 skips (FactorizedReduce) of all edges of a source run as two 1x1 convs;
* the op mixture is one broadcasted multiply-and-sum per source.

Every edge keeps its own conv weights, so parameter counts equal the reference cell's.
tests/test_fused.py checks outputs and gradients against `SearchCell` with the same weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layout import NUM_NODES, node_rows
from .ops import ReLUConvBN

# (kernel, dilation) of sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5: columns 3..6.
DEPTHWISE = ((3, 1), (5, 1), (3, 2), (5, 2))


class SourceGroup(nn.Module):
    """All mixed edges that read one source: to nodes `first_node`..4."""

    def __init__(self, channels: int, stride: int, first_node: int, source: int) -> None:
        super().__init__()
        self.channels, self.stride = channels, stride
        self.edges = NUM_NODES - first_node
        edges = self.edges
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, channels * edges, k, stride=stride, padding=d * (k - 1) // 2, dilation=d,
                      groups=channels, bias=False)
            for k, d in DEPTHWISE)
        self.conv_bn = nn.BatchNorm2d(len(DEPTHWISE) * channels * edges, affine=False)
        self.pool_bn = nn.BatchNorm2d(2 * channels, affine=False)
        if stride == 2:
            half = channels // 2
            self.reduce_1 = nn.Conv2d(channels, half * edges, 1, stride=2, bias=False)
            self.reduce_2 = nn.Conv2d(channels, half * edges, 1, stride=2, bias=False)
            self.reduce_bn = nn.BatchNorm2d(channels * edges, affine=False)
        # Rows of the (20, 7) node-weight matrix that belong to this group's edges, in node order.
        rows = [node_rows(node).start + source for node in range(first_node, NUM_NODES)]
        self.register_buffer("rows", torch.tensor(rows), persistent=False)

    def forward(self, h: torch.Tensor, node_weights: torch.Tensor) -> torch.Tensor:
        """Edge outputs, (N, C, edges, H', W'), edge e feeding node first_node + e."""
        n, c, e = h.shape[0], self.channels, self.edges
        w = node_weights.index_select(0, self.rows).to(h.dtype)  # (edges, 7)
        r = F.relu(h)
        convs = torch.stack([conv(r) for conv in self.convs], dim=1)  # (N, 4, C*E, H', W')
        size = convs.shape[-2:]
        convs = self.conv_bn(convs.flatten(1, 2)).view(n, len(DEPTHWISE), c, e, *size)
        out = (convs * w[:, 3:].t().reshape(1, len(DEPTHWISE), 1, e, 1, 1)).sum(1)
        pad = 1
        pools = torch.cat([F.max_pool2d(h, 3, self.stride, pad),
                           F.avg_pool2d(h, 3, self.stride, pad, count_include_pad=False)], dim=1)
        pools = self.pool_bn(pools).view(n, 2, c, 1, *size)
        out = out + pools[:, 0] * w[:, 0].view(1, 1, e, 1, 1) + pools[:, 1] * w[:, 1].view(1, 1, e, 1, 1)
        if self.stride == 1:
            skip = h.unsqueeze(2)
        else:
            half = c // 2
            skip = torch.cat([self.reduce_1(r).view(n, e, half, *size),
                              self.reduce_2(r[:, :, 1:, 1:]).view(n, e, half, *size)], dim=2)
            skip = self.reduce_bn(skip.flatten(1, 2)).view(n, e, c, *size).transpose(1, 2)
        return out + skip * w[:, 2].view(1, 1, e, 1, 1)


class FusedSearchCell(nn.Module):
    """Drop-in replacement for `SearchCell` (same constructor and forward contract)."""

    def __init__(self, c_prev_sum: int, c_prev_concat: int, channels: int, reduction: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (ReLUConvBN(c_prev_sum, channels, 1, 1, 0, affine=False)
                            if reduction else nn.Identity())
        self.preprocess1 = ReLUConvBN(c_prev_concat, channels, 1, 1, 0, affine=False)
        # Source j (0, 1 = cell inputs, j >= 2 = node j-2) feeds nodes max(0, j-1)..4.
        self.groups = nn.ModuleList(
            SourceGroup(channels, 2 if reduction and source < 2 else 1, max(0, source - 1), source)
            for source in range(NUM_NODES + 1))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights) -> tuple[torch.Tensor, torch.Tensor]:
        pending: list[torch.Tensor | None] = [None] * NUM_NODES

        def feed(source: int, h: torch.Tensor) -> None:
            group = self.groups[source]
            out = group(h, weights.nodes)
            first = NUM_NODES - group.edges
            for e in range(group.edges):
                node = first + e
                pending[node] = out[:, :, e] if pending[node] is None else pending[node] + out[:, :, e]

        feed(0, self.preprocess0(s0))
        feed(1, self.preprocess1(s1))
        sum_out = 0
        gated = []
        for node in range(NUM_NODES):
            value = pending[node]
            sum_out = sum_out + weights.outputs[0, node] * value
            gated.append(weights.outputs[1, node] * value)
            if node + 2 < len(self.groups):
                feed(node + 2, gated[-1])
        if weights.concat_mask is not None:  # see CellWeights: the concat slots only
            gated = [m * g for m, g in zip(weights.concat_mask, gated, strict=True)]
        return sum_out, torch.cat(gated, dim=1)
