"""MiLeNAS, mixed-level search (He et al., CVPR 2020), as the LHD code runs it.

Upstream: chaoji90/LHD `search/MiLeNAS/train_search_milenas.py`.

The architecture gradient mixes both levels: grad_alpha L_val + lambda * grad_alpha L_train, both at
the weights as they are before this step's SGD update. The LHD code gets this by letting the train
loss's backward accumulate into the architecture gradients left by the validation backward, and
moving the Adam step after the weight step; lambda is therefore 1 there, as in the upstream MiLeNAS
script (`--lambda_train_regularizer 1`). `mixed_level_lambda` makes it a real coefficient.

MiLeNAS's own code orders the step differently: the Adam step comes first, and the weights then step
on a third forward of the train batch at the updated architecture. The LHD order (one train forward for
both gradients, SGD step, then Adam) is kept; docs/baselines.md lists the differences.
"""

from __future__ import annotations

import torch
from torch import nn

from lhdbench.methods import SearchContext, SearchMethod, batch_metrics, register


@register
class MiLeNAS(SearchMethod):
    name = "milenas"
    description = "mixed level: Adam on arch grad(val loss) + lambda * grad(train loss), SGD on weights"
    paper = ("He, Ye, Shen, Zhang. MiLeNAS: Efficient Neural Architecture Search via Mixed-Level "
             "Reformulation. CVPR 2020")
    defaults = {"mixed_level_lambda": 1.0}

    def step(self, ctx: SearchContext, train: tuple[torch.Tensor, torch.Tensor],
             arch: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        assert arch is not None and ctx.arch_optimizer is not None
        lam = float(self.hparams["mixed_level_lambda"])
        arch_params, weight_params = ctx.arch_params, ctx.weight_params
        # 1-2: the validation gradient of the architecture (the weights' part is never needed).
        ctx.arch_optimizer.zero_grad(set_to_none=True)
        val_loss = self.arch_loss(ctx, *arch)
        val_loss.backward(inputs=arch_params)
        val_grads = [p.grad for p in arch_params]
        # 3-4: the train loss into the weights and the architecture, at the same (pre-update) weights.
        for p in arch_params:
            p.grad = None
        ctx.weight_optimizer.zero_grad(set_to_none=True)
        loss, logits = ctx.loss(*train)
        loss.backward(inputs=weight_params + arch_params)
        with torch.no_grad():
            for p, g_val in zip(arch_params, val_grads, strict=True):
                g_train = p.grad if p.grad is not None else torch.zeros_like(p)
                if g_val is None:
                    g_val = torch.zeros_like(p)
                # lam * g is exactly g at lam = 1, so the default equals upstream's accumulation.
                p.grad = g_val + lam * g_train
        # 5: clip the weights only (the arch parameters are not in upstream's model.parameters()), SGD.
        nn.utils.clip_grad_norm_(weight_params, ctx.settings.grad_clip)
        ctx.weight_optimizer.step()
        # 6: Adam on the mixed architecture gradient.
        ctx.arch_optimizer.step()
        return batch_metrics(loss, logits, train[1])

