"""DropNAS (Hong et al., IJCAI 2020) mapped onto the LHD space.

Upstream: wiljohnhong/DropNAS (`models/search_cnn.py`, `models/ops.py`, `search.py`); there is no LHD
port, so the mapping below is lhdbench's (docs/baselines.md gives the reasons).

Single level on the whole training set. Every step:

* **Grouped operation dropout.** Per cell type (all cells of a type share the mask), per (node, input)
  row of the weight matrix (LHD's analogue of a DARTS edge) and per group, each op is dropped with
  probability p; a group that came out all dropped is drawn again until it keeps an op. The groups are
  P = {sep3, sep5, dil3, dil5} (parametric) and N = {max_pool, avg_pool, skip} (LHD has no `none`).
  p = drop_rate ** (1/4) for P; for N the DropNAS code's r ** (1/4) as well (`n_group_drop:
  fourth_root`), or r ** (1/3) (`cube_root`), with which N, like P, is dropped whole with probability r.
* **Kept-only softmax.** Each node's weights are the joint softmax over its kept (input, op) pairs only:
  dropped pairs get exactly 0, the kept ones sum to 1. Only the kept ops run (`DropEdge`); the method
  tells each edge which ones for the forward, from the mask it drew on the host.
* **Two optimizer steps.** The cross-entropy backward into the weights and the architecture; clip the
  weights (3); SGD step; Adam step (not in warm-up epochs). Then the partial decay as a second step:
  gradients 2 * weight_decay * w for every weight tensor the loss reached and 2 * arch_weight_decay * a
  for every architecture entry whose gradient exceeded 1e-7 in magnitude (the gradients of DropNAS's
  `weight_decay_loss` and `alpha_decay_loss`), clip, SGD step, Adam step. The optimisers themselves carry
  no decay: `weight_decay` and `arch_weight_decay` are the coefficients of these L2 losses.
* **adjust_alphas.** After both steps, in every node with a dropped pair, one shift added to all of the
  node's kept alphas restores the kept pairs' share of the node's softmax mass to its value before the
  step (DropNAS does this per edge; the LHD softmax unit is the node).

Dropped ops keep moving on their SGD momentum (`dropped_op_momentum: true`), as they do in the DropNAS
code: under its torch 1.0, `zero_grad` leaves zero gradients rather than none, so SGD steps every
parameter that ever had a gradient. `false` leaves the weights of a dropped op untouched in that step.
The dropped alphas move on Adam's momentum in both cases (each alpha matrix is one parameter), which is
what adjust_alphas compensates.

The exported weights are the plain LHD transform of the final alphas at T = 1, with no mask.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lhdbench.methods import SearchContext, SearchMethod, batch_metrics, register
from lhdbench.protocol import SearchSettings
from lhdbench.rules import choice, integer, number
from lhdbench.space import PRIMITIVES, CellWeights, Supernet
from lhdbench.space.layout import NUM_EDGES, NUM_NODES, NUM_OPS, node_rows
from lhdbench.space.ops import build_op
from lhdbench.space.supernet import lhd_cell_weights

GROUP_P = tuple(PRIMITIVES.index(n) for n in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"))
GROUP_N = tuple(PRIMITIVES.index(n) for n in ("max_pool_3x3", "avg_pool_3x3", "skip_connect"))
# An architecture entry is decayed when its loss gradient exceeds this (DropNAS `alpha_decay_loss`).
ALPHA_GRAD_EPS = 1e-7

# Row -> node, and per node its rows padded to the widest node (6 inputs) with the index NUM_EDGES,
# which points at a -inf appended to a per-row vector.
_ROW_NODE = torch.tensor([node for node in range(NUM_NODES) for _ in range(node_rows(node).stop
                                                                             - node_rows(node).start)])
_NODE_ROWS = torch.tensor([list(range(node_rows(n).start, node_rows(n).stop))
                           + [NUM_EDGES] * (NUM_NODES + 1 - (node_rows(n).stop - node_rows(n).start))
                           for n in range(NUM_NODES)])
_INDEX_CACHE: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _indices(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if device not in _INDEX_CACHE:
        _INDEX_CACHE[device] = (_ROW_NODE.to(device), _NODE_ROWS.to(device))
    return _INDEX_CACHE[device]


def drop_probabilities(drop_rate: float, n_group_drop: str = "fourth_root") -> tuple[float, float]:
    """(p_P, p_N): the probability that one op of group P or N is dropped before any redraw.
    p_P = r ** (1/4), so all four P ops are dropped together with probability r; p_N = r ** (1/4) as in
    the DropNAS code, or r ** (1/3) with `cube_root`, so the three N ops are too."""
    p = drop_rate ** (1 / len(GROUP_P))
    return p, (p if n_group_drop == "fourth_root" else drop_rate ** (1 / len(GROUP_N)))


def sample_keep_masks(count: int, p_param: float, p_nonparam: float) -> torch.Tensor:
    """`count` keep masks (count, 20, 7), bool, on the CPU, from torch's global generator: each op is
    dropped with its group's probability, and a (row, group) with every op dropped is drawn again
    until it keeps one, so each row keeps at least one op of each group."""
    rows = count * NUM_EDGES
    keep = torch.empty(rows, NUM_OPS, dtype=torch.bool)
    for group, p in ((GROUP_P, p_param), (GROUP_N, p_nonparam)):
        draw = torch.rand(rows, len(group)) >= p
        empty = ~draw.any(1)
        while bool(empty.any()):
            redo = empty.nonzero().squeeze(1)
            draw[redo] = torch.rand(len(redo), len(group)) >= p
            empty = ~draw.any(1)
        keep[:, list(group)] = draw
    return keep.view(count, NUM_EDGES, NUM_OPS)


def node_logsumexp(values: torch.Tensor) -> torch.Tensor:
    """(..., 20, 7) -> (..., 5): log sum exp over each node's whole (input, op) block; -inf entries
    count as 0 mass, and a node with none left gives -inf."""
    _, node_rows_index = _indices(values.device)
    per_row = torch.logsumexp(values, dim=-1)
    padded = torch.cat([per_row, per_row.new_full((*per_row.shape[:-1], 1), -math.inf)], dim=-1)
    return torch.logsumexp(padded[..., node_rows_index], dim=-1)


def kept_log_odds(alphas: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per node, log(kept mass / dropped mass) of exp(alpha): the log-odds of the kept pairs' share
    (DropNAS's `ratio`, as ratio / (1 - ratio)); +inf in a node where nothing is dropped."""
    return (node_logsumexp(alphas.masked_fill(~keep, -math.inf))
            - node_logsumexp(alphas.masked_fill(keep, -math.inf)))


