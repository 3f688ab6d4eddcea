"""The final (discretized) network of the LHD code (chaoji90/LHD `eval/multi_path_concat_sum.py`).

One op per kept edge (affine BN except the pools' BN), unweighted node sums, a sum output and a
concat output per cell, an auxiliary head after the second reduction cell, and drop path on every
edge except identities. Parameter counts exclude the auxiliary head, as the paper's do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .genotype import CellGenotype, Genotype
from .ops import ReLUConvBN, build_op
from .policies import Policy
from .supernet import reduction_cells


def drop_path(x: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    """Zero whole samples with probability p and rescale the rest by 1/(1-p)."""
    keep = 1.0 - p
    mask = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < keep
    return x * (mask / keep).to(x.dtype)


class FinalCell(nn.Module):
    def __init__(self, genotype: CellGenotype, c_prev_sum: int, c_prev_concat: int, channels: int,
                 reduction: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (ReLUConvBN(c_prev_sum, channels, 1, 1, 0, affine=True)
                            if reduction else nn.Identity())
        self.preprocess1 = ReLUConvBN(c_prev_concat, channels, 1, 1, 0, affine=True)
        self.edges = list(genotype.edges)
        self.ops = nn.ModuleList(
            build_op(e.op, channels, 2 if reduction and e.input < 2 else 1, affine=True)
            for e in self.edges)
        # Node slots up to the last live node; pruned nodes keep an empty slot and are never read.
        self.node_edges = [[i for i, e in enumerate(self.edges) if e.node == node]
                           for node in range(max(e.node for e in self.edges) + 1)]
        self.sum_nodes = genotype.sum
        self.concat_nodes = genotype.concat  # ascending: upstream concatenates in node-index order

    @property
    def concat_multiplier(self) -> int:
        return len(self.concat_nodes)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor,
                drop_prob: float | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        states: list[torch.Tensor | None] = [self.preprocess0(s0), self.preprocess1(s1)]
        for edge_indices in self.node_edges:
            node = None
            for i in edge_indices:
                out = self.ops[i](states[self.edges[i].input])
                if self.training and drop_prob is not None and not isinstance(self.ops[i], nn.Identity):
                    out = drop_path(out, drop_prob)
                node = out if node is None else node + out
            states.append(node)
        nodes = states[2:]
        sum_out = nodes[self.sum_nodes[0]]
        for node in self.sum_nodes[1:]:
            sum_out = sum_out + nodes[node]
        return sum_out, torch.cat([nodes[n] for n in self.concat_nodes], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS' CIFAR auxiliary classifier for 8x8 feature maps."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class FinalNetwork(nn.Module):
    """`forward` returns (logits, auxiliary logits); the latter is None outside training or without
    an auxiliary head. Set `drop_path_prob` from the training loop: it lives in a tensor, so that a
    compiled model does not recompile when it changes every epoch."""

    def __init__(self, genotype: Genotype, num_classes: int, channels: int = 36, layers: int = 20,
                 auxiliary: bool = True, stem_multiplier: int = 3) -> None:
        super().__init__()
        self.genotype, self.channels, self.layers = genotype, channels, layers
        self.register_buffer("_drop_prob", torch.zeros(()), persistent=False)
        self._use_drop_path = False
        self.stem_0 = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(channels))
        self.stem_1 = nn.Sequential(nn.Conv2d(3, stem_multiplier * channels, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(stem_multiplier * channels))
        c_sum, c_concat, c_cur = channels, stem_multiplier * channels, channels
        reductions = reduction_cells(layers)
        self.aux_index = reductions[1]
        self.cells = nn.ModuleList()
        self.auxiliary_head = None
        for index in range(layers):
            reduction = index in reductions
            if reduction:
                c_cur *= 2
            cell_genotype = genotype.reduce if reduction else genotype.normal
            self.cells.append(FinalCell(cell_genotype, c_sum, c_concat, c_cur, reduction))
            c_sum, c_concat = c_cur, len(cell_genotype.concat) * c_cur
            if auxiliary and index == self.aux_index:
                self.auxiliary_head = AuxiliaryHead(c_sum + c_concat, num_classes)
        self.classifier = nn.Linear(c_sum + c_concat, num_classes)

    @property
    def drop_path_prob(self) -> float:
        return float(self._drop_prob)

    @drop_path_prob.setter
    def drop_path_prob(self, value: float) -> None:
        if not 0 <= value < 1:
            raise ValueError(f"drop path probability must be in [0, 1), got {value}")
        self._drop_prob.fill_(value)
        self._use_drop_path = value > 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        s0, s1 = self.stem_0(x), self.stem_1(x)
        aux_logits = None
        drop_prob = self._drop_prob if self._use_drop_path else None
        for index, cell in enumerate(self.cells):
            s0, s1 = cell(s0, s1, drop_prob)
            if index == self.aux_index and self.auxiliary_head is not None and self.training:
                aux_logits = self.auxiliary_head(torch.cat([s0, s1], dim=1))
        pooled = F.adaptive_avg_pool2d(torch.cat([s0, s1], dim=1), 1).flatten(1)
        return self.classifier(pooled), aux_logits


def count_parameters(model: nn.Module) -> int:
    """Parameters outside the auxiliary head, as the paper (and upstream `count_parameters_in_MB`) counts."""
    return sum(p.numel() for name, p in model.named_parameters()
               if not name.startswith("auxiliary_head."))


@dataclass(frozen=True)
class NetworkShape:
    layers: int
    channels: int
    params: int  # without the auxiliary head


def network_shape(genotype: Genotype, policy: Policy, num_classes: int) -> NetworkShape:
    """Cells, width and parameter count that `policy` gives `genotype`.

    The capacity rule of upstream `eval/<dataset>/train.py`: widen from init_channels in steps of 2.
    """
    channels = policy.init_channels
    while True:
        # Built on the meta device: the capacity loop only counts, so it allocates no memory.
        with torch.device("meta"):
            params = count_parameters(FinalNetwork(genotype, num_classes, channels, policy.layers,
                                                   auxiliary=False))
        if policy.min_params is None or params >= policy.min_params:
            return NetworkShape(policy.layers, channels, params)
        channels += 2


def build_final_network(genotype: Genotype, policy: Policy, num_classes: int,
                        auxiliary: bool = True) -> FinalNetwork:
    shape = network_shape(genotype, policy, num_classes)
    return FinalNetwork(genotype, num_classes, shape.channels, shape.layers, auxiliary=auxiliary)
