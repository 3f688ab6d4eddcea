"""A method's settings for one protocol: search settings and typed, checked hyperparameters.

Later wins: the protocol's `search` section, the method's `defaults`, the protocol's `methods.<name>`
section. Every hyperparameter goes through its rule (the method's `rules`, else the rule its default's
type implies, `lhdbench.rules.rule_for`), so a bad value fails with the same one-line message a protocol
setting gets, naming `methods.<name>.<key>`, before any trial runs.
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


def resolve_settings(cls: type[SearchMethod], protocol: Protocol) -> tuple[SearchSettings, dict[str, Any]]:
    """Search settings and checked hyperparameters of `cls` under `protocol`."""
    overrides = dict(protocol.methods.get(cls.name, {}))
    unknown = sorted(set(overrides) - set(cls.defaults) - SEARCH_FIELDS)
    if unknown:
        known = sorted(set(cls.defaults) | SEARCH_FIELDS)
        raise ProtocolError(f"methods.{cls.name}.{unknown[0]}: unknown key (known: {', '.join(known)})")
    merged = {k: v for k, v in cls.defaults.items() if k not in cls.presets}
    for key, choices in cls.presets.items():
        choice = choice_rule(*choices)(f"methods.{cls.name}.{key}", overrides.pop(key, cls.defaults[key]))
        merged.update(choices[choice])
    merged.update(overrides)
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


def check_protocol_methods(protocol: Protocol) -> None:
    """Every method a protocol's `methods:` section names exists, and its overrides resolve."""
    from .registry import get_method, method_names

    names = method_names()
    for name in protocol.methods:
        if name not in names:
            raise ProtocolError(f"methods.{name}: unknown search method (known: {', '.join(names)})"
                                f"{did_you_mean(name, names)}")
        resolve_settings(get_method(name), protocol)
