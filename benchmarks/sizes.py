"""The sizes the GPU benchmarks train at: the paper's evaluation network and batch, and a tiny one for
a rehearsal on the CPU (benchmarks/gpu.sh --rehearse). Free of torch, so a parent process that only
starts workers does not load it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Size:
    channels: int
    layers: int
    batch: int
    images: int  # in the synthetic stream
    warmup: int
    steps: int
    equality_steps: int


PAPER = Size(channels=36, layers=20, batch=64, images=10_000, warmup=10, steps=40, equality_steps=30)
REHEARSAL = Size(channels=8, layers=5, batch=8, images=64, warmup=2, steps=3, equality_steps=6)
