"""The environment a result was produced in: device, library versions, host."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch

from .record import CodeVersion, Environment


def environment(device: torch.device) -> Environment:
    """Where a result came from: device, library versions, host."""
    from . import __version__

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine() or "cpu"
    return Environment(device=str(device), device_name=name, lhdbench=__version__, torch=torch.__version__,
                       cuda=torch.version.cuda, python=platform.python_version(), host=platform.node())


@functools.cache
def lhdbench_commit() -> str | None:
    """The git commit of the lhdbench checkout this process runs from, with `+dirty` when its tracked
    files differ from it; None for an installed wheel or where git is missing."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()

        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "lhdbench", "baselines",
                    "conditions")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def code_version(method: type | None = None) -> CodeVersion:
    """The code a result comes from: the method's fingerprint and where it was defined (None for an
    evaluation of a file outside a store), lhdbench's version and commit."""
    from . import __version__

    fingerprint = source = None
    if method is not None:
        from .methods.fingerprint import method_code
        from .methods.registry import method_source

        fingerprint = method_code(method).fingerprint
        source = method_source(method.name)
    return CodeVersion(method=fingerprint, method_source=source, lhdbench=__version__,
                       commit=lhdbench_commit())
