"""GAEA (Li, Khodak, Balcan, Talwalkar, ICLR 2021) on DARTS, as the LHD code runs it
(chaoji90/LHD `search/GAEA/`): two variants sharing one update.

* Parameterization: every row of the four architecture matrices starts on the simplex (1/7 per
  op in the node matrices, 0.2 per node in the output matrices).
* Exponentiated-gradient (mirror-descent) update, no optimizer object, for each matrix:
  alpha <- alpha * exp(-eta * grad), clamp at 1e-5, renormalize each row (last dim) to sum 1,
  with eta = `arch_lr` = 0.1.
* The forward and the export are unchanged from DARTS: the joint node softmax, the sum-path softmax
  and the concat sigmoid are applied on top of the simplex values (upstream
  `concate_sum_five_gaea_sig.py`). GAEA's own code uses
  the simplex values directly as op weights; the LHD behaviour is kept here (docs/baselines.md).
  Within a node the softmax of simplex values differs by at most a factor e, and a gate lies in
  [0.5, 0.731].
* `gaea-erm` (single level, upstream folder `gaea_silevel`): the whole training set; one train-loss
  backward into weights and architecture, then the SGD step and the EG step on the same gradients.
* `gaea-bilevel`: the 50/50 split; an EG step on the arch-batch loss, then the DARTS weight step.

The architecture matrices are registered parameters of the supernet, so they checkpoint with it;
EG keeps no other state.
"""

from __future__ import annotations

import torch
from torch import nn

from lhdbench.methods import SearchContext, SearchMethod, batch_metrics, register
from lhdbench.space import Supernet

MIN_ALPHA = 1e-5  # upstream clamp before renormalizing (GAEA's `normalize(x, dim, min_v=1e-5)`)


def simplex_init_(supernet: Supernet) -> Supernet:
    """Set every row of the four architecture matrices to the uniform distribution over its entries."""
    with torch.no_grad():
        for p in supernet.arch_parameters():
            p.fill_(1.0 / p.shape[-1])
    return supernet


@torch.no_grad()
def exponentiated_gradient_(params: list[nn.Parameter], eta: float) -> None:
    """alpha <- alpha * exp(-eta * grad), clamp at MIN_ALPHA, renormalize each row; drops the grads.

    A matrix without a gradient (none of its entries reached the loss) is left as it is."""
    for p in params:
        if p.grad is None:
            continue
        p.mul_(torch.exp(-eta * p.grad))
        p.clamp_(min=MIN_ALPHA)
        p.div_(p.sum(dim=-1, keepdim=True))
        p.grad = None


class _Gaea(SearchMethod):
    defaults = {"arch_lr": 0.1}  # eta of the EG update (upstream `--arch_learning_rate 0.1`)

    def build_supernet(self, num_classes: int) -> Supernet:
        return simplex_init_(super().build_supernet(num_classes))

    def configure_optimizers(self, supernet: Supernet) -> tuple[torch.optim.Optimizer, None]:
        # No architecture optimizer: EG is applied by hand (upstream `--arch_weight_decay` is unused).
        weights, _ = super().configure_optimizers(supernet)
        return weights, None

    def eg_step(self, ctx: SearchContext) -> None:
        exponentiated_gradient_(ctx.arch_params, self.settings.arch_lr)


@register
class GaeaErm(_Gaea):
    name = "gaea-erm"
    description = "GAEA single level (ERM): one train-loss backward, SGD on weights and EG on the arch"
    paper = ("Li, Khodak, Balcan, Talwalkar. Geometry-Aware Gradient Algorithms for Neural Architecture "
             "Search. ICLR 2021")
    bilevel = False

    def step(self, ctx: SearchContext, train: tuple[torch.Tensor, torch.Tensor],
             arch: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        ctx.weight_optimizer.zero_grad(set_to_none=True)
        for p in ctx.arch_params:
            p.grad = None
        loss, logits = ctx.loss(*train)
        loss.backward(inputs=ctx.weight_params + ctx.arch_params)
        nn.utils.clip_grad_norm_(ctx.weight_params, ctx.settings.grad_clip)
        ctx.weight_optimizer.step()
        self.eg_step(ctx)
        return batch_metrics(loss, logits, train[1])


@register
class GaeaBilevel(_Gaea):
    name = "gaea-bilevel"
    description = "GAEA bilevel: EG step on the arch with an arch-half batch, then SGD on the weights"
    paper = GaeaErm.paper

    def step(self, ctx: SearchContext, train: tuple[torch.Tensor, torch.Tensor],
             arch: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        assert arch is not None
        for p in ctx.arch_params:
            p.grad = None
        self.arch_loss(ctx, *arch).backward(inputs=ctx.arch_params)
        self.eg_step(ctx)
        loss, logits = ctx.loss(*train)
        ctx.weight_update(loss)
        return batch_metrics(loss, logits, train[1])
