"""Small stand-ins for CIFAR-10, CIFAR-100 and SVHN, written in torchvision's own on-disk formats, for
tests of everything that reads real datasets (the loader, the pre-flight check, the CLI on a data root).

The files have the names, folders and contents torchvision reads (`torchvision/datasets/cifar.py`,
`svhn.py`) with random pixels; only their md5 sums differ from the originals, so torchvision's integrity
check refuses them unless a test substitutes their sums for the published ones (see
tests/test_data_files.py). Writing SVHN needs scipy.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .layout import torchvision_layout

CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                       "truck"]
DEFAULT_SIZES = {"cifar10": (23, 10), "cifar100": (200, 100), "svhn": (21, 10)}  # (train, test)


@dataclass
class WrittenFiles:
    """What `write_torchvision_files` wrote, as stored in the files (before torchvision converts it)."""

    name: str
    root: Path
    md5: dict[str, str] = field(default_factory=dict)  # path relative to root -> md5 of the file
    # CIFAR: path -> {"data": (n, 3072) uint8, "labels": (n,) int64} ("labels" = fine labels for
    # CIFAR-100, which also have "coarse"); SVHN: path -> {"X": (32, 32, 3, n) uint8, "y": (n, 1) uint8}
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    splits: dict[str, list[str]] = field(default_factory=dict)  # "train"/"test" -> its data files, in order


def write_torchvision_files(name: str, root: str | os.PathLike[str], *, train: int | None = None,
                            test: int | None = None, seed: int = 0) -> WrittenFiles:
    """Write dataset `name` (cifar10, cifar100, svhn) with `train` and `test` random images under `root`,
    with every file torchvision reads for both splits; labels cycle through all classes in a shuffled
    order (every class appears once the split has as many images as classes)."""
    default_train, default_test = DEFAULT_SIZES[name]
    sizes = {"train": default_train if train is None else train,
             "test": default_test if test is None else test}
    written = WrittenFiles(name, Path(root))
    rng = np.random.default_rng(seed)
    layout = torchvision_layout(name)
    if name == "svhn":
        for split in ("train", "test"):
            (path,) = layout[split].data
            _write_svhn(written, path, sizes[split], rng)
            written.splits[split] = [path]
    else:
        classes = 10 if name == "cifar10" else 100
        for split in ("train", "test"):
            files = list(layout[split].data)
            labels = _labels(sizes[split], classes, rng)
            # CIFAR-10's five training batches split the training set in order, as the originals do.
            for i, (path, part) in enumerate(zip(files, np.array_split(labels, len(files)), strict=True)):
                _write_cifar_batch(written, path, part, rng, f"{split} batch {i + 1} of {len(files)}")
            written.splits[split] = files
        (meta,) = set(layout["train"].paths) - set(layout["train"].data) - set(layout["test"].data)
        _write_cifar_meta(written, meta)
    return written


def _labels(n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.resize(np.arange(classes, dtype=np.int64), n))


def _write_cifar_batch(written: WrittenFiles, path: str, labels: np.ndarray, rng: np.random.Generator,
                       batch_label: str) -> None:
    n = len(labels)
    # One row per image: the red plane, then green, then blue, each 32 rows of 32 (row-major).
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    entry: dict[str, object] = {"batch_label": batch_label, "data": data,
                                "filenames": [f"image_{i:05d}.png" for i in range(n)]}
    arrays = {"data": data, "labels": labels}
    if written.name == "cifar10":
        entry["labels"] = labels.tolist()  # a list of ints, as in the originals
    else:
        coarse = labels // 5  # any coarse labels; torchvision reads only the fine ones
        entry["fine_labels"], entry["coarse_labels"] = labels.tolist(), coarse.tolist()
        arrays["coarse"] = coarse
    _write(written, path, pickle.dumps(entry, protocol=2))  # the originals are protocol-2 pickles
    written.arrays[path] = arrays


def _write_cifar_meta(written: WrittenFiles, path: str) -> None:
    if written.name == "cifar10":
        meta = {"label_names": CIFAR10_LABEL_NAMES, "num_cases_per_batch": 10000, "num_vis": 3072}
    else:
        meta = {"fine_label_names": [f"fine_{i:02d}" for i in range(100)],
                "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)]}
    _write(written, path, pickle.dumps(meta, protocol=2))


def _write_svhn(written: WrittenFiles, path: str, n: int, rng: np.random.Generator) -> None:
    import io

    import scipy.io

    # MATLAB layout: X(row, column, channel, image); y is 1..10 with 10 for the digit 0.
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    digits = _labels(n, 10, rng)
    y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"X": x, "y": y})  # MATLAB 5 format, what loadmat reads by default
    _write(written, path, buffer.getvalue())
    written.arrays[path] = {"X": x, "y": y}


def _write(written: WrittenFiles, path: str, content: bytes) -> None:
    target = written.root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    written.md5[path] = hashlib.md5(content, usedforsecurity=False).hexdigest()
