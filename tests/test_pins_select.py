"""The perturbation selection's wiring to its search, pinned: it measures and tunes the supernet the
search left (weights, architecture and the architecture optimizer's state), not a fresh one; it tunes
the weights with SGD at a tenth of the search's own weight learning rate, constant; and masking a
node's sum weight removes that node from the sum path only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lhdbench.select as select
from lhdbench.methods import get_method, resolve_settings
from lhdbench.protocol import load_protocol
from lhdbench.search import ARCH_FILE, run_search
from lhdbench.select import Mask, ProjectedWeights, Projection
from lhdbench.space import get_policy, load_arch_weights
from lhdbench.space.layout import NUM_NODES
from lhdbench.space.supernet import Supernet

# DARTS-PT tunes with SGD at the search's learning rate / 10 (ruocwang/darts-pt `sota/cnn/projection.py`
# and lhdbench/select.py's docstring). A weight_lr of darts's own that differs from the protocol's, and a
# weight_lr_min that differs from both, tell apart every rate the selection could wrongly pick up.
WEIGHT_LR, WEIGHT_LR_MIN = 0.07, 0.003
PROTOCOL = load_protocol("smoke").replace(
    methods={"darts": {"weight_lr": WEIGHT_LR, "weight_lr_min": WEIGHT_LR_MIN}},
    search={"epochs": 1, "steps_per_epoch": 2}, select={"steps_per_epoch": 1})
SEED = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One smoke darts search, then its base selection with the accuracy measurement replaced by a
    cheap stand-in that records what the selection measures, and with every optimizer step recorded."""
    root = tmp_path_factory.mktemp("pins-select")
    search = run_search("darts", "digits", SEED, PROTOCOL, root / "search", progress=False)
    assert search.status == "done"
    # Read the search's checkpoint as plain tensors, before the selection runs.
    searched = torch.load(root / "search" / "checkpoint.pt", map_location="cpu", weights_only=True)
    seen: dict = {"measured": [], "sgd": [], "adam": []}

    def measure(supernet, weights, data, spec, device, speed, seed):
        if not seen["measured"]:  # the first measurement of the first decision: nothing tuned yet
            seen["state"] = {k: v.detach().clone() for k, v in supernet.state_dict().items()}
            seen["normal"] = supernet.cell_weights(False, weights.temperature)
        seen["measured"].append(weights.mask)
        return 0.5

    sgd_step, adam_step = torch.optim.SGD.step, torch.optim.Adam.step

    def recording_sgd(self, *args, **kwargs):
        seen["sgd"].append([(g["lr"], g["momentum"], g["weight_decay"]) for g in self.param_groups])
        return sgd_step(self, *args, **kwargs)

    def recording_adam(self, *args, **kwargs):
        first = self.param_groups[0]["params"][0]
        state = self.state.get(first, {})
        seen["adam"].append({"step": float(state["step"]) if "step" in state else 0.0,
                             "exp_avg": state["exp_avg"].clone() if "exp_avg" in state else None,
                             "lr": self.param_groups[0]["lr"]})
        return adam_step(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(select, "accuracy", measure)
        patch.setattr(torch.optim.SGD, "step", recording_sgd)
        patch.setattr(torch.optim.Adam, "step", recording_adam)
        record = select.run_selection(search, root / "search", "search-id", get_policy("base"), PROTOCOL,
                                      root / "select", device="cpu")
    assert record.status == "done", record
    return {"root": root, "searched": searched, "seen": seen, "record": record}


def test_the_selection_measures_the_searched_supernet_not_a_fresh_one(run):
    searched, state = run["searched"]["supernet"], run["seen"]["state"]
    assert set(state) == set(searched)
    for name, value in searched.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0, msg=name)
    # The test can tell: the search moved the supernet away from what its seed builds.
    cls = get_method("darts")
    torch.manual_seed(SEED)
    fresh = cls(*resolve_settings(cls, PROTOCOL)).build_supernet(10).state_dict()
    moved = [n for n, v in searched.items() if v.is_floating_point() and not torch.equal(v, fresh[n])]
    assert "alphas_normal" in moved and len(moved) > 10


