"""SS-DARTS (Zhang & Ding, CIKM 2021), mapped onto the LHD space.

Upstream: chaoji90/Selective-Stop, `SS-DARTS/train_search.py` (DARTS space: the learning rates and the
per-epoch operation magnitude) and `AutoDL-Projects_ss/exps/algos/DARTS-V1.py` (NAS-Bench-201: the
only place where the code picks a stop epoch).

What changes relative to first-order DARTS:

* learning rates: the weights' SGD keeps a constant 0.025 (lr_min = lr), the architecture's Adam gets
  lr 1e-3 and weight decay 1e-3;
* after every epoch, the operation magnitude of the normal cell: m_e[o] = sum over the 20 rows of the
  (20, 7) joint node-softmax matrix of column o (a 7-vector summing to 5, one unit per node; upstream
  sums the 14 per-edge softmaxes of the DARTS cell). The history gets m_e (`mag_<op>`) and the mass of
  the reference ops (`reference_mass`);
* selective stop, decided after the search from every epoch's exported weights (`final_export`): the
  stop epoch is the first epoch where the reference mass peaks, counting only gated-in epochs, and
  the architecture of that epoch is exported (all four matrices, as `export` gave them then).

Gate (the NB201 rule, generalized from one reference op to a set): an epoch counts when the op with
the largest magnitude is a reference op, and also while that has never happened yet (the bootstrap);
any other epoch counts as mass 0. The reference set is the four parametric ops by default
(`stop_reference: parametric`); a single op name, or `final_top_parametric` (the parametric op with the
largest magnitude after the last epoch), make it one op, as in NB201. `stop_gate: none` takes the plain
peak; `stop_cell: both` sums the magnitudes of both cell types; `selective_stop: false` exports the last
epoch, leaving the learning-rate rules as the only change.

The run itself is never stopped early (nor in the DARTS-space script; NB201's exit once every edge
argmaxes to skip is not reproduced), so the search always trains the protocol's epochs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lhdbench.methods import SearchMethod, register
from lhdbench.rules import boolean, choice
from lhdbench.space import PRIMITIVES, ArchWeights, Supernet

PARAMETRIC = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
REFERENCES = ("parametric", "final_top_parametric", *PRIMITIVES)


def op_magnitude(weights: ArchWeights, cell: str = "normal") -> np.ndarray:
    """m[o]: column sums of the (20, 7) node-weight matrix of `cell` (float64, sums to 5); `both` adds
    the two cell types (sums to 10)."""
    cells = ("normal", "reduce") if cell == "both" else (cell,)
    return sum(np.asarray(weights.cell(c)[0], dtype=np.float64).sum(axis=0) for c in cells)


def peak_epochs(magnitudes: Sequence[np.ndarray]) -> list[int]:
    """Per op, the first epoch at which its magnitude peaked: what the DARTS-space script logs as the
    'selective stop epoch' of every op (numpy argmax over epochs, first maximum wins)."""
    return [int(e) for e in np.stack(magnitudes).argmax(axis=0)]


def gated_peak(values: Sequence[float], gate_open: Sequence[bool]) -> int:
    """The NB201 selection: epoch e is recorded with its value when its gate is open, or while no gate
    has been open yet (bootstrap); after the first open gate, a closed epoch is recorded as 0. The stop
    epoch is the first maximum of the record."""
    record, bootstrap = [], True
    for value, is_open in zip(values, gate_open, strict=True):
        if is_open:
            bootstrap = False
            record.append(value)
        else:
            record.append(value if bootstrap else 0.0)
    return int(np.argmax(record))


def reference_columns(reference: str, magnitudes: Sequence[np.ndarray]) -> list[int]:
    """Column indices of the reference ops."""
    if reference == "parametric":
        return [PRIMITIVES.index(op) for op in PARAMETRIC]
    if reference == "final_top_parametric":
        columns = [PRIMITIVES.index(op) for op in PARAMETRIC]
        return [max(columns, key=lambda c: (magnitudes[-1][c], -c))]  # ties -> lower column
    return [PRIMITIVES.index(reference)]


def selective_stop_epoch(magnitudes: Sequence[np.ndarray], reference: str = "parametric",
                         gate: str = "top_op") -> int:
    """The stop epoch from the per-epoch magnitudes (a sequence of 7-vectors)."""
    columns = reference_columns(reference, magnitudes)
    values = [float(m[columns].sum()) for m in magnitudes]
    if gate == "none":
        return int(np.argmax(values))
    return gated_peak(values, [int(np.argmax(m)) in columns for m in magnitudes])


@register
class SsDarts(SearchMethod):
    name = "ss-darts"
    description = ("DARTS with constant weight lr, arch lr 1e-3, exporting the epoch where the normal "
                   "cell's parametric-op mass peaks")
    paper = ("Zhang, Ding. Delve into the Performance Degradation of Differentiable Architecture Search. "
             "CIKM 2021")
    defaults = {"weight_lr": 0.025, "weight_lr_min": 0.025, "arch_lr": 1e-3, "arch_weight_decay": 1e-3,
                "selective_stop": True, "stop_reference": "parametric", "stop_gate": "top_op",
                "stop_cell": "normal"}
    rules = {"selective_stop": boolean, "stop_reference": choice(*REFERENCES),
             "stop_gate": choice("top_op", "none"), "stop_cell": choice("normal", "both")}

    def magnitude(self, weights: ArchWeights) -> np.ndarray:
        return op_magnitude(weights, self.hparams["stop_cell"])

    def on_epoch_end(self, epoch: int) -> Mapping[str, float]:
        # The same float32 weights the loop exports next, so these equal what `final_export` sees.
        assert self.supernet is not None
        m = self.magnitude(self.export(self.supernet))
        out = {f"mag_{op}": float(v) for op, v in zip(PRIMITIVES, m, strict=True)}
        reference = self.hparams["stop_reference"]
        if reference != "final_top_parametric":  # that set is known only after the last epoch
            out["reference_mass"] = float(m[reference_columns(reference, [m])].sum())
        return out

    def stop_epoch(self, epochs: Sequence[ArchWeights]) -> int:
        return selective_stop_epoch([self.magnitude(w) for w in epochs], self.hparams["stop_reference"],
                                    self.hparams["stop_gate"])

    def final_export(self, supernet: Supernet, epochs: Sequence[ArchWeights]) -> ArchWeights:
        if not self.hparams["selective_stop"] or not epochs:
            return super().final_export(supernet, epochs)
        stop = self.stop_epoch(epochs)
        chosen = epochs[stop]
        magnitudes = [self.magnitude(w) for w in epochs]
        metadata: dict[str, Any] = {
            **chosen.metadata, "stop_epoch": stop, "stop_reference": self.hparams["stop_reference"],
            "stop_reference_ops": [PRIMITIVES[c] for c in
                                   reference_columns(self.hparams["stop_reference"], magnitudes)],
            "peak_epoch_per_op": dict(zip(PRIMITIVES, peak_epochs(magnitudes), strict=True))}
        return ArchWeights(*chosen.matrices(), metadata=metadata)
