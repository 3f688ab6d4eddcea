"""GDAS (Dong & Yang, CVPR 2019) as the LHD code runs it (chaoji90/LHD `search/GDAS/`).

Per node, a hard (straight-through) Gumbel-softmax over the flattened n_i x 7 block of raw alphas picks
exactly one (input, op) pair; the sum path is a hard Gumbel-softmax over the 5 nodes; the concat gates
stay plain sigmoids. Every cell of a forward pass gets its own independent sample (the LHD code samples
inside its loop over cells; the GDAS paper shares one sample per cell type: `sample_per_cell: false`).
All samples are drawn in one batched Gumbel-softmax at the start of the forward (the same distribution
as drawing cell by cell), so the chosen indices reach the edges with one host sync per forward, not one
per edge. An edge runs only its chosen op, which is where GDAS's speed comes from, so GDAS uses the
per-edge reference cells with its own edge module instead of the fused cell. tau falls linearly from
tau_max (epoch 0) to tau_min (last epoch). The exported weights are the plain LHD transform at T = 1,
as upstream saves them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lhdbench.methods import SearchMethod, register
from lhdbench.protocol import SearchSettings
from lhdbench.rules import POSITIVE, ProtocolError
from lhdbench.space import PRIMITIVES, CellWeights, Supernet
from lhdbench.space.layout import NUM_EDGES, NUM_NODES, NUM_OPS, node_rows
from lhdbench.space.ops import build_op

# The widest node block (node 4: 6 inputs x 7 ops). Node blocks are padded to this width so that
# all nodes of all cells are sampled in one batched Gumbel-softmax.
BLOCK = (NUM_NODES + 1) * NUM_OPS
_ROW_START = [node_rows(node).start for node in range(NUM_NODES)]


def _padding_index() -> tuple[torch.Tensor, torch.Tensor]:
    """(gather, scatter) index vectors between the flattened (20, 7) matrix and (5, BLOCK) blocks.

    `gather[k]` is the flat (20*7) entry that padded position k reads, or 140 (a padding slot);
    `scatter[j]` is the padded position that holds flat entry j. Node blocks are consecutive rows, so a
    node's flattened block is a contiguous slice of the flattened matrix."""
    pad = NUM_EDGES * NUM_OPS
    gather = torch.full((NUM_NODES, BLOCK), pad, dtype=torch.long)
    scatter = torch.empty(pad, dtype=torch.long)
    for node in range(NUM_NODES):
        rows = node_rows(node)
        width = (rows.stop - rows.start) * NUM_OPS
        flat = torch.arange(rows.start * NUM_OPS, rows.start * NUM_OPS + width)
        gather[node, :width] = flat
        scatter[flat] = node * BLOCK + torch.arange(width)
    return gather.flatten(), scatter


