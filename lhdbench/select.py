"""Architecture selection by perturbation (DARTS-PT: Wang et al., "Rethinking Architecture Selection in
Differentiable NAS", ICLR 2021; ruocwang/darts-pt `sota/cnn/projection.py`) on the finished supernet of
any search: one selection trial.

DARTS-PT decides an edge's op by masking each op in turn and keeping the one whose removal hurts the
supernet's accuracy most, fine-tuning the supernet between decisions. LHD has no edge distributions (a
node's (input, op) pairs share one softmax) and two output paths, so here, per cell type:

* node decisions (5, one node at a time in random order): mask each of the node's pairs (its weight set
  to 0, nothing renormalized, as DARTS-PT does) and keep the policy's number of pairs whose masking
  lowers the arch-half accuracy most. The kept pairs get weight 1, the others 0, from then on;
* a sum-path decision: mask each node's sum weight; keep as many nodes as the policy's rule keeps on
  the current weights (base: softmax > 0.2; 4out: 4), those whose masking hurts most. Kept weights 1;
* a concat-path decision: mask each node's slot in the concatenated output only (the gate also feeds
  later nodes, which the discretized cell does not gate); keep as many as the policy's rule keeps. From
  then on no node is gated, and the concat output holds the kept nodes only, as in the final network.

Each decision is made for the normal cell, then the reduce cell (which sees the normal decision). With
D = 7 decisions and `select.interval` = 5 tuning epochs between them there are 5 (D - 1) + 1 = 31 tuning
epochs; a decision falls at the start of epochs 0, 5, ..., 30. Tuning is first-order DARTS on the
projected weights: the architecture's own optimizer from the search (restored), and a new SGD for the
weights at a tenth of the search's learning rate, constant (DARTS-PT never steps its scheduler).
Accuracy is measured over the arch half with the training augmentation and batch statistics, as
DARTS-PT does; every mask of one decision sees the same batches (the same augmentation draws), so the
comparison is not blurred by augmentation noise. The result is a genotype per policy rule, pruned of
nodes that reach no output like any discretized genotype. A checkpoint follows every decision and every
tuning epoch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import engine
from .checkpoint import CHECKPOINT_NAME, Checkpointer, GlobalRng, LoopState, load_checkpoint
from .data import get_dataset
from .data.sources import load_images, search_split
from .data.stream import GpuBatchStream
from .engine import RECORD_FILE, EpochCallback
from .environment import code_version, environment
from .methods import SearchMethod, get_method, resolve_settings
from .protocol import Protocol
from .record import TrialRecord, selection_inputs
from .space import POLICIES, CellGenotype, Edge, Genotype, Policy, get_policy
from .space.discretize import live_edges
from .space.layout import NUM_NODES, NUM_OPS, node_rows
from .space.ops import PRIMITIVES
from .space.supernet import CellWeights, Supernet

GENOTYPE_FILE = "genotype.json"
CELLS = ("normal", "reduce")
DECISIONS = NUM_NODES + 2  # per cell type: every node, the sum path, the concat path


def selection_policy(policy: str | Policy) -> str:
    """The policy whose selection serves `policy`: the first policy with the same discretization rules
    (1m discretizes as base and only builds a bigger network, so it shares base's selection)."""
    policy = get_policy(policy) if isinstance(policy, str) else policy
    rule = (policy.node_inputs, policy.sum_rule, policy.concat_rule)
    return next(p.name for p in POLICIES.values() if (p.node_inputs, p.sum_rule, p.concat_rule) == rule)


def selection_identity(search_trial_id: str, policy: str, protocol: Protocol) -> dict[str, Any]:
    data = protocol.to_dict()
    return selection_inputs(search_trial_id, policy, data["select"], data["speed"])


def tuning_epochs(interval: int, decisions: int = DECISIONS) -> int:
    """DARTS-PT's count: a decision every `interval` epochs, one tuning epoch after the last."""
    return interval * (decisions - 1) + 1


@dataclass
class Projection:
    """The decisions so far, per cell type, and a log of every measurement behind them."""

    nodes: dict[str, dict[int, list[int]]] = field(default_factory=lambda: {c: {} for c in CELLS})
    sum: dict[str, list[int]] = field(default_factory=dict)
    concat: dict[str, list[int]] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)

    def decided(self) -> int:
        """Decisions made for both cell types."""
        return min(len(self.nodes[c]) + (c in self.sum) + (c in self.concat) for c in CELLS)

    def state_dict(self) -> dict[str, Any]:
        return {"nodes": {c: {str(n): kept for n, kept in v.items()} for c, v in self.nodes.items()},
                "sum": dict(self.sum), "concat": dict(self.concat), "log": list(self.log)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nodes = {c: {int(n): list(kept) for n, kept in v.items()} for c, v in state["nodes"].items()}
        self.sum, self.concat = dict(state["sum"]), dict(state["concat"])
        self.log = list(state["log"])

    def genotype(self) -> Genotype:
        cells = []
        for cell in CELLS:
            edges = [Edge(PRIMITIVES[pair % NUM_OPS], pair // NUM_OPS, node)
                     for node in range(NUM_NODES) for pair in sorted(self.nodes[cell][node])]
            outputs = set(self.sum[cell]) | set(self.concat[cell])
            cells.append(CellGenotype(tuple(live_edges(edges, outputs)), tuple(sorted(self.sum[cell])),
                                      tuple(sorted(self.concat[cell]))))
        return Genotype(normal=cells[0], reduce=cells[1])


@dataclass(frozen=True)
class Mask:
    """One perturbation: a pair of a node (row, op), a node's sum weight, or a node's concat slot."""

    cell: str
    kind: str  # "pair", "sum" or "concat"
    index: int  # flat (row * 7 + op) for a pair, the node for sum and concat


class ProjectedWeights:
    """The op weights the supernet runs with during selection: the search's exported transform of the
    current parameters, with every decision written over it and, while measuring, one mask."""

    def __init__(self, projection: Projection, temperature: float) -> None:
        self.projection, self.temperature = projection, temperature
        self.mask: Mask | None = None

    def __call__(self, net: Supernet, reduction: bool, temperature: float) -> CellWeights:
        cell = CELLS[int(reduction)]
        base = net.cell_weights(reduction, self.temperature)
        nodes, sum_row, gates = base.nodes, base.outputs[0], base.outputs[1]
        concat_mask = None
        fixed_nodes = self.projection.nodes[cell]
        if fixed_nodes:
            decided = torch.zeros_like(nodes, dtype=torch.bool)
            fixed = torch.zeros_like(nodes)
            for node, kept in fixed_nodes.items():
                decided[node_rows(node)] = True
                for pair in kept:
                    fixed.view(-1)[node_rows(node).start * NUM_OPS + pair] = 1.0
            nodes = torch.where(decided, fixed, nodes)
        if cell in self.projection.sum:
            sum_row = _indicator(self.projection.sum[cell], sum_row)
        if cell in self.projection.concat:
            gates = torch.ones_like(gates)
            concat_mask = _indicator(self.projection.concat[cell], gates)
        mask = self.mask
        if mask is not None and mask.cell == cell:
            if mask.kind == "pair":
                keep = torch.ones_like(nodes)
                keep.view(-1)[mask.index] = 0.0
                nodes = nodes * keep
            elif mask.kind == "sum":
                sum_row = sum_row * _indicator([j for j in range(NUM_NODES) if j != mask.index], sum_row)
            else:
                base_mask = concat_mask if concat_mask is not None else torch.ones_like(gates)
                concat_mask = base_mask * _indicator([j for j in range(NUM_NODES) if j != mask.index],
                                                     gates)
        return CellWeights(nodes, torch.stack([sum_row, gates]), concat_mask)


def _indicator(members: list[int], like: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(like)
    out[list(members)] = 1.0
    return out


def run_selection(search: TrialRecord, search_dir: str | Path, search_trial_id: str, policy: Policy,
                  protocol: Protocol, out_dir: str | Path, *, device: str | torch.device | None = None,
                  data_root: Any = None, on_epoch: EpochCallback | None = None) -> TrialRecord:
    """Run (or resume, or return the finished record of) the selection of one finished search (its
    record, folder and trial id) for one policy rule. Writes `genotype.json` and `record.json` into
    `out_dir`."""
    out_dir, search_dir = Path(out_dir), Path(search_dir)
    rule = selection_policy(policy)
    inputs = selection_identity(search_trial_id, rule, protocol)
    done = engine.finished_record(out_dir / RECORD_FILE, inputs)
    if done is not None:
        return done
    device = engine.pick_device(device)
    fields = {"phase": "select", "baseline": search.baseline, "dataset": search.dataset, "seed": search.seed,
              "policy": rule, "search_trial_id": search_trial_id, "protocol": protocol.to_dict(),
              "settings": protocol.to_dict()["select"], "hparams": search.hparams,
              "environment": environment(device),
              "code": code_version(get_method(search.baseline) if search.baseline else None)}
    return engine.run_recorded(out_dir / RECORD_FILE, fields, lambda: _select(
        search, search_dir, get_policy(rule), protocol, out_dir, device, data_root, inputs, on_epoch))


def _select(search: TrialRecord, search_dir: Path, policy: Policy, protocol: Protocol, out_dir: Path,
            device: torch.device, data_root: Any, inputs: dict[str, Any],
            on_epoch: EpochCallback | None = None) -> dict[str, Any]:
    select, speed = protocol.select, protocol.speed
    cls = get_method(search.baseline)
    settings, hparams = resolve_settings(cls, protocol)
    spec = get_dataset(search.dataset)
    engine.configure(speed, device, search.seed)
    method, supernet, arch_opt = _searched_supernet(cls, settings, hparams, spec.num_classes, search_dir,
                                                    speed, device)
    weight_opt = torch.optim.SGD(supernet.weight_parameters(),
                                 lr=settings.weight_lr * select.weight_lr_factor,
                                 momentum=settings.momentum, weight_decay=settings.weight_decay)
    train = load_images(search.dataset, train=True, root=data_root).head(settings.max_train_images)
    weight_half, arch_half = search_split(train, settings.train_portion)
    batch = min(settings.batch_size, len(weight_half), len(arch_half))
    common = {"spec": spec, "batch_size": batch, "device": device, "augment": True,
              "channels_last": speed.channels_last}
    # Seeds apart from the search's own streams (2 seed, 2 seed + 1).
    weight_stream = GpuBatchStream(weight_half, seed=2 * search.seed + 2, **common)
    arch_stream = GpuBatchStream(arch_half, seed=2 * search.seed + 3, **common)
    measured = arch_half.head(select.measure_images)
    projection = Projection()
    weights = ProjectedWeights(projection, method.export_temperature())
    loop = LoopState(values={"decided_epoch": -1, "measurements": 0})
    checkpointer = Checkpointer(out_dir / CHECKPOINT_NAME, inputs, {
        "supernet": supernet, "weight_optimizer": weight_opt, "arch_optimizer": arch_opt,
        "weight_stream": weight_stream, "arch_stream": arch_stream, "projection": projection,
        "rng": GlobalRng(), "loop": loop})
    checkpointer.resume(device)
    autocast = engine.autocast(speed, device)

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast():
            logits = supernet(x, weights_fn=weights)
        return F.cross_entropy(logits.float(), y), logits

    epochs = tuning_epochs(select.interval)
    arch_params, weight_params = supernet.arch_parameters(), supernet.weight_parameters()
    spent, began = loop.wall_time_s, time.monotonic()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for epoch in range(loop.next_epoch, epochs):
        if epoch % select.interval == 0 and loop.values["decided_epoch"] < epoch:
            for cell in CELLS:
                count = _decide(projection, cell, policy, weights, supernet, measured, spec, device, speed,
                                seed=search.seed * 1000 + epoch, epoch=epoch)
                loop.values["measurements"] += count
            loop.values["decided_epoch"] = epoch
            loop.wall_time_s = spent + time.monotonic() - began
            checkpointer.save()  # a decision can take hours at full scale: never make it twice
        supernet.train()
        loss_sum = correct = count = 0.0
        steps = min(len(weight_stream), select.steps_per_epoch or len(weight_stream))
        for _, (x, y) in zip(range(steps), weight_stream.epoch(), strict=False):
            arch_x, arch_y = arch_stream.next_batch()
            arch_opt.zero_grad(set_to_none=True)
            loss_of(arch_x, arch_y)[0].backward(inputs=arch_params)
            arch_opt.step()
            weight_opt.zero_grad(set_to_none=True)
            loss, logits = loss_of(x, y)
            loss.backward(inputs=weight_params)
            nn.utils.clip_grad_norm_(weight_params, settings.grad_clip)
            weight_opt.step()
            loss_sum += float(loss.detach()) * y.shape[0]
            correct += float((logits.argmax(1) == y).sum())
            count += y.shape[0]
        if not torch.isfinite(torch.tensor(loss_sum)):
            raise engine.TrialFailed(f"tuning loss became non-finite in epoch {epoch}")
        loop.history.append({"epoch": epoch, "train_loss": loss_sum / max(count, 1),
                             "train_acc": correct / max(count, 1), "decisions": projection.decided()})
        loop.epoch, loop.wall_time_s = epoch, spent + time.monotonic() - began
        checkpointer.save()
        if on_epoch is not None:
            on_epoch(loop.history[-1])
    genotype = projection.genotype()
    (out_dir / GENOTYPE_FILE).write_text(json.dumps(genotype.to_dict(), indent=2, sort_keys=True) + "\n")
    wall = spent + time.monotonic() - began
    return {"genotype": genotype.to_dict(), "arch_file": GENOTYPE_FILE, "history": loop.history,
            "decisions": projection.log, "measurements": loop.values["measurements"], "epochs": epochs,
            "wall_time_s": wall, "epochs_per_s": epochs / wall if wall > 0 else None,
            "peak_gpu_memory_bytes": engine.peak_memory_bytes(device)}


def _searched_supernet(cls: type[SearchMethod], settings: Any, hparams: dict[str, Any], num_classes: int,
                       search_dir: Path, speed: Any, device: torch.device):
    """The method, its supernet and its architecture optimizer as the search left them. A search that
    trains no epoch (random) has no checkpoint: its supernet is rebuilt from the same seed, which the
    caller has set, exactly as the search built it. A search that trains must have left its final
    checkpoint: selecting on a freshly built supernet would record an architecture of untrained
    weights as this search's (TrialFailed instead)."""
    method = cls(settings, hparams)
    supernet = engine.prepare_model(method.build_supernet(num_classes), speed, device)
    _, arch_opt = method.configure_optimizers(supernet)
    path = search_dir / CHECKPOINT_NAME
    state = load_checkpoint(path, device)
    if cls.trains:
        finished = state.get("loop", {}).get("epoch") if state is not None else None
        if state is None or finished != settings.epochs - 1:
            problem = ("is missing (a store copied without checkpoints?)" if state is None else
                       f"holds epoch {finished}, not the search's last ({settings.epochs - 1})")
            raise engine.TrialFailed(
                f"the search's checkpoint {path} {problem}: a perturbation selection needs the searched "
                "supernet; put the search's checkpoint.pt back, or move the search's record aside "
                "(records/<search id>.json) so that a rerun searches again")
    if state is not None:
        supernet.load_state_dict(state["supernet"])
        method.load_state_dict(state["method"])
        if arch_opt is not None and state.get("arch_optimizer") is not None:
            arch_opt.load_state_dict(state["arch_optimizer"])
    if arch_opt is None:  # single-level methods have none: DARTS-PT's own, Adam at the protocol's settings
        arch_opt = torch.optim.Adam(supernet.arch_parameters(), lr=settings.arch_lr,
                                    betas=tuple(settings.arch_betas), weight_decay=settings.arch_weight_decay)
    method.supernet = supernet
    return method, supernet, arch_opt


@torch.no_grad()
def accuracy(supernet: Supernet, weights: ProjectedWeights, data: Any, spec: Any, device: torch.device,
             speed: Any, seed: int) -> float:
    """Arch-half accuracy with the training augmentation and batch statistics (DARTS-PT's `infer` with
    `_eval=False`); the same `seed` gives every call the same batches."""
    stream = GpuBatchStream(data, spec, min(256, len(data)), device=device, augment=True, seed=seed,
                            shuffle=False, channels_last=speed.channels_last)
    supernet.train()
    correct = total = 0
    autocast = engine.autocast(speed, device)
    for x, y in stream.epoch():
        with autocast():
            correct += int((supernet(x, weights_fn=weights).argmax(1) == y).sum())
        total += y.shape[0]
    return correct / max(total, 1)


def _decide(projection: Projection, cell: str, policy: Policy, weights: ProjectedWeights, supernet: Supernet,
            data: Any, spec: Any, device: torch.device, speed: Any, *, seed: int, epoch: int) -> int:
    """The next decision for `cell`; returns how many accuracy measurements it took."""
    if len(projection.nodes[cell]) < NUM_NODES:
        undecided = [n for n in range(NUM_NODES) if n not in projection.nodes[cell]]
        node = undecided[int(torch.randint(len(undecided), ()))]  # torch's global RNG: checkpointed
        rows = node_rows(node)
        pairs = (rows.stop - rows.start) * NUM_OPS
        masks = [Mask(cell, "pair", rows.start * NUM_OPS + p) for p in range(pairs)]
        keep, kind = policy.node_inputs, "node"
    else:
        kind = "sum" if cell not in projection.sum else "concat"
        current = weights(supernet, cell == "reduce", 1.0).outputs[0 if kind == "sum" else 1].detach()
        rule = policy.sum_rule if kind == "sum" else policy.concat_rule
        keep = len(rule.select(current.float().cpu().numpy())) or 1
        masks = [Mask(cell, kind, j) for j in range(NUM_NODES)]
        node = None
    accuracies = []
    for mask in masks:
        weights.mask = mask
        try:
            accuracies.append(accuracy(supernet, weights, data, spec, device, speed, seed))
        finally:
            weights.mask = None
    # The candidates whose removal hurts most; a tie keeps the lower index (DARTS-PT's strict `<`).
    order = sorted(range(len(masks)), key=lambda i: (accuracies[i], i))
    chosen = sorted(masks[i].index for i in order[:keep])
    if kind == "node":
        start = node_rows(node).start * NUM_OPS
        projection.nodes[cell][node] = [flat - start for flat in chosen]
    elif kind == "sum":
        projection.sum[cell] = chosen
    else:
        projection.concat[cell] = chosen
    projection.log.append({"epoch": epoch, "cell": cell, "kind": kind, "node": node,
                           "kept": projection.nodes[cell][node] if kind == "node" else chosen,
                           "accuracies": [round(a, 6) for a in accuracies]})
    return len(masks)
