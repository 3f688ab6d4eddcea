"""How much GPU memory a trial's training step takes, worked out on the CPU before any GPU run, so the
runner can pack several trials on one GPU from the start (runner/gpu_share.py).

The network is built on PyTorch's meta device (shapes, no data, no arithmetic) at the trial's real
shapes and run forward under a saved-tensors hook, which sees every tensor autograd keeps for the
backward pass. The step's peak is then

    parameters x 4 (weights, gradients, the momentum buffer, an optimizer temporary)
    + the saved activations (each storage counted once; the parameters themselves left out)
    + the input batch
    + 2 x the largest saved tensor (the gradient being formed while the one it came from is alive).

Activations are counted at fp32: under bf16 autocast a step saves less, so the figure bounds it from
above. An evaluation's network depends on the genotype its search finds, which the planner does not
know yet: the figure is the largest over a few fixed random architectures discretized under the
policy. A search's figure is its method's supernet, forward and backward on one batch of the method's
size (a first-order step does the architecture and the weight batch one after the other, so the peak
is one of them). benchmarks/gpu.sh checks the figures against the peaks measured on a GPU.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MEMORY_HEADROOM = 1.25  # what the runner adds: allocator fragmentation and each process's CUDA context
MEMORY_FILE = "memory.json"  # in the store: the figures of its kinds of trial
EVALUATION_ARCHS = 3  # fixed random architectures per policy whose largest figure is taken
GB = 1e9


@dataclass(frozen=True)
class StepMemory:
    parameter_bytes: int
    saved_bytes: int
    input_bytes: int
    largest_saved_bytes: int

    @property
    def peak_bytes(self) -> int:
        return (4 * self.parameter_bytes + self.saved_bytes + self.input_bytes
                + 2 * self.largest_saved_bytes)

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / GB


def step_memory(model, inputs) -> StepMemory:
    """The memory of one training step of `model` (built on the meta device) on `inputs` (meta
    tensors): forward, saved tensors recorded, loss summed, backward not run (it only frees)."""
    import torch

    parameters = {p.untyped_storage()._cdata for p in model.parameters()}
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage._cdata not in parameters:
            saved[storage._cdata] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(*inputs)
    del out
    input_bytes = sum(t.numel() * t.element_size() for t in inputs)
    return StepMemory(parameter_bytes, sum(saved.values()), input_bytes, max(saved.values(), default=0))


def _random_weights(seed: int):
    from .space import ArchWeights

    rng = np.random.default_rng(seed)
    return ArchWeights.from_logits(*(rng.normal(size=s) for s in ((20, 7), (20, 7), (2, 5), (2, 5))))


class Logits:
    """Calls a network and keeps what the loss reads (the logits and any auxiliary logits)."""

    def __init__(self, module) -> None:
        self.module = module

    def parameters(self):
        return self.module.parameters()

    def __call__(self, x):
        out = self.module(x)
        return out if not isinstance(out, tuple) else [o for o in out if o is not None]


@functools.lru_cache(maxsize=256)
def evaluation_gb(policy: str, dataset: str, batch_size: int, layers: int | None, init_channels: int | None,
                  auxiliary: bool, drop_path: bool) -> float:
    """Peak GB of an evaluation's training step under `policy` at the protocol's shapes."""
    import torch

    from .data import get_dataset
    from .evaluate import build_network
    from .protocol import EvalSettings
    from .space import discretize, get_policy

    spec, rule = get_dataset(dataset), get_policy(policy)
    settings = EvalSettings(batch_size=batch_size, layers=layers, init_channels=init_channels,
                            auxiliary_weight=0.4 if auxiliary else 0.0)
    peaks = []
    for seed in range(EVALUATION_ARCHS):
        genotype = discretize(_random_weights(seed), rule)
        with torch.device("meta"):
            model = build_network(genotype, rule, spec.num_classes, settings).train()
            model.drop_path_prob = 0.2 if drop_path else 0.0
            x = torch.empty(batch_size, 3, spec.image_size, spec.image_size)
        peaks.append(step_memory(Logits(model), (x,)).peak_gb)
    return max(peaks)


@functools.lru_cache(maxsize=256)
def search_gb(baseline: str, dataset: str, protocol_json: str) -> float:
    """Peak GB of a search step of `baseline` on `dataset` under a protocol (as JSON, to be cached)."""
    import json

    import torch

    from .data import get_dataset
    from .methods import get_method
    from .methods.settings import resolve_settings
    from .protocol import protocol_from_dict
    from .search import _MethodForward
    from .space import Supernet

    protocol = protocol_from_dict(json.loads(protocol_json))
    cls = get_method(baseline)
    settings, hparams = resolve_settings(cls, protocol)
    spec = get_dataset(dataset)
    method = cls(settings, hparams)
    with torch.device("meta"):
        x = torch.empty(settings.batch_size, 3, spec.image_size, spec.image_size)
        supernet = method.build_supernet(spec.num_classes).train()
        try:
            return step_memory(Logits(_MethodForward(method, supernet)), (x,)).peak_gb
        except Exception:  # noqa: BLE001 - a method that reads values on the host (GDAS samples there)
            # Its supernet's plain mixture: every op on every edge, so at least what a sampling step
            # keeps.
            plain = Supernet(spec.num_classes, settings.init_channels, settings.layers).train()
            return step_memory(Logits(plain), (x,)).peak_gb


def _key(trial, protocol) -> str | None:
    if trial.phase == "evaluate":
        e = protocol.evaluate
        return json.dumps(["evaluate", trial.policy, trial.dataset, e.batch_size, e.layers, e.init_channels,
                           e.auxiliary_weight > 0, e.drop_path])
    if trial.phase == "search":
        search = {k: protocol.to_dict()[k] for k in ("search", "methods")}
        return json.dumps(["search", trial.baseline, trial.dataset, search], sort_keys=True)
    return None


def plan_figures(plan, cache: str | os.PathLike | None = None, announce=None) -> dict[str, float | None]:
    """Peak GB of every trial of a plan (None where the model does not apply: a selection, a method
    that trains nothing). Figures are computed once per kind of trial and kept in `cache` (a JSON file,
    the store's memory.json), since sizing a full suite takes a minute or two of CPU."""
    path = Path(cache) if cache is not None else None
    known: dict[str, float | None] = {}
    if path is not None and path.is_file():
        try:
            known = {k: v for k, v in json.loads(path.read_text()).items()
                     if v is None or isinstance(v, (int, float))}
        except (OSError, ValueError, AttributeError):
            known = {}  # unreadable: recomputed, and rewritten below
    keys = {t.trial_id: _key(t, plan.protocol) for t in plan.trials}
    todo = {k: t for t in plan.trials if (k := keys[t.trial_id]) is not None and k not in known}
    if todo and announce is not None:
        announce(len(todo))
    for key, trial in todo.items():
        known[key] = trial_gb(trial, plan.protocol)
    if todo and path is not None:
        from .files import atomic_write_bytes

        atomic_write_bytes(path, (json.dumps(known, indent=1, sort_keys=True) + "\n").encode())
    return {trial_id: (known[key] if key is not None else None) for trial_id, key in keys.items()}


def trial_gb(trial, protocol) -> float | None:
    """Peak GB of a planned trial's step, or None where the model does not apply (a method that
    trains nothing)."""
    if trial.phase == "evaluate":
        e = protocol.evaluate
        return evaluation_gb(trial.policy, trial.dataset, e.batch_size, e.layers, e.init_channels,
                             e.auxiliary_weight > 0, e.drop_path)
    if trial.phase == "search":
        from .methods import get_method

        if not get_method(trial.baseline).trains:
            return None
        return search_gb(trial.baseline, trial.dataset, json.dumps(protocol.to_dict(), sort_keys=True))
    return None
