"""Several final networks trained in one process: each has its own training step and batch stream,
and each step is launched on a CUDA stream of its own, so that the GPU can overlap the networks' steps
(with graphed steps, each a replay). This is the alternative to one process per trial that
benchmarks/packing.py (`--mode streams`) measures: the four policies' networks of one search in one
process against the same four in four processes.

On a CPU the steps run one after the other, eagerly, each exactly as it would alone
(tests/test_benchmark_variants.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lhdbench.data.stream import GpuBatchStream
from lhdbench.train_step import TrainStep


class Together:
    def __init__(self, steps: Sequence[TrainStep], data: Sequence[GpuBatchStream],
                 device: torch.device) -> None:
        if len(steps) != len(data):
            raise ValueError(f"{len(steps)} steps but {len(data)} batch streams")
        self.steps, self.data, self.device = list(steps), list(data), device
        self.streams = [torch.cuda.Stream(device=device) for _ in steps] if device.type == "cuda" else None

    def step(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One step of every network on its next batch: [(loss, logits)], read before the next call."""
        if self.streams is None:
            return [step.step(*data.next_batch()) for step, data in zip(self.steps, self.data, strict=True)]
        current = torch.cuda.current_stream(self.device)
        out = []
        for step, data, stream in zip(self.steps, self.data, self.streams, strict=True):
            stream.wait_stream(current)
            with torch.cuda.stream(stream):
                out.append(step.step(*data.next_batch()))
        for stream in self.streams:
            current.wait_stream(stream)
        return out
