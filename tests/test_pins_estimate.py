"""The cost estimate (lhdbench/estimate.py), pinned on a made-up step-time table: the steps and test
passes it counts for each kind of trial (written out here from the protocols, and checked against what
the evaluation loop does), and the wall time on several devices when one chain of dependent trials
is longer than the even spread of the work."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_arch_weights

import lhdbench.estimate as estimate_module
from lhdbench.estimate import Estimate, TrialCost, estimate
from lhdbench.plan import load_suite, make_plan
from lhdbench.protocol import load_protocol

# Made-up step times, chosen so that seconds per image are round: 0.001 s per training image and
# 0.002 s per search image; a forward-only image costs a third of a training one.
TABLE = {"gpu": {"device": "Test GPU",
                 "search": {"batch": 100, "darts": {"seconds": 0.2}},
                 "train": {"batch": 50, "base": {"seconds": 0.05}}}}
TRAIN_S, SEARCH_S = 0.001, 0.002


@pytest.fixture
def table(monkeypatch):
    monkeypatch.setattr(estimate_module, "measurements", lambda: {"paper": TABLE, "smoke": TABLE})


def cost_of(plan, phase, **match):
    trials = [t for t in plan.of_phase(phase) if all(getattr(t, k) == v for k, v in match.items())]
    (cost,) = estimate(plan, trials[:1]).costs
    return cost


def test_a_paper_evaluation_counts_600_epochs_and_tests_after_epochs_401_to_599_and_the_curve(table):
    plan = make_plan(load_suite("lhd").narrow(baselines=["darts"], datasets=["cifar10"], seeds=[0],
                                              policies=["base"]))
    cost = cost_of(plan, "evaluate")
    steps = 600 * 782  # 600 epochs of ceil(50,000 / 64) = 782 batches of 64
    # The paper metric's epochs 401..599 (the last one among them), and the five learning-curve points
    # after 50, 100, 150, 200 and 300 epochs (1/12, 1/6, 1/4, 1/3, 1/2 of 600), all before epoch 401.
    tested = (599 - 400) + 5
    assert cost.steps == steps
    assert cost.seconds == pytest.approx(steps * 64 * TRAIN_S + tested * 10_000 * TRAIN_S / 3, rel=1e-12)
    assert cost.basis == "measured"


# Test passes: the epochs after best_after, the last, and the learning-curve points, the point of
# fraction f after ceil(f x epochs) epochs (0-based epoch ceil(f x epochs) - 1), counted once each:
#   2 epochs:  {1} and the points {0}                         -> 2
#   3 epochs:  {1, 2} and {0 (1/12..1/3), 1 (1/2)}            -> 3
#   7 epochs:  {3, 4, 5, 6} and {0, 1, 1, 2, 3}               -> 7
#   10 epochs: {9} and {0, 1, 2, 3, 4}                        -> 6
@pytest.mark.parametrize("epochs,best_after,tested", [(2, 0, 2), (3, 0, 3), (7, 2, 7), (10, 8, 6)])
def test_an_evaluation_tests_each_epoch_after_best_after_epoch_and_at_the_curve(table, epochs, best_after,
                                                                                tested):
    protocol = load_protocol("smoke").replace(evaluate={"epochs": epochs, "best_after_epoch": best_after})
    plan = make_plan(load_suite("smoke").narrow(baselines=["darts"], seeds=[0], policies=["base"]),
                     protocol)
    cost = cost_of(plan, "evaluate")
    steps = epochs * 2  # smoke: 2 steps an epoch of 16 images; 64 test images
    assert cost.steps == steps
    assert cost.seconds == pytest.approx(steps * 16 * TRAIN_S + tested * 64 * TRAIN_S / 3, rel=1e-12)


def test_the_estimate_counts_the_test_passes_the_evaluation_loop_makes(table, tmp_path):
    from lhdbench.evaluate import run_evaluation
    from lhdbench.space import get_policy

    protocol = load_protocol("smoke").replace(evaluate={
        "epochs": 4, "best_after_epoch": 1, "steps_per_epoch": 1, "max_train_images": 16,
        "max_test_images": 32, "batch_size": 16})
    record = run_evaluation(random_arch_weights(np.random.default_rng(0)), get_policy("base"), "digits", 0,
                            protocol, tmp_path, progress=False)
    tested = sum("test_acc" in entry for entry in record.history)
    plan = make_plan(load_suite("smoke").narrow(baselines=["darts"], seeds=[0], policies=["base"]),
                     protocol)
    cost = cost_of(plan, "evaluate")
    assert cost.steps == len(record.history) == 4
    assert cost.seconds == pytest.approx(4 * 16 * TRAIN_S + tested * 32 * TRAIN_S / 3, rel=1e-12)


def test_a_search_counts_its_methods_own_epochs_and_batch(table):
    """A method's own settings (here darts's epochs from the protocol's methods section, and GDAS's
    own batch of 256, which the smoke preset scales by its 16/176 of the paper's) are what its search
    runs."""
    protocol = load_protocol("smoke").replace(methods={"darts": {"epochs": 5}})
    plan = make_plan(load_suite("smoke").narrow(baselines=["darts", "gdas"], seeds=[0], policies=["base"]),
                     protocol)
    darts, gdas = cost_of(plan, "search", baseline="darts"), cost_of(plan, "search", baseline="gdas")
    # smoke: 64 images, 32 for the weights and 32 for the architecture. darts: batch 16, so 2 steps an
    # epoch (the smoke cap); GDAS: its batch of 256 x 16/176 = 23.3, so 23, and ceil(32 / 23) = 2 steps
    # an epoch.
    gdas_batch = round(256 * 16 / 176)
    assert (darts.steps, gdas.steps) == (5 * 2, 2 * 2)
    assert darts.seconds == pytest.approx(10 * 16 * SEARCH_S, rel=1e-12)
    assert gdas.seconds == pytest.approx(4 * gdas_batch * SEARCH_S, rel=1e-12)
    assert darts.basis == "measured" and gdas.basis != "measured"  # GDAS's from darts's, saying so


def test_a_selection_counts_its_tuning_epochs_and_its_measurements(table):
    plan = make_plan(load_suite("smoke").narrow(baselines=["darts"], seeds=[0], policies=["base"],
                                              selections=["perturbation"]))
    cost = cost_of(plan, "select")
    # smoke: a decision every epoch, 7 per cell type: 7 tuning epochs of 2 steps; per cell type 140
    # pair masks (2 + 3 + 4 + 5 + 6 inputs x 7 ops) and 5 + 5 output masks, each on 16 images.
    steps, forwards = 7 * 2, 2 * (140 + 10) * 16
    assert cost.steps == steps
    assert cost.seconds == pytest.approx(steps * 16 * SEARCH_S + forwards * SEARCH_S / 2 / 3, rel=1e-12)


# -- wall time ------------------------------------------------------------------------------------------

def chained_estimate(seconds: dict[tuple[str, int], float]) -> Estimate:
    """Every trial of a two-seed darts plan with a perturbation selection, costing `seconds` per
    (phase, seed) (each evaluation builds on its seed's selection, which builds on its search)."""
    plan = make_plan(load_suite("smoke").narrow(baselines=["darts"], seeds=[0, 1], policies=["base"],
                                              selections=["perturbation"]))
    result = Estimate(device="Test GPU", kind="gpu")
    for trial in plan.trials:
        if trial.phase == "evaluate" and trial.selection != "perturbation":
            continue
        result.costs.append(TrialCost(trial, 1, seconds[(trial.phase, trial.seed)], "measured"))
    assert sorted((c.trial.phase, c.trial.seed) for c in result.costs) == sorted(seconds)
    return result


SECONDS = {("search", 0): 10.0, ("select", 0): 6.0, ("evaluate", 0): 4.0,
           ("search", 1): 1.0, ("select", 1): 2.0, ("evaluate", 1): 3.0}


def test_one_long_chain_sets_the_wall_time_when_it_exceeds_the_even_spread():
    result = chained_estimate(SECONDS)
    total = sum(SECONDS.values())  # 26 s of work
    chain = 10.0 + 6.0 + 4.0  # seed 0: search, then its selection, then its evaluation
    assert result.seconds == pytest.approx(total)
    assert result.critical_path() == pytest.approx(chain)
    assert result.wall_seconds(4) == pytest.approx(chain)  # 26 / 4 = 6.5 s spread, but 20 s in a row
    assert result.wall_seconds(1) == pytest.approx(total)  # one device: all of it, one after another


def test_the_even_spread_sets_the_wall_time_when_no_chain_is_longer():
    even = {key: 5.0 for key in SECONDS}  # two chains of 15 s; 30 s of work
    result = chained_estimate(even)
    assert result.critical_path() == pytest.approx(15.0)
    assert result.wall_seconds(1) == pytest.approx(30.0)
    assert result.wall_seconds(2) == pytest.approx(15.0)
    assert result.wall_seconds(8) == pytest.approx(15.0)  # more devices cannot shorten a chain
