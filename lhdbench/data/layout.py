"""Where torchvision keeps each dataset under a data root, and where it downloads it from.

The values are torchvision's own, from its dataset classes (`torchvision/datasets/cifar.py`: `CIFAR10`,
`CIFAR100`; `svhn.py`: `SVHN`): the file names with their md5 sums, the archive and the download URL.
Once torchvision is imported they are read from the live classes. Before that they are read from
those classes' source, without importing torchvision: importing it takes 1.5-2 s (it pulls in
torch._dynamo), far more than the pre-flight check (preflight.py) may take. The class attributes are
plain literals there; if that ever stops being so, torchvision is imported after all.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TORCHVISION_NAMES = ("cifar10", "cifar100", "svhn")
_CLASSES = {"cifar10": ("cifar", "CIFAR10"), "cifar100": ("cifar", "CIFAR100"), "svhn": ("svhn", "SVHN")}


@dataclass(frozen=True)
class Split:
    """One split of a dataset as torchvision reads it."""

    # (path relative to the data root, md5) of every file torchvision requires for the split. For CIFAR
    # that is both splits' data files and the meta file: its integrity check covers all of them,
    # whichever split is loaded.
    files: tuple[tuple[str, str], ...]
    data: tuple[str, ...]  # the files the split's images come from, in the order they are read
    url: str  # what torchvision downloads when a file is missing or fails its md5 sum
    archive: str | None  # the download, when it is an archive to unpack under the root (CIFAR)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(path for path, _ in self.files)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of `url`."""
        parts = urlsplit(self.url)
        return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def torchvision_layout(name: str) -> dict[str, Split]:
    """{"train": Split, "test": Split} for cifar10, cifar100 or svhn (ValueError for other names)."""
    if name not in _CLASSES:
        raise ValueError(f"{name!r} is not read with torchvision; those are {', '.join(TORCHVISION_NAMES)}")
    module, cls = _CLASSES[name]
    loaded = sys.modules.get(f"torchvision.datasets.{module}")
    if loaded is not None:  # the live classes: exactly what the loader will use, monkeypatches included
        return _splits(name, _vars_of(getattr(loaded, cls)))
    try:
        return _splits(name, _source_attributes(module, cls))
    except Exception:  # an unusual install or a torchvision whose classes are no longer literals
        from torchvision import datasets

        return _splits(name, _vars_of(getattr(datasets, cls)))


def _vars_of(cls: type) -> dict[str, Any]:
    """The class attributes the layout is made of, inherited ones included."""
    keys = ("base_folder", "url", "filename", "train_list", "test_list", "meta", "split_list")
    return {key: getattr(cls, key) for key in keys if hasattr(cls, key)}


def _splits(name: str, attrs: dict[str, Any]) -> dict[str, Split]:
    if name == "svhn":
        table = attrs["split_list"]
        return {split: Split(((table[split][1], table[split][2]),), (table[split][1],), table[split][0], None)
                for split in ("train", "test")}
    folder, meta = attrs["base_folder"], attrs["meta"]
    every = tuple((f"{folder}/{file}", md5) for file, md5 in [*attrs["train_list"], *attrs["test_list"]])
    every += ((f"{folder}/{meta['filename']}", meta["md5"]),)
    return {split: Split(every, tuple(f"{folder}/{file}" for file, _ in attrs[f"{split}_list"]),
                         attrs["url"], attrs["filename"])
            for split in ("train", "test")}


@functools.cache
def _source_attributes(module: str, cls: str) -> dict[str, Any]:
    """The literal class attributes of torchvision.datasets.<module>.<cls> (and of its base classes
    defined in the same file), from the source file, without importing torchvision."""
    spec = importlib.util.find_spec("torchvision")  # finds the package; does not import it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("torchvision not found")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / f"{module}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}

    def attributes(name: str) -> dict[str, Any]:
        node = classes[name]
        found: dict[str, Any] = {}
        for base in node.bases:
            if isinstance(base, ast.Name) and base.id in classes:
                found.update(attributes(base.id))
        for stmt in node.body:
            if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)):
                target, value = stmt.targets[0].id, stmt.value
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
                target, value = stmt.target.id, stmt.value
            else:
                continue
            try:
                found[target] = ast.literal_eval(value)
            except ValueError:
                found.pop(target, None)  # not a literal: unknown here
        return found

    return attributes(cls)


def brace(paths: tuple[str, ...] | list[str]) -> str:
    """Paths written compactly for a message: 'dir/{a,b}' for one folder, 'a' for one file,
    '{a,b}' for files at the top."""
    if len(paths) == 1:
        return paths[0]
    heads = {p.rsplit("/", 1)[0] if "/" in p else "" for p in paths}
    if len(heads) == 1:
        head = heads.pop()
        tails = [p[len(head) + 1:] if head else p for p in paths]
        return f"{head}/{{{','.join(tails)}}}" if head else f"{{{','.join(tails)}}}"
    return ", ".join(paths)
