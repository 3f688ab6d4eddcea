"""SP-DARTS (Ding & Zhang, arXiv 2306.06858) as the LHD code runs it.

Upstream: chaoji90/LHD `search/SP-DARTS/train_search_spdarts.py`.

DARTS with a small softmax temperature and mixed sparsity:

* warm-up (epochs 0..w-1): temp = 1 and C = 0, so every step runs at warmup_factor * temp = 10 (the
  upstream code's effective warm-up temperature, `warmup_temperature: 10`; the authors describe the
  warm-up as temperature 1, which `warmup_temperature: 1` gives);
* epoch e >= w: temp = small_temperature (0.0015) and C = (e - w + 1) / (epochs - w), rising linearly
  to 1 in the last epoch. Each step draws one Bernoulli(C): the step runs at temp if it is 1, else at
  warmup_factor * temp (0.015). The same temperature serves the step's arch and weight forwards.

The temperature divides the joint node softmax and the sum-path softmax; the concat sigmoid takes none
(the supernet's `temperature` argument does exactly this). The weight LR is constant (lr_min = lr =
0.025). The architecture is exported at T = small_temperature, so it is near one-hot. The final
arch-half accuracy (eval mode) uses T = infer_temperature = small_temperature / 10, as upstream's infer.

Warm-up length: `warmup_epochs` counts epochs of the 50-epoch paper search; with `scale_warmup` (the
default) a search of E epochs warms up for round(warmup_epochs * E / 50) epochs (half rounds up), which is
5 at E = 50 and 0 for the 2-epoch smoke search, so short runs still exercise the post-warm-up path.

The authors' own DARTS-space script (chaoji90/SP-DARTS `SP-DARTS/train_search_mf.py`) uses other
constants than the LHD port: a 1-epoch warm-up, temp 0.001 (so steps run at 0.001 or 0.01, the final
check at 0.0001 and the export at 0.001) and a constant weight LR of 0.05; its C step, 1 / (epochs -
warm-up), is the formula above. `constants: authors` (in a protocol's `methods.spdarts`) runs SP-DARTS
with them on the LHD space, at the protocol's batch size; a key set beside it still wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lhdbench.methods import SearchContext, SearchMethod, register, scaled_epochs
from lhdbench.protocol import SearchSettings
from lhdbench.rules import POSITIVE, integer
from lhdbench.space import Supernet

# The authors' DARTS-space constants, as overrides of this method's defaults (search settings included).
AUTHORS_CONSTANTS: dict[str, Any] = {"warmup_epochs": 1, "small_temperature": 0.001,
                                     "infer_temperature": 0.0001, "weight_lr": 0.05, "weight_lr_min": 0.05}


@register
class SpDarts(SearchMethod):
    name = "spdarts"
    description = "DARTS at small softmax temperature 0.0015, mixed per step with 10x, after a warm-up"
    paper = ("Ding, Zhang. Robustifying DARTS by Eliminating Information Bypass Leakage via Explicit "
             "Sparse Regularization. arXiv 2306.06858, 2023")
    defaults = {"weight_lr": 0.025, "weight_lr_min": 0.025, "warmup_epochs": 5, "scale_warmup": True,
                "warmup_temperature": 10.0, "small_temperature": 0.0015, "warmup_factor": 10.0,
                "infer_temperature": 0.00015, "constants": "lhd"}
    # `constants: authors` runs the authors' own constants instead of the LHD port's.
    presets = {"constants": {"lhd": {}, "authors": AUTHORS_CONSTANTS}}
    rules = {"warmup_epochs": integer(0), "warmup_temperature": POSITIVE, "small_temperature": POSITIVE,
             "warmup_factor": POSITIVE, "infer_temperature": POSITIVE}

    def __init__(self, settings: SearchSettings, hparams: Mapping[str, Any]) -> None:
        super().__init__(settings, hparams)
        h = self.hparams
        self.warmup_temperature, self.small_temperature = h["warmup_temperature"], h["small_temperature"]
        self.warmup_factor, self.infer_temperature = h["warmup_factor"], h["infer_temperature"]
        self.warmup = self.warmup_length(settings.epochs)
        self.on_epoch_start(0)

    def warmup_length(self, epochs: int) -> int:
        """Warm-up epochs of a search of `epochs` epochs."""
        return scaled_epochs(self.hparams["warmup_epochs"], epochs, self.hparams["scale_warmup"])

    def schedule(self, epoch: int) -> tuple[float, float, float]:
        """(sparse temperature, dense temperature, C) during `epoch`: a step runs at the sparse one
        with probability C. Upstream's warm-up is temp = 1, C = 0: always the dense 10 * temp."""
        if epoch < self.warmup:
            return self.warmup_temperature, self.warmup_temperature, 0.0
        return (self.small_temperature, self.warmup_factor * self.small_temperature,
                (epoch - self.warmup + 1) / (self.settings.epochs - self.warmup))

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.sparse_temperature, self.dense_temperature, self.sparse_probability = self.schedule(epoch)
        self.temperature = self.dense_temperature

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)  # the schedule is a function of the epoch; draws use torch's RNG
        self.sparse_temperature, self.dense_temperature, self.sparse_probability = self.schedule(self.epoch)

    def draw_temperature(self) -> float:
        """One Bernoulli(C) draw from torch's global CPU generator (checkpointed by the loop): the
        sparse temperature if it is 1, else the dense one."""
        sparse = bool(torch.rand(()) < self.sparse_probability)
        return self.sparse_temperature if sparse else self.dense_temperature

    def step(self, ctx: SearchContext, train: tuple[torch.Tensor, torch.Tensor],
             arch: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        self.temperature = self.draw_temperature()  # read by `forward` for both of the step's passes
        return super().step(ctx, train, arch)

    def forward(self, supernet: Supernet, x: torch.Tensor) -> torch.Tensor:
        return supernet(x, temperature=self.temperature if supernet.training else self.infer_temperature)

    def export_temperature(self) -> float:
        return self.small_temperature
