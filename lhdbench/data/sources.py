"""Where images come from: the torchvision datasets on disk, and the embedded offline `digits` set.

Every dataset is returned as an `ImageSet`: the whole split as one uint8 NCHW tensor plus int64 labels,
in dataset order. Search splits it in that order, as the LHD code does (chaoji90/LHD
`search/DARTS/train_search_darts.py`); `GpuBatchStream` (stream.py) moves it to the GPU once and makes
batches there.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import file_lock
from .layout import Split, brace, torchvision_layout
from .specs import get_dataset

ENV_VAR = "LHDBENCH_DATA"
DEFAULT_ROOT = Path("~/.cache/lhdbench/data")

# The embedded set: sklearn's digits in their stored order, first 1,437 (= floor(0.8 * 1,797)) for
# training and the remaining 360 for testing. Every class has 141-146 training and 33-37 test images.
DIGITS_TRAIN_SIZE = 1437
DIGITS_SIZE = 8  # sklearn's digits are 8x8; `digits` brings them to 32x32 (CIFAR's), `digits16` to 16x16


class DatasetUnavailable(RuntimeError):
    """The dataset's files are not on disk and could not be downloaded. The message is one line."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensor fields with == is not a bool
class ImageSet:
    """One split of a dataset, in dataset order: images (N, 3, H, W) uint8, labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        im, lab = self.images, self.labels
        if not isinstance(im, torch.Tensor) or im.dtype != torch.uint8 or im.ndim != 4 or im.shape[1] != 3:
            raise ValueError(f"images must be a uint8 tensor of shape (N, 3, H, W), got "
                             f"{getattr(im, 'dtype', type(im))} {tuple(getattr(im, 'shape', ()))}")
        if not isinstance(lab, torch.Tensor) or lab.dtype != torch.int64 or lab.shape != im.shape[:1]:
            raise ValueError(f"labels must be an int64 tensor of shape ({im.shape[0]},), got "
                             f"{getattr(lab, 'dtype', type(lab))} {tuple(getattr(lab, 'shape', ()))}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def head(self, n: int | None) -> ImageSet:
        """The first `n` items in dataset order (all of them if `n` is None or at least len(self))."""
        if n is None:
            return self
        if n < 0:
            raise ValueError(f"head(n) needs n >= 0, got {n}")
        return ImageSet(self.images[:n], self.labels[:n])


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Where dataset files live: `root` if given, else $LHDBENCH_DATA if set, else ~/.cache/lhdbench/data."""
    if root is None or str(root) == "":
        root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(root).expanduser().absolute()


def search_split(data: ImageSet, portion: float = 0.5) -> tuple[ImageSet, ImageSet]:
    """(weight half, arch half): items [0, split) and [split, N) in dataset order, split = floor(portion*N).

    As upstream (`search/DARTS/train_search_darts.py`): no shuffling before the split; CIFAR
    25,000/25,000, SVHN 36,628/36,629.
    """
    if not 0.0 < portion < 1.0:
        raise ValueError(f"portion must be strictly between 0 and 1, got {portion}")
    n = len(data)
    split = math.floor(portion * n)
    if split == 0 or split == n:
        raise ValueError(f"search_split(portion={portion}) of {n} items leaves one half empty")
    return (ImageSet(data.images[:split], data.labels[:split]),
            ImageSet(data.images[split:], data.labels[split:]))


def load_images(name: str, train: bool, root: str | os.PathLike[str] | None = None,
                download: bool = True) -> ImageSet:
    """The training (`train=True`) or test split of dataset `name` as an ImageSet in dataset order.

    cifar10/cifar100/svhn are read with torchvision from `data_root(root)` (downloaded there first if
    missing and `download`); torchvision checks every file's md5 sum, and files that fail it are
    downloaded again where `download` allows. `digits` is built in memory and ignores `root` and
    `download`. check_available (preflight.py) says beforehand, in milliseconds, whether this can work.
    Raises ValueError for an unknown name and DatasetUnavailable when the files cannot be had.
    """
    spec = get_dataset(name)
    if spec.embedded:
        data = _digits(train, spec.image_size)
    else:
        data = _torchvision(spec.name, train, data_root(root), download)
    if len(data) and int(data.labels.max()) >= spec.num_classes:
        raise ValueError(f"{name}: label {int(data.labels.max())} is out of range for "
                         f"{spec.num_classes} classes")
    return data


