"""Datasets: their specs (classes, normalization), loading them as uint8 tensors, the GPU-resident
batch stream with on-device augmentation, and the check that a dataset can be had. See docs/data.md.

Names load on first use (PEP 562): the specs and the check need no torch, so the command line and the
pre-flight checks start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "check_available": "preflight",
    "DatasetUnavailable": "sources", "ImageSet": "sources", "data_root": "sources",
    "load_images": "sources", "search_split": "sources",
    "DATASETS": "specs", "DatasetSpec": "specs", "get_dataset": "specs",
    "GpuBatchStream": "stream",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
