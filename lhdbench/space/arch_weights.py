"""ArchWeights: the relaxed architecture weights a search ends with; what discretization consumes.

Four float32 matrices, stored after their transforms, exactly like the `.pl` files the LHD code writes
(chaoji90/LHD, e.g. `search/DARTS/train_search_darts.py`):
`normal`/`reduce` (20, 7) joint-softmax node weights (each node block sums to 1) and
`normal_output`/`reduce_output` (2, 5): row 0 the sum-path softmax, row 1 the concat sigmoid gates.

On disk: a NumPy `.npz` archive holding the four arrays and `metadata`, a JSON string. It is read with
`allow_pickle=False`, so loading one never runs code.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write_bytes
from .layout import NUM_EDGES, NUM_NODES, NUM_OPS, OUTPUT_PATHS, node_rows

FORMAT = "lhdbench.arch_weights"
FORMAT_VERSION = 1
SUFFIX = ".npz"
MATRICES = ("normal", "reduce", "normal_output", "reduce_output")
SHAPES = {"normal": (NUM_EDGES, NUM_OPS), "reduce": (NUM_EDGES, NUM_OPS),
          "normal_output": (OUTPUT_PATHS, NUM_NODES), "reduce_output": (OUTPUT_PATHS, NUM_NODES)}
# float32 softmax blocks sum to 1 only up to rounding; the published upstream files stay within 1e-4.
SUM_TOLERANCE = 1e-3


class ArchFileError(ValueError):
    """An architecture file that cannot be read or does not hold valid weights."""


@dataclass(frozen=True)
class ArchWeights:
    normal: np.ndarray
    reduce: np.ndarray
    normal_output: np.ndarray
    reduce_output: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in MATRICES:
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float32))
        problem = validation_error([getattr(self, name) for name in MATRICES])
        if problem:
            raise ArchFileError(problem)
        reserved = {"format", "version"} & set(self.metadata)
        if reserved:
            raise ArchFileError(f"metadata keys {sorted(reserved)} are reserved for the file header")

    @classmethod
    def from_logits(cls, normal: np.ndarray, reduce: np.ndarray, normal_output: np.ndarray,
                    reduce_output: np.ndarray, metadata: dict[str, Any] | None = None) -> ArchWeights:
        """Apply the plain LHD transforms to raw parameters: joint softmax per node block, softmax of
        output row 0, sigmoid of output row 1 (upstream `search/concate_sum_five_sig.py`)."""

        def softmax(x: np.ndarray) -> np.ndarray:
            e = np.exp(x - x.max())
            return e / e.sum()

        def nodes(logits: np.ndarray) -> np.ndarray:
            logits = np.asarray(logits, dtype=np.float64)
            out = np.empty_like(logits)
            for node in range(NUM_NODES):
                block = logits[node_rows(node)]
                out[node_rows(node)] = softmax(block.reshape(-1)).reshape(block.shape)
            return out

        def outputs(logits: np.ndarray) -> np.ndarray:
            logits = np.asarray(logits, dtype=np.float64)
            return np.stack([softmax(logits[0]), 1.0 / (1.0 + np.exp(-logits[1]))])

        return cls(nodes(normal), nodes(reduce), outputs(normal_output), outputs(reduce_output),
                   metadata=metadata or {})

    def matrices(self) -> list[np.ndarray]:
        return [getattr(self, name) for name in MATRICES]

    def cell(self, cell_type: str) -> tuple[np.ndarray, np.ndarray]:
        """(node weights, output weights) of `normal` or `reduce`."""
        if cell_type not in ("normal", "reduce"):
            raise ValueError(f"cell type must be 'normal' or 'reduce', got {cell_type!r}")
        return getattr(self, cell_type), getattr(self, f"{cell_type}_output")

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a reader never sees a half-written file."""
        header = {**self.metadata, "format": FORMAT, "version": FORMAT_VERSION}
        buffer = io.BytesIO()
        np.savez(buffer, metadata=np.array(json.dumps(header, sort_keys=True)),
                 **{name: getattr(self, name) for name in MATRICES})
        return atomic_write_bytes(path, buffer.getvalue())


def validation_error(arrays: list[Any]) -> str | None:
    """Why `arrays` are not valid ArchWeights matrices, or None when they are."""
    if len(arrays) != len(MATRICES):
        return f"expected {len(MATRICES)} arrays, found {len(arrays)}"
    for name, array in zip(MATRICES, arrays, strict=True):
        if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
            return f"{name}: expected a float array, found {type(array).__name__}"
        if array.shape != SHAPES[name]:
            return f"{name}: expected shape {SHAPES[name]}, found {array.shape}"
        if not np.all(np.isfinite(array)):
            return f"{name}: contains NaN or infinite values"
        if array.min() < 0 or array.max() > 1:
            return f"{name}: values must lie in [0, 1], found [{array.min():.4g}, {array.max():.4g}]"
    for name in ("normal", "reduce"):
        array = arrays[MATRICES.index(name)]
        for node in range(NUM_NODES):
            total = float(array[node_rows(node)].sum(dtype=np.float64))
            if abs(total - 1) > SUM_TOLERANCE:
                return f"{name}: node {node} weights sum to {total:.6f}, not 1"
    for name in ("normal_output", "reduce_output"):
        total = float(arrays[MATRICES.index(name)][0].sum(dtype=np.float64))
        if abs(total - 1) > SUM_TOLERANCE:
            return f"{name}: sum-path weights sum to {total:.6f}, not 1"
    return None


def load_arch_weights(path: str | os.PathLike) -> ArchWeights:
    """Read an lhdbench `.npz` ArchWeights file (no pickle allowed)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            missing = (set(MATRICES) | {"metadata"}) - names
            if missing:
                raise ArchFileError(f"{path}: not an lhdbench ArchWeights file "
                                    f"(missing {', '.join(sorted(missing))})")
            header = json.loads(str(archive["metadata"][()]))
            arrays = [archive[name] for name in MATRICES]
    except ArchFileError:
        raise
    except FileNotFoundError:
        raise ArchFileError(f"{path}: no such file") from None
    except Exception as error:  # zipfile, numpy and json each raise their own types
        raise ArchFileError(f"{path}: unreadable ArchWeights file ({type(error).__name__}: "
                            f"{error})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ArchFileError(f"{path}: not an lhdbench ArchWeights file (format tag missing)")
    if header.get("version") != FORMAT_VERSION:
        raise ArchFileError(f"{path}: unsupported ArchWeights version {header.get('version')!r}")
    problem = validation_error(arrays)
    if problem:
        raise ArchFileError(f"{path}: {problem}")
    metadata = {k: v for k, v in header.items() if k not in ("format", "version")}
    return ArchWeights(*arrays, metadata=metadata)
