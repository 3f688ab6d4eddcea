"""A trial's GPU share follows what the user said and the GPU's memory (each trial's figure from
lhdbench.memory, the whole process, so figures on one GPU add up), capped by the measured number of
trials per GPU, not how many GPUs an autoscaling cluster happens to have when the driver starts."""

import pytest

from lhdbench import estimate
from lhdbench.plan import load_suite, make_plan
from lhdbench.runner import RunOptions
from lhdbench.runner.gpu_share import (
    DEFAULT_TRIALS_PER_GPU,
    gpu_fraction,
    max_trials_per_gpu,
    trial_resources,
)


@pytest.fixture(scope="module")
def plan():
    return make_plan(load_suite("smoke").narrow(baselines=["darts", "pcdarts"], seeds=[0], policies=["base"]))


# Stand-in figures, so these tests are about the arithmetic, not the memory model (tests/test_memory.py).
PEAKS = {("search", "darts"): 8.3, ("search", "pcdarts"): None, ("evaluate", "darts"): 3.3,
         ("evaluate", "pcdarts"): 3.3}


def peaks(plan):
    return {t.trial_id: PEAKS[t.phase, t.baseline] for t in plan.trials}


def shares(plan, **kwargs):
    found = trial_resources(plan, RunOptions(**kwargs.pop("options", {})), peaks=peaks, **kwargs)
    return {(t.phase, t.baseline): found[t.trial_id].gpu for t in plan.trials}


def test_shares_follow_the_memory_figures_and_are_whole_when_unknown():
    assert gpu_fraction(8.3, 80.0, cap=4) == 0.25  # 8.3 GB: nine fit, four by the cap
    assert gpu_fraction(8.3, 24.0, cap=4) == 0.5
    assert gpu_fraction(8.3, 8.0, cap=4) == 1.0  # does not fit at all: a whole GPU all the same
    assert gpu_fraction(None, 80.0, cap=4) == 1.0  # no figure: a whole GPU
    for broken in (0.0, -1.0, float("nan"), float("inf")):
        assert gpu_fraction(broken, 80.0, cap=4) == 1.0
    # The figure is the whole process: three of 10 GB fit in 30 GB, no factor on top.
    assert gpu_fraction(10.0, 30.0, cap=4) == pytest.approx(1 / 3)
    assert gpu_fraction(10.0, 29.9, cap=4) == 0.5
    assert gpu_fraction(1.0, 80.0, cap=2) == 0.5


def test_the_cap_is_the_measured_one_and_a_documented_default_until_measured(monkeypatch):
    monkeypatch.setattr(estimate, "measurements", lambda: {"paper": {}})
    assert max_trials_per_gpu() == (DEFAULT_TRIALS_PER_GPU, "default (unmeasured)")
    assert gpu_fraction(1.0, 80.0) == 1 / DEFAULT_TRIALS_PER_GPU
    measured = {"packing": {"trials_per_gpu": 2, "source": "gpu-packing.json (graphed-fp32)"}}
    monkeypatch.setattr(estimate, "measurements", lambda: measured)
    assert max_trials_per_gpu() == (2, "gpu-packing.json (graphed-fp32)")
    assert gpu_fraction(1.0, 80.0) == 0.5
    small = make_plan(load_suite("smoke").narrow(baselines=["darts"], seeds=[0]))
    found = trial_resources(small, RunOptions(gpu_memory_gb=80.0), cluster_gpus=1, visible_gpu_memory_gb=None,
                            local=False, peaks=lambda p: dict.fromkeys((t.trial_id for t in p.trials), 1.0))
    assert {r.gpu for r in found.values()} == {0.5}


def test_gpu_memory_given_wins_over_the_gpu_the_driver_sees(plan):
    """--gpu-memory names the cluster's GPUs, which need not be the driver's: it decides the shares."""
    darts = ("search", "darts")  # 8.3 GB
    assert shares(plan, cluster_gpus=1, visible_gpu_memory_gb=80.0, local=True)[darts] == 0.25
    assert shares(plan, cluster_gpus=1, visible_gpu_memory_gb=80.0, local=True,
                  options={"gpu_memory_gb": 16.0})[darts] == 1.0
    assert shares(plan, cluster_gpus=1, visible_gpu_memory_gb=16.0, local=True,
                  options={"gpu_memory_gb": 80.0})[darts] == 0.25


