"""How much of a GPU each trial asks the Ray executor for: as many trials per GPU as fit in its memory.

Free of Ray, so shares can be planned and estimated before any cluster is joined.
"""

from __future__ import annotations

import math

from ..plan import Plan, Trial
from ..record import Resources
from .options import RunOptions

# Peak GPU memory per trial at the paper protocol, in GB, from benchmarks/results/ on an H100:
# a fused-cell DARTS search at batch 176 + 176 in bf16 (throughput-search-switches-h100.json) and the
# base network's training step at batch 64 in fp32 (throughput-h100.json). Methods not measured take
# a whole GPU until benchmarks/methods.py has been run for them (see docs/runner.md).
MEASURED_SEARCH_GB = {"darts": 8.3, "milenas": 8.3, "beta-darts": 8.3}
MEASURED_EVALUATION_GB = 3.3
MEMORY_HEADROOM = 1.25  # allocator fragmentation and the CUDA context of each process
MAX_TRIALS_PER_GPU = 4  # host-bound trials overlap well, but beyond a few they contend (unmeasured)


def gpu_fraction(trial: Trial, gpu_memory_gb: float) -> float:
    """The share of one GPU a trial asks for: as many trials per GPU as fit in its memory, at most
    MAX_TRIALS_PER_GPU, or the whole GPU when the method's peak memory is unknown."""
    peak = MEASURED_EVALUATION_GB if trial.phase == "evaluate" else MEASURED_SEARCH_GB.get(trial.baseline)
    if peak is None:
        return 1.0
    per_gpu = max(1, min(MAX_TRIALS_PER_GPU, math.floor(gpu_memory_gb / (peak * MEMORY_HEADROOM))))
    return 1.0 / per_gpu


def trial_resources(plan: Plan, options: RunOptions, cluster_gpus: float,
                    visible_gpu_memory_gb: float | None, local: bool) -> dict[str, Resources]:
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
    out = {}
    for trial in plan.trials:
        if not wants_gpu:
            gpus = 0.0
        elif options.gpus_per_trial is not None:
            gpus = options.gpus_per_trial
        elif memory is None:
            gpus = 1.0  # nobody knows the GPU's memory: a whole GPU is always safe
        else:
            gpus = gpu_fraction(trial, memory)
        out[trial.trial_id] = Resources(cpu=options.cpus_per_trial, gpu=gpus)
    return out


