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
from .specs import get_dataset

ENV_VAR = "LHDBENCH_DATA"
DEFAULT_ROOT = Path("~/.cache/lhdbench/data")

# The embedded set: sklearn's digits in their stored order, first 1,437 (= floor(0.8 * 1,797)) for
# training and the remaining 360 for testing. Every class has 141-146 training and 33-37 test images.
DIGITS_TRAIN_SIZE = 1437
DIGITS_UPSAMPLE = 4  # 8x8 -> 32x32, the CIFAR geometry the search space is built for


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
    missing and `download`); `digits` is built in memory and ignores `root` and `download`.
    Raises ValueError for an unknown name and DatasetUnavailable when the files cannot be had.
    """
    spec = get_dataset(name)
    if spec.name == "digits":
        data = _digits(train)
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


def _digits(train: bool) -> ImageSet:
    images, labels = _digits_arrays()
    part = slice(0, DIGITS_TRAIN_SIZE) if train else slice(DIGITS_TRAIN_SIZE, None)
    small = torch.tensor(images[part])  # (n, 8, 8), a copy
    # Nearest-neighbour upsampling: every source pixel becomes a 4x4 block. Chosen over bilinear
    # because it keeps the exact integer pixel values (nothing depends on an interpolation kernel,
    # align_corners or rounding, so the data is bit-identical everywhere) and keeps the strokes sharp;
    # a 4-pixel random crop then shifts by whole or partial source pixels, as on CIFAR.
    big = small.repeat_interleave(DIGITS_UPSAMPLE, dim=1).repeat_interleave(DIGITS_UPSAMPLE, dim=2)
    rgb = big.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()  # grey replicated to 3 channels
    return ImageSet(rgb, torch.tensor(labels[part]))


# ---------------------------------------------------------------------------------------------------
# torchvision datasets


def _looked_for(name: str, train: bool) -> str:
    """The files torchvision expects under the root, for the error message."""
    from torchvision import datasets

    if name == "svhn":
        return datasets.SVHN.split_list["train" if train else "test"][1]
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    files = [f for f, _ in (cls.train_list if train else cls.test_list)] + [cls.meta["filename"]]
    return f"{cls.base_folder}/{{{','.join(files)}}}"


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

    ds: Any
    try:
        with download_lock(root, name) if download else contextlib.nullcontext():
            ds = _open(datasets, name, train, root, download)
    except ImportError:
        raise  # e.g. scipy, which torchvision needs to read SVHN's .mat files: not a data problem
    except Exception as error:  # torchvision raises RuntimeError, URLError/OSError, tarfile errors...
        how = f"download failed: {_short(error)}" if download else "download disabled"
        raise DatasetUnavailable(
            f"{name} ({'train' if train else 'test'}) not found under {root} "
            f"(looked for {_looked_for(name, train)}); {how}. Put the torchvision files there or "
            f"pass --data-root/{ENV_VAR}") from error
    return _image_set(name, ds)


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
