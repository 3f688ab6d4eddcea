"""One training step of an evaluation: forward, the loss with its auxiliary term, backward, gradient
clipping and the SGD step, either as plain PyTorch ops or replayed from a CUDA graph.

Why graphs: the step is host-bound. A base network's step launches about 2,500 small kernels, and on an
H100 the launches, not the arithmetic, set its time (docs/speed.md). A CUDA graph replays all of them
with one launch. What a graph needs, and this module provides with `graphs=True`:

* nothing in the step reads a value back to the host: the learning rate lives in a device tensor (the
  optimizer's, updated in place by the scheduler), gradient clipping is the foreach form (its clip
  factor stays on the device), the SGD step is the fused kernel (which takes a tensor learning rate),
  and the drop-path probability is the network's own device buffer;
* fixed addresses: the batch is copied into static input tensors, and the loss and logits are read
  from the graph's static outputs;
* one graph per batch shape and drop-path state: a last batch of another size and the epoch where drop
  path switches on get a graph of their own, captured once;
* the CUDA random generator is captured with the graph (PyTorch advances its offset on every replay),
  so drop path draws fresh masks each step.

`graphs=True` on a CPU runs the same ops eagerly, which is what the CPU tests compare with the plain
step. The graphed step is not bit-identical to the plain one: fused SGD and the tensor learning rate
round differently at float precision (the GPU test in benchmarks/gpu.sh bounds the difference).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

WARMUP_STEPS = 3  # eager steps on a side stream before a capture, as PyTorch's graph docs ask


def make_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float,
                   graphs: bool, device: torch.device) -> torch.optim.SGD:
    """The evaluation's SGD. For graphs: fused, with its learning rate in a device tensor."""
    if not graphs:
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.SGD(model.parameters(), lr=torch.tensor(lr, dtype=torch.float32, device=device),
                           momentum=momentum, weight_decay=weight_decay, fused=True)


def place_learning_rates(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """After loading a checkpoint: tensor learning rates back on the device, as fused SGD needs them."""
    for group in optimizer.param_groups:
        for key in ("lr", "initial_lr"):
            if isinstance(group.get(key), torch.Tensor):
                group[key] = group[key].to(device)


class TrainStep:
    """`step(x, y)` trains on one batch and returns (loss, logits) as device tensors; read them before
    the next step (with graphs they are the graph's static outputs, overwritten by every replay)."""

    def __init__(self, model: nn.Module, forward: Callable[[torch.Tensor], Any],
                 optimizer: torch.optim.Optimizer, auxiliary_weight: float, grad_clip: float,
                 autocast: Callable[[], Any], graphs: bool = False) -> None:
        self.model, self.forward, self.optimizer = model, forward, optimizer
        self.auxiliary_weight, self.grad_clip, self.autocast = auxiliary_weight, grad_clip, autocast
        self.graphs = graphs
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self._captured: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor,
                                          torch.Tensor]] = {}
        self._warm: dict[tuple, int] = {}

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast():
            logits, aux_logits = self.forward(x)
        loss = F.cross_entropy(logits.float(), y)
        if aux_logits is not None:
            loss = loss + self.auxiliary_weight * F.cross_entropy(aux_logits.float(), y)
        return loss, logits

    def _eager(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, logits = self._loss(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.parameters, self.grad_clip, foreach=self.graphs or None)
        self.optimizer.step()
        return loss.detach(), logits.detach()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not (self.graphs and x.is_cuda):
            return self._eager(x, y)
        key = (tuple(x.shape), x.dtype, bool(getattr(self.model, "_use_drop_path", False)))
        if key not in self._captured:
            # Warm up on a side stream (real steps: they train), then capture the next one.
            if self._warm.get(key, 0) < WARMUP_STEPS:
                self._warm[key] = self._warm.get(key, 0) + 1
                side = torch.cuda.Stream(device=x.device)
                side.wait_stream(torch.cuda.current_stream(x.device))
                with torch.cuda.stream(side):
                    out = self._eager(x, y)
                torch.cuda.current_stream(x.device).wait_stream(side)
                return out
            self._capture(key, x, y)
        graph, static_x, static_y, loss, logits = self._captured[key]
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        return loss, logits

    def _capture(self, key: tuple, x: torch.Tensor, y: torch.Tensor) -> None:
        """Capture one step for this key. The captured step trains on (x, y) only when replayed,
        which step() does right after."""
        if key[2]:  # drop path switched on: the graph without it is never replayed again
            for old in [k for k in self._captured if k[0] == key[0] and not k[2]]:
                del self._captured[old]
        static_x, static_y = x.clone(), y.clone()
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            loss, logits = self._loss(static_x, static_y)
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters, self.grad_clip, foreach=True)
            self.optimizer.step()
        self._captured[key] = (graph, static_x, static_y, loss.detach(), logits.detach())
