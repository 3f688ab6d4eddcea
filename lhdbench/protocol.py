"""Typed, validated protocol settings (budgets, optimizers, precision) and their presets.

A Protocol has four sections of settings and one of per-method overrides:

* ``search``: the supernet search (defaults: the first-order DARTS protocol that every baseline of the LHD
  code shares, chaoji90/LHD `search/DARTS/train_search_darts.py`);
* ``evaluate``: training a discretized network from scratch (defaults: the paper's evaluation protocol,
  upstream `eval/<dataset>/train.py`);
* ``select``: architecture selection by perturbation (DARTS-PT) on a finished search's supernet;
* ``speed``: how fast the engine may run (precision, memory format, compilation, determinism). These
  switches change no budget, optimizer or data setting;
* ``methods``: per-method overrides of method hyperparameters, e.g. ``{"pcdarts": {"batch_size": 576}}``.
  Their keys are checked by the method registry, not here.

Presets live in ``conditions/protocols/<name>.yaml`` (installed as ``lhdbench.conditions``); see
docs/protocols.md. Every value is checked when a settings object is built, so a Protocol that exists is
valid; a bad value raises ProtocolError with a one-line message that names its dotted key.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.resources
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .names import did_you_mean
from .rules import ProtocolError, Rule, boolean, choice, integer, number, number_pair, one_line, show
from .rules import fail as _fail
from .rules import is_int as _is_int
from .rules import is_number as _is_number
from .yamlfile import YamlError, parse_yaml

# ---------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class SearchSettings:
    """The supernet search. Defaults: the search protocol the LHD baselines share (chaoji90/LHD
    `search/DARTS/train_search_darts.py` and `search/utils.py`)."""

    epochs: int = 50
    batch_size: int = 176  # CIFAR 143 steps/epoch, SVHN 209
    weight_lr: float = 0.025  # SGD on the weights
    weight_lr_min: float = 3e-4  # cosine annealing to this over `epochs`, stepped once per epoch
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0  # gradient-norm clip over the weights only
    arch_lr: float = 3e-4  # Adam on the architecture parameters
    arch_betas: tuple[float, float] = (0.5, 0.999)
    # 0 as upstream runs it; original DARTS uses 1e-3, which upstream has commented out.
    arch_weight_decay: float = 0.0
    train_portion: float = 0.5  # weights on the first half of the training set, arch params on the second
    init_channels: int = 16
    layers: int = 8  # reduction cells at floor(L/3) and floor(2L/3)
    max_train_images: int | None = None  # use only the first n training images (smoke); None = all
    steps_per_epoch: int | None = None  # cap on weight steps per epoch (smoke); None = a full pass

    def __post_init__(self) -> None:
        _validate(self, "search")


@dataclass(frozen=True)
class EvalSettings:
    """Training a discretized network from scratch. Defaults: the paper protocol (LHD code,
    chaoji90/LHD `eval/<dataset>/train.py`)."""

    epochs: int = 600
    batch_size: int = 64  # train and test
    lr: float = 0.025  # SGD
    lr_min: float = 0.0  # cosine annealing over `epochs` to this, stepped once per epoch
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    auxiliary_weight: float = 0.4  # loss = CE + 0.4 x auxiliary-head CE; 0 disables the auxiliary head
    cutout: int = 16  # Cutout 16 on CIFAR; 0 disables; applied only where the dataset spec allows
    drop_path: bool = True  # linear drop-path ramp to (normal concat count) x policy rate
    # Upstream's CIFAR-100 and SVHN `train.py` raise the drop-path target whenever the training accuracy
    # passes a threshold, outside any script argument. An option here, off by default
    # (docs/protocols.md, "Deviations").
    adaptive_drop_path: bool = False
    # The paper's metric is the best test accuracy over 0-based epoch indices > this (400 means epochs
    # 401..599), as upstream `train.py` computes it. It selects on the test set; the final-epoch
    # accuracy is kept too.
    best_after_epoch: int = 400
    max_train_images: int | None = None  # use only the first n training images (smoke); None = all
    max_test_images: int | None = None  # use only the first n test images (smoke); None = all
    steps_per_epoch: int | None = None  # cap on steps per epoch (smoke); None = a full pass
    layers: int | None = None  # override the policy's cell count (smoke only); None = the policy's
    init_channels: int | None = None  # override the policy's starting width (smoke only)

    def __post_init__(self) -> None:
        _validate(self, "evaluate")
        if self.best_after_epoch >= self.epochs - 1:
            raise ProtocolError(
                f"evaluate.best_after_epoch: must be below evaluate.epochs - 1 = {self.epochs - 1} so that "
                f"the paper metric (best test accuracy over epoch indices > best_after_epoch) covers at "
                f"least one epoch, got {self.best_after_epoch}")


PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class SelectSettings:
    """Architecture selection by perturbation (DARTS-PT, Wang et al., ICLR 2021; ruocwang/darts-pt
    `sota/cnn/projection.py`), run on a finished search's supernet. The data and the supernet's size are
    the search's; these say how the projection runs."""

    interval: int = 5  # tuning epochs between two decisions (DARTS-PT's --proj_intv 5)
    # DARTS-PT restarts the weights' SGD at a tenth of the search's learning rate and never anneals it.
    weight_lr_factor: float = 0.1
    measure_images: int | None = None  # arch-half images per accuracy measurement (smoke); None = all
    steps_per_epoch: int | None = None  # cap on tuning steps per epoch (smoke); None = a full pass

    def __post_init__(self) -> None:
        _validate(self, "select")


