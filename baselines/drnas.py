"""DrNAS (Chen et al., ICLR 2021) as the LHD code runs it (chaoji90/LHD `search/DrNAS/`).

Once per forward pass, the op weights are a reparameterized Dirichlet sample with concentration
ELU(alpha) + 1, shared by all cells of one type: one Dirichlet per edge row over its 7 ops (so a node's
weights sum to its number of inputs), one over the 5 nodes for the sum path, and one over the 5 nodes
for the concat gates too (replacing the sigmoid). The arch and weight steps draw independent samples.
Only the weights differ from DARTS, so DrNAS runs on the fused supernet.

Export: by default the plain joint softmax / softmax / sigmoid at T = 1 that upstream
`train_search_drnas.py` saves, although the search optimized Dirichlet samples. `export: dirichlet_mean`
writes the mean of the distributions the search sampled instead (see `dirichlet_mean_weights`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Dirichlet

from lhdbench.methods import SearchMethod, register
from lhdbench.rules import choice
from lhdbench.space import ArchWeights, CellWeights, Supernet
from lhdbench.space.layout import NUM_NODES, node_rows

EXPORTS = ("softmax", "dirichlet_mean")


def concentration(alphas: torch.Tensor) -> torch.Tensor:
    """DrNAS's concentration ELU(alpha) + 1 (> 0 for every alpha)."""
    return F.elu(alphas) + 1


def dirichlet_cell_weights(node_alphas: torch.Tensor, output_alphas: torch.Tensor) -> CellWeights:
    """One reparameterized (rsample) draw: each row of both matrices is a Dirichlet sample."""
    # validate_args=False: the concentration is positive by construction, and the check would sync.
    nodes = Dirichlet(concentration(node_alphas), validate_args=False).rsample()
    outputs = Dirichlet(concentration(output_alphas), validate_args=False).rsample()
    return CellWeights(nodes, outputs)


def dirichlet_mean_weights(node_alphas: torch.Tensor, output_alphas: torch.Tensor) -> CellWeights:
    """The mean of the search distribution, mapped into the ArchWeights contract.

    * Node rows: the mean of edge row j is beta_j / sum(beta_j), summing to 1 per edge, so to n_i per
      node. The file needs 1 per node, so each node block is divided by its n_i: a constant factor per
      node, so the ranking of all (input, op) pairs of a node, the only thing node selection reads, is
      the search's expected weight ranking.
    * Sum row: the Dirichlet mean over the 5 nodes, already a distribution.
    * Gate row: the Dirichlet mean too. It lies in (0, 1) as the contract needs and sums to 1 (the
      search's gates did as well). Every shipped concat rule (above the row's mean, top-k) is invariant
      to scaling the row, so they select exactly what they would from the expected search gates; only a
      custom absolute gate threshold (calibrated on sigmoids around 0.5) would read it differently.
    """
    beta = concentration(node_alphas)
    nodes = beta / beta.sum(-1, keepdim=True)
    nodes = torch.cat([nodes[node_rows(n)] / (node_rows(n).stop - node_rows(n).start)
                       for n in range(NUM_NODES)])
    beta_out = concentration(output_alphas)
    return CellWeights(nodes, beta_out / beta_out.sum(-1, keepdim=True))


@register
class DrNas(SearchMethod):
    name = "drnas"
    description = "Dirichlet(ELU(alpha)+1) op weights, one reparameterized sample per cell type and forward"
    paper = ("Chen, Wang, Cheng, Tang, Hsieh. DrNAS: Dirichlet Neural Architecture Search. ICLR 2021")
    defaults = {"export": "softmax"}
    rules = {"export": choice(*EXPORTS)}
    # Every step's graph has the same shapes; the random draw changes per step, so to be safe this
    # method is not compiled.
    static_graph = False

    def sample(self, supernet: Supernet) -> dict[bool, CellWeights]:
        """One draw per cell type, keyed by `reduction`."""
        return {False: dirichlet_cell_weights(supernet.alphas_normal, supernet.alphas_normal_output),
                True: dirichlet_cell_weights(supernet.alphas_reduce, supernet.alphas_reduce_output)}

    def forward(self, supernet: Supernet, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # sampling stays fp32
            samples = self.sample(supernet)
        return supernet(x, weights_fn=lambda net, reduction, temperature: samples[reduction])

    def export(self, supernet: Supernet) -> ArchWeights:
        if self.hparams["export"] == "softmax":
            weights = super().export(supernet)
            return ArchWeights(*weights.matrices(), metadata={**weights.metadata, "export": "softmax"})
        with torch.no_grad():
            normal = dirichlet_mean_weights(supernet.alphas_normal, supernet.alphas_normal_output)
            reduce = dirichlet_mean_weights(supernet.alphas_reduce, supernet.alphas_reduce_output)
        arrays = [t.detach().float().cpu().numpy()
                  for t in (normal.nodes, normal.outputs, reduce.nodes, reduce.outputs)]
        return ArchWeights(arrays[0], arrays[2], arrays[1], arrays[3],
                           metadata={"method": self.name, "export": "dirichlet_mean"})
