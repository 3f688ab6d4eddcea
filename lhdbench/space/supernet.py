"""The LHD supernet (LHD code, chaoji90/LHD `search/concate_sum_five_sig.py`).

Each node mixes all (input, op) pairs with one joint weight block; the cell has two outputs, a
weighted sum of the nodes and a concatenation of the gated nodes, and the next cell takes both.
How architecture parameters become op weights is a method's business, so `forward` takes an optional
`weights_fn`; the default is the plain LHD transform (joint softmax, softmax over nodes, sigmoid).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .fused import FusedSearchCell
from .layout import NUM_EDGES, NUM_NODES, NUM_OPS, OUTPUT_PATHS, node_rows
from .ops import PRIMITIVES, ReLUConvBN, build_op


class CellWeights(NamedTuple):
    """Op weights for one cell: `nodes` (20, 7) and `outputs` (2, 5; row 0 sum, row 1 gates).

    `concat_mask` (5,), when given, scales each node's slot in the concatenated output only, leaving
    the gated node as later nodes read it: what removing a node from the concat set does to the
    discretized cell (architecture selection by perturbation masks it this way)."""

    nodes: torch.Tensor
    outputs: torch.Tensor
    concat_mask: torch.Tensor | None = None


def joint_node_softmax(alphas: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax over all (input, op) pairs of each node at once, so inputs compete as well as ops."""
    blocks = []
    for node in range(NUM_NODES):
        block = alphas[node_rows(node)]
        blocks.append(F.softmax(block.flatten() / temperature, dim=0).view_as(block))
    return torch.cat(blocks, dim=0)


def lhd_cell_weights(node_alphas: torch.Tensor, output_alphas: torch.Tensor,
                     temperature: float = 1.0) -> CellWeights:
    """The upstream transform: joint node softmax and sum-path softmax at `temperature`, sigmoid
    gates (which take no temperature upstream either)."""
    sum_path = F.softmax(output_alphas[0] / temperature, dim=0)
    gates = torch.sigmoid(output_alphas[1])
    return CellWeights(joint_node_softmax(node_alphas, temperature), torch.stack([sum_path, gates]))


