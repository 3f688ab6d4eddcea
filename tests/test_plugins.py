"""Registering methods and finding them: the baselines folder and installed entry points."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lhdbench.methods import SearchMethod, get_method, method_names, register

EXAMPLE = Path(__file__).resolve().parent / "example_plugin"
LHDBENCH = str(Path(sys.executable).parent / "lhdbench")


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """The example plugin, really installed (pip, entry point metadata) into a private folder."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE)], check=True, capture_output=True)
    return target


def run_cli(args, pythonpath: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([LHDBENCH, *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_a_duplicate_name_is_refused_naming_both_definitions():
    get_method("darts")  # load the real one first, whatever order the tests run in

    class Impostor(SearchMethod):
        name = "darts"
        description = "not the real DARTS"

    with pytest.raises(ValueError, match=r"defined twice: lhdbench\.baselines\.darts\.Darts and .*Impostor"):
        register(Impostor)
    assert get_method("darts").__name__ == "Darts"


@pytest.mark.parametrize("bad", [{"name": ""}, {"name": "two words"}, {"description": ""},
                                 {"description": "two\nlines"}])
def test_a_method_needs_a_plain_name_and_a_one_line_description(bad):
    attrs = {"name": "well-named", "description": "fine", **bad}
    with pytest.raises(ValueError):
        register(type("Bad", (SearchMethod,), attrs))
    assert "well-named" not in method_names()


def test_unknown_baseline_lists_the_known_ones():
    with pytest.raises(ValueError, match="known baselines: .*darts"):
        get_method("no-such-method")


def test_an_installed_plugin_is_listed_and_runs(plugin_path, tmp_path):
    listed = run_cli(["baselines", "list", "--json"], plugin_path, tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert "darts" in rows and "entropy-darts" in rows
    assert "plugin package lhdbench-example-plugin" in rows["entropy-darts"]["source"]
    assert rows["entropy-darts"]["defaults"] == {"entropy_weight": 0.1}
    searched = run_cli(["search", "--baseline", "entropy-darts", "--dataset", "digits", "--preset", "smoke",
                        "--seed", "0", "--out", "run"], plugin_path, tmp_path)
    assert searched.returncode == 0, searched.stderr
    assert json.loads((tmp_path / "run" / "record.json").read_text())["baseline"] == "entropy-darts"


def test_a_broken_plugin_is_reported_and_hides_nothing(plugin_path, tmp_path):
    broken = tmp_path / "site"
    info = broken / "broken_plugin-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[lhdbench.baselines]\nbroken = no_such_module_xyz:Method\n")
    listed = run_cli(["baselines", "list"], Path(f"{broken}{os.pathsep}{plugin_path}"), tmp_path)
    assert listed.returncode == 0
    assert "darts " in listed.stdout and "entropy-darts" in listed.stdout
    assert "broken" in listed.stderr and "no_such_module_xyz" in listed.stderr
    assert len(listed.stderr.strip().splitlines()) == 1


ONE_FILE = '''
from lhdbench.methods import SearchMethod, register


@register
class LouderDarts(SearchMethod):
    name = "louder-darts"
    description = "DARTS with the architecture loss doubled (a one-file plugin of the tests)"
    defaults = {"scale": 2.0}

    def arch_loss(self, ctx, x, y):
        return self.hparams["scale"] * super().arch_loss(ctx, x, y)
'''


def test_the_docs_check_of_a_one_file_plugin_works(tmp_path):
    """docs/adding-a-baseline.md's 'Checking a new method', command by command, on a plugin file."""
    plugin = tmp_path / "louder.py"
    plugin.write_text(ONE_FILE)
    env = {k: v for k, v in os.environ.items() if k != "LHDBENCH_PLUGINS"}
    env.update(OMP_NUM_THREADS="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")

    def run(*args):
        return subprocess.run([LHDBENCH, *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=600)

    listed = run("baselines", "list", "--plugin", str(plugin))
    assert listed.returncode == 0 and "louder-darts" in listed.stdout and "(plugin file)" in listed.stdout
    searched = run("search", "--plugin", str(plugin), "--baseline", "louder-darts", "--dataset", "digits",
                   "--preset", "smoke", "--seed", "0", "--out", "one")
    assert searched.returncode == 0, searched.stderr
    assert json.loads((tmp_path / "one" / "record.json").read_text())["hparams"] == {"scale": 2.0}
    benched = run("benchmark", "--suite", "smoke", "--plugin", str(plugin), "--baselines", "louder-darts",
                  "--seeds", "0", "--policies", "base", "--executor", "serial", "--storage", "store")
    assert benched.returncode == 0, benched.stderr
    assert not run("search", "--baseline", "louder-darts", "--dataset", "digits", "--preset", "smoke",
                   "--seed", "0", "--out", "two").returncode == 0  # without the file it is unknown
