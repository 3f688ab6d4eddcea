"""Training a discretized network from scratch, as the LHD code does (chaoji90/LHD
`eval/<dataset>/train.py`): one evaluation trial.

Records both the final-epoch test accuracy and the paper's metric, the best test accuracy over the
epochs after `best_after_epoch` (400 in the paper). The latter selects on the test set; it is kept
because the published numbers use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import engine
from .checkpoint import CHECKPOINT_NAME, Checkpointer, GlobalRng, LoopState
from .data import get_dataset
from .data.sources import load_images
from .data.stream import GpuBatchStream
from .engine import RECORD_FILE, EpochCallback
from .environment import code_version, environment
from .protocol import EvalSettings, Protocol
from .record import TrialRecord, check_seed, evaluation_inputs
from .space import ArchWeights, FinalNetwork, Genotype, Policy, count_parameters, discretize, network_shape
from .space.layout import auxiliary_head_fits
from .train_step import TrainStep, make_optimizer, place_learning_rates

# Upstream `eval/cifar100/train.py` and `eval/svhn/train.py` raise the drop-path target after every
# epoch whose training accuracy exceeds a threshold: (threshold %, increment) up to the paper's epoch
# 400, then after it.
ADAPTIVE_DROP_PATH = {
    "cifar100": ((75.0, 0.0005), (85.0, 0.0001)),
    "svhn": ((97.0, 0.0005), (99.0, 0.0001)),
}

# Learning-curve points: the test accuracy after these fractions of the schedule, so that one full run
# also shows how early its ranking settles (docs/report.md, "Learning-curve agreement"). They are not
# settings: not in the protocol, not in the trial identity, and the extra test passes train nothing
# differently (tests/test_learning_curve.py checks the final weights bitwise).
CURVE_FRACTIONS = (Fraction(1, 12), Fraction(1, 6), Fraction(1, 4), Fraction(1, 3), Fraction(1, 2))


def curve_epochs(epochs: int, fractions: tuple[Fraction, ...] | None = None) -> dict[str, int]:
    """{fraction as "1/12": 0-based epoch}: the point of fraction f is the test accuracy after the first
    ceil(f x epochs) epochs (at least one), so at least that fraction of the schedule has been trained
    (600 epochs: 1/12 -> after 50, epoch index 49). In a short schedule several fractions fall on one
    epoch (3 epochs: 1/12 to 1/3 all after the first); they share its one test pass and its value."""
    fractions = CURVE_FRACTIONS if fractions is None else fractions
    return {str(f): max(1, math.ceil(f * epochs)) - 1 for f in fractions}


def drop_path_target(genotype: Genotype, policy: Policy, dataset: str) -> float:
    """p_max = (normal-cell concat count) x the policy's base rate for the dataset: upstream scales by
    the normal cell's count only, for both cell types. Datasets outside the paper (the embedded digits
    set) take the CIFAR-10 rate."""
    rate = policy.drop_path.get(dataset, policy.drop_path.get("cifar10", 0.0))
    return len(genotype.normal.concat) * rate


def build_network(genotype: Genotype, policy: Policy, num_classes: int,
                  settings: EvalSettings) -> FinalNetwork:
    """The policy's network, unless the protocol overrides its size (the smoke preset does)."""
    if settings.layers is None and settings.init_channels is None:
        shape = network_shape(genotype, policy, num_classes)
        layers, channels = shape.layers, shape.channels
    else:
        layers = settings.layers or policy.layers
        channels = settings.init_channels or policy.init_channels
    return FinalNetwork(genotype, num_classes, channels, layers, auxiliary=settings.auxiliary_weight > 0)


@torch.no_grad()
def test_accuracy(model: nn.Module, stream: GpuBatchStream, autocast: Any) -> float:
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=next(model.parameters()).device)
    total = 0
    for x, y in stream.epoch():
        with autocast():
            logits, _ = model(x)
        correct += (logits.argmax(1) == y).sum()
        total += y.shape[0]
    return float(correct) / max(total, 1)


