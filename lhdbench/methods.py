"""Search methods: the SearchMethod base class with first-order DARTS as its default behaviour,
and the registry the baselines add themselves to.

A method is written as its difference from DARTS: override only the hooks that differ. Every hook is
called by the generic loop in `search.py`; the method's own evolving state (temperatures, decays)
goes through `state_dict`/`load_state_dict` so that a resumed search continues identically.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .protocol import Protocol, ProtocolError, SearchSettings
from .space import ArchWeights, Supernet


@dataclass
class SearchContext:
    """What a method's `step` works with."""

    supernet: Supernet
    forward: Callable[[torch.Tensor], torch.Tensor]  # the (possibly compiled) forward of the method
    weight_optimizer: torch.optim.Optimizer
    arch_optimizer: torch.optim.Optimizer | None
    settings: SearchSettings
    autocast: Callable[[], Any]

    @property
    def weight_params(self) -> list[nn.Parameter]:
        return self.supernet.weight_parameters()

    @property
    def arch_params(self) -> list[nn.Parameter]:
        return self.supernet.arch_parameters()

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
    """First-order DARTS on the LHD supernet (lhd-reference.md §2, §3.1). Subclasses override hooks."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    # Overrides of SearchSettings fields and the method's own hyperparameters; a protocol's
    # `methods.<name>` section overrides these in turn.
    defaults: ClassVar[Mapping[str, Any]] = {}
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

    def step(self, ctx: SearchContext, train: tuple[torch.Tensor, torch.Tensor],
             arch: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """One first-order bilevel step: an Adam step on the architecture with an arch-half batch,
        then an SGD step on the weights with a weight-half batch (§2)."""
        assert arch is not None and ctx.arch_optimizer is not None
        ctx.arch_optimizer.zero_grad(set_to_none=True)
        arch_loss, _ = ctx.loss(*arch)
        # Only the architecture gradient is used, so skip the weights' gradient kernels.
        arch_loss.backward(inputs=ctx.arch_params)
        ctx.arch_optimizer.step()
        loss, logits = ctx.loss(*train)
        ctx.weight_update(loss)
        return batch_metrics(loss, logits, train[1])

    def export_temperature(self) -> float:
        return 1.0

    def export(self, supernet: Supernet) -> ArchWeights:
        """The relaxed weights the search ends with: the plain LHD transform of the parameters."""
        with torch.no_grad():
            normal = supernet.cell_weights(False, self.export_temperature())
            reduce = supernet.cell_weights(True, self.export_temperature())
        arrays = [t.detach().float().cpu().numpy() for t in (*normal, *reduce)]
        return ArchWeights(arrays[0], arrays[2], arrays[1], arrays[3],
                           metadata={"method": self.name, "export_temperature": self.export_temperature()})

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"])


_REGISTRY: dict[str, type[SearchMethod]] = {}


def register(cls: type[SearchMethod]) -> type[SearchMethod]:
    """Class decorator: add a method under its `name`; a second definition of a name is an error."""
    if not cls.name:
        raise ValueError(f"{cls.__module__}.{cls.__qualname__} has no `name`")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"search method {cls.name!r} is defined twice: "
                         f"{existing.__module__}.{existing.__qualname__} and "
                         f"{cls.__module__}.{cls.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def discover() -> None:
    """Import every module of `lhdbench.baselines` so that each registers itself."""
    import lhdbench.baselines as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def method_names() -> list[str]:
    discover()
    return sorted(_REGISTRY)


def get_method(name: str) -> type[SearchMethod]:
    discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; known baselines: {', '.join(sorted(_REGISTRY))}") \
            from None


def resolve_settings(cls: type[SearchMethod], protocol: Protocol) -> tuple[SearchSettings, dict[str, Any]]:
    """Search settings and hyperparameters for `cls`: the protocol's search section, then the
    method's defaults, then the protocol's `methods.<name>` overrides."""
    fields = {f.name for f in dataclasses.fields(SearchSettings)}
    merged = {**cls.defaults, **protocol.methods.get(cls.name, {})}
    unknown = set(protocol.methods.get(cls.name, {})) - set(cls.defaults) - fields
    if unknown:
        known = sorted(set(cls.defaults) | fields)
        raise ProtocolError(f"methods.{cls.name}.{sorted(unknown)[0]}: unknown key "
                            f"(known: {', '.join(known)})")
    settings_overrides = {k: v for k, v in merged.items() if k in fields}
    hparams = {k: v for k, v in merged.items() if k not in fields}
    base = protocol.search
    if settings_overrides:
        base = protocol.replace(search={**protocol.to_dict()["search"], **settings_overrides}).search
    return base, hparams
