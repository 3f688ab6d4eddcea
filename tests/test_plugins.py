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
