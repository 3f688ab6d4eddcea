"""Search methods: the SearchMethod base class with first-order DARTS as its default behaviour,
and the registry the baselines add themselves to.

A method is written as its difference from DARTS: override only the hooks that differ. Every hook is
called by the generic loop in `search.py`; the method's own evolving state (temperatures, decays)
goes through `state_dict`/`load_state_dict` so that a resumed search continues identically.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
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
        arrays = [t.detach().float().cpu().numpy() for t in (*normal, *reduce)]
        return ArchWeights(arrays[0], arrays[2], arrays[1], arrays[3],
                           metadata={"method": self.name, "export_temperature": self.export_temperature()})

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"])


ENTRY_POINT_GROUP = "lhdbench.baselines"
PLUGINS_ENV = "LHDBENCH_PLUGINS"
_REGISTRY: dict[str, type[SearchMethod]] = {}
_SOURCES: dict[str, str] = {}
_FAILURES: dict[str, str] = {}
_discovered = False


@dataclass(frozen=True)
class PluginFailure:
    """A baseline module or entry point that could not be loaded."""

    name: str
    error: str


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls: type[SearchMethod]) -> type[SearchMethod]:
    """Class decorator: add a method under its `name`; a second definition of a name is an error."""
    if not (isinstance(cls, type) and issubclass(cls, SearchMethod)):
        raise TypeError(f"{cls!r} is not a SearchMethod subclass")
    if not cls.name or cls.name != cls.name.strip() or " " in cls.name:
        raise ValueError(f"{_where(cls)} needs a `name` without spaces")
    if not cls.description or "\n" in cls.description:
        raise ValueError(f"{_where(cls)} needs a one-line `description`")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and _where(existing) != _where(cls):
        raise ValueError(f"search method {cls.name!r} is defined twice: {_where(existing)} and {_where(cls)}")
    _REGISTRY[cls.name] = cls
    _SOURCES.setdefault(cls.name, cls.__module__)
    return cls


def discover() -> None:
    """Import every module of `lhdbench.baselines` and every `lhdbench.baselines` entry point, once.

    A plugin that fails to import is remembered with its error (see `plugin_failures`) and does not
    stop the others from loading."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import lhdbench.baselines as package

    for module in pkgutil.iter_modules(package.__path__):
        qualified = f"{package.__name__}.{module.name}"
        try:
            importlib.import_module(qualified)
        except Exception as error:  # a broken plugin must not hide the others
            _FAILURES[qualified] = f"{type(error).__name__}: {error}"
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        label = f"entry point {entry.name} = {entry.value}"
        try:
            loaded = entry.load()
            if isinstance(loaded, type) and issubclass(loaded, SearchMethod):
                register(loaded)
                classes = [loaded]
            else:
                classes = [c for c in _REGISTRY.values() if c.__module__ == getattr(loaded, "__name__", "")]
            dist = entry.dist.name if entry.dist is not None else "unknown distribution"
            for cls in classes:
                _SOURCES[cls.name] = f"{cls.__module__} (plugin package {dist})"
        except Exception as error:
            _FAILURES[label] = f"{type(error).__name__}: {error}"
    for path in plugin_files():
        label = f"plugin file {path}"
        try:
            spec = importlib.util.spec_from_file_location(f"lhdbench_plugin_{path.stem}", path)
            if spec is None or spec.loader is None:
                raise ImportError("not a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            for cls in _REGISTRY.values():
                if cls.__module__ == spec.name:
                    _SOURCES[cls.name] = f"{path} (plugin file)"
        except Exception as error:
            _FAILURES[label] = f"{type(error).__name__}: {error}"


def plugin_files() -> list[Path]:
    """Single-file plugins named in $LHDBENCH_PLUGINS (paths separated by os.pathsep). The runner
    passes the variable on to its Ray workers, so a method written in one file runs there too."""
    raw = os.environ.get(PLUGINS_ENV, "")
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def plugin_failures() -> list[PluginFailure]:
    discover()
    return [PluginFailure(name, error) for name, error in sorted(_FAILURES.items())]


def method_names() -> list[str]:
    discover()
    return sorted(_REGISTRY)


def method_source(name: str) -> str:
    """Where a registered method was defined: its module, and its package for an installed plugin."""
    discover()
    return _SOURCES[name]


def get_method(name: str) -> type[SearchMethod]:
    discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        failed = f" (plugins that failed to load: {', '.join(sorted(_FAILURES))})" if _FAILURES else ""
        raise ValueError(f"unknown baseline {name!r}; known baselines: {known}{failed}") from None


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
