"""DARTS- (Chu et al., ICLR 2021) as the LHD code runs it (chaoji90/LHD `search/DARTS-/`).

First-order DARTS (`darts.py`) on a supernet whose every edge carries an auxiliary skip added *unweighted*:
edge = sum_o w_o op_o(x) + beta_e aux(x), aux = Identity (stride 1) or a trainable
FactorizedReduce(C, C, affine=False) (stride 2, updated by the weight SGD with the other weights). A node
with n inputs so receives n skip terms, one per input (the gated earlier nodes included). beta_e decays
per epoch, linearly by default: beta_e = skip_beta (epochs - e) / epochs, 1.0 at epoch 0 down to 0.02
at epoch 49 of 50; the same beta serves the architecture and the weight forwards. The skip is always
on, as upstream (which parses `--auxiliary_skip` and ignores it). The exported weights
are the plain LHD transform of the alphas (the skip has no parameter in them).

Hyperparameters: `skip_beta` (1.0) and `decay` (`linear`; also `cosine` = base (1 + cos(pi e/epochs))/2,
`slow_cosine` and `none`, as upstream's DecayScheduler offers). Shared code: `_skip.py`.
"""

from lhdbench.methods import register

from ._skip import DecayingSkipMethod


@register
class DartsMinus(DecayingSkipMethod):
    name = "darts-minus"
    description = "first-order DARTS with an unweighted auxiliary skip on every edge, decayed 1 -> 0"
    paper = ("Chu, Wang, Zhang, Zhang, Wei, Yan. DARTS-: Robustly Stepping out of Performance Collapse "
             "Without Indicators. ICLR 2021")
    defaults = {"skip_beta": 1.0, "decay": "linear"}
    weighted_skip = False