class MixedOp(nn.Module):
    """All seven primitives on one edge, weighted: sum_o w_o * op_o(x)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList(build_op(name, channels, stride, affine=False) for name in PRIMITIVES)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops, strict=True))


MixedOpFactory = Callable[[int, int], nn.Module]


class SearchCell(nn.Module):
    def __init__(self, c_prev_sum: int, c_prev_concat: int, channels: int, reduction: bool,
                 mixed_op: MixedOpFactory = MixedOp) -> None:
        super().__init__()
        self.reduction = reduction
        # Only a reduction cell changes the sum input's width; elsewhere it already has `channels`.
        self.preprocess0 = (ReLUConvBN(c_prev_sum, channels, 1, 1, 0, affine=False)
                            if reduction else nn.Identity())
        self.preprocess1 = ReLUConvBN(c_prev_concat, channels, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList()
        for node in range(NUM_NODES):
            for source in range(2 + node):
                stride = 2 if reduction and source < 2 else 1
                self.edges.append(mixed_op(channels, stride))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor,
                weights: CellWeights) -> tuple[torch.Tensor, torch.Tensor]:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        sum_out = 0
        for node in range(NUM_NODES):
            rows = node_rows(node)
            node_value = sum(self.edges[row](states[source], weights.nodes[row])
                             for source, row in enumerate(range(rows.start, rows.stop)))
            # The sum path takes the ungated node; the gate scales the node everywhere else,
            # including its later uses as an input, as in upstream `search/concate_sum_five_sig.py`.
            sum_out = sum_out + weights.outputs[0, node] * node_value
            states.append(weights.outputs[1, node] * node_value)
        return sum_out, torch.cat(concat_slots(states[2:], weights.concat_mask), dim=1)


def concat_slots(gated: list[torch.Tensor], mask: torch.Tensor | None) -> list[torch.Tensor]:
    if mask is None:
        return gated
    return [m * g for m, g in zip(mask, gated, strict=True)]


def reduction_cells(layers: int) -> tuple[int, int]:
    """Indices of the two reduction cells: floor(L/3) and floor(2L/3)."""
    return layers // 3, 2 * layers // 3


WeightsFn = Callable[["Supernet", bool, float], CellWeights]


class Supernet(nn.Module):
    """The search network: two stems, `layers` cells, global pooling and a linear classifier.

    With no `mixed_op`, cells use the fused implementation (`fused.py`), which computes the same
    values with far fewer kernels; pass `mixed_op=MixedOp` (or a method's own edge module) for the
    per-edge reference cells.

    Architecture parameters are registered `nn.Parameter`s (so they checkpoint) and are kept apart
    from the network weights: use `arch_parameters()` and `weight_parameters()`.
    """

    ARCH_NAMES = ("alphas_normal", "alphas_reduce", "alphas_normal_output", "alphas_reduce_output")

    def __init__(self, num_classes: int, channels: int = 16, layers: int = 8,
                 mixed_op: MixedOpFactory | None = None, stem_multiplier: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem_0 = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(channels))
        self.stem_1 = nn.Sequential(nn.Conv2d(3, stem_multiplier * channels, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(stem_multiplier * channels))
        c_sum, c_concat, c_cur = channels, stem_multiplier * channels, channels
        self.cells = nn.ModuleList()
        reductions = reduction_cells(layers)
        for index in range(layers):
            reduction = index in reductions
            if reduction:
                c_cur *= 2
            if mixed_op is None:  # the standard mixture: the fused implementation
                self.cells.append(FusedSearchCell(c_sum, c_concat, c_cur, reduction))
            else:
                self.cells.append(SearchCell(c_sum, c_concat, c_cur, reduction, mixed_op))
            c_sum, c_concat = c_cur, NUM_NODES * c_cur
        self.classifier = nn.Linear(c_sum + c_concat, num_classes)
        # DARTS-style init 1e-3 * N(0, 1), as upstream; methods may re-initialize.
        for name, shape in zip(self.ARCH_NAMES, [(NUM_EDGES, NUM_OPS)] * 2
                               + [(OUTPUT_PATHS, NUM_NODES)] * 2, strict=True):
            self.register_parameter(name, nn.Parameter(1e-3 * torch.randn(shape)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [getattr(self, name) for name in self.ARCH_NAMES]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def cell_weights(self, reduction: bool, temperature: float = 1.0) -> CellWeights:
        """The default (plain LHD) op weights of one cell type."""
        if reduction:
            return lhd_cell_weights(self.alphas_reduce, self.alphas_reduce_output, temperature)
        return lhd_cell_weights(self.alphas_normal, self.alphas_normal_output, temperature)

    def forward(self, x: torch.Tensor, temperature: float = 1.0,
                weights_fn: WeightsFn | None = None) -> torch.Tensor:
        """Logits for `x`. `weights_fn(self, reduction, temperature)` is called once per cell, so a
        sampling method can draw per cell or cache per cell type as it sees fit."""
        s0, s1 = self.stem_0(x), self.stem_1(x)
        cache: dict[bool, CellWeights] = {}
        for cell in self.cells:
            # Architecture weights, their softmax and any sampling stay fp32 under autocast. (The meta
            # device, on which lhdbench.memory sizes a step, has no autocast to leave.)
            with (torch.autocast(x.device.type, enabled=False) if x.device.type != "meta"
                  else contextlib.nullcontext()):
                if weights_fn is not None:
                    weights = weights_fn(self, cell.reduction, temperature)
                elif cell.reduction in cache:
                    weights = cache[cell.reduction]
                else:
                    weights = cache[cell.reduction] = self.cell_weights(cell.reduction, temperature)
            s0, s1 = cell(s0, s1, weights)
        pooled = F.adaptive_avg_pool2d(torch.cat([s0, s1], dim=1), 1).flatten(1)
        return self.classifier(pooled)
