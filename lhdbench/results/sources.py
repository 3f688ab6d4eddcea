"""Where trial records come from: a store folder or a bundle file, read the same way.

The report, `lhdbench.results.load` and `compare` read their trials through `open_source`, so a
bundle someone published and a store on this disk are interchangeable.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..record import TrialRecord
from ..store import Store, StoreError


class SourceError(ValueError):
    """A path that is neither a readable store nor a valid bundle; one line."""


@dataclass
class Source:
    """The trials of one store or bundle: valid records by trial id, the plan, and the messages of
    record files that did not validate (a store's; a bundle with one is refused whole)."""

    label: str
    path: Path
    kind: str  # "store" or "bundle"
    records: dict[str, TrialRecord]
    plan: dict[str, Any]
    invalid: list[str] = field(default_factory=list)


def open_source(path: str | os.PathLike, label: str | None = None) -> Source:
    """A store folder or a bundle file at `path`; SourceError (one line) when it is neither."""
    from .bundle import BundleError, is_bundle, read_bundle

    path = Path(path)
    label = label or str(path)
    if is_bundle(path):
        try:
            bundle = read_bundle(path)
        except BundleError as error:
            raise SourceError(str(error)) from None
        return Source(label, path, "bundle", bundle.records, bundle.plan)
    if path.is_file():
        raise SourceError(f"{path}: neither a results store (a folder) nor a bundle (a zip file)")
    store = Store(path)
    if not store.root.is_dir():
        raise SourceError(f"{path}: no such storage folder or bundle file")
    if not store.is_store():
        raise SourceError(f"{path}: not a results store (no plan.json and no records/ folder)")
    try:
        records = store.records()
        plan = store.read_plan()
    except StoreError as error:
        raise SourceError(str(error)) from None
    invalid = [found.message.replace(str(store.root) + os.sep, "")
               for _, found in sorted(store.invalid.items())]
    return Source(label, path, "store", records, plan, invalid)


# The sections that decide a trial's result. `name` is a label; `methods` only shapes the search
# settings, which a search record holds resolved (and its id hashes).
PROTOCOL_SECTIONS = ("search", "evaluate", "select", "speed")


def protocol_id(protocol: dict[str, Any]) -> str:
    """16 hex digits naming a protocol's settings, whatever its name: two records with one id ran
    under the same budgets, optimizers, schedules, data and speed switches."""
    from ..protocol import ProtocolError, protocol_from_dict

    try:
        normal = protocol_from_dict(protocol, name=str(protocol.get("name") or "custom")).to_dict()
    except (ProtocolError, TypeError, ValueError):
        normal = protocol  # a protocol of another version: its own words
    sections = {key: normal.get(key) for key in PROTOCOL_SECTIONS}
    canonical = json.dumps(sections, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def protocol_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The dotted settings in which two protocols differ, as `key a -> b`."""
    from ..protocol import ProtocolError, protocol_from_dict

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