def run_evaluation(architecture: ArchWeights | Genotype, policy: Policy, dataset: str, seed: int,
                   protocol: Protocol, out_dir: str | Path, *, device: str | torch.device | None = None,
                   data_root: Any = None, progress: bool | None = None,
                   arch_file: str | None = None, on_epoch: EpochCallback | None = None) -> TrialRecord:
    """Run (or resume, or return the finished record of) one evaluation trial. `architecture` is
    searched weights, discretized under `policy`, or a genotype chosen already (by a perturbation
    selection); `arch_file` is where it came from, for the record."""
    out_dir = Path(out_dir)
    check_seed(seed)
    if isinstance(architecture, Genotype):
        genotype, metadata = architecture, {"selection": "perturbation"}
        digest = hashlib.sha256(architecture.to_json().encode()).hexdigest()
    else:
        genotype, metadata = None, dict(architecture.metadata)
        digest = hashlib.sha256(b"".join(m.tobytes() for m in architecture.matrices())).hexdigest()
    inputs = evaluation_inputs(digest, policy.name, dataset, seed, protocol.to_dict())
    done = engine.finished_record(out_dir / RECORD_FILE, inputs)
    if done is not None:
        return done
    spec = get_dataset(dataset)
    if protocol.evaluate.auxiliary_weight > 0 and not auxiliary_head_fits(spec.image_size):
        raise ValueError(f"protocol {protocol.name} trains an auxiliary head, which needs images of 32x32 or "
                         f"larger, and {dataset} is {spec.image_size}x{spec.image_size}; use a protocol "
                         "with evaluate.auxiliary_weight: 0 for it (the demo preset has none)")
    genotype = genotype or discretize(architecture, policy)
    device = engine.pick_device(device)
    fields = {"phase": "evaluate", "policy": policy.name, "dataset": dataset, "seed": seed,
              "protocol": protocol.to_dict(), "genotype": genotype.to_dict(), "arch_sha256": digest,
              "arch_metadata": metadata, "arch_file": arch_file, "environment": environment(device),
              "code": code_version()}
    return engine.run_recorded(out_dir / RECORD_FILE, fields, lambda: _train(
        genotype, policy, spec.name, seed, protocol, out_dir, device, data_root, progress, inputs,
        on_epoch))


