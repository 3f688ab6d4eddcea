"""How much of a GPU each trial asks the Ray executor for: as many trials per GPU as fit in its memory.

Free of Ray, so shares can be planned and estimated before any cluster is joined.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..memory import plan_figures
from ..plan import Plan
from ..record import Resources
from .options import RunOptions

# Each trial's figure comes from lhdbench.memory, worked out on the CPU at the trial's real shapes
# before anything runs: the whole process at its peak (its fixed costs, data and step), so the figures
# of trials on one GPU add up. benchmarks/gpu.sh checks them against what a GPU's driver reports.
#
# How many trials on one GPU pay off is measured by benchmarks/packing.py (benchmarks/gpu.sh):
# benchmarks/measurements.py writes the count with the best aggregate throughput into
# conditions/measurements.yaml (`packing: trials_per_gpu`). Until a GPU run has measured it, the cap
# is DEFAULT_TRIALS_PER_GPU, a guess (host-bound steps should overlap well, a few at a time).
DEFAULT_TRIALS_PER_GPU = 4


def max_trials_per_gpu() -> tuple[int, str]:
    """(the cap on trials per GPU, where it comes from)."""
    from ..estimate import measurements

    packing = measurements().get("packing") or {}
    count = packing.get("trials_per_gpu")
    if isinstance(count, int) and not isinstance(count, bool) and count >= 1:
        return count, str(packing.get("source", "conditions/measurements.yaml"))
    return DEFAULT_TRIALS_PER_GPU, "default (unmeasured)"


def gpu_fraction(peak_gb: float | None, gpu_memory_gb: float, cap: int | None = None) -> float:
    """The share of one GPU a trial asks for: as many trials per GPU as their figures fit in its
    memory, at most `cap` (default: max_trials_per_gpu()), or the whole GPU when the figure is
    unknown (or not a positive number)."""
    if peak_gb is None or not peak_gb > 0 or math.isinf(peak_gb):
        return 1.0
    cap = cap if cap is not None else max_trials_per_gpu()[0]
    per_gpu = max(1, min(cap, math.floor(gpu_memory_gb / peak_gb)))
    return 1.0 / per_gpu


def trial_resources(plan: Plan, options: RunOptions, cluster_gpus: float,
                    visible_gpu_memory_gb: float | None, local: bool,
                    peaks: Callable[[Plan], dict[str, float | None]] | None = None) -> dict[str, Resources]:
    """Each trial's request. Decided from what the user said, not from what an autoscaling cluster has
    at this moment: `--gpus-per-trial` is taken as given, `--gpu-memory` means GPU trials even while
    the cluster has no GPU node yet; otherwise GPU trials where the cluster has GPUs now. The GPU
    memory is `--gpu-memory` where given (the cluster's GPUs, which may not be the driver's), else
    that of the GPU the driver sees."""
    if options.device == "cpu":
        wants_gpu = False
    elif options.gpus_per_trial is not None or options.gpu_memory_gb is not None:
        wants_gpu = True
        if local and cluster_gpus == 0:
            raise ValueError("--gpus-per-trial/--gpu-memory given, but this machine has no GPU "
                             "(a local Ray instance cannot gain one)")
    else:
        wants_gpu = cluster_gpus > 0
    memory = options.gpu_memory_gb if options.gpu_memory_gb is not None else visible_gpu_memory_gb
    sized = wants_gpu and options.gpus_per_trial is None and memory is not None
    figures = (peaks or plan_figures)(plan) if sized else {}
    cap = max_trials_per_gpu()[0] if sized else DEFAULT_TRIALS_PER_GPU
    out = {}
    for trial in plan.trials:
        if not wants_gpu:
            gpus = 0.0
        elif options.gpus_per_trial is not None:
            gpus = options.gpus_per_trial
        elif memory is None:
            gpus = 1.0  # nobody knows the GPU's memory: a whole GPU is always safe
        else:
            gpus = gpu_fraction(figures.get(trial.trial_id), memory, cap)
        out[trial.trial_id] = Resources(cpu=options.cpus_per_trial, gpu=gpus)
    return out


