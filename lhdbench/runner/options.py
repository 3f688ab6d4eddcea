"""How a plan is run: executor, retries, resources, where the cluster is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_RETRIES = 2
TRACKERS = ("tensorboard", "mlflow", "wandb")


@dataclass(frozen=True)
class RunOptions:
    executor: str = "ray"  # "ray" or "serial"
    retries: int = DEFAULT_RETRIES
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: from the trial's peak memory and the GPU's memory
    gpu_memory_gb: float | None = None  # the memory of one cluster GPU, where the driver sees none
    address: str | None = None  # a Ray cluster; None: $RAY_ADDRESS, else a local instance
    data_root: str | None = None
    device: str | None = None  # serial: the device; Ray: only "cpu" (trials then ask for no GPU)
    log_to: tuple[str, ...] = ()  # Ray Tune logger callbacks: tensorboard, mlflow, wandb
    # Keep stored results whose only difference from the planned trial is the method's code (runner/
    # stale.py), instead of running them again.
    adopt_old_code: bool = False
    ray_init: dict[str, Any] = field(default_factory=dict)  # extra ray.init arguments (tests)
