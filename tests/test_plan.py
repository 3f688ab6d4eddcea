from pathlib import Path

import pytest

from lhdbench.methods import method_names
from lhdbench.plan import SuiteError, load_suite, make_plan, suite_names
from lhdbench.protocol import load_protocol


def test_shipped_suites_have_the_issue_shapes():
    assert {"lhd", "demo"} <= set(suite_names())
    lhd = make_plan(load_suite("lhd"))
    assert lhd.protocol.name == "paper"
    searches = lhd.searches
    # The paper's twelve x 3 datasets x 5 seeds, each evaluated under 4 policies, whatever else is
    # registered: the lhd suite is the paper's benchmark.
    assert len(searches) == 12 * 3 * 5 == 180 and len({s.baseline for s in searches}) == 12
    assert len(lhd.trials) - len(searches) == 4 * len(searches) == 720
    assert not lhd.of_phase("select")
    extended = make_plan(load_suite("lhd-extended"))
    assert {s.baseline for s in extended.searches} == set(method_names())
    assert len(extended.of_phase("select")) == 3 * len(extended.searches)
    assert len(extended.of_phase("evaluate")) == 8 * len(extended.searches)
    demo = make_plan(load_suite("demo"))
    assert demo.protocol.name == "demo"
    assert len(demo.searches) == len(method_names()) and len(demo.trials) == len(demo.searches) * 5
    assert {t.dataset for t in demo.trials} == {"digits16"} and {t.seed for t in demo.trials} == {0}
    smoke = make_plan(load_suite("smoke"))
    assert smoke.protocol.name == "smoke"
    assert len(smoke.searches) == len(method_names()) * 2 and len(smoke.trials) == len(smoke.searches) * 5
    assert {t.dataset for t in smoke.trials} == {"digits"}


def test_trial_ids_are_stable_unique_and_tied_to_their_search():
    suite = load_suite("smoke").narrow(baselines=["darts", "gdas"])
    first, second = make_plan(suite), make_plan(suite)
    ids = [t.trial_id for t in first.trials]
    assert ids == [t.trial_id for t in second.trials]
    assert len(set(ids)) == len(ids)
    for search in first.searches:
        evaluations = [t for t in first.trials if t.search_trial_id == search.trial_id]
        assert sorted(e.policy for e in evaluations) == ["1m", "3ops", "4out", "base"]
        assert all((e.baseline, e.dataset, e.seed) == (search.baseline, search.dataset, search.seed)
                   for e in evaluations)
    assert ids[0].startswith("search-darts-digits-s0-")


def test_protocols_that_differ_only_in_evaluation_share_their_searches():
    suite = load_suite("lhd").narrow(baselines=["darts"], datasets=["cifar10"], seeds=[0])
    paper, fast = make_plan(suite, load_protocol("paper")), make_plan(suite, load_protocol("fast"))
    assert [t.trial_id for t in paper.searches] == [t.trial_id for t in fast.searches]
    paper_evals = {t.trial_id for t in paper.trials if t.phase == "evaluate"}
    fast_evals = {t.trial_id for t in fast.trials if t.phase == "evaluate"}
    assert not paper_evals & fast_evals


def test_a_changed_search_setting_changes_the_search_id():
    suite = load_suite("smoke").narrow(baselines=["darts"], seeds=[0])
    base = make_plan(suite, load_protocol("smoke"))
    longer = make_plan(suite, load_protocol("smoke", overrides={"search": {"epochs": 3}}))
    assert base.searches[0].trial_id != longer.searches[0].trial_id


def test_narrowing_checks_names_and_lists_the_known_ones():
    demo = load_suite("smoke")
    with pytest.raises(SuiteError, match="unknown baseline 'dart'.*known: .*darts"):
        demo.narrow(baselines=["dart"])
    with pytest.raises(SuiteError, match="unknown policy"):
        demo.narrow(policies=["5ops"])
    with pytest.raises(SuiteError, match="twice"):
        demo.narrow(seeds=[1, 1])
    assert demo.narrow(datasets=["cifar10"], seeds=[3]).seeds == (3,)


def test_suite_files_are_validated(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("preset: smoke\nbaselines: [darts]\ndatasets: [digits]\npolicies: [base]\nseeds: [0]\n")
    assert load_suite(str(path)).name == "mine"
    path.write_text("preset: smoke\nbaselines: [darts]\ndatasets: [digits]\npolicies: [base]\nseed: [0]\n")
    with pytest.raises(SuiteError, match="unknown key 'seed'"):
        load_suite(str(path))
    with pytest.raises(SuiteError, match="unknown suite 'nope'"):
        load_suite("nope")
