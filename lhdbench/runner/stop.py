"""Stopping a run early and cleanly: SIGUSR1 (the warning a Slurm job asks for before its time limit)
or SIGTERM (a pre-emption, `kill`).

On the first of them the driver hands out no more trials, each running trial stops right after its next
epoch checkpoint (no record is written: it is not a failure), and the run ends with STOPPED_EXIT. The
stopped trials resume from that checkpoint in the next run, so nothing is computed twice. A second
signal stops at once, as Ctrl-C does (the epochs in flight are lost, nothing finished is).

Ray trials may run on other nodes, so the request reaches them as a file in the store, which every node
sees: a trial looks for it after each checkpoint, one stat per epoch.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
STOPPED_EXIT = 75  # EX_TEMPFAIL (sysexits.h): not finished, run again to go on
STOP_FOLDER = ".stop"  # in the store: one file per driver that was asked to stop


class StopRequested(BaseException):
    """Raised in a trial right after a checkpoint once its run was asked to stop. Not an Exception, so
    that nothing records it as the trial's failure (like KeyboardInterrupt)."""


class StopRequest:
    """One run's stop request: set by a signal in the driver, seen by its trials through `path`."""

    def __init__(self, store_root: str | os.PathLike) -> None:
        # Unique per driver, so that a stop of one driver never stops another's trials in the same store.
        name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.path = Path(store_root) / STOP_FOLDER / name
        self.signal_name: str | None = None
        self._note: Callable[[str], None] | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def request(self, signal_name: str) -> None:
        self.signal_name = signal_name
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(f"{signal_name} {time.time():.0f}\n")
        except OSError:
            pass  # a full disk: the trials then run to their end, and the driver still starts no more
        if self._note is not None:
            self._note(f"lhdbench: {signal_name}: starting no more trials; the running ones stop at their "
                       "next checkpoint (send it again to stop at once)")

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt  # the second signal: stop now, as Ctrl-C does
        self.request(signal.Signals(signum).name)

    def install(self) -> None:
        """Take SIGUSR1 and SIGTERM (again: Ray Tune sets its own SIGUSR1 handler when a run starts)."""
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers; such a run simply has no graceful stop
        for number in STOP_SIGNALS:
            if signal.getsignal(number) != self._handle:
                self._previous.setdefault(number, signal.getsignal(number))
                signal.signal(number, self._handle)

    @contextlib.contextmanager
    def on_signals(self, note: Callable[[str], None] | None = None) -> Iterator[StopRequest]:
        """Handle the stop signals for the block, then restore the handlers found before it and
        withdraw the request file."""
        self._note = note
        self.install()
        try:
            yield self
        finally:
            for number, handler in self._previous.items():
                signal.signal(number, handler)  # type: ignore[arg-type]
            self._previous.clear()
            self._note = None
            self.path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()  # only when no other driver's request is in it
