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
* one graph per batch layout and drop-path state: the epoch where drop path switches on captures
  again (and drops the graph without it). Batches of another size than the first one graphed (the
  short last batch of an epoch) run eagerly: a graph of their own would pin a second set of
  activations in a private memory pool, for one step per epoch;
* the CUDA random generator is captured with the graph (PyTorch advances its offset on every replay),
  so drop path draws fresh masks each step;
* one side stream per step for the eager warm-up, and the warm-up's cached blocks handed back to the
  driver after a capture (the graph keeps its own pool), so a graphed trial does not hold the step's
  activations twice.

`graphs=True` on a CPU runs the same ops eagerly, which is what the CPU tests compare with the plain
step. The graphed step is not bit-identical to the plain one: fused SGD and the tensor learning rate
round differently at float precision (the GPU test in benchmarks/gpu.sh bounds the difference). The
CUDA calls sit in `CudaCalls`, so the CPU tests can stand in for them and check the capture
bookkeeping (warm-up, capture, replay, which batches run eagerly) without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

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


class CudaCalls:
    """The CUDA calls of the graphed step. The CPU tests replace them with a stand-in that runs the
    captured step on replay (tests/test_train_step.py)."""

    def handles(self, x: torch.Tensor) -> bool:
        return x.is_cuda

    def new_stream(self, device: torch.device) -> Any:
        return torch.cuda.Stream(device=device)

    def current_stream(self, device: torch.device) -> Any:
        return torch.cuda.current_stream(device)

    def use_stream(self, stream: Any) -> Any:
        return torch.cuda.stream(stream)

    def capture(self, body: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> tuple[Any, tuple]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = body()
        return graph, outputs

    def release_cached(self) -> None:
        torch.cuda.empty_cache()


class GraphKey(NamedTuple):
    """What a captured step is specific to: the batch's layout and the network's mode."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]  # memory format (channels_last or not)
    dtype: torch.dtype
    training: bool
    drop_path: bool


class TrainStep:
    """`step(x, y)` trains on one batch and returns (loss, logits) as device tensors; read them before
    the next step (with graphs they are the graph's static outputs, overwritten by every replay)."""

    cuda: CudaCalls = CudaCalls()

    def __init__(self, model: nn.Module, forward: Callable[[torch.Tensor], Any],
                 optimizer: torch.optim.Optimizer, auxiliary_weight: float, grad_clip: float,
                 autocast: Callable[[], Any], graphs: bool = False) -> None:
        self.model, self.forward, self.optimizer = model, forward, optimizer
        self.auxiliary_weight, self.grad_clip, self.autocast = auxiliary_weight, grad_clip, autocast
        self.graphs = graphs
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self._captured: dict[GraphKey, tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor,
                                             torch.Tensor]] = {}
        self._warm: dict[GraphKey, int] = {}
        self._graph_batch: int | None = None  # the batch size that is graphed; others run eagerly
        self._side: Any = None  # the warm-up's side stream, one per step

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

    def key(self, x: torch.Tensor) -> GraphKey:
        return GraphKey(tuple(x.shape), tuple(x.stride()), x.dtype, self.model.training,
                        bool(getattr(self.model, "_use_drop_path", False)))

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not (self.graphs and self.cuda.handles(x)):
            return self._eager(x, y)
        if self._graph_batch is None:
            self._graph_batch = x.shape[0]
        if x.shape[0] != self._graph_batch:
            out = self._eager(x, y)
            self.optimizer.zero_grad(set_to_none=True)  # its gradients: the graph has its own
            return out
        key = self.key(x)
        if key not in self._captured:
            # Warm up on a side stream (real steps: they train), then capture the next one.
            if self._warm.get(key, 0) < WARMUP_STEPS:
                self._warm[key] = self._warm.get(key, 0) + 1
                if self._side is None:
                    self._side = self.cuda.new_stream(x.device)
                self._side.wait_stream(self.cuda.current_stream(x.device))
                with self.cuda.use_stream(self._side):
                    out = self._eager(x, y)
                self.cuda.current_stream(x.device).wait_stream(self._side)
                return out
            self._capture(key, x, y)
        graph, static_x, static_y, loss, logits = self._captured[key]
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        return loss, logits

    def _capture(self, key: GraphKey, x: torch.Tensor, y: torch.Tensor) -> None:
        """Capture one step for this key. The captured step trains on (x, y) only when replayed,
        which step() does right after."""
        if key.drop_path:  # drop path switched on: the graph without it is never replayed again
            for old in [k for k in self._captured if k._replace(drop_path=True) == key]:
                del self._captured[old]
        static_x, static_y = x.clone(), y.clone()

        def body() -> tuple[torch.Tensor, torch.Tensor]:
            # Nothing to free here on a GPU (done above); a stand-in that reruns the body on replay
            # needs it so that the gradients are written, not accumulated, as a replay writes them.
            self.optimizer.zero_grad(set_to_none=True)
            loss, logits = self._loss(static_x, static_y)
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters, self.grad_clip, foreach=True)
            self.optimizer.step()
            return loss.detach(), logits.detach()

        self.optimizer.zero_grad(set_to_none=True)  # the warm-up's gradients go before the capture
        graph, (loss, logits) = self.cuda.capture(body)
        self._captured[key] = (graph, static_x, static_y, loss, logits)
        # The warm-up's activations sit in the allocator's cache, unused from now on: hand them back.
        self.cuda.release_cached()
