"""PCD-DARTS and EDD-DARTS (Zhang & Ding, "Small Temperature is All You Need for Differentiable
Architecture Search", arXiv 2306.06855, 2023), mapped onto the LHD space.

Upstream: chaoji90/PCDEDD, `PCDEDD-DARTS/train_search_cyc.py` (PCD), `PCDEDD-DARTS/train_search_pl.py`
(EDD), both with `PCDEDD-DARTS/model_search_cyc.py` and `PCDEDD-DARTS/architect_cyc.py`.

Shared by both (what changes relative to first-order DARTS):

* a small softmax temperature T = a / ln(1 + d k), a = 0.000399 (about E[max(0, alpha_0)] for the
  1e-3 N(0, 1) initialization). T divides the joint node softmax and the sum-path softmax of both cell
  types, never the sigmoid gates (`Supernet.forward(x, temperature=T)`), in the arch forward, the
  weight forward and the final arch-half accuracy alike;
* the smooth-gradient term of the sparse softmax: in the architecture step, when T != 1, the normal
  cell's node alphas get J_1^T g on top of their ordinary gradient J_T^T g, where g is the loss
  gradient at the normal node-softmax output (one tensor feeds every normal cell, so g sums over them)
  and J_1 the Jacobian of the joint softmax at T = 1, per node block. It is added by feeding the cells
  softmax_T(alpha) + (softmax_1(alpha) - softmax_1(alpha).detach()): the same values, and the gradient
  g reaches alpha through both softmaxes. The reduce cell gets no extra term, as upstream
  (`smooth_gradient: both` adds it there too; `none` removes it). The weight step has no extra term;
* optimizers: Adam 3e-4 (betas 0.5, 0.999), weight decay 0 on the architecture; SGD at a constant 0.025;
* export: the plain LHD transform at the last epoch's T (in the metadata as `export_temperature`).

PCD (`pcd-darts`): a fixed table. With t_i = a / ln(1 + 0.11 i), the cycle [1, t1..t5, t4..t1] repeats
every 10 epochs, and the last 10 epochs of the search descend t1..t10 (epochs 40-49 of a 50-epoch
search, as upstream). A search shorter than 10 epochs runs the end of that descent, so it still ends at
t10.

EDD (`edd-darts`): d follows the architecture's entropy. At the start of epoch 5 (the warm-up, scaled
to the search length like SP-DARTS's), of every 5th epoch after it, and of every one of the last 10
epochs: H = the mean over the 5 normal nodes of the joint (n_i x 7) entropy of softmax(alpha / T_now),
each rescaled to the DARTS edge scale by ln 7 / ln(7 n_i) (`entropy_scale: raw` leaves it in nats);
then d <- c H beta + (1 - beta) d (c = 0.06, 0.12 in the last 10 epochs; beta = 0.5; d_0 = 0),
T <- a / ln(1 + d k), k <- k + 1 (k starts at 1). T = 1 before the first update.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from lhdbench.methods import SearchContext, SearchMethod, register, scaled_epochs
from lhdbench.protocol import SearchSettings
from lhdbench.rules import POSITIVE, ProtocolError, choice, integer, number
from lhdbench.space import CellWeights, Supernet
from lhdbench.space.layout import NUM_NODES, NUM_OPS, node_rows
from lhdbench.space.supernet import joint_node_softmax

A = 0.000399  # upstream's numerator (train_search_cyc.py, train_search_pl.py)


def temperature(k: float, decay: float, a: float = A) -> float:
    """T = a / ln(1 + decay * k)."""
    if not decay * k > 0:
        raise ValueError(f"temperature a / ln(1 + d k) needs d k > 0, got d = {decay}, k = {k}")
    return a / math.log(1.0 + decay * k)


def pcd_tables(decay: float = 0.11, cycle_epochs: int = 10, final_epochs: int = 10,
               a: float = A) -> tuple[list[float], list[float]]:
    """(cycle, final): [1, t1..t_{c/2}, t_{c/2-1}..t1] and [t1..t_final], t_i = a / ln(1 + decay i),
    as upstream builds `decay_list` and `final_decay_list`."""
    rising = [1.0] + [temperature(i, decay, a) for i in range(1, cycle_epochs // 2 + 1)]
    cycle = rising + rising[::-1][1:-1]
    final = [temperature(i, decay, a) for i in range(1, final_epochs + 1)]
    return cycle, final


def pcd_temperature(epoch: int, epochs: int, cycle: list[float], final: list[float]) -> float:
    """T of `epoch` in a search of `epochs` epochs: the final descent over the last len(final)
    epochs, the cycle before it."""
    offset = epoch - (epochs - len(final))
    return final[offset] if offset >= 0 else cycle[epoch % len(cycle)]


def node_entropy(alphas: torch.Tensor, temperature: float, scale: str = "darts") -> float:
    """Mean over the 5 nodes of the entropy (nats) of the joint softmax of alphas / T (float64);
    `darts` rescales node i by ln 7 / ln(7 n_i), so a uniform node gives ln 7, as a uniform DARTS edge."""
    alphas = alphas.detach().double().cpu()
    total = 0.0
    for node in range(NUM_NODES):
        p = torch.softmax(alphas[node_rows(node)].flatten() / temperature, dim=0)
        h = float(torch.special.entr(p).sum())
        if scale == "darts":
            h *= math.log(NUM_OPS) / math.log(p.numel())
        total += h
    return total / NUM_NODES


def smooth_cell_weights(net: Supernet, reduction: bool, temperature: float, smooth: bool) -> CellWeights:
    """The cell's weights at `temperature`; with `smooth`, the node weights carry the T = 1 gradient
    path as well (values unchanged: s - s.detach() is exactly 0)."""
    weights = net.cell_weights(reduction, temperature)
    if not smooth:
        return weights
    s = joint_node_softmax(net.alphas_reduce if reduction else net.alphas_normal, 1.0)
    return weights._replace(nodes=weights.nodes + (s - s.detach()))


class _SmallTemperature(SearchMethod):
    """What PCD and EDD share: the temperature in every forward, the smooth-gradient term in the arch
    step, export at the current temperature. Subclasses set `self.temperature` per epoch."""

    defaults: Mapping[str, Any] = {"weight_lr": 0.025, "weight_lr_min": 0.025, "arch_lr": 3e-4,
                                   "arch_weight_decay": 0.0, "temperature_numerator": A,
                                   "smooth_gradient": "normal", "final_epochs": 10}
    rules: Mapping[str, Any] = {"temperature_numerator": POSITIVE,
                                "smooth_gradient": choice("normal", "both", "none"),
                                "final_epochs": integer(1)}

    def __init__(self, settings: SearchSettings, hparams: Mapping[str, Any]) -> None:
        super().__init__(settings, hparams)
        self.a = float(self.hparams["temperature_numerator"])
        self.entropy_scale = self.hparams.get("entropy_scale", "darts")
        self.smooth_cells = {"normal": {False}, "both": {False, True}, "none": set()}[
            self.hparams["smooth_gradient"]]
        self.temperature = 1.0
        self._arch_pass = False

    def final_start(self) -> int:
        """First epoch of the final phase (the last `final_epochs` epochs); negative when the search is
        shorter than that phase."""
        return self.settings.epochs - int(self.hparams["final_epochs"])

    def smooth_active(self) -> bool:
        return self._arch_pass and bool(self.smooth_cells) and not math.isclose(self.temperature, 1.0)

    def forward(self, supernet: Supernet, x: torch.Tensor) -> torch.Tensor:
        if not self.smooth_active():
            return supernet(x, temperature=self.temperature)
        cache: dict[bool, CellWeights] = {}  # one tensor per cell type feeds all its cells, as upstream

        def weights_fn(net: Supernet, reduction: bool, temperature: float) -> CellWeights:
            if reduction not in cache:
                cache[reduction] = smooth_cell_weights(net, reduction, temperature,
                                                       reduction in self.smooth_cells)
            return cache[reduction]

        return supernet(x, temperature=self.temperature, weights_fn=weights_fn)

    def arch_loss(self, ctx: SearchContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._arch_pass = True  # only the architecture step's forward carries the T = 1 path
        try:
            return super().arch_loss(ctx, x, y)
        finally:
            self._arch_pass = False

    def export_temperature(self) -> float:
        return self.temperature

    def on_epoch_end(self, epoch: int) -> Mapping[str, float]:
        assert self.supernet is not None
        return {"temperature": self.temperature,
                "entropy": node_entropy(self.supernet.alphas_normal, self.temperature, self.entropy_scale)}


@register
class PcdDarts(_SmallTemperature):
    name = "pcd-darts"
    description = ("small temperature a/ln(1+0.11k) in 10-epoch cycles, final descent to k=10; T=1 "
                   "gradient path on normal alphas")
    paper = ("Zhang, Ding. Small Temperature is All You Need for Differentiable Architecture Search. "
             "arXiv 2306.06855, 2023 (PCD)")
    defaults = {**_SmallTemperature.defaults, "decay_strength": 0.11, "cycle_epochs": 10}
    rules = {**_SmallTemperature.rules, "decay_strength": POSITIVE, "cycle_epochs": integer(2)}

    def __init__(self, settings: SearchSettings, hparams: Mapping[str, Any]) -> None:
        super().__init__(settings, hparams)
        self.cycle, self.final = pcd_tables(self.hparams["decay_strength"], self.hparams["cycle_epochs"],
                                            self.hparams["final_epochs"], self.a)
        self.temperature = self.schedule(0)

    @classmethod
    def check_settings(cls, settings: SearchSettings, hparams: Mapping[str, Any]) -> None:
        if hparams["cycle_epochs"] % 2:
            raise ProtocolError(f"methods.{cls.name}.cycle_epochs: expected an even number, "
                                f"got {hparams['cycle_epochs']}")

    def schedule(self, epoch: int) -> float:
        return pcd_temperature(epoch, self.settings.epochs, self.cycle, self.final)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.temperature = self.schedule(epoch)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)  # T is a function of the epoch
        self.temperature = self.schedule(self.epoch)


@register
class EddDarts(_SmallTemperature):
    name = "edd-darts"
    description = ("small temperature a/ln(1+dk), d an EMA of the normal cell's entropy; T=1 gradient "
                   "path on normal alphas")
    paper = ("Zhang, Ding. Small Temperature is All You Need for Differentiable Architecture Search. "
             "arXiv 2306.06855, 2023 (EDD)")
    defaults = {**_SmallTemperature.defaults, "warmup_epochs": 5, "scale_warmup": True,
                "update_interval": 5, "entropy_coefficient": 0.06, "final_entropy_coefficient": 0.12,
                "decay_rate": 0.5, "entropy_scale": "darts"}
    rules = {**_SmallTemperature.rules, "warmup_epochs": integer(0), "update_interval": integer(1),
             "entropy_coefficient": POSITIVE, "final_entropy_coefficient": POSITIVE,
             "decay_rate": number(0.0, 1.0, low_open=True, high_open=False),
             "entropy_scale": choice("darts", "raw")}

    def __init__(self, settings: SearchSettings, hparams: Mapping[str, Any]) -> None:
        super().__init__(settings, hparams)
        self.warmup = scaled_epochs(self.hparams["warmup_epochs"], settings.epochs,
                                    self.hparams["scale_warmup"])
        self.decay, self.count = 0.0, 1
        self.entropy = 0.0  # the entropy of the last update (0 before the first)
        self.updated_at = -1

    def updates_at(self, epoch: int) -> bool:
        """Whether `epoch` starts with an update: the warm-up's end, every `update_interval`-th epoch
        after it, and every epoch of the final phase."""
        if epoch < self.warmup:
            return False
        return (epoch == self.warmup or epoch % self.hparams["update_interval"] == 0
                or epoch >= self.final_start())

    def update(self, epoch: int, entropy: float) -> None:
        """d <- c H beta + (1 - beta) d; T <- a / ln(1 + d k); k <- k + 1."""
        h = self.hparams
        c = h["final_entropy_coefficient"] if epoch >= self.final_start() else h["entropy_coefficient"]
        beta = h["decay_rate"]
        self.decay = c * entropy * beta + (1 - beta) * self.decay
        self.temperature = temperature(self.count, self.decay, self.a)
        self.count += 1
        self.entropy, self.updated_at = entropy, epoch

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        if epoch > self.updated_at and self.updates_at(epoch):
            assert self.supernet is not None, "the loop sets `supernet` before the first epoch"
            self.update(epoch, node_entropy(self.supernet.alphas_normal, self.temperature,
                                            self.entropy_scale))

    def on_epoch_end(self, epoch: int) -> Mapping[str, float]:
        return {**super().on_epoch_end(epoch), "decay": self.decay, "decay_count": float(self.count - 1)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "temperature": self.temperature, "decay": self.decay,
                "count": self.count, "entropy": self.entropy, "updated_at": self.updated_at}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.temperature, self.decay = float(state["temperature"]), float(state["decay"])
        self.count, self.entropy = int(state["count"]), float(state["entropy"])
        self.updated_at = int(state["updated_at"])
