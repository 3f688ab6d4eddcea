"""SurgeNAS (Luo et al., IEEE Trans. Computers 2023) as the LHD code runs it.

Upstream: chaoji90/LHD `search/SurgeNAS/`. Two changes from DARTS (`darts.py`):

* the auxiliary skip of DARTS- sits *inside* the op mixture, so it is scaled by the edge's weight mass:
  edge = sum_o w_o (op_o(x) + beta_e aux(x)) = sum_o w_o op_o(x) + beta_e (sum_o w_o) aux(x), with the
  same per-epoch beta decay as DARTS- (1.0 -> 0.02 over 50 epochs, linear) and the same aux modules;
* single level on the whole training set (`bilevel = False`: no weight/arch split, no arch batch).
  Per step: zero both gradients, one forward/backward of the training batch (weight and arch
  gradients from the same loss), clip the weight gradients, Adam step on the architecture, then SGD step
  on the weights.

Batch 160 (CIFAR 313 steps per epoch). Shared code: `_skip.py`.
"""

from typing import Any

import torch
from torch import nn

from lhdbench.methods import SearchContext, batch_metrics, register

from ._skip import DecayingSkipMethod


@register
class SurgeNas(DecayingSkipMethod):
    name = "surgenas"
    description = "single-level search on the whole training set with a weight-scaled decaying skip"
    paper = ("Luo, Liu, Kong, Huai, Chen, Liu. Surgenas: A Comprehensive Surgery on Hardware-Aware "
             "Differentiable Neural Architecture Search. IEEE Trans. Computers 72(4), 2023")
    defaults = {"batch_size": 160, "skip_beta": 1.0, "decay": "linear"}
    bilevel = False
    weighted_skip = True

    def step(self, ctx: SearchContext, train: tuple[torch.Tensor, torch.Tensor],
             arch: Any) -> dict[str, torch.Tensor]:
        if arch is not None:
            raise ValueError("surgenas is single-level: the loop must not pass an architecture batch")
        assert ctx.arch_optimizer is not None
        ctx.weight_optimizer.zero_grad(set_to_none=True)
        ctx.arch_optimizer.zero_grad(set_to_none=True)
        loss, logits = ctx.loss(*train)
        loss.backward(inputs=[*ctx.weight_params, *ctx.arch_params])
        nn.utils.clip_grad_norm_(ctx.weight_params, ctx.settings.grad_clip)
        # Upstream order (`search/SurgeNAS/`): the Adam step on the architecture, then the SGD step on
        # the weights; both use the gradient of the same loss at the same (pre-step) parameters.
        ctx.arch_optimizer.step()
        ctx.weight_optimizer.step()
        return batch_metrics(loss, logits, train[1])
