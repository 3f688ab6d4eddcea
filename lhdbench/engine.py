"""What the search and evaluation loops share: device, determinism, speed switches, progress, errors."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .files import is_storage_failure, move_aside
from .protocol import SpeedSettings
from .record import InvalidRecord, TrialRecord, read_record, write_record

# A trial folder's own record (status, inputs, results), beside its checkpoint.
RECORD_FILE = "record.json"

# Called with every finished epoch's history entry (the runner reports it to Ray Tune's loggers).
EpochCallback = Callable[[dict[str, Any]], None]


class TrialFailed(RuntimeError):
    """A trial that cannot produce a valid result; the message is the one-line reason recorded."""


class TrialMismatch(ValueError):
    """A trial folder that holds another trial's record or checkpoint; nothing is written."""


def finished_record(record_path: Path, inputs: dict[str, Any]) -> TrialRecord | None:
    """The record of a trial that already finished successfully, else None. A folder that holds
    another trial's record is an error, never silently reused; a record file that does not validate is
    moved aside (the trial runs again)."""
    if not record_path.exists():
        return None
    try:
        record = read_record(record_path)
    except InvalidRecord as error:
        aside = move_aside(record_path)
        print(f"lhdbench: {error}; moved to {aside.name}, the trial runs again", file=sys.stderr)
        return None
    check_inputs(record.inputs, inputs, record_path)
    return record if record.status == "done" else None


def check_inputs(stored: dict[str, Any] | None, inputs: dict[str, Any], where: Path) -> None:
    """Refuse to reuse a record or checkpoint that another trial (other inputs) wrote."""
    if stored is None:
        return
    stored = json.loads(json.dumps(stored))
    wanted = json.loads(json.dumps(inputs))
    if stored != wanted:
        differing = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
        raise TrialMismatch(f"{where} belongs to another trial (differs in {', '.join(differing)}); "
                            "use another --out folder")


def run_recorded(record_path: Path, fields: dict[str, Any],
                 body: Callable[[], dict[str, Any]]) -> TrialRecord:
    """Run a trial body and write its record: done with the body's results, or failed with a one-line
    reason (then raise TrialFailed). An interrupt writes nothing, so the checkpoint resumes."""
    started = time.monotonic()
    try:
        summary = body()
    except TrialMismatch:
        raise  # the folder is another trial's: leave its files alone
    except Exception as error:
        if is_storage_failure(error):
            raise  # a full disk is not this trial's failure, and its record could not be written
        reason = one_line_reason(error)
        write_record(record_path, TrialRecord.failed(reason, **fields,
                                                     wall_time_s=time.monotonic() - started))
        raise TrialFailed(reason) from error
    record = TrialRecord.done(**fields, **summary)
    write_record(record_path, record)
    return record


def one_line_reason(error: BaseException) -> str:
    """What a failed trial's record says: a TrialFailed's own message, else the error's type and
    message; only the first line, so reasons fit in tables and status listings."""
    text = str(error) if isinstance(error, TrialFailed) else f"{type(error).__name__}: {error}"
    return (text.strip().splitlines() or [type(error).__name__])[0]


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The requested device, else the first visible GPU, else the CPU."""
    if device is not None:
        try:
            chosen = torch.device(device)
        except RuntimeError:
            raise ValueError(f"unknown device {device!r}; use e.g. cpu, cuda or cuda:0") from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but no CUDA GPU is visible")
        return chosen
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def configure(speed: SpeedSettings, device: torch.device, seed: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(speed.deterministic, warn_only=False)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not speed.deterministic
        torch.backends.cudnn.deterministic = speed.deterministic
        # TF32 matmuls on Ampere+ cost nothing in accuracy that the protocol can see.
        torch.backends.cuda.matmul.allow_tf32 = not speed.deterministic
        torch.backends.cudnn.allow_tf32 = not speed.deterministic


def autocast(speed: SpeedSettings, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts: bf16 on CUDA when the protocol asks for it, else a no-op."""
    if speed.precision == "bf16" and device.type == "cuda":
        # A captured graph must not reuse the cast weights of another step (PyTorch's graph docs).
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not speed.cuda_graphs)
    return contextlib.nullcontext


def prepare_model(model: nn.Module, speed: SpeedSettings, device: torch.device) -> nn.Module:
    model = model.to(device)
    if speed.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def maybe_compile(module: nn.Module, speed: SpeedSettings, static_graph: bool) -> Callable[..., Any]:
    """torch.compile only where the executed graph is the same every step."""
    if speed.compile and static_graph:
        return torch.compile(module)
    return module


def peak_memory_bytes(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


class Progress:
    """One line per epoch on a terminal, rewritten in place; silent otherwise."""

    def __init__(self, label: str, epochs: int, enabled: bool | None = None) -> None:
        self.label, self.epochs = label, epochs
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.start = time.monotonic()

    def steps(self, epoch: int, iterable: Iterator[Any], total: int) -> Iterator[Any]:
        for step, item in enumerate(iterable):
            if self.enabled and (step % 5 == 0 or step == total - 1):
                done = int(20 * (step + 1) / max(total, 1))
                sys.stderr.write(f"\r{self.label} epoch {epoch + 1}/{self.epochs} "
                                 f"[{'#' * done}{'.' * (20 - done)}] {step + 1}/{total}")
                sys.stderr.flush()
            yield item

    def epoch_done(self, epoch: int, summary: str) -> None:
        if self.enabled:
            elapsed = time.monotonic() - self.start
            sys.stderr.write(f"\r{self.label} epoch {epoch + 1}/{self.epochs} {summary} "
                             f"({elapsed:.0f}s)\033[K\n")
            sys.stderr.flush()
