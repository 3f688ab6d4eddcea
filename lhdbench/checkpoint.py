"""Per-epoch checkpoints: one named set of stateful parts, saved and restored together.

A loop names its parts once (`{"model": model, "optimizer": optimizer, ...}`) and a `Checkpointer`
saves and restores exactly that set, so a part cannot be saved without being restored or the reverse
(the habit of PyTorch Lightning's and NASLib's trainers). Files are written atomically, so a crash
leaves the previous checkpoint intact; one that cannot be read anyway (a truncated copy, a file from an
older layout, a hostile pickle) is moved aside and the trial starts over instead of failing forever.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from .engine import TrialFailed, check_inputs
from .files import atomic_write_bytes, move_aside

CHECKPOINT_NAME = "checkpoint.pt"
INPUTS_KEY = "inputs"


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


class CheckpointUnreadable(ValueError):
    """A checkpoint file that exists but cannot be used; the message is one line."""


# Who hears that a trial resumed: the runner logs it in the store's events (runner/trial.py); without
# a listener (the single-trial commands) it is a line on stderr.
resume_listener: ContextVar[Callable[[Path, int], None] | None] = ContextVar("resume_listener",
                                                                             default=None)


def say_resumed(path: Path, epochs_done: int) -> None:
    """Tell whoever listens that the trial of checkpoint `path` resumed with `epochs_done` epochs done
    (it continues with epoch `epochs_done`, counted from 0)."""
    listener = resume_listener.get()
    if listener is not None:
        listener(path, epochs_done)
    else:
        print(f"lhdbench: resumed from {path} after {epochs_done} epoch(s); continuing with epoch "
              f"{epochs_done}", file=sys.stderr)


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
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # truncated zip, unpickling refused, I/O error: all mean "unusable"
        detail = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        raise CheckpointUnreadable(f"{path}: unreadable checkpoint ({detail})") from None
    if not isinstance(state, dict):
        raise CheckpointUnreadable(f"{path}: not a checkpoint (a {type(state).__name__})")
    return state


class GlobalRng:
    """torch's global generators (CPU and every CUDA device) as a stateful part: dropout, drop path
    and the methods' own draws all come from them."""

    def state_dict(self) -> dict[str, Any]:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        torch.set_rng_state(state["torch"].cpu())
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


@dataclass
class LoopState:
    """What a loop itself carries from epoch to epoch: the last finished epoch, the history, the
    wall time spent so far, and loop-specific values (the drop-path target of an evaluation)."""

    epoch: int = -1  # the last finished epoch; -1 before the first
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_time_s: float = 0.0
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def next_epoch(self) -> int:
        return self.epoch + 1

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "history": self.history, "wall_time_s": self.wall_time_s,
                "values": self.values}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        # The loop set its values before resuming; a checkpoint without one of them (written before
        # the loop had it) would fail later with a KeyError on every rerun, so it does not fit.
        missing = sorted(set(self.values) - set(state["values"]))
        if missing:
            raise KeyError(f"loop value {missing[0]!r} missing (written by an older lhdbench?)")
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        self.wall_time_s, self.values = float(state["wall_time_s"]), dict(state["values"])


class Checkpointer:
    """Saves and restores one trial's named parts (None for a part a run does not have, such as the
    architecture optimizer of a single-level method) at `path`, tagged with the trial's inputs."""

    def __init__(self, path: str | os.PathLike, inputs: Mapping[str, Any],
                 parts: Mapping[str, Stateful | None]) -> None:
        if INPUTS_KEY in parts:
            raise ValueError(f"{INPUTS_KEY!r} is reserved for the trial's inputs")
        self.path, self.inputs, self.parts = Path(path), dict(inputs), dict(parts)

    def save(self) -> None:
        state = {name: part.state_dict() if part is not None else None for name, part in self.parts.items()}
        save_checkpoint(self.path, {INPUTS_KEY: self.inputs, **state})

    def resume(self, device: torch.device) -> bool:
        """Restore every part from the checkpoint, if there is one; False when there is none.

        A checkpoint that cannot be read, does not hold exactly these parts, or holds them but does
        not fit them (a part lacks a key, as one written by an older lhdbench may) is moved aside with
        a line on stderr, every part is put back as it was before, and the trial starts over (False).
        A checkpoint of another trial raises TrialMismatch (`check_inputs`) and is left alone. A
        resumed trial says so (`say_resumed`)."""
        try:
            state = load_checkpoint(self.path, device)
            if state is None:
                return False
            check_inputs(state.get(INPUTS_KEY), self.inputs, self.path)
            problem = self._mismatch(state)
            if problem:
                raise CheckpointUnreadable(f"{self.path}: {problem}")
        except CheckpointUnreadable as error:
            self._set_aside(error)
            return False
        # A part can fail half-way through its load, after others were overwritten: keep what every
        # part was before, so that starting over starts from exactly what a fresh trial has.
        fresh = io.BytesIO()
        torch.save(self._states(), fresh)
        try:
            self._load(state)
        except Exception as error:  # noqa: BLE001 - whatever a part's load raises, it does not fit
            detail = " ".join(f"{type(error).__name__}: {error}".split())[:200]
            fresh.seek(0)
            try:
                self._load(torch.load(fresh, map_location=device, weights_only=True))
            except Exception:  # noqa: BLE001 - cannot happen for parts that save and load themselves
                aside = move_aside(self.path)
                raise TrialFailed(f"{self.path}: checkpoint does not fit the trial ({detail}); moved to "
                                  f"{aside.name}, a retry starts over") from None
            self._set_aside(CheckpointUnreadable(f"{self.path}: checkpoint does not fit the trial "
                                                 f"({detail})"))
            return False
        loop = next((p for p in self.parts.values() if isinstance(p, LoopState)), None)
        if loop is not None:
            say_resumed(self.path, loop.next_epoch)
        return True

    def _states(self) -> dict[str, Any]:
        return {name: part.state_dict() for name, part in self.parts.items() if part is not None}

    def _load(self, state: Mapping[str, Any]) -> None:
        for name, part in self.parts.items():
            if part is not None:
                part.load_state_dict(state[name])

    def _set_aside(self, error: Exception) -> None:
        aside = move_aside(self.path)
        print(f"lhdbench: {error}; moved to {aside.name}, the trial starts over", file=sys.stderr)

    def _mismatch(self, state: Mapping[str, Any]) -> str | None:
        names = set(state) - {INPUTS_KEY}
        if names != set(self.parts):
            return (f"holds parts {', '.join(sorted(names)) or 'none'}, expected "
                    f"{', '.join(sorted(self.parts))} (written by another lhdbench version?)")
        for name, part in self.parts.items():
            if (part is None) != (state[name] is None):
                return f"part {name} is {'unexpected' if part is None else 'missing'}"
        return None
