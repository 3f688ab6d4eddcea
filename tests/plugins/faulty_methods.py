"""Search methods that misbehave on purpose, for the runner's fault tests. Loaded as a single-file
plugin (`--plugin` / $LHDBENCH_PLUGINS), so Ray workers register them too; never installed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from lhdbench.methods import SearchMethod, register


@register
class Raises(SearchMethod):
    name = "test-raises"
    description = "raises in its first step"

    def step(self, ctx, train_batch, arch_batch):
        raise RuntimeError("injected failure")


@register
class NanLoss(SearchMethod):
    name = "test-nan"
    description = "reports a NaN training loss"

    def step(self, ctx, train_batch, arch_batch):
        metrics = super().step(ctx, train_batch, arch_batch)
        return {**metrics, "loss_sum": torch.full_like(metrics["loss_sum"], float("nan"))}


@register
class Flaky(SearchMethod):
    name = "test-flaky"
    description = "fails on its first attempt (marker file in $LHDBENCH_TEST_FLAKY_DIR), then works"

    def step(self, ctx, train_batch, arch_batch):
        marker = Path(os.environ["LHDBENCH_TEST_FLAKY_DIR"]) / "failed-once"
        if not marker.exists():
            marker.touch()
            raise RuntimeError("injected failure on the first attempt")
        return super().step(ctx, train_batch, arch_batch)


@register
class Sleepy(SearchMethod):
    name = "test-sleepy"
    description = "no training; takes three seconds to export, so concurrent trials overlap visibly"
    trains = False

    def export(self, supernet):
        time.sleep(3.0)
        return super().export(supernet)
