"""Random architecture weights: the no-search baseline (LHD code, chaoji90/LHD `search/Random/`).

The architecture parameters are drawn as 0.1 * N(0, 1) from torch's global RNG (seeded with the trial
seed by the loop) and exported with the plain LHD transform (joint node softmax, sum-path softmax,
concat sigmoid). Nothing is trained: `trains = False`, so the loop loads no data and runs no epoch.
Upstream still required CUDA and loaded (downloaded) the dataset (`train_search_rd.py`); here neither
is needed.

The module is not called `random` so that it cannot shadow the standard library module.
"""

from __future__ import annotations

import torch

from lhdbench.methods import SearchMethod, register
from lhdbench.rules import POSITIVE
from lhdbench.space import Supernet


@register
class RandomWeights(SearchMethod):
    name = "random"
    description = "no search: architecture parameters drawn as 0.1 * N(0, 1), exported with softmax/sigmoid"
    paper = ("the LHD random baseline: Zhang, Ding. Rethink DARTS Search Space and Renovate a New "
             "Benchmark. ICML 2023")
    defaults = {"init_std": 0.1}
    rules = {"init_std": POSITIVE}
    trains = False

    def build_supernet(self, num_classes: int) -> Supernet:
        supernet = super().build_supernet(num_classes)
        std = float(self.hparams["init_std"])
        with torch.no_grad():
            for p in supernet.arch_parameters():
                p.copy_(std * torch.randn(p.shape))
        return supernet
