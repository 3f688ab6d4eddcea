"""A search method for the stop and Slurm tests: first-order DARTS whose epochs take a known time and
leave a trace of every epoch they run, so that a test can tell a resumed trial from one run twice.
Loaded as a single-file plugin (`--plugin` / $LHDBENCH_PLUGINS); never installed."""

from __future__ import annotations

import os
import signal
import time

import torch

from lhdbench.methods import SearchMethod, register


@register
class Slow(SearchMethod):
    name = "test-slow"
    description = ("first-order DARTS; every epoch also sleeps $LHDBENCH_TEST_EPOCH_SECONDS (default 0) "
                   "and appends 'seed epoch' to the file $LHDBENCH_TEST_EPOCH_LOG; at the end of epoch "
                   "$LHDBENCH_TEST_SIGNAL_EPOCH it sends SIGUSR1 to the process $LHDBENCH_TEST_SIGNAL_PID")

    def on_epoch_end(self, epoch: int):
        time.sleep(float(os.environ.get("LHDBENCH_TEST_EPOCH_SECONDS", "0")))
        log = os.environ.get("LHDBENCH_TEST_EPOCH_LOG")
        if log:
            # The loop seeds torch with the trial's seed before it resumes, so this names the trial.
            with open(log, "a") as handle:
                handle.write(f"{torch.initial_seed()} {epoch}\n")
        if os.environ.get("LHDBENCH_TEST_SIGNAL_EPOCH") == str(epoch):
            os.kill(int(os.environ["LHDBENCH_TEST_SIGNAL_PID"]), signal.SIGUSR1)
        return super().on_epoch_end(epoch)
