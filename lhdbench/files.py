"""Durable files: atomic writes that readers see whole or not at all.

Standard library only and importing nothing from lhdbench, so that every part (`space/` included,
which imports nothing above it) can use the one implementation.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` so that readers see either the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file owner-only; give it the permissions a plain open() would, so a
        # store or report on shared storage stays readable by the group that shares it.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    # Reading the umask means setting it; done once at import, before any thread could write a file.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def move_aside(path: str | os.PathLike, suffix: str = ".invalid") -> Path:
    """Rename a file that cannot be used to `<name><suffix>` (`<name><suffix>.N` if that exists), so
    that it stops counting but stays there to be looked at. Returns the new path."""
    path = Path(path)
    target = path.with_name(path.name + suffix)
    number = 1
    while target.exists():
        target = path.with_name(f"{path.name}{suffix}.{number}")
        number += 1
    os.replace(path, target)
    return target


def atomic_write_json(path: str | os.PathLike, value: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())
