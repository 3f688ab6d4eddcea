"""The run's progress line: done / running / failed / pending, the running trials and an ETA."""

from __future__ import annotations

import sys
import time
from typing import Any

from .dispatch import Dispatch


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class ProgressLine:
    """The run's counts on stderr: rewritten in place on a terminal, one line per change otherwise."""

    def __init__(self, dispatch: Dispatch, stream: Any = None) -> None:
        self.dispatch, self.stream = dispatch, stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last: Any = None

    def counts_line(self) -> str:
        d = self.dispatch
        finished = d.counts["done"] + d.counts["failed"]
        pending = d.to_run
        line = (f"done {d.counts['done'] + d.skipped}/{len(d.plan.trials)}"
                f" ({d.skipped} before this run) | running {len(d.running)}"
                f" | failed {d.counts['failed']} | pending {pending}")
        elapsed = time.monotonic() - self.started
        if finished and (pending or d.running):
            eta = elapsed / finished * (pending + len(d.running))
            line += f" | ETA {duration(eta)}"
        return line + f" | {duration(elapsed)} elapsed"

    def update(self, force: bool = False) -> None:
        line = self.counts_line()
        # In a log, a line per finished trial; on a terminal, also trial starts and ETA refreshes.
        if self.tty:
            news = (line.rsplit(" | ", 2)[0], int(time.monotonic()))
        else:
            news = (line.split(" | ")[0], self.dispatch.counts["failed"])
        if news == self.last and not (force and self.tty):
            return
        self.last = news
        self.stream.write(f"\r{line}\033[K" if self.tty else f"{line}\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A line of its own (a trial's failure), above the progress line on a terminal."""
        self.stream.write(f"\r\033[K{text}\n" if self.tty else f"{text}\n")
        self.stream.flush()
        self.last = None

    def close(self) -> None:
        if self.tty and self.last:
            self.stream.write("\n")
            self.stream.flush()