def test_selections_and_methods_that_train_nothing_are_packed(tmp_path):
    """lhd-extended's selections and random's searches ask for a share from their own small figures
    (the real memory model, at the smoke suite's shapes), not for a whole GPU."""
    plan = make_plan(load_suite("smoke").narrow(baselines=["darts", "random"], seeds=[0], policies=["base"],
                                                selections=["perturbation"]))
    found = trial_resources(plan, RunOptions(gpu_memory_gb=80.0), cluster_gpus=1, visible_gpu_memory_gb=None,
                            local=False)
    by_kind = {(t.phase, t.baseline): found[t.trial_id].gpu for t in plan.trials}
    assert by_kind[("select", "darts")] < 1.0 and by_kind[("search", "random")] < 1.0


def test_the_runner_sizes_trials_with_the_memory_model_once_per_store(plan, tmp_path, monkeypatch):
    from lhdbench import memory

    first = trial_resources(plan, RunOptions(gpu_memory_gb=80.0), cluster_gpus=1, visible_gpu_memory_gb=None,
                            local=False, peaks=lambda p: memory.plan_figures(p, tmp_path / "memory.json"))
    # The smoke networks are tiny: four of each kind fit on an 80 GB GPU.
    assert {r.gpu for r in first.values()} == {0.25}
    assert (tmp_path / "memory.json").is_file()

    def no_sizing(*args):
        raise AssertionError("sized again")

    monkeypatch.setattr(memory, "trial_gb", no_sizing)
    again = trial_resources(plan, RunOptions(gpu_memory_gb=80.0), cluster_gpus=1, visible_gpu_memory_gb=None,
                            local=False, peaks=lambda p: memory.plan_figures(p, tmp_path / "memory.json"))
    assert again == first


def test_a_cluster_without_gpus_now_still_gets_gpu_trials_when_the_user_says_so(plan):
    # An autoscaling cluster with no GPU node yet: --gpu-memory or --gpus-per-trial means GPU trials.
    assert shares(plan, cluster_gpus=0, visible_gpu_memory_gb=None, local=False,
                  options={"gpu_memory_gb": 80.0}) == {
        ("search", "darts"): 0.25, ("evaluate", "darts"): 0.25, ("search", "pcdarts"): 1.0,
        ("evaluate", "pcdarts"): 0.25}
    assert set(shares(plan, cluster_gpus=0, visible_gpu_memory_gb=None, local=False,
                      options={"gpus_per_trial": 0.5}).values()) == {0.5}


def test_the_same_request_whatever_the_cluster_has_at_the_start(plan):
    asked = {"gpu_memory_gb": 40.0}
    assert (shares(plan, cluster_gpus=0, visible_gpu_memory_gb=None, local=False, options=asked)
            == shares(plan, cluster_gpus=8, visible_gpu_memory_gb=None, local=False, options=asked))


def test_without_a_word_from_the_user_gpus_now_decide(plan):
    assert set(shares(plan, cluster_gpus=0, visible_gpu_memory_gb=None, local=False).values()) == {0.0}
    # GPUs, but the driver cannot see one to read its memory: a whole GPU each, which always fits.
    assert set(shares(plan, cluster_gpus=2, visible_gpu_memory_gb=None, local=False).values()) == {1.0}
    assert shares(plan, cluster_gpus=1, visible_gpu_memory_gb=80.0, local=True)[("search", "darts")] == 0.25
    assert set(shares(plan, cluster_gpus=4, visible_gpu_memory_gb=80.0, local=True,
                      options={"device": "cpu"}).values()) == {0.0}


def test_a_local_instance_without_gpus_refuses_gpu_requests(plan):
    with pytest.raises(ValueError, match="this machine has no GPU"):
        trial_resources(plan, RunOptions(gpus_per_trial=0.5), cluster_gpus=0, visible_gpu_memory_gb=None,
                        local=True)
