"""The LHD search space: ops, supernet, ArchWeights, Genotype, discretize and the final network.

Imports nothing from the rest of lhdbench. Names load on first use (PEP 562), so that what needs only
the light parts (policies, genotypes) does not import torch: the command line starts faster.
"""

from __future__ import annotations

import importlib
from typing import Any

# Eager, and light (numpy only): the function shares its name with its module, and a lazy name would
# be shadowed by the module as soon as anything imported `lhdbench.space.discretize`.
from .discretize import discretize as discretize

_WHERE = {
    "ArchFileError": "arch_weights", "ArchWeights": "arch_weights", "load_arch_weights": "arch_weights",
    "CellGenotype": "genotype", "Edge": "genotype", "Genotype": "genotype", "GenotypeError": "genotype",
    "FinalNetwork": "network", "build_final_network": "network", "count_parameters": "network",
    "network_shape": "network",
    "PRIMITIVES": "layout",
    "POLICIES": "policies", "Policy": "policies", "get_policy": "policies",
    "CellWeights": "supernet", "Supernet": "supernet",
    "load_any": "upstream", "load_upstream_pl": "upstream",
}

__all__ = sorted([*_WHERE, "discretize"])


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
