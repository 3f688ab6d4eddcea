"""The decaying auxiliary skip that DARTS- and SurgeNAS add to every edge.

As the LHD code has them (chaoji90/LHD `search/DARTS-/`, `search/SurgeNAS/`).

Shared by `darts_minus.py` and `surgenas.py`. This module registers no method (the registry imports it
like every module of the folder, which is harmless).

* `skip_beta(base, epoch, epochs, decay)`: the skip coefficient of an epoch, as the upstream
  `DecayScheduler` (`search/DARTS-/utils_minus.py`) computes it when stepped at the start of the epoch,
  with its horizon T_max = T_stop set to the protocol's epochs (upstream: 50 = its epochs).
* `SkipMixedOp`: the seven primitives plus an auxiliary skip, `aux` = Identity (stride 1) or a
  trainable FactorizedReduce(C, C, affine=False) (stride 2). Either added unweighted
  (DARTS-: sum_o w_o op_o(x) + beta aux(x)) or scaled by the edge's weight mass
  (SurgeNAS: sum_o w_o (op_o(x) + beta aux(x)) = sum_o w_o op_o(x) + beta (sum_o w_o) aux(x)).
* `SkipBeta`: one 0-dim buffer per supernet that every edge reads, so the coefficient changes between
  epochs without a new graph (torch.compile sees a tensor input, not a Python constant).
* `DecayingSkipMethod`: the part of both methods that builds the supernet and sets beta per epoch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lhdbench.methods import SearchMethod
from lhdbench.protocol import SearchSettings
from lhdbench.rules import choice, number
from lhdbench.space import Supernet
from lhdbench.space.ops import PRIMITIVES, FactorizedReduce, build_op

# "none" keeps beta at its base value (the upstream scheduler's fallback for an unknown type).
DECAYS = ("linear", "cosine", "slow_cosine", "none")


def skip_beta(base: float, epoch: int, epochs: int, decay: str = "linear") -> float:
    """The auxiliary-skip coefficient during 0-based `epoch` of `epochs`.

    linear: base (epochs - e) / epochs (1.0 at epoch 0 down to 0.02 at epoch 49 of 50; never 0);
    cosine: base (1 + cos(pi e / epochs)) / 2; slow_cosine: base cos(pi/2 e / epochs); none: base.
    """
    if epochs <= 0:
        raise ValueError(f"epochs must be positive, got {epochs}")
    progress = epoch / epochs
    if decay == "linear":
        return base * (epochs - epoch) / epochs
    if decay == "cosine":
        return base * (1.0 + math.cos(math.pi * progress)) / 2.0
    if decay == "slow_cosine":
        return base * math.cos(math.pi / 2.0 * progress)
    if decay == "none":
        return base
    raise ValueError(f"unknown decay {decay!r}; known: {', '.join(DECAYS)}")


class SkipBeta(nn.Module):
    """The current skip coefficient, a non-persistent 0-dim float32 buffer shared by all edges.

    It is a pure function of the epoch (set by `on_epoch_start`), so it is not checkpointed."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.register_buffer("value", torch.tensor(float(value)), persistent=False)

    @torch.no_grad()
    def set(self, value: float) -> None:
        self.value.fill_(float(value))


class SkipMixedOp(nn.Module):
    """All seven primitives on one edge plus the auxiliary skip, scaled by the shared beta.

    weighted=False (DARTS-): sum_o w_o op_o(x) + beta aux(x), the skip independent of the alphas.
    weighted=True (SurgeNAS): sum_o w_o op_o(x) + beta (sum_o w_o) aux(x); aux is computed once
    (upstream computes it once per op, seven times, with the same result)."""

    def __init__(self, channels: int, stride: int, beta: SkipBeta, weighted: bool) -> None:
        super().__init__()
        self.ops = nn.ModuleList(build_op(name, channels, stride, affine=False) for name in PRIMITIVES)
        self.aux = nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, affine=False)
        self.weighted = weighted
        # Registered in every edge; a shared submodule is moved once per `.to()` call per edge
        # (idempotent) and has no parameters, so it adds nothing to the counts.
        self.beta = beta

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        mixed = sum(w * op(x) for w, op in zip(weights, self.ops, strict=True))
        beta = self.beta.value
        if self.weighted:
            beta = beta * weights.sum()
        return mixed + beta * self.aux(x)


class DecayingSkipMethod(SearchMethod):
    """Shared by DARTS- and SurgeNAS: per-edge `SkipMixedOp` cells and a per-epoch beta.

    Hyperparameters: `skip_beta` (the base coefficient, 1.0) and `decay` (linear | cosine |
    slow_cosine | none). Subclasses set `weighted_skip`. Not registered itself."""

    weighted_skip: bool = False
    rules = {"skip_beta": number(0.0), "decay": choice(*DECAYS)}

    def __init__(self, settings: SearchSettings, hparams: Mapping[str, Any]) -> None:
        super().__init__(settings, hparams)
        self.base_beta, self.decay = self.hparams["skip_beta"], self.hparams["decay"]
        self.beta = SkipBeta(self.current_beta())

    def current_beta(self) -> float:
        return skip_beta(self.base_beta, self.epoch, self.settings.epochs, self.decay)

    def build_supernet(self, num_classes: int) -> Supernet:
        # One SkipBeta per method: every supernet this method builds reads the coefficient it sets.
        edge = functools.partial(SkipMixedOp, beta=self.beta, weighted=self.weighted_skip)
        return Supernet(num_classes, self.settings.init_channels, self.settings.layers, mixed_op=edge)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        # Upstream steps its DecayScheduler at the start of each epoch; the same beta serves the
        # architecture and the weight forwards of the whole epoch (and the final arch-half accuracy).
        self.beta.set(self.current_beta())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.beta.set(self.current_beta())
