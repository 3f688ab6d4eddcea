"""Architecture selection by perturbation (DARTS-PT on the LHD supernet): the projected weights, one
decision per round that keeps what the criterion says, the schedule, and a selection trial that resumes
after any decision and feeds an evaluation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import lhdbench.checkpoint
import lhdbench.select as select
from lhdbench.plan import load_suite, make_plan
from lhdbench.protocol import load_protocol
from lhdbench.runner import RunOptions, run_plan
from lhdbench.select import (
    CELLS,
    DECISIONS,
    Mask,
    ProjectedWeights,
    Projection,
    selection_policy,
    tuning_epochs,
)
from lhdbench.space import get_policy
from lhdbench.space.layout import NUM_NODES, NUM_OPS, node_rows
from lhdbench.space.supernet import Supernet
from lhdbench.store import Store


def test_tuning_epochs_follow_darts_pt_with_seven_decisions_per_cell():
    # DARTS-PT: 5 tuning epochs between decisions, one more after the last; LHD has 5 node decisions
    # and 2 output decisions per cell type.
    assert DECISIONS == 7 and tuning_epochs(5) == 31 and tuning_epochs(1) == 7
    # DARTS-PT's own DARTS space: 14 op decisions and 3 topology decisions give its 81 epochs.
    assert tuning_epochs(5, 14 + 3) == 81


def test_1m_shares_base_selection_and_the_others_have_their_own():
    assert [selection_policy(p) for p in ("base", "1m", "3ops", "4out")] == ["base", "base", "3ops", "4out"]


def net() -> Supernet:
    torch.manual_seed(0)
    return Supernet(10, 4, 3)


def test_projected_weights_write_decisions_and_masks_over_the_exported_transform():
    supernet = net()
    projection = Projection()
    weights = ProjectedWeights(projection, 1.0)
    plain = supernet.cell_weights(False, 1.0)
    undecided = weights(supernet, False, 1.0)
    torch.testing.assert_close(undecided.nodes, plain.nodes)
    assert undecided.concat_mask is None

    projection.nodes["normal"][2] = [0, 9]  # node 2: (input 0, op 0) and (input 1, op 2)
    projection.sum["normal"] = [1, 3]
    decided = weights(supernet, False, 1.0)
    block = decided.nodes[node_rows(2)].reshape(-1)
    assert block[[0, 9]].tolist() == [1.0, 1.0] and float(block.detach().sum()) == 2.0
    other = node_rows(3)
    torch.testing.assert_close(decided.nodes[other], plain.nodes[other])  # undecided nodes untouched
    assert decided.outputs[0].tolist() == [0, 1, 0, 1, 0]
    assert weights(supernet, True, 1.0).outputs[0].tolist() != [0, 1, 0, 1, 0]  # the other cell type

    weights.mask = Mask("normal", "pair", node_rows(3).start * NUM_OPS + 4)
    masked = weights(supernet, False, 1.0).nodes.reshape(-1)
    assert masked[node_rows(3).start * NUM_OPS + 4] == 0
    torch.testing.assert_close(masked.sum(), decided.nodes.sum() - decided.nodes.reshape(-1)[
        node_rows(3).start * NUM_OPS + 4])  # nothing renormalized

    weights.mask = Mask("normal", "concat", 2)
    concat = weights(supernet, False, 1.0)
    assert concat.concat_mask.tolist() == [1, 1, 0, 1, 1]
    torch.testing.assert_close(concat.outputs[1], plain.outputs[1])  # gates still feed later nodes


def test_a_concat_mask_removes_a_node_from_the_concat_output_only():
    supernet = net()
    x = torch.randn(4, 3, 32, 32)
    cell = supernet.cells[0]
    s0, s1 = supernet.stem_0(x), supernet.stem_1(x)
    plain = supernet.cell_weights(False, 1.0)
    sum_a, concat_a = cell(s0, s1, plain)
    masked = plain._replace(concat_mask=torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0]))
    sum_b, concat_b = cell(s0, s1, masked)
    torch.testing.assert_close(sum_a, sum_b)  # later nodes still read node 2 through its gate
    width = concat_a.shape[1] // NUM_NODES
    for node in range(NUM_NODES):
        part = slice(node * width, (node + 1) * width)
        if node == 2:
            assert torch.count_nonzero(concat_b[:, part]) == 0
        else:
            torch.testing.assert_close(concat_a[:, part], concat_b[:, part])


class Oracle:
    """An accuracy measurement whose answer is known: each possible mask costs a fixed amount of
    accuracy, drawn once; the criterion must keep the candidates that cost most."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.cost = {(c, kind, i): float(rng.uniform(0, 0.5)) for c in CELLS
                     for kind, n in (("pair", 20 * NUM_OPS), ("sum", NUM_NODES), ("concat", NUM_NODES))
                     for i in range(n)}
        self.calls = 0

    def __call__(self, supernet, weights, data, spec, device, speed, seed) -> float:
        self.calls += 1
        mask = weights.mask
        return 0.9 - self.cost[(mask.cell, mask.kind, mask.index)]


