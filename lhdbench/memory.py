"""How much GPU memory a trial's process takes, worked out on the CPU before any GPU run, so the runner
can pack several trials on one GPU from the start (runner/gpu_share.py).

A trial's figure adds up what its process holds at its peak (`TrialMemory`):

    a fixed cost per process: the CUDA context with its cuBLAS and cuDNN handles (CONTEXT_GB) and,
        for a trial that trains, cuDNN's convolution workspaces (WORKSPACE_GB)
    + the GPU-resident data: every batch stream of the trial (lhdbench/data/stream.py), its uploaded
        uint8 images and labels, two prepared passes (a new one is made while the last is still
        referenced) and the temporaries of preparing one
    + the training step's peak (`StepMemory`, below), or the bare weights of a trial that trains nothing
    + with CUDA graphs (speed.cuda_graphs, evaluations only): the graph's private pool, which holds a
        second copy of the step's activations, its input and the gradients
        (lhdbench/train_step.py hands the eager warm-up's copy back to the driver after the capture;
        the pool stays).

The step's peak comes from the network built on PyTorch's meta device (shapes, no data, no arithmetic)
at the trial's real shapes and run forward under a saved-tensors hook, which sees every tensor
autograd keeps for the backward pass:

    parameters x 4 (weights, gradients, the momentum buffer, an optimizer temporary)
    + the saved activations (each storage counted once; the parameters themselves left out)
    + the input batch
    + 2 x the largest saved tensor (the gradient being formed while the one it came from is alive).

Activations are counted at fp32: under bf16 autocast a step saves less, so the figure bounds it from
above. An evaluation's network depends on the genotype its search finds, which the planner does not
know yet: the figure is the largest over a few fixed random architectures discretized under the
policy. A search's figure is its method's supernet, forward and backward on one batch of the method's
size (a first-order step does the architecture and the weight batch one after the other, so the peak
is one of them). A perturbation selection tunes the same supernet at the same batch (its accuracy
passes run without autograd, at batch 256, and keep far less) over the search's two halves plus a
measuring stream of the architecture half. A method that trains nothing loads no data and holds its
supernet's weights.

The fixed costs are allowances from what CUDA processes on H100-class GPUs are known to hold, not
measured here: benchmarks/gpu.sh records each process's driver figure beside the PyTorch peaks, and
tests/gpu/test_memory_cuda.py checks the figures against them. The figures of a store are kept in its
memory.json, keyed by MODEL_VERSION and everything a figure is computed from.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_VERSION = 2  # of the arithmetic below: figures of another version in memory.json are recomputed
MEMORY_FILE = "memory.json"  # in the store: the figures of its kinds of trial
EVALUATION_ARCHS = 3  # fixed random architectures per policy whose largest figure is taken
GB = 1e9
# Per process, allowances (unmeasured until benchmarks/gpu.sh has run on a GPU): the CUDA context and
# the cuBLAS/cuDNN handles take 0.5-0.8 GB on H100-class GPUs; cuDNN's workspaces under
# cudnn.benchmark are bounded by what its chosen algorithms ask for.
CONTEXT_GB = 0.8
WORKSPACE_GB = 0.5
MAX_FIGURE_GB = 4096.0  # above any GPU's memory: a larger figure in memory.json is not a figure


@dataclass(frozen=True)
class StepMemory:
    parameter_bytes: int
    saved_bytes: int
    input_bytes: int
    largest_saved_bytes: int

    @property
    def transient_bytes(self) -> int:
        """What the step allocates and frees again: activations, its input, the gradient being formed."""
        return self.saved_bytes + self.input_bytes + 2 * self.largest_saved_bytes

    @property
    def peak_bytes(self) -> int:
        return 4 * self.parameter_bytes + self.transient_bytes

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / GB


@dataclass(frozen=True)
class TrialMemory:
    """What one trial's process holds on its GPU at its peak (the module's docstring)."""

    step: StepMemory | None  # the training step; None for a trial that trains nothing
    weight_bytes: int  # the network's weights (part of `step` when it trains)
    data_bytes: int  # the GPU-resident batch streams
    graphs: bool  # evaluation steps replayed from CUDA graphs

    @property
    def fixed_bytes(self) -> int:
        return round((CONTEXT_GB + (WORKSPACE_GB if self.step is not None else 0.0)) * GB)

    @property
    def graph_pool_bytes(self) -> int:
        if not self.graphs or self.step is None:
            return 0
        return self.step.transient_bytes + self.step.parameter_bytes  # + the gradients

    @property
    def peak_bytes(self) -> int:
        held = self.step.peak_bytes if self.step is not None else self.weight_bytes
        return self.fixed_bytes + self.data_bytes + held + self.graph_pool_bytes

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / GB


def stream_bytes(images: int, size: int, *, augment: bool, cutout: bool, shuffle: bool) -> int:
    """Peak bytes of one GpuBatchStream (lhdbench/data/stream.py) over `images` images of size x size
    with the augmentation it applies (the stream's own `augment` and `cutout`, after the dataset's
    spec): the upload, two prepared passes, and the temporaries of preparing one in chunks."""
    from .data.stream import CHUNK, CROP_PADDING

    pixels = size * size
    upload = images * (3 * pixels + 8)  # uint8 images, int64 labels
    params = (3 if augment else 0) + (2 if cutout else 0)  # int64 choices per image
    one_pass = images * ((3 * pixels if augment or shuffle else 0) + 8 + 8 + 8 * params
                         + (pixels if cutout else 0))  # images, order, labels, choices, Cutout mask
    padded = (size + 2 * CROP_PADDING) ** 2
    # A chunk's gather: its images, padded, the per-pixel index (int64) and the cropped result.
    chunk = min(images, CHUNK) * (3 * pixels + 3 * padded + 8 * pixels + 3 * pixels) if augment else 0
    return upload + 2 * one_pass + chunk


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


def sizing_weights(seed: int):
    """One of the fixed random architectures that networks are sized by (here and in estimate.py)."""
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
def evaluation_step(policy: str, dataset: str, batch_size: int, layers: int | None,
                    init_channels: int | None, auxiliary: bool, drop_path: bool) -> tuple[StepMemory, ...]:
    """The training step of an evaluation under `policy` at the protocol's shapes, for each of the
    fixed random architectures."""
    import torch

    from .data import get_dataset
    from .evaluate import build_network
    from .protocol import EvalSettings
    from .space import discretize, get_policy

    spec, rule = get_dataset(dataset), get_policy(policy)
    settings = EvalSettings(batch_size=batch_size, layers=layers, init_channels=init_channels,
                            auxiliary_weight=0.4 if auxiliary else 0.0)
    steps = []
    for seed in range(EVALUATION_ARCHS):
        genotype = discretize(sizing_weights(seed), rule)
        with torch.device("meta"):
            model = build_network(genotype, rule, spec.num_classes, settings).train()
            model.drop_path_prob = 0.2 if drop_path else 0.0
            x = torch.empty(batch_size, 3, spec.image_size, spec.image_size)
        steps.append(step_memory(Logits(model), (x,)))
    return tuple(steps)


@functools.lru_cache(maxsize=256)
def supernet_step(baseline: str, dataset: str, protocol_json: str) -> StepMemory:
    """A search step of `baseline`'s supernet on `dataset` under a protocol (as JSON, to be cached).
    For a method that trains nothing: its supernet's weights only (no saved tensors, no input)."""
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
        if not cls.trains:
            return StepMemory(sum(p.numel() * p.element_size() for p in supernet.parameters()), 0, 0, 0)
        try:
            return step_memory(Logits(_MethodForward(method, supernet)), (x,))
        except Exception:  # noqa: BLE001 - a method that reads values on the host (GDAS samples there)
            # Its supernet's plain mixture: every op on every edge, so at least what a sampling step
            # keeps.
            plain = Supernet(spec.num_classes, settings.init_channels, settings.layers).train()
            return step_memory(Logits(plain), (x,))


