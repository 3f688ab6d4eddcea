"""A method's settings for one protocol: search settings and typed, checked hyperparameters.

Later wins: the protocol's `search` section, the method's `defaults`, the protocol's `methods.<name>`
section. Every hyperparameter goes through its rule (the method's `rules`, else the rule its default's
type implies, `lhdbench.rules.rule_for`), so a bad value fails with the same one-line message a protocol
setting gets, naming `methods.<name>.<key>`, before any trial runs.

A method's own value of a search setting is its value under the paper protocol. A protocol that changes
a size or a rate (`SCALED`) from the paper's value changes a method's own value by the same factor, so a
preset means the same for every method: the demo's architecture learning rate, 100x the paper's, is
100x each method's own rate too. Other settings a method declares (Adam's betas, the data split) are
kept as declared; `--dry-run` lists every method's effective settings that differ from the protocol's,
and how each came about. Values the protocol's `methods.<name>` section sets are taken as given.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..names import did_you_mean
from ..protocol import Protocol, SearchSettings
from ..rules import ProtocolError, rule_for
from ..rules import choice as choice_rule
from .api import SearchMethod

SEARCH_FIELDS = frozenset(f.name for f in dataclasses.fields(SearchSettings))
# The search settings a protocol's change carries to a method's own value, as a factor: budgets, sizes
# and rates. The paper protocol is the SearchSettings defaults (conditions/protocols/paper.yaml).
SCALED = ("epochs", "batch_size", "weight_lr", "weight_lr_min", "weight_decay", "grad_clip", "arch_lr",
          "arch_weight_decay", "init_channels", "layers")
PAPER_SEARCH = SearchSettings()


def _hparam_names(cls: type[SearchMethod]) -> set[str]:
    return set(cls.defaults) - SEARCH_FIELDS - set(cls.presets)


def _check_hparams(cls: type[SearchMethod], values: dict[str, Any], where: str) -> dict[str, Any]:
    checked = {}
    for key, value in values.items():
        rule = cls.rules.get(key) or rule_for(cls.defaults[key])
        checked[key] = rule(f"{where}.{key}", value) if rule is not None else value
    return checked


def check_defaults(cls: type[SearchMethod]) -> None:
    """A method's own declarations, checked when it registers: every rule belongs to a hyperparameter,
    every default passes its rule, and every preset names a default choice and sets known keys to
    values that pass."""
    stray = sorted(set(cls.rules) - _hparam_names(cls))
    if stray:
        raise ValueError(f"search method {cls.name!r}: a rule for {stray[0]!r}, which has no default")
    try:
        _check_hparams(cls, {k: cls.defaults[k] for k in _hparam_names(cls)}, f"{cls.name}.defaults")
        SearchSettings(**{k: v for k, v in cls.defaults.items() if k in SEARCH_FIELDS})
        for key, choices in cls.presets.items():
            if cls.defaults.get(key) not in choices:
                raise ProtocolError(f"{cls.name}.defaults.{key}: must name one of the presets "
                                    f"({', '.join(choices)})")
            for choice, values in choices.items():
                unknown = sorted(set(values) - _hparam_names(cls) - SEARCH_FIELDS)
                if unknown:
                    raise ProtocolError(f"{cls.name}.presets.{key}.{choice}: unknown key {unknown[0]!r}")
                _check_hparams(cls, {k: v for k, v in values.items() if k not in SEARCH_FIELDS},
                               f"{cls.name}.presets.{key}.{choice}")
    except ProtocolError as error:
        raise ValueError(f"search method {cls.name!r}: {error}") from None


def carried(key: str, own: Any, protocol_value: Any) -> tuple[Any, str]:
    """A method's own value of search setting `key` under a protocol that sets it to `protocol_value`,
    and how it came about: "own" (the protocol keeps the paper's value), "scaled" (own x the protocol's
    factor) or "kept" (the protocol changes it, but not by a factor that applies)."""
    paper = getattr(PAPER_SEARCH, key)
    if protocol_value == paper:
        return own, "own"
    numbers = [v for v in (own, paper, protocol_value)
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if key not in SCALED or len(numbers) != 3 or paper <= 0 or own < 0:
        return own, "kept"
    value = own * protocol_value / paper
    if isinstance(paper, int):
        return max(1, round(value)), "scaled"
    return float(f"{value:.12g}"), "scaled"  # 9e-4 x 100 is 0.09, not 0.09000000000000001


def resolve_settings(cls: type[SearchMethod], protocol: Protocol) -> tuple[SearchSettings, dict[str, Any]]:
    """Search settings and checked hyperparameters of `cls` under `protocol`."""
    merged = {key: value for key, (value, _, _) in settings_origins(cls, protocol).items()}
    return _resolved(cls, protocol, merged)


def settings_origins(cls: type[SearchMethod], protocol: Protocol) -> dict[str, tuple[Any, str, Any]]:
    """The method's values under `protocol` (search settings it declares and its hyperparameters),
    each as (value, how it came about, the method's own value): how is "own", "scaled", "kept" (see
    `carried`) or "methods" (set by the protocol's `methods.<name>` section)."""
    overrides = dict(protocol.methods.get(cls.name, {}))
    unknown = sorted(set(overrides) - set(cls.defaults) - SEARCH_FIELDS)
    if unknown:
        known = sorted(set(cls.defaults) | SEARCH_FIELDS)
        raise ProtocolError(f"methods.{cls.name}.{unknown[0]}: unknown key (known: {', '.join(known)})"
                            f"{did_you_mean(unknown[0], known)}")
    own = {k: v for k, v in cls.defaults.items() if k not in cls.presets}
    for key, choices in cls.presets.items():
        choice = choice_rule(*choices)(f"methods.{cls.name}.{key}", overrides.pop(key, cls.defaults[key]))
        own.update(choices[choice])
    out = {key: (*carried(key, value, getattr(protocol.search, key)), value) if key in SEARCH_FIELDS
           else (value, "own", value) for key, value in own.items()}
    out.update({key: (value, "methods", own.get(key)) for key, value in overrides.items()})
    return out


def differing_settings(cls: type[SearchMethod], protocol: Protocol) -> list[str]:
    """The method's effective search settings that differ from the protocol's, each as
    `key value (how)`, for `--dry-run`."""
    out = []
    for key, (value, how, own) in sorted(settings_origins(cls, protocol).items()):
        if key not in SEARCH_FIELDS or value == getattr(protocol.search, key):
            continue
        why = {"own": "its own", "methods": f"methods.{cls.name}",
               "scaled": f"its own {_show(own)} x the protocol's {_show(getattr(protocol.search, key))}/"
                         f"{_show(getattr(PAPER_SEARCH, key))} of the paper's",
               "kept": "its own, kept: the protocol's change does not carry to it"}[how]
        out.append(f"{key} {_show(value)} ({why})")
    return out


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(list(value) if isinstance(value, tuple) else value)


def _resolved(cls: type[SearchMethod], protocol: Protocol,
              merged: dict[str, Any]) -> tuple[SearchSettings, dict[str, Any]]:
    hparams = _check_hparams(cls, {k: v for k, v in merged.items() if k not in SEARCH_FIELDS},
                             f"methods.{cls.name}")
    settings_overrides = {k: v for k, v in merged.items() if k in SEARCH_FIELDS}
    base = protocol.search
    if settings_overrides:
        try:
            base = protocol.replace(search=settings_overrides).search
        except ProtocolError as error:
            # The value came from the method's section (or its defaults): say so.
            raise ProtocolError(str(error).replace("search.", f"methods.{cls.name}.", 1)) from None
    cls.check_settings(base, hparams)
    return base, hparams
