"""Beta-DARTS (Ye et al., CVPR 2022), as the LHD code means it (chaoji90/LHD `search/Beta-DARTS/`),
with the regularizer made effective.

DARTS plus the Beta-Decay regularizer on the architecture loss: L_arch = CE_val + lambda_e * reg, with
lambda_e = beta_weight * epoch (upstream hard-codes 0.5 * epoch: 0 at epoch 0, 24.5 at epoch 49; the
unused `--beta_weight`, default 0.5, becomes the coefficient here, so the default is the same ramp).

reg is the LHD adaptation of the paper's mean logsumexp of the parameters: the mean of 12 terms,

* for each node i (n = i + 2 inputs) of both node matrices: log(2 / n) + logsumexp(block_i / T), the
  block flattened, as the joint node softmax sees it (T = 1);
* for the sum-path row of both output matrices: log(14 / 5) + logsumexp(output[0]).

The constant offsets are upstream's; they move the value, not the gradient. Two bugs of upstream
`concate_sum_five_sig_beta.py` are fixed: the terms were packed with `torch.tensor(list)`, which
detaches them, so the regularizer never reached the gradient; and the normal output row was used twice
and the reduce row never. Here the terms are stacked, so the regularizer has a graph. The upstream
model's normal/reduce naming swap (its `'normal'` weights come from `alphas_reduce` and vice versa,
consistently end to end) only mislabels tensors and is not reproduced.
"""

from __future__ import annotations

import math

import torch

from lhdbench.methods import SearchContext, SearchMethod, register
from lhdbench.space import Supernet
from lhdbench.space.layout import NUM_NODES, node_rows

TEMPERATURE = 1.0  # the regularizer's T; Beta-DARTS searches at T = 1 throughout


def beta_regularizer(supernet: Supernet, temperature: float = TEMPERATURE) -> torch.Tensor:
    """The mean of the 12 smooth-max terms above, differentiable in all four architecture matrices."""
    terms = []
    for alphas in (supernet.alphas_normal, supernet.alphas_reduce):
        for node in range(NUM_NODES):
            block = alphas[node_rows(node)].flatten()
            terms.append(math.log(2 / (node + 2)) + torch.logsumexp(block / temperature, dim=0))
    for outputs in (supernet.alphas_normal_output, supernet.alphas_reduce_output):
        terms.append(math.log(14 / NUM_NODES) + torch.logsumexp(outputs[0], dim=0))
    return torch.stack(terms).mean()


@register
class BetaDarts(SearchMethod):
    name = "beta-darts"
    description = "DARTS with the Beta-Decay regularizer (smooth-max of the arch params) on the arch loss"
    paper = ("Ye, Li, Li, Chen, Fan, Ouyang. beta-DARTS: Beta-Decay Regularization for Differentiable "
             "Architecture Search. CVPR 2022")
    defaults = {"batch_size": 128, "beta_weight": 0.5}

    def regularizer_weight(self) -> float:
        """lambda_e = beta_weight * epoch (a pure function of the epoch, so nothing extra to save)."""
        return float(self.hparams["beta_weight"]) * self.epoch

    def arch_loss(self, ctx: SearchContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """CE on the arch batch plus lambda_e * reg; the DARTS step of the base class minimizes it."""
        return super().arch_loss(ctx, x, y) + self.regularizer_weight() * beta_regularizer(ctx.supernet)