_GATHER, _SCATTER = _padding_index()
_VALID = (_GATHER < NUM_EDGES * NUM_OPS).view(NUM_NODES, BLOCK)
_INDEX_CACHE: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _on(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if device not in _INDEX_CACHE:
        _INDEX_CACHE[device] = (_GATHER.to(device), _SCATTER.to(device), _VALID.to(device))
    return _INDEX_CACHE[device]


def _indices(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return _on(device)[:2]


def _valid(device: torch.device) -> torch.Tensor:
    return _on(device)[2]


def padded_node_logits(node_alphas: torch.Tensor) -> torch.Tensor:
    """(20, 7) alphas -> (5, BLOCK): each node's flattened block, padded with zeros that
    `sample_cell_weights` masks out (they are never sampled)."""
    gather, _ = _indices(node_alphas.device)
    ext = torch.cat([node_alphas.flatten(), node_alphas.new_zeros(1)])
    return ext.index_select(0, gather).view(NUM_NODES, BLOCK)


def hard_gumbel_softmax(logits: torch.Tensor, tau: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """F.gumbel_softmax(logits, tau, hard=True, dim=-1), step for step, with optional masking of
    padded entries after the noise is added: exactly one entry of each row is non-zero (~1; exactly 0
    elsewhere), and the gradient is that of the soft sample (straight-through). Masking after the
    noise (rather than padding the logits with -inf) keeps a padded slot from ever producing -inf + inf
    = NaN."""
    gumbels = -torch.empty_like(logits).exponential_().log()
    scores = (logits + gumbels) / tau
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
    y_soft = scores.softmax(-1)
    index = y_soft.argmax(-1, keepdim=True)
    y_hard = torch.zeros_like(y_soft).scatter_(-1, index, 1.0)
    return y_hard - y_soft.detach() + y_soft


def sample_cell_weights(node_logits: torch.Tensor, output_alphas: torch.Tensor,
                        tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Independent GDAS samples for a stack of cells.

    node_logits: (cells, 5, BLOCK) from `padded_node_logits`; output_alphas: (cells, 2, 5).
    Returns nodes (cells, 20, 7) with exactly one non-zero (~1, straight-through) entry per node
    block, outputs (cells, 2, 5) with a hard one-hot sum row and sigmoid gates, and the chosen padded
    position per node, (cells, 5)."""
    _, scatter = _indices(node_logits.device)
    hard = hard_gumbel_softmax(node_logits, tau, _valid(node_logits.device))  # (cells, 5, BLOCK)
    nodes = hard.flatten(1).index_select(1, scatter).view(-1, NUM_EDGES, NUM_OPS)
    sum_path = hard_gumbel_softmax(output_alphas[:, 0], tau)
    gates = torch.sigmoid(output_alphas[:, 1])
    return nodes, torch.stack([sum_path, gates], dim=1), hard.detach().argmax(-1)


def edge_choices(positions: list[int]) -> list[int]:
    """Per edge row (20), the chosen op, or -1 where the row's node chose another input."""
    choices = [-1] * NUM_EDGES
    for node, position in enumerate(positions):
        choices[_ROW_START[node] + position // NUM_OPS] = position % NUM_OPS
    return choices


class GdasEdge(nn.Module):
    """An LHD edge that runs only its sampled op (the MixedOp of upstream `concate_sum_five_sig_gdas.py`).

    With a weight row that has a non-zero entry it returns w[argmax] * op_argmax(x); otherwise the
    (zero) sum of its weights, which adds nothing to the node but carries the straight-through
    gradient. `Gdas.forward` sets `choice` for one pass from the sample it drew (one host sync per
    forward); without it the edge reads its row itself (one sync per edge)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList(build_op(name, channels, stride, affine=False) for name in PRIMITIVES)
        self.choice: int | None = None

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        choice = self.choice
        if choice is None:
            values = weights.detach().tolist()
            choice = max(range(len(values)), key=values.__getitem__) if any(values) else -1
        if choice < 0:
            return weights.sum()
        return weights[choice] * self.ops[choice](x)


def tau_at(epoch: int, epochs: int, tau_max: float, tau_min: float) -> float:
    """tau_e = tau_max - (tau_max - tau_min) * e / (epochs - 1); tau_max for a one-epoch search."""
    if epochs <= 1:
        return tau_max
    return tau_max - (tau_max - tau_min) * epoch / (epochs - 1)


@register
class Gdas(SearchMethod):
    name = "gdas"
    description = "hard Gumbel-softmax: one sampled (input, op) pair per node, only the chosen op runs"
    paper = "Dong, Yang. Searching for A Robust Neural Architecture in Four GPU Hours. CVPR 2019"
    # sample_per_cell: true = an independent sample for every cell (the LHD code); false = one sample per
    # cell type and forward, shared by all cells of that type (the GDAS paper and its code).
    defaults = {"batch_size": 256, "weight_lr": 0.05, "tau_max": 10.0, "tau_min": 0.1,
                "sample_per_cell": True}
    rules = {"tau_max": POSITIVE, "tau_min": POSITIVE}
    static_graph = False  # the ops that run change every step

    def __init__(self, settings: SearchSettings, hparams: Mapping[str, Any]) -> None:
        super().__init__(settings, hparams)
        self.tau_max, self.tau_min = self.hparams["tau_max"], self.hparams["tau_min"]
        self.tau = self.tau_max

    @classmethod
    def check_settings(cls, settings: SearchSettings, hparams: Mapping[str, Any]) -> None:
        if hparams["tau_min"] > hparams["tau_max"]:
            raise ProtocolError(f"methods.gdas: need tau_min <= tau_max, got tau_min={hparams['tau_min']}, "
                                f"tau_max={hparams['tau_max']}")

    def build_supernet(self, num_classes: int) -> Supernet:
        return Supernet(num_classes, self.settings.init_channels, self.settings.layers, mixed_op=GdasEdge)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.tau = tau_at(epoch, self.settings.epochs, self.tau_max, self.tau_min)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        # tau is a function of the epoch; restoring it matters only for a forward after the last
        # epoch (the final arch-half accuracy of a search resumed after its last checkpoint).
        super().load_state_dict(state)
        self.tau = tau_at(self.epoch, self.settings.epochs, self.tau_max, self.tau_min)

    def sample(self, supernet: Supernet) -> tuple[list[CellWeights], list[list[int]]]:
        """Per cell, its CellWeights and per-edge op choices: independent samples for every cell, or
        with `sample_per_cell: false` one sample per cell type shared by its cells."""
        padded = {False: padded_node_logits(supernet.alphas_normal),
                  True: padded_node_logits(supernet.alphas_reduce)}
        output = {False: supernet.alphas_normal_output, True: supernet.alphas_reduce_output}
        kinds = [cell.reduction for cell in supernet.cells]
        drawn = kinds if self.hparams["sample_per_cell"] else [False, True]
        nodes, outputs, positions = sample_cell_weights(torch.stack([padded[r] for r in drawn]),
                                                        torch.stack([output[r] for r in drawn]), self.tau)
        weights = [CellWeights(n, o) for n, o in zip(nodes.unbind(0), outputs.unbind(0), strict=True)]
        choices = [edge_choices(p) for p in positions.tolist()]
        if self.hparams["sample_per_cell"]:
            return weights, choices
        return [weights[r] for r in kinds], [choices[r] for r in kinds]

    def forward(self, supernet: Supernet, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # sampling stays fp32
            weights, choices = self.sample(supernet)
        for cell, rows in zip(supernet.cells, choices, strict=True):
            for edge, choice in zip(cell.edges, rows, strict=True):
                edge.choice = choice
        samples = iter(zip(supernet.cells, weights, strict=True))

        def weights_fn(net: Supernet, reduction: bool, temperature: float) -> CellWeights:
            cell, cell_weights = next(samples)  # called once per cell, in cell order
            assert cell.reduction == reduction
            return cell_weights

        try:
            return supernet(x, temperature=self.tau, weights_fn=weights_fn)
        finally:
            for cell in supernet.cells:
                for edge in cell.edges:
                    edge.choice = None