@dataclass(frozen=True)
class SpeedSettings:
    """How fast the engine may run. None of these changes a budget, an optimizer or the data."""

    precision: str = "fp32"  # "fp32" or "bf16" (bf16 autocast applies on CUDA only)
    channels_last: bool = False  # NHWC memory format for convolutions
    compile: bool = False  # torch.compile where the executed graph is static
    # Bit-identical reruns on CPU (torch.use_deterministic_algorithms, no cudnn.benchmark).
    deterministic: bool = False
    # Evaluation training steps replayed from CUDA graphs (lhdbench/train_step.py; CUDA only). Equal
    # to the plain step to float tolerance, not bitwise (fused SGD), so off by default.
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        _validate(self, "speed")


Section = SearchSettings | EvalSettings | SelectSettings | SpeedSettings

SECTIONS: dict[str, type[Section]] = {"search": SearchSettings, "evaluate": EvalSettings,
                                      "select": SelectSettings,
                                      "speed": SpeedSettings}
TOP_LEVEL_KEYS = ("name", *SECTIONS, "methods")


@dataclass(frozen=True)
class Protocol:
    """A named, validated set of settings. Build it with load_protocol or protocol_from_dict."""

    name: str
    search: SearchSettings = field(default_factory=SearchSettings)
    evaluate: EvalSettings = field(default_factory=EvalSettings)
    select: SelectSettings = field(default_factory=SelectSettings)
    speed: SpeedSettings = field(default_factory=SpeedSettings)
    # Per-method overrides of method hyperparameters, e.g. {"pcdarts": {"batch_size": 576}}. Only the
    # shape (str -> mapping of JSON values) is checked here; the method registry checks the keys.
    # Stored read-only (mappings as mappingproxy, lists as tuples).
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ProtocolError(f"name: expected a non-empty string, got {show(self.name)}")
        for key, cls in SECTIONS.items():
            if not isinstance(getattr(self, key), cls):
                raise ProtocolError(f"{key}: expected a {cls.__name__}, got {show(getattr(self, key))}")
        object.__setattr__(self, "methods", _freeze_methods(self.methods))

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict (tuples as lists) in a stable key order: name, the three sections
        in field order, then methods sorted by name. protocol_from_dict(p.to_dict()) == p."""
        out: dict[str, Any] = {"name": self.name}
        for key in SECTIONS:
            section = getattr(self, key)
            later = LATER_DEFAULTS.get(key, {})
            out[key] = {f.name: _plain(getattr(section, f.name)) for f in fields(section)
                        if not (f.name in later and getattr(section, f.name) == later[f.name])}
        out["methods"] = _plain(self.methods)
        return out

    def replace(self, **section_overrides: Any) -> Protocol:
        """A validated copy with some settings changed, e.g. ``p.replace(search={"epochs": 2})``.

        Each keyword is a top-level key (name, search, evaluate, speed, methods). A mapping is merged
        into the current section (for methods, per method); a settings object replaces the section.
        """
        data = self.to_dict()
        for key, value in section_overrides.items():
            if is_dataclass(value) and not isinstance(value, type):
                data[key] = _plain(value)  # a whole settings object replaces the section
            else:
                data = _merge(data, {key: value})
        return protocol_from_dict(data, name=self.name)


# ---------------------------------------------------------------------------------------------------
# Building from plain data and YAML


def protocol_from_dict(data: Mapping[str, Any], name: str = "custom") -> Protocol:
    """Build and validate a Protocol from plain data (e.g. parsed YAML or Protocol.to_dict()).

    Top-level keys: name (optional; else `name`), search, evaluate, speed, methods; a missing or null
    section or key takes the dataclass default. Unknown sections or keys, wrong types and bad values
    raise ProtocolError naming the dotted key. Ints are accepted for float fields (not the reverse);
    bools are never accepted as numbers; lists are accepted for tuple fields.
    """
    if not isinstance(data, Mapping):
        raise ProtocolError(f"protocol: expected a mapping of sections ({', '.join(TOP_LEVEL_KEYS)}), "
                            f"got {show(data)}")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise ProtocolError(_unknown(str(key), "section", TOP_LEVEL_KEYS))
    sections: dict[str, Any] = {}
    for key, cls in SECTIONS.items():
        values = data.get(key)
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise ProtocolError(f"{key}: expected a mapping of settings, got {show(values)}")
        known = [f.name for f in fields(cls)]
        for setting in values:
            if setting not in known:
                raise ProtocolError(_unknown(f"{key}.{setting}", "key", known))
        sections[key] = cls(**values)
    methods = data.get("methods")
    return Protocol(name=data.get("name", name), methods={} if methods is None else methods, **sections)


# The sections that decide a trial's result. `name` is a label; `methods` only shapes the search
# settings, which a search record holds resolved (and its id hashes).
PROTOCOL_SECTIONS = ("search", "evaluate", "select", "speed")


def protocol_id(protocol: dict[str, Any]) -> str:
    """16 hex digits naming a protocol's settings, whatever its name: two records with one id ran
    under the same budgets, optimizers, schedules, data and speed switches."""
    try:
        normal = protocol_from_dict(protocol, name=str(protocol.get("name") or "custom")).to_dict()
    except (ProtocolError, TypeError, ValueError):
        normal = protocol  # a protocol of another version: its own words
    sections = {key: normal.get(key) for key in PROTOCOL_SECTIONS}
    canonical = json.dumps(sections, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def protocol_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The dotted settings in which two protocols differ, as `section.key A vs B`."""
    def normal(p: dict[str, Any]) -> dict[str, Any]:
        try:
            return protocol_from_dict(p, name=str(p.get("name") or "custom")).to_dict()
        except (ProtocolError, TypeError, ValueError):
            return p

    left, right = normal(a), normal(b)
    out = []
    for section in PROTOCOL_SECTIONS:
        x, y = left.get(section) or {}, right.get(section) or {}
        for key in sorted(set(x) | set(y)):
            if x.get(key) != y.get(key):
                out.append(f"{section}.{key} {x.get(key)} vs {y.get(key)}")
    return out


