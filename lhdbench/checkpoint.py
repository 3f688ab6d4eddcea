"""Per-epoch checkpoints written atomically, so a crash leaves the previous one intact."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from .files import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when there is none. Only tensors and plain containers are
    accepted (weights_only), so a checkpoint cannot run code."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location=device, weights_only=True)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
