"""Durable files: atomic writes that readers see whole or not at all.

Standard library only and importing nothing from lhdbench, so that every part (`space/` included,
which imports nothing above it) can use the one implementation.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# What flock raises on filesystems that do not lock (some NFS setups without a lock daemon, FUSE).
NO_LOCKING = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


# Errors of the storage itself, not of one trial: every later write would fail the same way, so a
# run stops on them instead of recording each trial as failed.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def is_storage_failure(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in STORAGE_ERRNOS


class LockingUnsupported(OSError):
    """The filesystem of a lock file does not support flock."""


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


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on `path` (created if needed) for the block; yields whether it was
    taken (always True when `blocking`). The kernel drops the lock when its holder dies, so a crash
    leaves no stale lock. LockingUnsupported where the filesystem has no flock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        except OSError as error:
            if error.errno in NO_LOCKING:
                raise LockingUnsupported(error.errno, f"{path.parent} does not support file locks "
                                         f"(flock: {error.strerror})") from None
            raise
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def probe_locking(folder: str | os.PathLike) -> None:
    """LockingUnsupported unless files in `folder` (an existing directory) can be flocked. Tries it
    on a temporary file, removed again."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".lhdbench-lock-probe-")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as error:
            if error.errno in NO_LOCKING:
                raise LockingUnsupported(error.errno, f"flock: {error.strerror}") from None
            raise
    finally:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