def preset_names() -> list[str]:
    """The names of the protocol presets shipped in lhdbench.conditions (conditions/protocols/)."""
    return sorted(entry.name[: -len(".yaml")] for entry in _presets_dir().iterdir()
                  if entry.name.endswith(".yaml") and entry.is_file())


def load_protocol(name_or_path: str | os.PathLike[str],
                  overrides: Mapping[str, Any] | None = None) -> Protocol:
    """A preset by name (``paper``, ``fast``, ``smoke``) or a YAML file by path, with optional overrides.

    A bare name (no path separator, no .yaml/.yml suffix) is a preset; anything else is a file path.
    `overrides` has the shape of the file (e.g. ``{"evaluate": {"epochs": 10}}``) and is merged in
    before validation. The protocol is named after the preset, the file's `name` key or its stem.
    """
    text_name = os.fspath(name_or_path)
    is_path = (isinstance(name_or_path, os.PathLike) or "/" in text_name or os.sep in text_name
               or text_name.endswith((".yaml", ".yml")))
    if is_path:
        path = Path(text_name)
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProtocolError(f"{where}: cannot read protocol file ({exc.strerror or exc})") from None
        default_name = path.stem
    else:
        known = preset_names()
        if text_name not in known:
            raise ProtocolError(f"unknown protocol preset {text_name!r} (known presets: {', '.join(known)}; "
                                f"or give a path to a .yaml file){did_you_mean(text_name, known)}")
        resource = _presets_dir() / f"{text_name}.yaml"
        where = f"lhdbench.conditions/protocols/{text_name}.yaml"
        text = resource.read_text(encoding="utf-8")
        default_name = text_name
    data = _parse_yaml(text, where)
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            raise ProtocolError(f"overrides: expected a mapping of sections, got {show(overrides)}")
        data = _merge(data, overrides)
    try:
        return protocol_from_dict(data, name=default_name)
    except ProtocolError as exc:
        raise ProtocolError(f"{exc} (in {where})") from None


def _presets_dir():  # importlib.resources Traversable
    return importlib.resources.files("lhdbench.conditions") / "protocols"


def _parse_yaml(text: str, where: str) -> Any:
    try:
        data = parse_yaml(text, where)
    except YamlError as exc:
        raise ProtocolError(str(exc)) from None
    if not isinstance(data, Mapping):
        what = "an empty file" if data is None else show(data)
        raise ProtocolError(f"{where}: expected a mapping of sections ({', '.join(TOP_LEVEL_KEYS)}), "
                            f"got {what}")
    return data


# ---------------------------------------------------------------------------------------------------
# Field rules