def search_gb(baseline: str, dataset: str, protocol_json: str) -> float:
    """Peak GB of a search step of `baseline` (the step alone, without the per-process costs)."""
    return supernet_step(baseline, dataset, protocol_json).peak_gb


def _images(dataset: str, cap: int | None, test: bool = False) -> int:
    from .data.specs import test_images, train_images

    count = (test_images if test else train_images)(dataset)
    return min(count, cap) if cap is not None else count


def trial_memory(trial, protocol) -> TrialMemory | None:
    """What a planned trial's process holds at its peak (None for a phase the model does not know)."""
    from .data import get_dataset

    spec = get_dataset(trial.dataset)
    size = spec.image_size
    if trial.phase == "evaluate":
        e = protocol.evaluate
        train = _images(trial.dataset, e.max_train_images)
        test = _images(trial.dataset, e.max_test_images, test=True)
        data = (stream_bytes(train, size, augment=spec.augment, cutout=bool(e.cutout and spec.cutout),
                             shuffle=True)
                + stream_bytes(test, size, augment=False, cutout=False, shuffle=False))
        steps = evaluation_step(trial.policy, trial.dataset, e.batch_size, e.layers, e.init_channels,
                                e.auxiliary_weight > 0, e.drop_path)
        graphs = protocol.speed.cuda_graphs
        options = [TrialMemory(step, step.parameter_bytes, data, graphs) for step in steps]
        return max(options, key=lambda m: m.peak_bytes)
    if trial.phase not in ("search", "select"):
        return None
    from .methods import get_method

    cls = get_method(trial.baseline)
    step = supernet_step(trial.baseline, trial.dataset, json.dumps(protocol.to_dict(), sort_keys=True))
    if not cls.trains and trial.phase == "search":
        return TrialMemory(None, step.parameter_bytes, 0, False)
    s = protocol.search
    images = _images(trial.dataset, s.max_train_images)
    weight = math.floor(s.train_portion * images)
    if trial.phase == "select":  # the two halves, and a measuring stream of the architecture half
        measured = images - weight if protocol.select.measure_images is None else min(
            images - weight, protocol.select.measure_images)
        parts = [weight, images - weight, measured]
    else:
        parts = [weight, images - weight] if cls.bilevel else [images]
    data = sum(stream_bytes(n, size, augment=spec.augment, cutout=False, shuffle=True) for n in parts if n)
    return TrialMemory(step, step.parameter_bytes, data, False)