def kept_share(alphas: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per node, the kept pairs' share of the node's softmax mass (DropNAS's `ratio`)."""
    return torch.exp(node_logsumexp(alphas.masked_fill(~keep, -math.inf)) - node_logsumexp(alphas))


@torch.no_grad()
def adjust_alphas_(alphas: torch.Tensor, keep: torch.Tensor, log_odds_before: torch.Tensor) -> None:
    """DropNAS's adjust_alphas per node: in every node with a dropped pair, add to its kept alphas the
    one shift k that gives the kept pairs their share of the node's mass before the step back,
    k = ln(ratio / (1 - ratio) * R / U) with U, R the kept and dropped exp-mass now."""
    row_node, _ = _indices(alphas.device)
    shift = log_odds_before - kept_log_odds(alphas, keep)
    shift = torch.where(torch.isfinite(log_odds_before), shift, torch.zeros_like(shift))
    alphas.add_(shift[row_node].unsqueeze(1) * keep)


def masked_cell_weights(node_alphas: torch.Tensor, output_alphas: torch.Tensor,
                        keep: torch.Tensor) -> CellWeights:
    """The LHD transform with the joint node softmax over the kept pairs only (dropped pairs exactly 0);
    the output rows are untouched (DropNAS drops operations, not nodes)."""
    return lhd_cell_weights(node_alphas.masked_fill(~keep, -math.inf), output_alphas)


def partial_decay_gradients(weights: list[nn.Parameter], reached: list[bool], arch: list[nn.Parameter],
                            arch_masks: list[torch.Tensor | None], weight_decay: float,
                            arch_weight_decay: float, zero_fill: bool) -> None:
    """Set the gradients of the decay step: 2 * weight_decay * w for the weight tensors the step's loss
    reached, 2 * arch_weight_decay * a where an architecture entry's loss gradient exceeded
    ALPHA_GRAD_EPS (`arch_masks`). Weights not reached get a zero gradient (`zero_fill`) or none."""
    with torch.no_grad():
        hit = [p for p, r in zip(weights, reached, strict=True) if r]
        # One fused multiply for all decayed tensors (a search has hundreds of small ones).
        grads = torch._foreach_mul([p.detach() for p in hit], 2 * weight_decay) if hit else []
        for p, grad in zip(hit, grads, strict=True):
            p.grad = grad
        for p, r in zip(weights, reached, strict=True):
            if not r:
                p.grad = torch.zeros_like(p) if zero_fill else None
        for a, mask in zip(arch, arch_masks, strict=True):
            a.grad = None if mask is None else (2 * arch_weight_decay) * a.detach() * mask


class DropEdge(nn.Module):
    """An LHD edge that runs only its kept ops: sum over kept o of w_o * op_o(x) (DropNAS `MixedOp`).

    `DropNas.forward` sets `kept` for one pass from the mask it drew on the host; without it the edge
    runs the ops whose weight is non-zero (reading the row, one host sync per edge)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList(build_op(name, channels, stride, affine=False) for name in PRIMITIVES)
        self.kept: list[int] | None = None

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        kept = self.kept
        if kept is None:
            kept = [i for i, w in enumerate(weights.detach().tolist()) if w != 0]
        if not kept:
            return weights.sum()
        return sum(weights[i] * self.ops[i](x) for i in kept)


_ALL_OPS = list(range(NUM_OPS))


@register
class DropNas(SearchMethod):
    name = "dropnas"
    description = ("grouped op dropout per (node, input) row, kept-only softmax and compute, partial "
                   "decay, alpha adjust; single level")
    paper = ("Hong, Li, Zhang, Tang, Wang, Li, Yu. DropNAS: Grouped Operation Dropout for Differentiable "
             "Architecture Search. IJCAI 2020")
    # DropNAS's optimisation constants (wiljohnhong/DropNAS `config.py`); epochs, batch and depth stay the
    # protocol's. weight_decay / arch_weight_decay are the partial-decay coefficients (lambda_w, lambda_a).
    defaults = {"weight_lr": 0.0375, "weight_lr_min": 0.0015, "grad_clip": 3.0, "weight_decay": 3e-4,
                "arch_weight_decay": 1e-3, "drop_rate": 3e-5, "n_group_drop": "fourth_root",
                "warmup_epochs": 0, "dropped_op_momentum": True}
    rules = {"drop_rate": number(0.0, 1.0), "n_group_drop": choice("fourth_root", "cube_root"),
             "warmup_epochs": integer(0)}
    bilevel = False
    static_graph = False  # the ops that run change every step

    def __init__(self, settings: SearchSettings, hparams: Mapping[str, Any]) -> None:
        super().__init__(settings, hparams)
        self.warmup = self.hparams["warmup_epochs"]
        self.keep: torch.Tensor | None = None  # this step's masks (2, 20, 7): normal, reduce; CPU
        self._keep_dev: torch.Tensor | None = None  # the same masks on the supernet's device
        self._log_odds: list[torch.Tensor] = []  # per cell type, the kept pairs' log-odds before the step
        self.on_epoch_start(0)

    def build_supernet(self, num_classes: int) -> Supernet:
        return Supernet(num_classes, self.settings.init_channels, self.settings.layers, mixed_op=DropEdge)

    def configure_optimizers(self, supernet: Supernet) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        # No decay inside the optimisers: it comes as the partial-decay step (DropNAS `search.py`).
        s = self.settings
        weights = torch.optim.SGD(supernet.weight_parameters(), lr=s.weight_lr, momentum=s.momentum,
                                  weight_decay=0.0)
        arch = torch.optim.Adam(supernet.arch_parameters(), lr=s.arch_lr, betas=tuple(s.arch_betas),
                                weight_decay=0.0)
        return weights, arch

    def drop_rate_at(self, epoch: int) -> float:
        """0 in the warm-up epochs (nothing dropped), then drop_rate (DropNAS keeps it constant)."""
        return 0.0 if epoch < self.warmup else self.hparams["drop_rate"]

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.p_param, self.p_nonparam = drop_probabilities(self.drop_rate_at(epoch),
                                                           self.hparams["n_group_drop"])
        self._dropped = self._pairs = 0

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)  # the drop probabilities are a function of the epoch
        self.p_param, self.p_nonparam = drop_probabilities(self.drop_rate_at(self.epoch),
                                                           self.hparams["n_group_drop"])

    def on_epoch_end(self, epoch: int) -> Mapping[str, float]:
        return {"dropped_fraction": self._dropped / self._pairs if self._pairs else 0.0}

    def draw_masks(self) -> torch.Tensor:
        """This step's keep masks, (2, 20, 7) bool on the CPU: normal cells, then reduction cells."""
        return sample_keep_masks(2, self.p_param, self.p_nonparam)

    def forward(self, supernet: Supernet, x: torch.Tensor) -> torch.Tensor:
        """In training, draw the step's masks and run the kept ops only; in eval mode, every op with the
        plain LHD weights."""
        if not supernet.training:
            self._set_plan(supernet, None)
            try:
                return supernet(x)
            finally:
                self._clear_plan(supernet)
        keep = self.keep = self.draw_masks()
        self._dropped += int((~keep).sum())
        self._pairs += keep.numel()
        device = supernet.alphas_normal.device
        keep_dev = keep.to(device, non_blocking=True)
        with torch.autocast(x.device.type, enabled=False):
            weights = {False: masked_cell_weights(supernet.alphas_normal, supernet.alphas_normal_output,
                                                  keep_dev[0]),
                       True: masked_cell_weights(supernet.alphas_reduce, supernet.alphas_reduce_output,
                                                 keep_dev[1])}
            with torch.no_grad():  # the pre-step kept shares that adjust_alphas restores
                self._log_odds = [kept_log_odds(supernet.alphas_normal, keep_dev[0]),
                                  kept_log_odds(supernet.alphas_reduce, keep_dev[1])]
        self._keep_dev = keep_dev
        self._set_plan(supernet, keep)
        try:
            return supernet(x, weights_fn=lambda net, reduction, temperature: weights[reduction])
        finally:
            self._clear_plan(supernet)

    @staticmethod
    def _set_plan(supernet: Supernet, keep: torch.Tensor | None) -> None:
        if keep is None:
            plans = {False: [_ALL_OPS] * NUM_EDGES, True: [_ALL_OPS] * NUM_EDGES}
        else:
            plans = {r: [[i for i, k in enumerate(row) if k] for row in keep[int(r)].tolist()]
                     for r in (False, True)}
        for cell in supernet.cells:
            for edge, kept in zip(cell.edges, plans[cell.reduction], strict=True):
                edge.kept = kept

    @staticmethod
    def _clear_plan(supernet: Supernet) -> None:
        for cell in supernet.cells:
            for edge in cell.edges:
                edge.kept = None

    def step(self, ctx: SearchContext, train: tuple[torch.Tensor, torch.Tensor],
             arch: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        if arch is not None:
            raise ValueError("dropnas is single-level: the loop must not pass an architecture batch")
        assert ctx.arch_optimizer is not None
        s, net = ctx.settings, ctx.supernet
        weights, alphas = ctx.weight_params, ctx.arch_params
        zero_fill = self.hparams["dropped_op_momentum"]
        ctx.weight_optimizer.zero_grad(set_to_none=True)
        ctx.arch_optimizer.zero_grad(set_to_none=True)
        loss, logits = ctx.loss(*train)  # draws this step's masks
        loss.backward(inputs=[*weights, *alphas])
        # What the loss reached (dropped ops' weights are not in the graph) and which alphas it moved.
        reached = [p.grad is not None for p in weights]
        arch_masks = [None if a.grad is None else a.grad.abs() > ALPHA_GRAD_EPS for a in alphas]
        if zero_fill:
            for p in weights:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        nn.utils.clip_grad_norm_(weights, s.grad_clip)
        ctx.weight_optimizer.step()
        if self.epoch >= self.warmup:
            ctx.arch_optimizer.step()
        # The partial decay, as a second step of both optimisers (also during the warm-up, as upstream).
        partial_decay_gradients(weights, reached, alphas, arch_masks, s.weight_decay, s.arch_weight_decay,
                                zero_fill)
        nn.utils.clip_grad_norm_(weights, s.grad_clip)
        ctx.weight_optimizer.step()
        ctx.arch_optimizer.step()
        assert self._keep_dev is not None
        adjust_alphas_(net.alphas_normal, self._keep_dev[0], self._log_odds[0])
        adjust_alphas_(net.alphas_reduce, self._keep_dev[1], self._log_odds[1])
        return batch_metrics(loss, logits, train[1])
