"""The generic search loop: one trial = one method on one dataset with one seed.

Writes `arch.npz` (ArchWeights) and `record.json` into the trial's folder, with a checkpoint after
every epoch so that a stopped trial resumes where it left off and ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import engine
from .checkpoint import CHECKPOINT_NAME, Checkpointer, GlobalRng, LoopState
from .data import get_dataset
from .data.sources import ImageSet, load_images, search_split
from .data.stream import GpuBatchStream
from .engine import RECORD_FILE, EpochCallback
from .environment import code_version, environment
from .methods import SearchContext, SearchMethod, get_method, resolve_settings
from .methods.fingerprint import method_code
from .protocol import Protocol
from .record import TrialRecord, check_seed, search_inputs
from .space import ArchWeights
from .space.arch_weights import MATRICES

ARCH_FILE = "arch.npz"
ARCH_HISTORY = "arch_history"  # the loop value holding every epoch's exported weights


def _search_data(method: SearchMethod, dataset: str, data_root: Any) -> tuple[ImageSet, ImageSet | None]:
    """(weight data, architecture data): the 50/50 split in dataset order for bilevel methods, the
    whole training set (and no architecture data) for single-level ones (as upstream
    `search/DARTS/train_search_darts.py` and the GAEA-ERM script of `search/GAEA/` do)."""
    settings = method.settings
    train = load_images(dataset, train=True, root=data_root).head(settings.max_train_images)
    if method.bilevel:
        return search_split(train, settings.train_portion)
    return train, None


@torch.no_grad()
def accuracy(forward: Any, stream: GpuBatchStream) -> float:
    correct = total = 0
    for x, y in stream.epoch():
        correct += (forward(x).argmax(1) == y).sum()
        total += y.shape[0]
    return float(correct) / max(total, 1)


def search_identity(baseline: str, dataset: str, seed: int, protocol: Protocol) -> dict[str, Any]:
    """Everything that determines a search's result, and nothing else: the method's resolved settings
    and hyperparameters, the speed switches and the fingerprint of the method's code, but not the
    evaluation section, so protocols that differ only in how architectures are trained (`paper`,
    `fast`) share their searches."""
    cls = get_method(baseline)
    get_dataset(dataset)
    settings, hparams = resolve_settings(cls, protocol)
    return search_inputs(baseline, dataset, seed, protocol.replace(search=settings).to_dict()["search"],
                         hparams, protocol.to_dict()["speed"], method_code(cls).fingerprint)


def run_search(baseline: str, dataset: str, seed: int, protocol: Protocol, out_dir: str | Path, *,
               device: str | torch.device | None = None, data_root: Any = None,
               progress: bool | None = None, on_epoch: EpochCallback | None = None) -> TrialRecord:
    """Run (or resume, or return the finished record of) one search trial. `on_epoch` gets every
    epoch's history entry once its checkpoint is written (the runner reports it to Ray Tune)."""
    out_dir = Path(out_dir)
    check_seed(seed)
    inputs = search_identity(baseline, dataset, seed, protocol)
    done = engine.finished_record(out_dir / RECORD_FILE, inputs)
    if done is not None:
        return done
    cls = get_method(baseline)
    settings, hparams = resolve_settings(cls, protocol)
    device = engine.pick_device(device)
    fields = {"phase": "search", "baseline": baseline, "dataset": dataset, "seed": seed,
              "protocol": protocol.to_dict(), "settings": inputs["settings"], "hparams": hparams,
              "environment": environment(device), "code": code_version(cls)}
    return engine.run_recorded(out_dir / RECORD_FILE, fields, lambda: _search(
        cls, settings, hparams, dataset, seed, protocol, out_dir, device, data_root, progress, inputs,
        on_epoch))


