"""Trial identity covers the method's code: an edited method reruns (and only it), says so, never
mixes its old results into the report; old results can be adopted on request; a store written before
code was recorded is read; presets carry their changes to a method's own settings."""

import importlib.util
import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from lhdbench import methods
from lhdbench.cli import main
from lhdbench.methods import get_method, registry
from lhdbench.methods.fingerprint import method_code
from lhdbench.methods.settings import differing_settings, resolve_settings
from lhdbench.plan import load_suite, make_plan
from lhdbench.protocol import load_protocol
from lhdbench.report.load import load_trials
from lhdbench.runner import RunOptions, run_plan, run_trial
from lhdbench.status import format_status, store_status
from lhdbench.store import Store

LEGACY_STORE = Path(__file__).resolve().parent / "data" / "store-0.1"
PLUGIN_MODULE = "lhdbench_plugin_edited"
PLUGIN = '''
from lhdbench.methods import SearchMethod, register


@register
class Edited(SearchMethod):
    name = "test-edited"
    description = "a plugin its author edits between runs"

    def arch_loss(self, ctx, x, y):
        return SCALE * ctx.loss(x, y)[0]


SCALE = 1.0
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Load (and after an edit, reload) a one-file plugin as `--plugin` does, leaving the registry as
    it was afterwards. Returns a function: source text -> the registered class."""
    methods.discover()
    for name in ("_REGISTRY", "_SOURCES", "_FAILURES"):
        monkeypatch.setattr(registry, name, dict(getattr(registry, name)))
    path = tmp_path / "edited.py"

    def load(source: str = PLUGIN):
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(PLUGIN_MODULE, path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, PLUGIN_MODULE, module)
        spec.loader.exec_module(module)  # @register replaces the class of the same module and name
        registry._SOURCES["test-edited"] = f"{path} (plugin file)"
        return get_method("test-edited")

    return load


def plan_of(baselines=("test-edited", "darts"), seeds=(0,), preset=None):
    return make_plan(load_suite("smoke").narrow(baselines=list(baselines), seeds=list(seeds),
                                               policies=["base"], preset=preset))


def run(plan, store, capsys=None, **options):
    dispatch = run_plan(plan, store, RunOptions(executor="serial", **options), progress_stream=io.StringIO())
    return dispatch, (capsys.readouterr().err if capsys else "")


def stale_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "trial(s)" in line]


def test_an_edited_plugin_reruns_its_trials_only_and_says_why(tmp_path, plugin, capsys):
    store = tmp_path / "store"
    first = plugin()
    plan = plan_of()
    dispatch, _ = run(plan, store, capsys)
    assert dispatch.counts == {"done": 4, "failed": 0}
    old = {t.trial_id for t in plan.trials if t.baseline == "test-edited"}

    edited = plugin(PLUGIN.replace("SCALE * ctx.loss", "SCALE * 2 * ctx.loss"))
    assert method_code(edited).fingerprint != method_code(first).fingerprint
    again = plan_of()
    new = {t.trial_id for t in again.trials if t.baseline == "test-edited"}
    assert not new & old  # the edited method's ids changed (its evaluation's through its search)
    assert {t.trial_id for t in again.trials if t.baseline == "darts"} == (
        {t.trial_id for t in plan.trials if t.baseline == "darts"})
    dispatch, err = run(again, store, capsys)
    assert dispatch.counts == {"done": 2, "failed": 0} and dispatch.skipped == 2
    assert stale_lines(err) == [
        "lhdbench: 2 trial(s) run again because their method's code changed since the results this "
        "store holds (test-edited: 1 search, 1 evaluation); --adopt-old-code keeps those results instead"]

    records = Store(store).records()
    searches = [r for r in records.values() if r.phase == "search" and r.baseline == "test-edited"]
    assert sorted(r.code.method for r in searches) == sorted(
        [method_code(first).fingerprint, method_code(edited).fingerprint])
    plan_file = json.loads((store / "plan.json").read_text())
    assert {t for t, e in plan_file["trials"].items() if e.get("superseded_by")} == old
    status = store_status(store)
    assert (status["planned"], status["done"], status["superseded"]) == (4, 4, 2)
    assert status["code_versions"] == {"test-edited": {method_code(first).fingerprint: 2,
                                                       method_code(edited).fingerprint: 2}}
    assert "test-edited: done results of 2 code versions" in format_status(status)
    trials = load_trials(store)
    assert set(trials.frame["trial_id"]) & old == set()
    evals = trials.frame[trials.frame["phase"] == "evaluate"]
    assert sorted(evals["baseline"]) == ["darts", "test-edited"]  # one result per method, not two
    assert any("superseded" in note and "test-edited" in note for note in trials.notes)


def test_adopt_old_code_keeps_the_results_and_marks_them(tmp_path, plugin, capsys):
    store = tmp_path / "store"
    plugin()
    plan = plan_of(baselines=("test-edited",))
    run(plan, store, capsys)
    before = {(r.phase): r for r in Store(store).records().values()}
    plugin(PLUGIN.replace("SCALE = 1.0", "SCALE = 1.0  # refactored, same results"
                          ).replace("return SCALE *", "return 1.0 * SCALE *"))
    again = plan_of(baselines=("test-edited",))
    dispatch, err = run(again, store, capsys, adopt_old_code=True)
    assert dispatch.counts == {"done": 0, "failed": 0} and dispatch.skipped == 2
    assert "2 trial(s) adopted from results of earlier code" in err
    records = Store(store).records()
    for trial in again.trials:
        record = records[trial.trial_id]
        old = before[trial.phase]
        assert record.adopted_from == old.trial_id and record.status == "done"
        assert record.final_test_acc == old.final_test_acc and record.history == old.history
        assert record.search_trial_id == trial.search_trial_id
        assert [e["event"] for e in Store(store).events(trial.trial_id)] == ["adopted"]
    search = next(t for t in again.trials if t.phase == "search")
    assert (Store(store).trial_dir(search.trial_id) / "arch.npz").is_file()


def test_a_store_of_lhdbench_0_1_is_read_and_a_rerun_says_what_it_recomputes(tmp_path, capsys):
    store = tmp_path / "store"
    shutil.copytree(LEGACY_STORE, store)
    legacy = Store(store).records()
    assert len(legacy) == 5 and all(r.code is None and r.settings_id == r.trial_id for r in legacy.values())
    before = load_trials(store)
    assert set(before.frame["status"]) == {"done"}

    plan = make_plan(load_suite("demo").narrow(baselines=["darts"]))
    assert {t.settings_id for t in plan.trials} == set(legacy)  # the old ids are the settings ids
    assert main(["benchmark", "--suite", "demo", "--baselines", "darts", "--storage", str(store),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert ("note: 5 trial(s) run again because this store's results of them were recorded before "
            "lhdbench kept the methods' code (lhdbench 0.1) (darts: 1 search, 4 evaluations)") in out

    dispatch, err = run(plan, store, capsys, adopt_old_code=True)
    assert dispatch.counts == {"done": 0, "failed": 0} and dispatch.skipped == 5
    after = load_trials(store)
    kept = after.frame.set_index(["policy"])["value"].sort_index()
    assert kept.equals(before.frame.set_index(["policy"])["value"].sort_index())


def test_a_method_edited_while_a_run_goes_on_fails_its_search_instead_of_mixing(tmp_path, plugin):
    plugin()
    plan = plan_of(baselines=("test-edited",))
    plugin(PLUGIN.replace("SCALE = 1.0", "SCALE = 3.0"))
    search = next(t for t in plan.trials if t.phase == "search")
    record = run_trial(search, plan.protocol.to_dict(), tmp_path)
    assert record.status == "failed" and "changed since this run was planned" in record.reason


def test_records_keep_the_code_they_come_from(tmp_path, plugin):
    cls = plugin()
    plan = plan_of(baselines=("test-edited",))
    run(plan, tmp_path)
    records = Store(tmp_path).records().values()
    from lhdbench import __version__

    for record in records:
        assert record.code.method == method_code(cls).fingerprint
        assert record.code.method_source.endswith("edited.py (plugin file)")
        assert record.code.lhdbench == __version__
        commit = record.code.commit
        assert commit is None or len(commit.split("+")[0]) == 40
        trial = next(t for t in plan.trials if t.trial_id == record.trial_id)
        assert record.settings_id == trial.settings_id != record.trial_id


def test_a_rerun_without_the_plugin_names_the_file(tmp_path, plugin, capsys):
    plugin()
    store = tmp_path / "store"
    run(plan_of(baselines=("test-edited",)), store, capsys)
    registry._REGISTRY.pop("test-edited")  # the next command runs without --plugin
    code = main(["benchmark", "--suite", "smoke", "--baselines", "test-edited", "--storage", str(store),
                 "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and "edited.py (plugin file); pass --plugin with that file" in err
    assert len(err.strip().splitlines()) == 1
    main(["benchmark", "--suite", "smoke", "--baselines", "darts", "--storage", str(store), "--dry-run"])
    assert "also holds" not in capsys.readouterr().err  # named baselines: nothing else to say
    main(["benchmark", "--suite", "smoke", "--storage", str(store), "--dry-run"])
    assert "also holds trials of test-edited" in capsys.readouterr().err


def test_an_edited_protocol_file_of_the_same_name_is_never_averaged_with_the_old(tmp_path, capsys):
    protocol = tmp_path / "mine.yaml"
    text = (Path(load_protocol.__code__.co_filename).parent.parent / "conditions" / "protocols"
            / "smoke.yaml").read_text()
    protocol.write_text(text + "\nname: mine\n")
    store = tmp_path / "store"
    run(plan_of(baselines=("darts",), preset=str(protocol)), store, capsys)
    protocol.write_text(text.replace("  batch_size: 16\n  max_train_images: 64\n  max_test_images",
                                     "  batch_size: 8\n  max_train_images: 64\n  max_test_images")
                        + "\nname: mine\n")
    _, err = run(plan_of(baselines=("darts",), preset=str(protocol)), store, capsys)
    assert stale_lines(err) == [
        "lhdbench: 1 trial(s) run again because their settings changed since the results this store "
        "holds (darts: 1 evaluation; changed: evaluate.batch_size); the report shows only the current ones"]
    evals = load_trials(store).frame.query("phase == 'evaluate'")
    assert len(evals) == 1 and evals["status"].tolist() == ["done"]


# -- presets carry to a method's own settings ---------------------------------------------------------

def test_a_preset_changes_a_methods_own_rate_by_its_own_factor(plugin):
    plugin(PLUGIN.replace("    description =", '    defaults = {"arch_lr": 9e-4}\n    description ='))
    for preset in ("demo", "paper", "smoke"):
        protocol = load_protocol(preset)
        darts = resolve_settings(get_method("darts"), protocol)[0].arch_lr
        mine = resolve_settings(get_method("test-edited"), protocol)[0].arch_lr
        assert mine == pytest.approx(3 * darts, rel=1e-12)
    assert resolve_settings(get_method("test-edited"), load_protocol("demo"))[0].arch_lr == 0.09
    given = load_protocol("demo").replace(methods={"test-edited": {"arch_lr": 0.5}})
    assert resolve_settings(get_method("test-edited"), given)[0].arch_lr == 0.5  # as the file says
    assert differing_settings(get_method("test-edited"), load_protocol("demo")) == [
        "arch_lr 0.09 (its own 0.0009 x the protocol's 0.03/0.0003 of the paper's)"]


def test_the_demo_gives_every_method_100x_its_own_architecture_rate():
    demo, paper = load_protocol("demo"), load_protocol("paper")
    for name in methods.method_names():
        cls = get_method(name)
        rate = resolve_settings(cls, demo)[0].arch_lr
        assert rate == pytest.approx(100 * resolve_settings(cls, paper)[0].arch_lr, rel=1e-12), name


def test_sizes_scale_and_round_and_other_settings_are_kept():
    demo = load_protocol("demo")
    pcdarts = resolve_settings(get_method("pcdarts"), demo)[0]
    assert pcdarts.batch_size == round(576 * 64 / 176)
    assert pcdarts.weight_lr == get_method("pcdarts").defaults["weight_lr"]  # demo keeps the paper's
    custom = demo.replace(search={"arch_betas": [0.9, 0.99]}, methods={})
    from lhdbench.methods import SearchMethod

    class Betas(SearchMethod):
        name = "betas"
        defaults = {"arch_betas": (0.5, 0.9), "arch_weight_decay": 1e-3}

    settings, _ = resolve_settings(Betas, custom)
    assert settings.arch_betas == (0.5, 0.9)  # not a rate: kept, and said so
    assert "arch_betas [0.5, 0.9] (its own, kept: the protocol's change does not carry to it)" in (
        differing_settings(Betas, custom))
    # A rate whose paper value is 0 has no factor to carry.
    zero = demo.replace(search={"arch_weight_decay": 0.01})
    assert resolve_settings(Betas, zero)[0].arch_weight_decay == 1e-3


def test_the_first_record_format_still_reads():
    """Records of the first lhdbench 0.1 releases carried the folder identity under `inputs`."""
    from lhdbench.record import read_record

    path = LEGACY_STORE.parent / "record-0.1-inputs.json"
    raw = json.loads(path.read_text())
    record = read_record(path)
    assert record.arch_sha256 == raw["inputs"]["arch_sha256"]
    assert record.final_test_acc == raw["final_test_acc"]
    assert record.code is None and record.settings_id == record.trial_id == raw["trial_id"]
