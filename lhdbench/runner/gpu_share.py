"""How much of a GPU each trial asks the Ray executor for: as many trials per GPU as fit in its memory.

Free of Ray, so shares can be planned and estimated before any cluster is joined.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..memory import MEMORY_HEADROOM, plan_figures
from ..plan import Plan
from ..record import Resources
from .options import RunOptions

# Each trial's peak GPU memory comes from lhdbench.memory, worked out on the CPU at the trial's real
# shapes before anything runs (an upper bound: fp32 activations), and benchmarks/gpu.sh checks it
# against the peaks measured on a GPU.
MAX_TRIALS_PER_GPU = 4  # host-bound trials overlap well, but beyond a few they contend (unmeasured)


def gpu_fraction(peak_gb: float | None, gpu_memory_gb: float) -> float:
    """The share of one GPU a trial asks for: as many trials per GPU as fit in its memory, at most
    MAX_TRIALS_PER_GPU, or the whole GPU when its peak memory is unknown."""
    if peak_gb is None:
        return 1.0
    per_gpu = max(1, min(MAX_TRIALS_PER_GPU, math.floor(gpu_memory_gb / (peak_gb * MEMORY_HEADROOM))))
    return 1.0 / per_gpu


def trial_resources(plan: Plan, options: RunOptions, cluster_gpus: float,
                    visible_gpu_memory_gb: float | None, local: bool,
                    peaks: Callable[[Plan], dict[str, float | None]] | None = None) -> dict[str, Resources]:
    """Each trial's request. Decided from what the user said, not from what an autoscaling cluster has
    at this moment: `--gpus-per-trial` is taken as given, `--gpu-memory` means GPU trials even while
    the cluster has no GPU node yet; otherwise GPU trials where the cluster has GPUs now."""
    if options.device == "cpu":
        wants_gpu = False
    elif options.gpus_per_trial is not None or options.gpu_memory_gb is not None:
        wants_gpu = True
        if local and cluster_gpus == 0:
            raise ValueError("--gpus-per-trial/--gpu-memory given, but this machine has no GPU "
                             "(a local Ray instance cannot gain one)")
    else:
        wants_gpu = cluster_gpus > 0
    memory = options.gpu_memory_gb or visible_gpu_memory_gb
    sized = wants_gpu and options.gpus_per_trial is None and memory is not None
    figures = (peaks or plan_figures)(plan) if sized else {}
    out = {}
    for trial in plan.trials:
        if not wants_gpu:
            gpus = 0.0
        elif options.gpus_per_trial is not None:
            gpus = options.gpus_per_trial
        elif memory is None:
            gpus = 1.0  # nobody knows the GPU's memory: a whole GPU is always safe
        else:
            gpus = gpu_fraction(figures.get(trial.trial_id), memory)
        out[trial.trial_id] = Resources(cpu=options.cpus_per_trial, gpu=gpus)
    return out