_POSITIVE = integer(1)
_POSITIVE_OR_NONE = integer(1, optional=True)
_NON_NEGATIVE_INT = integer(0)
_RATE = number(0.0)  # learning rates, weight decays, loss weights: >= 0
_CLIP = number(0.0, low_open=True)  # a gradient-norm bound: > 0
_MOMENTUM = number(0.0, 1.0)  # [0, 1)

_RULES: dict[type, dict[str, Rule]] = {
    SearchSettings: {
        "epochs": _POSITIVE, "batch_size": _POSITIVE, "weight_lr": _RATE, "weight_lr_min": _RATE,
        "momentum": _MOMENTUM, "weight_decay": _RATE, "grad_clip": _CLIP, "arch_lr": _RATE,
        "arch_betas": number_pair(0.0, 1.0, example="[0.5, 0.999]"), "arch_weight_decay": _RATE,
        "train_portion": number(0.0, 1.0, low_open=True, high_open=True),
        "init_channels": _POSITIVE, "layers": _POSITIVE, "max_train_images": _POSITIVE_OR_NONE,
        "steps_per_epoch": _POSITIVE_OR_NONE,
    },
    EvalSettings: {
        "epochs": _POSITIVE, "batch_size": _POSITIVE, "lr": _RATE, "lr_min": _RATE,
        "momentum": _MOMENTUM, "weight_decay": _RATE, "grad_clip": _CLIP, "auxiliary_weight": _RATE,
        "cutout": _NON_NEGATIVE_INT, "drop_path": boolean, "adaptive_drop_path": boolean,
        "best_after_epoch": _NON_NEGATIVE_INT, "max_train_images": _POSITIVE_OR_NONE,
        "max_test_images": _POSITIVE_OR_NONE, "steps_per_epoch": _POSITIVE_OR_NONE,
        "layers": _POSITIVE_OR_NONE, "init_channels": _POSITIVE_OR_NONE,
    },
    SelectSettings: {
        "interval": _POSITIVE, "weight_lr_factor": number(0.0, low_open=True),
        "measure_images": _POSITIVE_OR_NONE, "steps_per_epoch": _POSITIVE_OR_NONE,
    },
    SpeedSettings: {
        "precision": choice(*PRECISIONS), "channels_last": boolean, "compile": boolean,
        "deterministic": boolean, "cuda_graphs": boolean,
    },
}

# Switches added after trials were first stored: left out of to_dict() while at their default, so that
# a store's trial ids (which hash the protocol) stay what they were.
LATER_DEFAULTS: dict[str, dict[str, Any]] = {"speed": {"cuda_graphs": False}}

for _cls, _rules in _RULES.items():  # every field has exactly one rule
    assert set(_rules) == {f.name for f in fields(_cls)}, _cls.__name__


def _validate(settings: Section, section: str) -> None:
    """Check and normalize (int -> float, list -> tuple) every field of a frozen settings object."""
    for name, rule in _RULES[type(settings)].items():
        value = rule(f"{section}.{name}", getattr(settings, name))
        object.__setattr__(settings, name, value)


def _unknown(path: str, what: str, known: list[str] | tuple[str, ...]) -> str:
    leaf = path.rsplit(".", 1)[-1]
    message = f"{one_line(path)}: unknown {what} (known: {', '.join(known)})"
    close = difflib.get_close_matches(leaf, known, n=1)
    return message + (f"; did you mean {close[0]}?" if close else "")


# ---------------------------------------------------------------------------------------------------
# Method overrides and plain data


def _freeze_methods(methods: Any) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(methods, Mapping):
        raise _fail("methods", "a mapping of method name -> mapping of hyperparameters", methods)
    frozen = {}
    for method in sorted(methods, key=str):
        values = methods[method]
        if not isinstance(method, str) or not method:
            raise ProtocolError(f"methods: expected method names as non-empty strings, got {show(method)}")
        if not isinstance(values, Mapping):
            raise _fail(f"methods.{method}", "a mapping of hyperparameter -> value", values)
        frozen[method] = _freeze(values, f"methods.{method}")
    return MappingProxyType(frozen)


def _freeze(value: Any, path: str) -> Any:
    """A read-only copy of a JSON-like value: mappings -> mappingproxy (str keys, sorted), lists ->
    tuples. Anything that does not survive JSON is rejected."""
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise ProtocolError(f"{path}: expected string keys, got {show(key)}")
        return MappingProxyType({key: _freeze(value[key], f"{path}.{key}") for key in sorted(value)})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, f"{path}[{i}]") for i, v in enumerate(value))
    if value is None or isinstance(value, (bool, str)):
        return value
    if _is_int(value):
        return int(value)
    if _is_number(value) and math.isfinite(value):
        return float(value)
    raise _fail(path, "a JSON value (number, string, bool, null, list or mapping)", value)


def _plain(value: Any) -> Any:
    """Plain JSON-able data: dataclasses and mappings -> dicts, tuples -> lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
