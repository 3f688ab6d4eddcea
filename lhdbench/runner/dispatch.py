"""Which trials may start now: an evaluation waits for its search; the longest work goes first."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..plan import Plan, Trial
from ..record import TrialRecord
from ..store import Store
from .stop import StopRequest


@dataclass
class Dispatch:
    """The run's bookkeeping. A trial that fails for good fails every trial that needs it (a search's
    selections and evaluations, a selection's evaluations) with a reason that names it; they are run
    again when a rerun's dependency succeeds. Built from the store's valid records only, so a record
    file that does not validate never counts as done."""

    plan: Plan
    store: Store
    ready: deque[Trial] = field(default_factory=deque)
    waiting: dict[str, list[Trial]] = field(default_factory=dict)  # by the trial they wait for
    running: dict[str, Trial] = field(default_factory=dict)  # in the order they started
    counts: dict[str, int] = field(default_factory=lambda: {"done": 0, "failed": 0})
    skipped: int = 0  # done before this run
    stop: StopRequest | None = None  # once requested, nothing more is handed out
    stopped: int = 0  # trials that stopped at a checkpoint on the request, to resume in a later run

    def __post_init__(self) -> None:
        records = self.store.records()
        done = {tid for tid, r in records.items() if r.status == "done"}
        self.skipped = sum(t.trial_id in done for t in self.plan.trials)
        for trial in self.plan.trials:
            if trial.trial_id in done:
                continue
            if trial.depends_on is None or trial.depends_on in done:
                self.ready.append(trial)
            else:
                self.waiting.setdefault(trial.depends_on, []).append(trial)
        self.ready = deque(sorted(self.ready, key=lambda t: START_ORDER[t.phase]))

    @property
    def to_run(self) -> int:
        return len(self.ready) + sum(map(len, self.waiting.values()))

    @property
    def stopping(self) -> bool:
        return self.stop is not None and self.stop.requested

    def next_trial(self) -> Trial | None:
        if not self.ready or self.stopping:
            return None
        trial = self.ready.popleft()
        self.running[trial.trial_id] = trial
        return trial

    def exhausted(self) -> bool:
        return not self.ready and not self.running

    def set_back(self, trial: Trial) -> None:
        """A trial that stopped at a checkpoint on the stop request: pending again, not finished."""
        self.running.pop(trial.trial_id, None)
        self.ready.appendleft(trial)
        self.stopped += 1

    def finish(self, trial: Trial, record: TrialRecord) -> None:
        self.running.pop(trial.trial_id, None)
        unlocked = self.waiting.pop(trial.trial_id, [])
        if record.status == "done":
            self.counts["done"] += 1
            # Unlocked work goes to the front, the longest first (the same order as at the start).
            self.ready.extendleft(reversed(sorted(unlocked, key=lambda t: START_ORDER[t.phase])))
            return
        self.counts["failed"] += 1
        self._fail_dependants(trial, unlocked)

    def _fail_dependants(self, failed: Trial, dependants: list[Trial]) -> None:
        for trial in dependants:
            what = {"search": "search", "select": "selection"}.get(failed.phase, "dependency")
            self.store.write_record(TrialRecord.failed(
                f"not run: its {what} {failed.trial_id} failed", **trial.to_dict(),
                protocol=self.plan.protocol.to_dict(), attempts=self.store.attempts(trial.trial_id)))
            self.counts["failed"] += 1
            self._fail_dependants(trial, self.waiting.pop(trial.trial_id, []))


# The longest work first (evaluations train for far more epochs than searches run, selections tune for
# about half a search), which shortens the whole run; searches last among the ready ones, but a search
# that finishes puts what it unlocks at the front.
START_ORDER = {"evaluate": 0, "select": 1, "search": 2}
