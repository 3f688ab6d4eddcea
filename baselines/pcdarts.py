"""PC-DARTS (Xu et al., ICLR 2020) as the LHD code runs it (chaoji90/LHD `search/PC-DARTS/`).

First-order DARTS (`darts.py`) with partial channel connections, K = 4: on every edge the seven ops are built
for C/K channels and run on the first C/K channels of the edge input; the other (K-1)C/K channels
bypass the mixture (2x2 max-pooled, stride 2, on stride-2 edges). The two parts are concatenated, op part
first, and channel-shuffled with K groups. There is no edge normalization (upstream defines none).

Settings: batch 576, weight lr 0.1 cosine down to 0, arch Adam lr 6e-4, and an architecture warm-up:
no architecture step while epoch < the warm-up (weights only), 15 epochs of 50 upstream.

Warm-up on other budgets: `arch_warmup_epochs` is given for the 50-epoch LHD search and, with
`scale_warmup: true` (the default), scaled to the protocol's epochs as round_half_up(15 * epochs / 50):
50 epochs keep 15, the 2-epoch smoke protocol gets 1 (the architecture moves in its second epoch),
a 1-epoch run gets 0. `scale_warmup: false` takes `arch_warmup_epochs` literally. Both are overridable
in a protocol's `methods.pcdarts` section.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lhdbench.methods import SearchContext, SearchMethod, batch_metrics, register, scaled_epochs
from lhdbench.protocol import SearchSettings
from lhdbench.rules import ProtocolError, integer
from lhdbench.space import ArchWeights, Supernet
from lhdbench.space.ops import PRIMITIVES, build_op


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle: channel g * (C/groups) + i moves to i * groups + g."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class PartialMixedOp(nn.Module):
    """A PC-DARTS edge: the weighted op sum on the first C/K channels, the rest bypassing it."""

    def __init__(self, channels: int, stride: int, partial: int = 4) -> None:
        super().__init__()
        if channels % partial:
            raise ValueError(f"partial channels need a width divisible by K={partial}, got {channels}")
        self.partial, self.stride = partial, stride
        self.ops = nn.ModuleList(build_op(name, channels // partial, stride, affine=False)
                                 for name in PRIMITIVES)
        self.bypass = nn.MaxPool2d(2, 2) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        part = x.shape[1] // self.partial
        active, passive = x[:, :part], x[:, part:]
        mixed = sum(w * op(active) for w, op in zip(weights, self.ops, strict=True))
        return channel_shuffle(torch.cat([mixed, self.bypass(passive)], dim=1), self.partial)


@register
class PcDarts(SearchMethod):
    name = "pcdarts"
    description = "first-order DARTS with partial channels (K=4, channel shuffle) and an arch warm-up"
    paper = ("Xu, Xie, Zhang, Chen, Qi, Tian, Xiong. PC-DARTS: Partial Channel Connections for "
             "Memory-Efficient Architecture Search. ICLR 2020")
    defaults = {"batch_size": 576, "weight_lr": 0.1, "weight_lr_min": 0.0, "arch_lr": 6e-4,
                "partial_channels": 4, "arch_warmup_epochs": 15, "scale_warmup": True}
    rules = {"partial_channels": integer(1), "arch_warmup_epochs": integer(0)}

    def __init__(self, settings: SearchSettings, hparams: Mapping[str, Any]) -> None:
        super().__init__(settings, hparams)
        self.partial = self.hparams["partial_channels"]
        self.warmup = scaled_epochs(self.hparams["arch_warmup_epochs"], settings.epochs,
                                    self.hparams["scale_warmup"])

    @classmethod
    def check_settings(cls, settings: SearchSettings, hparams: Mapping[str, Any]) -> None:
        # Every edge splits its channels into K parts; widths double at reductions, so the first
        # cells' width decides.
        if settings.init_channels % hparams["partial_channels"]:
            raise ProtocolError(f"methods.pcdarts.partial_channels: {hparams['partial_channels']} does not "
                                f"divide the supernet's width (init_channels {settings.init_channels})")

    def build_supernet(self, num_classes: int) -> Supernet:
        edge = functools.partial(PartialMixedOp, partial=self.partial)
        return Supernet(num_classes, self.settings.init_channels, self.settings.layers, mixed_op=edge)

    def step(self, ctx: SearchContext, train: tuple[torch.Tensor, torch.Tensor],
             arch: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        if self.epoch >= self.warmup:
            return super().step(ctx, train, arch)
        # Warm-up: the weights only (upstream still draws, and ignores, an architecture batch).
        loss, logits = ctx.loss(*train)
        ctx.weight_update(loss)
        return batch_metrics(loss, logits, train[1])

    def export(self, supernet: Supernet) -> ArchWeights:
        weights = super().export(supernet)
        return type(weights)(*weights.matrices(),
                             metadata={**weights.metadata, "arch_warmup_epochs": self.warmup})