def test_the_first_decision_sees_the_architecture_the_search_exported(run):
    """Before any decision the projected weights are the search's export (arch.npz): the same
    transform at the same temperature."""
    exported = load_arch_weights(run["root"] / "search" / ARCH_FILE)
    normal = run["seen"]["normal"]
    np.testing.assert_allclose(normal.nodes.detach().numpy(), exported.normal, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(normal.outputs.detach().numpy(), exported.normal_output, rtol=1e-6,
                               atol=1e-7)


def test_the_architecture_optimizer_continues_from_the_search(run):
    """darts's architecture optimizer is Adam: the selection's first architecture step starts from the
    moments and step count the search left, at the search's architecture learning rate."""
    saved = run["searched"]["arch_optimizer"]
    first_param = saved["param_groups"][0]["params"][0]
    saved_state = saved["state"][first_param]
    first = run["seen"]["adam"][0]
    searched_steps = PROTOCOL.search.epochs * PROTOCOL.search.steps_per_epoch
    assert float(saved_state["step"]) == searched_steps
    assert first["step"] == searched_steps
    torch.testing.assert_close(first["exp_avg"], saved_state["exp_avg"], rtol=0, atol=0)
    settings, _ = resolve_settings(get_method("darts"), PROTOCOL)
    assert first["lr"] == settings.arch_lr


def test_weights_are_tuned_at_a_tenth_of_the_searched_learning_rate_throughout(run):
    steps = run["seen"]["sgd"]
    epochs = select.tuning_epochs(PROTOCOL.select.interval)
    assert len(steps) == epochs * PROTOCOL.select.steps_per_epoch
    expected = (WEIGHT_LR / 10, PROTOCOL.search.momentum, PROTOCOL.search.weight_decay)
    for groups in steps:  # constant: DARTS-PT never steps a scheduler while it tunes
        for lr, momentum, weight_decay in groups:
            assert lr == pytest.approx(expected[0], rel=1e-12)
            assert (momentum, weight_decay) == expected[1:]
    assert not math.isclose(WEIGHT_LR / 10, PROTOCOL.search.weight_lr / 10)  # the method's rate counts


def test_each_sum_decision_masks_every_node_once_per_cell_type(run):
    sums = [(m.cell, m.index) for m in run["seen"]["measured"] if m.kind == "sum"]
    assert sorted(sums) == sorted((cell, node) for cell in ("normal", "reduce") for node in range(NUM_NODES))


# -- the sum-path mask on the projected weights ------------------------------------------------------

def supernet() -> Supernet:
    torch.manual_seed(5)
    net = Supernet(10, 4, 3)
    with torch.no_grad():  # spread the output weights so that no two nodes weigh the same
        for alphas in (net.alphas_normal_output, net.alphas_reduce_output):
            alphas.copy_(torch.randn(2, NUM_NODES))
    return net


@pytest.mark.parametrize("node", range(NUM_NODES))
def test_a_sum_mask_zeroes_one_nodes_sum_weight_and_nothing_else(node):
    net = supernet()
    weights = ProjectedWeights(Projection(), 1.0)
    plain = net.cell_weights(False, 1.0)
    weights.mask = Mask("normal", "sum", node)
    masked = weights(net, False, 1.0)
    expected_sum = plain.outputs[0].detach().clone()
    expected_sum[node] = 0.0  # removed, the others kept as they are: nothing renormalized (DARTS-PT)
    torch.testing.assert_close(masked.outputs[0], expected_sum, rtol=0, atol=0)
    torch.testing.assert_close(masked.outputs[1], plain.outputs[1], rtol=0, atol=0)  # gates untouched
    torch.testing.assert_close(masked.nodes, plain.nodes, rtol=0, atol=0)
    assert masked.concat_mask is None
    # The other cell type does not see a normal cell's mask.
    torch.testing.assert_close(weights(net, True, 1.0).outputs, net.cell_weights(True, 1.0).outputs)


def test_a_sum_mask_changes_the_sum_output_by_that_nodes_term_only():
    """In the cell, masking node j's sum weight takes w_j * node_j out of the sum output; the concat
    output, which reads the gated nodes, is unchanged."""
    net = supernet()
    x = torch.randn(2, 3, 32, 32)
    cell = net.cells[0]
    s0, s1 = net.stem_0(x), net.stem_1(x)
    weights = ProjectedWeights(Projection(), 1.0)
    plain = weights(net, False, 1.0)
    sum_plain, concat_plain = cell(s0, s1, plain)
    gated = concat_plain.shape[1] // NUM_NODES
    for node in (0, 3):
        weights.mask = Mask("normal", "sum", node)
        sum_masked, concat_masked = cell(s0, s1, weights(net, False, 1.0))
        torch.testing.assert_close(concat_masked, concat_plain)
        # node_j from its gated slot in the concat output: gate_j * node_j, divided by the gate.
        node_value = concat_plain[:, node * gated:(node + 1) * gated] / plain.outputs[1, node]
        torch.testing.assert_close(sum_masked, sum_plain - plain.outputs[0, node] * node_value,
                                   rtol=1e-4, atol=1e-5)


def test_a_sum_mask_after_the_sum_decision_removes_one_kept_node():
    net = supernet()
    projection = Projection()
    projection.sum["normal"] = [1, 3]
    weights = ProjectedWeights(projection, 1.0)
    assert weights(net, False, 1.0).outputs[0].tolist() == [0, 1, 0, 1, 0]
    weights.mask = Mask("normal", "sum", 3)
    assert weights(net, False, 1.0).outputs[0].tolist() == [0, 1, 0, 0, 0]
    weights.mask = Mask("normal", "sum", 2)  # an undecided node: already 0, nothing else moves
    assert weights(net, False, 1.0).outputs[0].tolist() == [0, 1, 0, 1, 0]
