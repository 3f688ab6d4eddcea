"""The environment a result was produced in: device, library versions, host."""

from __future__ import annotations

import platform

import torch

from .record import Environment


def environment(device: torch.device) -> Environment:
    """Where a result came from: device, library versions, host."""
    from . import __version__

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine() or "cpu"
    return Environment(device=str(device), device_name=name, lhdbench=__version__, torch=torch.__version__,
                       cuda=torch.version.cuda, python=platform.python_version(), host=platform.node())
