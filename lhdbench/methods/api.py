"""The SearchMethod base class, with first-order DARTS as its default behaviour, and what its hooks
work with.

A method is written as its difference from DARTS: override only the hooks that differ. Every hook is
called by the generic loop in `search.py`; the method's own evolving state (temperatures, decays)
goes through `state_dict`/`load_state_dict` so that a resumed search continues identically.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..protocol import SearchSettings
from ..rules import Rule
from ..space import ArchWeights, Supernet

# The search budget that epoch counts in the methods' papers refer to (the DARTS/LHD search, 50 epochs).
PAPER_SEARCH_EPOCHS = 50


def scaled_epochs(epochs_of_paper: int, epochs: int, scale: bool = True) -> int:
    """An epoch count given for the 50-epoch paper search (a warm-up, say), scaled to a search of
    `epochs` epochs and rounded half up: 15 of 50 stays 15, becomes 1 of 2, 0 of 1, 30 of 100. With
    `scale` False it is taken as given."""
    if not scale:
        return epochs_of_paper
    return (2 * epochs_of_paper * epochs + PAPER_SEARCH_EPOCHS) // (2 * PAPER_SEARCH_EPOCHS)


@dataclass
class SearchContext:
    """What a method's `step` works with."""

    supernet: Supernet
    forward: Callable[[torch.Tensor], torch.Tensor]  # the (possibly compiled) forward of the method
    weight_optimizer: torch.optim.Optimizer
    arch_optimizer: torch.optim.Optimizer | None
    settings: SearchSettings
    autocast: Callable[[], Any]
    # Filled once here rather than on every access: the step loop is host-bound (docs/speed.md).
    weight_params: list[nn.Parameter] = field(init=False)
    arch_params: list[nn.Parameter] = field(init=False)

    def __post_init__(self) -> None:
        self.weight_params = self.supernet.weight_parameters()
        self.arch_params = self.supernet.arch_parameters()

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy and logits of one batch (under the protocol's autocast)."""
        with self.autocast():
            logits = self.forward(x)
        return F.cross_entropy(logits.float(), y), logits

    def weight_update(self, loss: torch.Tensor) -> None:
        """Backward into the network weights only, clip, SGD step."""
        self.weight_optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=self.weight_params)
        nn.utils.clip_grad_norm_(self.weight_params, self.settings.grad_clip)
        self.weight_optimizer.step()