@pytest.mark.parametrize("policy", ["base", "3ops", "4out"])
def test_one_decision_per_round_keeps_what_the_criterion_says(monkeypatch, policy):
    oracle = Oracle()
    monkeypatch.setattr(select, "accuracy", oracle)
    rule = get_policy(policy)
    supernet = net()
    projection = Projection()
    weights = ProjectedWeights(projection, 1.0)
    torch.manual_seed(1)
    for round_ in range(DECISIONS):
        for cell in CELLS:
            before = oracle.calls
            select._decide(projection, cell, rule, weights, supernet, None, None, torch.device("cpu"),
                           None, seed=0, epoch=round_)
            entry = projection.log[-1]
            assert entry["cell"] == cell and len(entry["accuracies"]) == oracle.calls - before
        assert projection.decided() == round_ + 1  # exactly one decision per cell type per round
    for cell in CELLS:
        for node in range(NUM_NODES):
            start = node_rows(node).start * NUM_OPS
            pairs = (node_rows(node).stop - node_rows(node).start) * NUM_OPS
            costs = [oracle.cost[(cell, "pair", start + p)] for p in range(pairs)]
            expected = sorted(np.argsort(costs)[::-1][: rule.node_inputs].tolist())
            assert projection.nodes[cell][node] == expected
        for kind in ("sum", "concat"):
            costs = [oracle.cost[(cell, kind, j)] for j in range(NUM_NODES)]
            chosen = getattr(projection, kind)[cell]
            assert chosen == sorted(np.argsort(costs)[::-1][: len(chosen)].tolist())
            if policy == "4out":
                assert len(chosen) == 4
    # Node decisions: 14 + 21 + 28 + 35 + 42 pair masks, 5 + 5 output masks, per cell type.
    assert oracle.calls == 2 * (140 + 10)
    genotype = projection.genotype()
    assert all(len([e for e in genotype.normal.edges if e.node == n]) in (0, rule.node_inputs)
               for n in range(NUM_NODES))


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A store with one smoke darts search and its perturbation selection planned for base."""
    root = tmp_path_factory.mktemp("select")
    suite = load_suite("smoke").narrow(baselines=["darts"], seeds=[0], policies=["base"],
                                      selections=["perturbation"])
    plan = make_plan(suite)
    search = plan.of_phase("search")
    run_plan(make_plan(suite.narrow(selections=["magnitude"])), root, RunOptions(executor="serial"),
             progress_stream=io.StringIO())
    return root, plan, search


@pytest.mark.slow
def test_a_selection_resumes_after_a_decision_and_ends_as_an_uninterrupted_one(searched, tmp_path):
    import shutil

    from lhdbench.runner import run_trial

    root, plan, _ = searched
    trial = plan.of_phase("select")[0]
    protocol = plan.protocol.to_dict()
    whole_root, cut_root = tmp_path / "whole", tmp_path / "cut"
    shutil.copytree(root, whole_root)
    shutil.copytree(root, cut_root)
    whole = run_trial(trial, protocol, whole_root)
    assert whole.status == "done" and whole.epochs == tuning_epochs(plan.protocol.select.interval)
    assert len(whole.decisions) == 2 * DECISIONS and whole.measurements == 2 * (140 + 10)

    real = lhdbench.checkpoint.save_checkpoint
    saves = []

    def stop_after_the_third_decision(path, state):
        real(path, state)
        saves.append(state["loop"]["values"]["decided_epoch"])
        if state["projection"]["log"] and len(state["projection"]["log"]) == 6:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lhdbench.checkpoint, "save_checkpoint", stop_after_the_third_decision)
        with pytest.raises(KeyboardInterrupt):
            run_trial(trial, protocol, cut_root)
    resumed = run_trial(trial, protocol, cut_root)
    assert resumed.status == "done"
    assert resumed.decisions == whole.decisions and resumed.genotype == whole.genotype
    assert resumed.history == whole.history

    evaluation = next(t for t in plan.trials if t.selection == "perturbation")
    record = run_trial(evaluation, protocol, whole_root)
    assert record.status == "done" and record.genotype == whole.genotype
    assert record.arch_file == str(Store(whole_root).trial_dir(trial.trial_id) / select.GENOTYPE_FILE)


def test_the_plan_has_a_selection_per_search_and_policy_rule():
    suite = load_suite("smoke").narrow(baselines=["darts", "random"], seeds=[0, 1],
                                      selections=["magnitude", "perturbation"])
    plan = make_plan(suite)
    assert len(plan.of_phase("search")) == 4
    assert len(plan.of_phase("select")) == 4 * 3  # base (also 1m), 3ops, 4out
    evaluations = plan.of_phase("evaluate")
    assert len(evaluations) == 4 * 4 * 2
    by_id = {t.trial_id: t for t in plan.trials}
    for trial in evaluations:
        if trial.selection == "perturbation":
            selection = by_id[trial.selection_trial_id]
            assert selection.phase == "select" and selection.policy == selection_policy(trial.policy)
            assert selection.search_trial_id == trial.search_trial_id
        else:
            assert trial.selection_trial_id is None
    # Magnitude evaluations keep the ids they had before selections existed.
    assert make_plan(suite.narrow(selections=["magnitude"])).trials == tuple(
        t for t in plan.trials if t.phase == "search" or t.selection == "magnitude")


def test_smoke_protocol_selection_is_small():
    protocol = load_protocol("smoke")
    assert protocol.select.interval == 1 and protocol.select.measure_images == 16
