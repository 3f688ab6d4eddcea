"""Where trial records come from: a store folder or a bundle file, read the same way.

The report, `lhdbench.results.load` and `compare` read their trials through `open_source`, so a
bundle someone published and a store on this disk are interchangeable.
"""

from __future__ import annotations

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