def trial_gb(trial, protocol) -> float | None:
    """Peak GB of a planned trial's process, or None where the model does not apply."""
    memory = trial_memory(trial, protocol)
    return memory.peak_gb if memory is not None else None


def figure_key(trial, protocol) -> str | None:
    """memory.json's key of a trial's figure: the model's version, the phase, the method (a search or
    selection) or policy (an evaluation: its genotype is not known yet, so every method shares it), the
    dataset, and a digest of the whole protocol (every setting a figure could be computed from)."""
    import hashlib

    if trial.phase == "evaluate":
        name = trial.policy
    elif trial.phase in ("search", "select"):
        name = trial.baseline
    else:
        return None
    digest = hashlib.sha256(json.dumps(protocol.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
    return f"v{MODEL_VERSION}/{trial.phase}/{name}/{trial.dataset}/{digest}"


def valid_figure(value) -> bool:
    """A figure memory.json may hold: a positive, finite number of GB no larger than any GPU."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 0 < value <= MAX_FIGURE_GB)


def _read_figures(path: Path) -> tuple[dict[str, float], list[str]]:
    """The figures of the current model version in a memory.json, and what was wrong with the rest of
    the current version's entries (or with the file)."""
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, []
    except (OSError, ValueError) as error:
        return {}, [f"unreadable ({type(error).__name__})"]
    if not isinstance(stored, dict):
        return {}, ["not a JSON object"]
    prefix = f"v{MODEL_VERSION}/"
    good = {k: float(v) for k, v in stored.items() if k.startswith(prefix) and valid_figure(v)}
    bad = [f"{k.split('/')[1]} {'/'.join(k.split('/')[2:4])}: {v!r}" for k, v in stored.items()
           if k.startswith(prefix) and not valid_figure(v)]
    return good, bad


def plan_figures(plan, cache: str | os.PathLike | None = None, announce=None,
                 warn=None) -> dict[str, float | None]:
    """Peak GB of every trial of a plan (None for a phase the model does not know). Figures are computed
    once per kind of trial and kept in `cache` (a JSON file, the store's memory.json), since sizing a
    full suite takes a minute or two of CPU. Figures there that are not figures (0, NaN, negative,
    infinite, boolean, absurd) are recomputed, with one line to `warn` (default: stderr) naming the
    file. The file is rewritten under a lock, merged with what is on disk then, so two drivers sizing
    into one memory.json keep each other's figures."""
    path = Path(cache) if cache is not None else None
    known, problems = _read_figures(path) if path is not None else ({}, [])
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        line = f"lhdbench: {path}: figures that are not figures, recomputed: {shown}"
        (warn or (lambda text: print(text, file=sys.stderr)))(line)
    keys = {t.trial_id: figure_key(t, plan.protocol) for t in plan.trials}
    todo = {k: t for t in plan.trials if (k := keys[t.trial_id]) is not None and k not in known}
    if todo and announce is not None:
        announce(len(todo))
    computed = {key: trial_gb(trial, plan.protocol) for key, trial in todo.items()}
    known.update({k: v for k, v in computed.items() if v is not None})
    if (todo or problems) and path is not None:
        _merge_into(path, {k: v for k, v in known.items() if valid_figure(v)})
    return {trial_id: known.get(key) if key is not None else None for trial_id, key in keys.items()}


def _merge_into(path: Path, figures: dict[str, float]) -> None:
    """Write `figures` into memory.json together with the valid figures another driver has put there
    since it was read, under an exclusive lock beside it."""
    from .files import LockingUnsupported, atomic_write_bytes, file_lock

    def merge() -> None:
        on_disk, _ = _read_figures(path)
        merged = {**on_disk, **figures}
        atomic_write_bytes(path, (json.dumps(merged, indent=1, sort_keys=True) + "\n").encode())

    try:
        with file_lock(path.with_name(path.name + ".lock")):
            merge()
    except LockingUnsupported:
        merge()  # a filesystem without flock (the store refuses those; a cache elsewhere may not)
