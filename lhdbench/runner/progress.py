"""The run's progress line: done / running / failed / pending, the running trials and an ETA.

With Ray, a trial handed to Tune may wait for a free CPU or GPU before it starts; given `started`
(whether a trial's process holds its lock), the line counts those as queued, not running."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

from .dispatch import Dispatch

SHOWN_RUNNING = 3  # trials named on the line; the rest are counted


def label(trial_id: str) -> str:
    """A trial id without its hash: `search-darts-cifar10-s0`."""
    head, _, digest = trial_id.rpartition("-")
    return head if len(digest) == 16 and head else trial_id


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class ProgressLine:
    """The run's counts on stderr: rewritten in place on a terminal, one line per change otherwise."""

    def __init__(self, dispatch: Dispatch, stream: Any = None,
                 started: Callable[[str], bool] | None = None) -> None:
        self.dispatch, self.stream, self.has_started = dispatch, stream or sys.stderr, started
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last: Any = None

    def counts_line(self) -> str:
        d = self.dispatch
        finished = d.counts["done"] + d.counts["failed"]
        pending = d.to_run
        live = self.live()
        queued = len(d.running) - len(live)
        line = (f"done {d.counts['done'] + d.skipped}/{len(d.plan.trials)}"
                f" ({d.skipped} before this run) | running {len(live)}"
                + (f" (+{queued} queued)" if queued else "")
                + f" | failed {d.counts['failed']} | pending {pending}")
        elapsed = time.monotonic() - self.started
        if finished and (pending or d.running):
            eta = elapsed / finished * (pending + len(d.running))
            line += f" | ETA {duration(eta)}"
        line += f" | {duration(elapsed)} elapsed"
        if live:
            names = [label(t) for t in live[:SHOWN_RUNNING]]
            more = len(live) - len(names)
            line += f" | now: {', '.join(names)}" + (f" +{more}" if more else "")
        return line

    def live(self) -> list[str]:
        """The handed-out trials that have started (all of them without `started`)."""
        running = list(self.dispatch.running)
        if self.has_started is None:
            return running
        return [t for t in running if self.has_started(t)]

    def update(self, force: bool = False) -> None:
        line = self.counts_line()
        # In a log, a line when a trial starts or ends; on a terminal, also ETA refreshes.
        if self.tty:
            news = (line.split(" | ETA")[0].split(" | now:")[0], tuple(self.dispatch.running),
                    int(time.monotonic()))
        else:
            news = (line.split(" | ")[0], self.dispatch.counts["failed"], tuple(self.dispatch.running))
        if news == self.last and not (force and self.tty):
            return
        self.last = news
        if self.tty:  # a wrapped line could not be rewritten in place
            width = shutil.get_terminal_size().columns - 1
            line = line if len(line) <= width else line[:max(width - 3, 0)] + "..."
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