def _train(genotype: Genotype, policy: Policy, dataset: str, seed: int, protocol: Protocol,
           out_dir: Path, device: torch.device, data_root: Any, progress: bool | None,
           inputs: dict[str, Any], on_epoch: EpochCallback | None = None) -> dict[str, Any]:
    settings, speed, spec = protocol.evaluate, protocol.speed, get_dataset(dataset)
    engine.configure(speed, device, seed)
    model = engine.prepare_model(build_network(genotype, policy, spec.num_classes, settings), speed, device)
    optimizer = make_optimizer(model, settings.lr, settings.momentum, settings.weight_decay,
                               speed.cuda_graphs, device)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.epochs,
                                                           eta_min=settings.lr_min)
    train_data = load_images(dataset, train=True, root=data_root).head(settings.max_train_images)
    test_data = load_images(dataset, train=False, root=data_root).head(settings.max_test_images)
    train_stream = GpuBatchStream(train_data, spec, settings.batch_size, device=device, augment=True,
                                  cutout=settings.cutout, seed=seed, channels_last=speed.channels_last)
    # Test images are never augmented: upstream `eval/cifar100/train.py` evaluates its test set with the
    # training augmentation (crop, flip, Cutout), a bug.
    test_stream = GpuBatchStream(test_data, spec, settings.batch_size, device=device, shuffle=False,
                                 channels_last=speed.channels_last)
    p_max = drop_path_target(genotype, policy, dataset) if settings.drop_path else 0.0
    loop = LoopState(values={"p_max": p_max})
    checkpointer = Checkpointer(out_dir / CHECKPOINT_NAME, inputs, {
        "model": model, "optimizer": optimizer, "scheduler": scheduler, "train_stream": train_stream,
        "rng": GlobalRng(), "loop": loop})
    checkpointer.resume(device)
    place_learning_rates(optimizer, device)
    history = loop.history
    curve = curve_epochs(settings.epochs)
    forward = engine.maybe_compile(model, speed, static_graph=True)
    autocast = engine.autocast(speed, device)
    train_step = TrainStep(model, forward, optimizer, settings.auxiliary_weight, settings.grad_clip,
                           autocast, graphs=speed.cuda_graphs)
    bar = engine.Progress(f"evaluate {policy.name}/{dataset}/seed{seed}", settings.epochs, progress)
    spent, began = loop.wall_time_s, time.monotonic()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for epoch in range(loop.next_epoch, settings.epochs):
        p_max = loop.values["p_max"]
        model.drop_path_prob = p_max * epoch / settings.epochs
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        count = 0
        steps = min(len(train_stream), settings.steps_per_epoch or len(train_stream))
        batches = zip(range(steps), train_stream.epoch(), strict=False)
        for _, (x, y) in bar.steps(epoch, batches, steps):
            loss, logits = train_step.step(x, y)
            loss_sum += loss * y.shape[0]
            correct += (logits.argmax(1) == y).sum()
            count += y.shape[0]
        scheduler.step()
        train_loss, train_acc = float(loss_sum) / count, float(correct) / count
        if not torch.isfinite(torch.tensor(train_loss)):
            raise engine.TrialFailed(f"training loss became non-finite in epoch {epoch}")
        entry: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                                 "drop_path_prob": model.drop_path_prob}
        if settings.adaptive_drop_path and dataset in ADAPTIVE_DROP_PATH:
            early, late = ADAPTIVE_DROP_PATH[dataset]
            threshold, increment = early if epoch <= settings.best_after_epoch else late
            if 100 * train_acc > threshold:
                p_max += increment
        if epoch > settings.best_after_epoch or epoch == settings.epochs - 1 or epoch in curve.values():
            # In eval mode and without gradients: BN statistics, the global RNG (drop path) and the
            # training stream's generator are untouched, so a test pass never changes training.
            entry["test_acc"] = test_accuracy(model, test_stream, autocast)
        history.append(entry)
        bar.epoch_done(epoch, f"loss {train_loss:.3f} train {train_acc:.3f}"
                       + (f" test {entry['test_acc']:.3f}" if "test_acc" in entry else ""))
        loop.epoch, loop.values["p_max"] = epoch, p_max
        loop.wall_time_s = spent + time.monotonic() - began
        checkpointer.save()
        if on_epoch is not None:
            on_epoch(entry)
    wall = spent + time.monotonic() - began
    after = [h for h in history if h["epoch"] > settings.best_after_epoch and "test_acc" in h]
    best = max(after, key=lambda h: h["test_acc"]) if after else None
    return {
        "final_test_acc": history[-1]["test_acc"],
        "best_test_acc": best["test_acc"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "best_after_epoch": settings.best_after_epoch,
        "params": count_parameters(model), "layers": model.layers, "init_channels": model.channels,
        "drop_path_max": loop.values["p_max"], "history": history, "curve": curve_points(history, curve),
        "wall_time_s": wall,
        "epochs": settings.epochs,
        "epochs_per_s": settings.epochs / wall if wall > 0 else None,
        "peak_gpu_memory_bytes": engine.peak_memory_bytes(device),
        "settings": {k: v for k, v in dataclasses.asdict(settings).items()},
    }


def curve_points(history: list[dict[str, Any]], curve: dict[str, int]) -> list[dict[str, Any]]:
    """The record's learning-curve points, in fraction order. A fraction whose epoch has no test
    accuracy in the history (a trial resumed from a checkpoint of an earlier lhdbench) is left out."""
    tested = {h["epoch"]: h["test_acc"] for h in history if "test_acc" in h}
    return [{"fraction": fraction, "epoch": epoch, "test_acc": tested[epoch]}
            for fraction, epoch in curve.items() if epoch in tested]