# ---------------------------------------------------------------------------------------------------
# digits


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # ships its data inside the wheel: no network

    bunch = load_digits()
    # Values are integers 0..16; 16 -> 255.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    labels = bunch.target.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _digits(train: bool, size: int = 32) -> ImageSet:
    images, labels = _digits_arrays()
    upsample = size // DIGITS_SIZE
    part = slice(0, DIGITS_TRAIN_SIZE) if train else slice(DIGITS_TRAIN_SIZE, None)
    small = torch.tensor(images[part])  # (n, 8, 8), a copy
    # Nearest-neighbour upsampling: every source pixel becomes a 4x4 block. Chosen over bilinear
    # because it keeps the exact integer pixel values (nothing depends on an interpolation kernel,
    # align_corners or rounding, so the data is bit-identical everywhere) and keeps the strokes sharp;
    # a 4-pixel random crop then shifts by whole or partial source pixels, as on CIFAR.
    big = small.repeat_interleave(upsample, dim=1).repeat_interleave(upsample, dim=2)
    rgb = big.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()  # grey replicated to 3 channels
    return ImageSet(rgb, torch.tensor(labels[part]))


# ---------------------------------------------------------------------------------------------------
# torchvision datasets


def _short(error: BaseException, limit: int = 160) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())  # one line
    return text if len(text) <= limit else text[:limit - 3] + "..."


@contextlib.contextmanager
def download_lock(root: Path, name: str) -> Iterator[None]:
    """Held while torchvision checks and fetches a dataset, so that the first trials on a fresh data
    root (several per machine, all starting at once) do not download and unpack the same archive over
    each other. Where the root cannot hold a lock (read-only, no flock), the files are read unlocked."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = file_lock(root / f".lhdbench-{name}.lock")
        lock.__enter__()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def _torchvision(name: str, train: bool, root: Path, download: bool) -> ImageSet:
    from torchvision import datasets

    split = torchvision_layout(name)["train" if train else "test"]
    ds: Any
    try:
        with download_lock(root, name) if download else contextlib.nullcontext():
            if not _present(root, split):
                ds = _open(datasets, name, train, root, download)
            else:
                # Every file is there: read them as they are. torchvision checks their md5 sums in any
                # case (download=True would make it hash them twice); files that fail the check are
                # downloaded again, overwriting them, where downloading is allowed.
                try:
                    ds = _open(datasets, name, train, root, False)
                except RuntimeError:  # torchvision's "Dataset not found or corrupted"
                    if not download:
                        raise
                    ds = _open(datasets, name, train, root, True)
    except ImportError:
        raise  # e.g. scipy, which torchvision needs to read SVHN's .mat files: not a data problem
    except Exception as error:  # torchvision raises RuntimeError, URLError/OSError, tarfile errors...
        raise DatasetUnavailable(_unavailable(name, train, root, split, download, error)) from error
    return _image_set(name, ds)


def _present(root: Path, split: Split) -> bool:
    return all(is_file(root / path) for path in split.paths)


def is_file(path: Path) -> bool:
    """path.is_file(), False where it cannot be told (e.g. a folder on the way without permission)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _unavailable(name: str, train: bool, root: Path, split: Split, download: bool,
                 error: BaseException) -> str:
    """The one-line message for a split that could not be loaded: what is missing or bad, and why
    no download repaired it."""
    what = f"{name} ({'train' if train else 'test'})"
    how = f"download failed: {_short(error)}" if download else "download disabled"
    fix = f"pass --data-root/{ENV_VAR}"
    missing = [path for path in split.paths if not is_file(root / path)]
    if missing:
        which = "" if len(missing) == len(split.paths) else f"; missing {brace(missing)}"
        return (f"{what} not found under {root} (looked for {brace(split.paths)}{which}); {how}. "
                f"Put the torchvision files there or {fix}")
    bad = _failed_checksums(root, split)
    if bad:
        return (f"{what} under {root}: {brace(bad)} {'fails' if len(bad) == 1 else 'fail'} torchvision's "
                f"md5 check (corrupted, truncated or not the original files); {how}. Replace them with "
                f"the torchvision files or {fix}")
    return (f"{what} under {root} ({brace(split.paths)}) could not be read: {_short(error)}. "
            f"Replace them with the torchvision files or {fix}")


def _failed_checksums(root: Path, split: Split) -> list[str]:
    """The files whose md5 sum is not the one torchvision expects (reads them all: failures only)."""
    from torchvision.datasets.utils import check_integrity

    try:
        return [path for path, md5 in split.files if not check_integrity(str(root / path), md5)]
    except OSError:
        return []


def _open(datasets: Any, name: str, train: bool, root: Path, download: bool) -> Any:
    if name == "svhn":
        return datasets.SVHN(str(root), split="train" if train else "test", download=download)
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    return cls(str(root), train=train, download=download)


def _image_set(name: str, ds: Any) -> ImageSet:
    if name == "svhn":
        images = np.ascontiguousarray(ds.data)  # already (N, 3, 32, 32)
        labels = np.asarray(ds.labels, dtype=np.int64)  # torchvision maps the .mat's 10 to 0
    else:
        images = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))  # (N, 32, 32, 3) -> NCHW
        labels = np.asarray(ds.targets, dtype=np.int64)
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels))