def _search(cls: type[SearchMethod], settings: Any, hparams: dict[str, Any], dataset: str, seed: int,
            protocol: Protocol, out_dir: Path, device: torch.device, data_root: Any,
            progress: bool | None, inputs: dict[str, Any],
            on_epoch: EpochCallback | None = None) -> dict[str, Any]:
    speed = protocol.speed
    engine.configure(speed, device, seed)
    method = cls(settings, hparams)
    supernet = engine.prepare_model(method.build_supernet(get_dataset(dataset).num_classes), speed, device)
    weight_opt, arch_opt = method.configure_optimizers(supernet)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(weight_opt, settings.epochs,
                                                           eta_min=settings.weight_lr_min)
    spec = get_dataset(dataset)
    weight_data, arch_data = _search_data(method, dataset, data_root) if cls.trains else (None, None)
    # A batch never exceeds its split: a method's paper batch (PC-DARTS 576) on a capped smoke split
    # would otherwise wrap the same few images many times per step.
    batch = min([settings.batch_size] + [len(d) for d in (weight_data, arch_data) if d is not None])
    common = {"spec": spec, "batch_size": batch, "device": device, "augment": True,
              "channels_last": speed.channels_last}
    # Separate seeds keep the two streams independent and each reproducible from the trial seed.
    streams = tuple(GpuBatchStream(data, seed=2 * seed + i, **common) if data is not None else None
                    for i, data in enumerate((weight_data, arch_data)))
    loop = LoopState(values={ARCH_HISTORY: []})
    weight_stream, arch_stream = streams
    checkpointer = Checkpointer(out_dir / CHECKPOINT_NAME, inputs, {
        "supernet": supernet, "weight_optimizer": weight_opt, "arch_optimizer": arch_opt,
        "scheduler": scheduler, "weight_stream": weight_stream, "arch_stream": arch_stream,
        "method": method, "rng": GlobalRng(), "loop": loop})
    checkpointer.resume(device)

    method.supernet = supernet
    forward_module = _MethodForward(method, supernet)
    forward = engine.maybe_compile(forward_module, speed, cls.static_graph)
    ctx = SearchContext(supernet, forward, weight_opt, arch_opt, settings, engine.autocast(speed, device))
    bar = engine.Progress(f"search {cls.name}/{dataset}/seed{seed}", settings.epochs, progress)
    spent, began = loop.wall_time_s, time.monotonic()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for epoch in range(loop.next_epoch, settings.epochs if cls.trains else 0):
        method.on_epoch_start(epoch)
        supernet.train()
        totals: dict[str, torch.Tensor] = {}
        steps = min(len(weight_stream), settings.steps_per_epoch or len(weight_stream))
        batches = zip(range(steps), weight_stream.epoch(), strict=False)
        for _, train_batch in bar.steps(epoch, batches, steps):
            arch_batch = arch_stream.next_batch() if arch_stream is not None else None
            for key, value in method.step(ctx, train_batch, arch_batch).items():
                totals[key] = totals.get(key, 0) + value
        scheduler.step()
        count = float(totals["count"])
        loss = float(totals["loss_sum"]) / count
        if not torch.isfinite(torch.tensor(loss)):
            raise engine.TrialFailed(f"training loss became non-finite in epoch {epoch}")
        entry = {"epoch": epoch, "train_loss": loss, "train_acc": float(totals["correct"]) / count,
                 "lr": scheduler.get_last_lr()[0]}
        extra = dict(method.on_epoch_end(epoch) or {})
        clash = sorted(set(extra) & set(entry))
        if clash:
            raise engine.TrialFailed(f"{cls.name}.on_epoch_end returned {clash[0]!r}, a key of the loop")
        loop.history.append({**entry, **{k: float(v) for k, v in extra.items()}})
        loop.values[ARCH_HISTORY].append(_snapshot(method.export(supernet)))
        bar.epoch_done(epoch, f"loss {loss:.3f} acc {loop.history[-1]['train_acc']:.3f}")
        loop.epoch, loop.wall_time_s = epoch, spent + time.monotonic() - began
        checkpointer.save()
        if on_epoch is not None:
            on_epoch(loop.history[-1])
    epochs = [_weights(snapshot) for snapshot in loop.values[ARCH_HISTORY]]
    weights = method.final_export(supernet, epochs)
    if not all(torch.isfinite(torch.from_numpy(m)).all() for m in weights.matrices()):
        raise engine.TrialFailed("exported architecture weights are not finite")
    weights = type(weights)(*weights.matrices(), metadata={
        **weights.metadata, "method": cls.name, "dataset": dataset, "seed": seed})
    weights.save(out_dir / ARCH_FILE)
    summary: dict[str, Any] = {"arch_file": ARCH_FILE, "history": loop.history,
                               "arch_history": [_rounded(e, snapshot)
                                                for e, snapshot in enumerate(loop.values[ARCH_HISTORY])]}
    if arch_stream is not None:
        supernet.eval()
        eval_stream = GpuBatchStream(arch_data, spec, settings.batch_size, device=device, shuffle=False,
                                     channels_last=speed.channels_last)
        with engine.autocast(speed, device)():
            summary["arch_half_acc"] = accuracy(forward, eval_stream)
    wall = spent + time.monotonic() - began
    trained_epochs = settings.epochs if cls.trains else 0
    summary.update(wall_time_s=wall, epochs=trained_epochs,
                   epochs_per_s=trained_epochs / wall if wall > 0 and trained_epochs else None,
                   peak_gpu_memory_bytes=engine.peak_memory_bytes(device))
    return summary


def _snapshot(weights: ArchWeights) -> dict[str, Any]:
    """An epoch's exported weights as plain lists (exact float32 values), for the checkpoint."""
    return {"matrices": [m.tolist() for m in weights.matrices()], "metadata": dict(weights.metadata)}


def _weights(snapshot: dict[str, Any]) -> ArchWeights:
    return ArchWeights(*snapshot["matrices"], metadata=snapshot["metadata"])


def _rounded(epoch: int, snapshot: dict[str, Any]) -> dict[str, Any]:
    """The record's copy: 5 significant digits are plenty to plot how the weights evolve."""
    def rounded(values: Any) -> Any:
        return [rounded(v) for v in values] if isinstance(values, list) else float(f"{values:.5g}")

    return {"epoch": epoch, **{name: rounded(matrix)
                               for name, matrix in zip(MATRICES, snapshot["matrices"], strict=True)}}


class _MethodForward(nn.Module):
    """Wraps `method.forward(supernet, x)` as a module so it can be compiled as one graph."""

    def __init__(self, method: SearchMethod, supernet: nn.Module) -> None:
        super().__init__()
        self.method, self.supernet = method, supernet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.forward(self.supernet, x)