def batch_metrics(loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-step metrics kept on the device; the loop sums them and syncs once per epoch."""
    return {"loss_sum": loss.detach() * y.shape[0], "correct": (logits.argmax(1) == y).sum(),
            "count": torch.tensor(y.shape[0], device=y.device)}


class SearchMethod:
    """First-order DARTS on the LHD supernet (Liu et al., ICLR 2019, with the LHD search protocol).
    Subclasses override hooks."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    # Overrides of SearchSettings fields and the method's own hyperparameters; a protocol's
    # `methods.<name>` section overrides these in turn.
    defaults: ClassVar[Mapping[str, Any]] = {}
    # How each hyperparameter is checked (the rules of `lhdbench.rules`, e.g. `integer(1)`); one without
    # a rule here is checked by its default's type (a bool takes bools, a float finite numbers, ...).
    rules: ClassVar[Mapping[str, Rule]] = {}
    # Named sets of defaults, chosen by one key: {key: {choice: {setting: value}}}, e.g. SP-DARTS's
    # `constants: lhd | authors`. `defaults[key]` names the default choice. Later wins: the protocol's
    # search section, `defaults`, the chosen set, then the protocol's `methods.<name>` keys. The key
    # itself is not a hyperparameter: a search is identified by the values the set gives.
    presets: ClassVar[Mapping[str, Mapping[str, Mapping[str, Any]]]] = {}
    # False for methods that use the whole training set for one loss (no weight/arch split).
    bilevel: ClassVar[bool] = True
    # False for methods that need neither data nor training (random).
    trains: ClassVar[bool] = True
    # False where the executed graph changes per step (sampling of ops), which rules out compile.
    static_graph: ClassVar[bool] = True

    def __init__(self, settings: SearchSettings, hparams: Mapping[str, Any]) -> None:
        self.settings = settings
        self.hparams = dict(hparams)
        self.epoch = 0
        # The supernet being searched, on its device: set by the loop before the first epoch (and
        # before a resumed search continues), so hooks without a supernet argument can read it.
        self.supernet: Supernet | None = None

    @classmethod
    def check_settings(cls, settings: SearchSettings, hparams: Mapping[str, Any]) -> None:
        """Checks of the resolved settings that no single hyperparameter's rule makes (two values that
        must agree, a width the method's edges need): raise ProtocolError with one line naming
        `methods.<name>.<key>`. `resolve_settings` calls it, so planning runs it for every planned
        method before anything is written; a constructor need not check again."""

    # --- hooks -------------------------------------------------------------------------------
    def build_supernet(self, num_classes: int) -> Supernet:
        return Supernet(num_classes, self.settings.init_channels, self.settings.layers)

    def forward(self, supernet: Supernet, x: torch.Tensor) -> torch.Tensor:
        """Logits of the supernet; override to sample or transform the op weights."""
        return supernet(x)

    def configure_optimizers(self, supernet: Supernet) -> tuple[torch.optim.Optimizer,
                                                                torch.optim.Optimizer | None]:
        s = self.settings
        weights = torch.optim.SGD(supernet.weight_parameters(), lr=s.weight_lr, momentum=s.momentum,
                                  weight_decay=s.weight_decay)
        arch = torch.optim.Adam(supernet.arch_parameters(), lr=s.arch_lr, betas=tuple(s.arch_betas),
                                weight_decay=s.arch_weight_decay)
        return weights, arch

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int) -> Mapping[str, float] | None:
        """After the epoch's last step: values to record in the epoch's history entry (a temperature,
        an entropy the method measured), or None."""
        return None

    def step(self, ctx: SearchContext, train: tuple[torch.Tensor, torch.Tensor],
             arch: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """One first-order bilevel step: an Adam step on the architecture with an arch-half batch,
        then an SGD step on the weights with a weight-half batch."""
        assert arch is not None and ctx.arch_optimizer is not None
        ctx.arch_optimizer.zero_grad(set_to_none=True)
        arch_loss = self.arch_loss(ctx, *arch)
        # Only the architecture gradient is used, so skip the weights' gradient kernels.
        arch_loss.backward(inputs=ctx.arch_params)
        ctx.arch_optimizer.step()
        loss, logits = ctx.loss(*train)
        ctx.weight_update(loss)
        return batch_metrics(loss, logits, train[1])

    def arch_loss(self, ctx: SearchContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss the architecture step minimizes; override to add a regularizer."""
        return ctx.loss(x, y)[0]

    def export_temperature(self) -> float:
        return 1.0

    def export(self, supernet: Supernet) -> ArchWeights:
        """The relaxed weights the search ends with: the plain LHD transform of the parameters."""
        with torch.no_grad():
            normal = supernet.cell_weights(False, self.export_temperature())
            reduce = supernet.cell_weights(True, self.export_temperature())
        arrays = [t.detach().float().cpu().numpy()
                  for t in (normal.nodes, normal.outputs, reduce.nodes, reduce.outputs)]
        return ArchWeights(arrays[0], arrays[2], arrays[1], arrays[3],
                           metadata={"method": self.name, "export_temperature": self.export_temperature()})

    def final_export(self, supernet: Supernet, epochs: Sequence[ArchWeights]) -> ArchWeights:
        """The architecture the search ends with. `epochs` holds what `export` gave after every epoch
        (resumed runs included); a method that picks an earlier epoch's weights overrides this."""
        return self.export(supernet)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"])
