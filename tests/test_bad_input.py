"""Bad input to the commands: exit 2, one line on stderr, and nothing written (no store, no plan, no
record, no folder). Each case here was seen to break before: silently the wrong run, a traceback, or
an error only after plan.json was written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lhdbench.cli import main

LHDBENCH = str(Path(sys.executable).with_name("lhdbench"))
DEMO = ["benchmark", "--suite", "smoke", "--baselines", "random", "--seeds", "0", "--policies", "base",
        "--executor", "serial"]


def files_under(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")}


def run_main(argv: list[str], capsys) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own usage errors
        code = stop.code
    return code, capsys.readouterr().err.strip().splitlines()


def assert_refused(argv, tmp_path, capsys, message: str, keep: set[Path] = frozenset()) -> None:
    """The command exits 2 with one line containing `message`, and leaves tmp_path as it was."""
    before = files_under(tmp_path)
    code, lines = run_main(argv, capsys)
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert message in lines[0], lines
    assert files_under(tmp_path) == before | set(keep), files_under(tmp_path) - before


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default store is runs/SUITE under the working directory
    return tmp_path


@pytest.mark.parametrize(("seeds", "message"), [
    ("3-1", "runs backwards"), (",", "expected seeds"), ("0-", "expected seeds"), ("1,,2", "expected seeds"),
    ("-1", "expected seeds"), ("4294967296", "expected seeds"), ("0-4294967296", "expected seeds"),
    ("1,1", "listed twice"), ("0-2,2", "listed twice")])
def test_bad_seed_lists(here, capsys, seeds, message):
    argv = [*DEMO]
    argv[argv.index("--seeds") + 1] = seeds
    assert_refused(argv, here, capsys, message)


def test_the_largest_seed_is_accepted_and_plans(here, capsys):
    from lhdbench.cli import seed_list

    assert seed_list("4294967295") == [4294967295]
    assert seed_list("0-2,7") == [0, 1, 2, 7]


@pytest.mark.parametrize("seed", ["-1", "4294967296", "1.5", "x"])
@pytest.mark.parametrize("command", ["search", "evaluate"])
def test_single_trial_commands_take_the_same_seeds_as_benchmark(here, capsys, command, seed):
    argv = ([command, "--baseline", "random"] if command == "search" else [command, "arch.npz",
                                                                           "--policy", "base"])
    argv += ["--dataset", "digits", "--preset", "smoke", "--seed", seed, "--out", "out"]
    assert_refused(argv, here, capsys, "--seed")


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--cpus-per-trial", "nan", "positive number"), ("--cpus-per-trial", "0", "positive number"),
    ("--cpus-per-trial", "inf", "positive number"), ("--gpus-per-trial", "1.5", "(0, 1]"),
    ("--gpus-per-trial", "nan", "positive number"), ("--retries", "-1", "integer >= 0"),
    ("--gpu-memory", "-4", "positive number"),
    ("--device", "bogus", "unknown device"), ("--device", "cuda", "no CUDA GPU")])
def test_bad_run_options_are_refused_before_the_plan_is_written(here, capsys, option, value, message):
    import torch

    if value == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_refused([*DEMO, option, value], here, capsys, message)


def test_a_device_other_than_cpu_is_refused_with_ray(here, capsys):
    argv = [a for a in DEMO if a not in ("--executor", "serial")] + ["--device", "cuda:1"]
    assert_refused(argv, here, capsys, "--device takes only cpu")


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "with space", ""])
def test_a_suite_name_cannot_leave_the_runs_folder(here, capsys, name):
    suite = here / "suite.yaml"
    suite.write_text(f"name: {name!r}\npreset: smoke\nbaselines: [random]\ndatasets: [digits]\n"
                     "policies: [base]\nseeds: [0]\n")
    assert_refused(["benchmark", "--suite", str(suite), "--executor", "serial"], here, capsys,
                   "suite name")


def test_a_duplicate_key_in_a_suite_is_refused(here, capsys):
    suite = here / "suite.yaml"
    suite.write_text("name: twice\npreset: smoke\nbaselines: [random]\ndatasets: [digits]\n"
                     "policies: [base]\nseeds: [0]\nseeds: [1]\n")
    assert_refused(["benchmark", "--suite", str(suite), "--executor", "serial"], here, capsys,
                   "the key 'seeds' appears twice (first at line 6)")


def test_a_duplicate_section_in_a_protocol_is_refused(here, capsys):
    protocol = here / "twice.yaml"
    protocol.write_text("search:\n  epochs: 2\nevaluate:\n  epochs: 2\nsearch:\n  epochs: 50\n")
    assert_refused([*DEMO, "--preset", str(protocol)], here, capsys, "the key 'search' appears twice")
    assert_refused(["search", "--baseline", "random", "--dataset", "digits", "--seed", "0", "--preset",
                    str(protocol), "--out", "o"], here, capsys, "appears twice")


def test_an_unknown_method_in_a_protocol_lists_the_known_ones(here, capsys):
    protocol = here / "typo.yaml"
    protocol.write_text("name: typo\nsearch:\n  epochs: 1\n  max_train_images: 64\n  steps_per_epoch: 1\n"
                        "  init_channels: 4\n  layers: 3\nevaluate:\n  epochs: 2\n  best_after_epoch: 0\n"
                        "methods:\n  pc-darts:\n    partial_channels: 2\n")
    assert_refused([*DEMO, "--preset", str(protocol)], here, capsys,
                   "methods.pc-darts: unknown search method (known: beta-darts, darts")
    assert_refused(["search", "--baseline", "darts", "--dataset", "digits", "--seed", "0", "--preset",
                    str(protocol), "--out", "o"], here, capsys, "methods.pc-darts: unknown search method")


def test_a_bad_method_override_names_its_key(here, capsys):
    protocol = here / "bad.yaml"
    protocol.write_text("name: bad\nmethods:\n  pcdarts:\n    partial_channels: 0\n")
    assert_refused([*DEMO, "--preset", str(protocol)], here, capsys,
                   "methods.pcdarts.partial_channels: expected a positive integer, got 0 (int)")


def test_a_storage_that_is_a_file_is_refused(here, capsys):
    (here / "store").write_text("not a folder")
    assert_refused([*DEMO, "--storage", "store"], here, capsys, "is a file, not a folder")
    (here / "parent").write_text("")
    assert_refused([*DEMO, "--storage", "parent/store"], here, capsys, "is a file, not a folder")


def cli(args, cwd, **env):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **env}
    return subprocess.run([LHDBENCH, *args], capture_output=True, text=True, env=environment, cwd=cwd,
                          timeout=300)


@pytest.mark.parametrize(("source", "message"), [
    ("raise RuntimeError('broken on import')\n", "failed to load: RuntimeError: broken on import"),
    ("from lhdbench.methods import SearchMethod, register\n\n@register\nclass Again(SearchMethod):\n"
     "    name = 'darts'\n    description = 'a second darts'\n", "defined twice"),
    ("x = 1\n", "registers no search method"),
])
def test_a_plugin_file_that_cannot_be_used_is_an_error(tmp_path, source, message):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(source)
    before = files_under(tmp_path)
    result = cli([*DEMO, "--plugin", str(plugin)], tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert files_under(tmp_path) - before <= {Path("__pycache__")} | {
        p for p in files_under(tmp_path) if p.parts[0] == "__pycache__"}
    missing = cli([*DEMO, "--plugin", str(tmp_path / "nope.py")], tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.parametrize("address", ["ray://127.0.0.1:10001", "http://127.0.0.1:8265"])
def test_a_ray_client_address_is_refused(here, capsys, address):
    argv = [a for a in DEMO if a not in ("--executor", "serial")] + ["--address", address]
    assert_refused(argv, here, capsys, "Ray Client addresses (ray://...) are not supported")


def test_a_storage_without_file_locks_is_refused_before_anything_is_written(here, capsys, monkeypatch):
    """Some NFS mounts and FUSE filesystems have no flock; without it two processes could run one
    trial at once, so the run is refused, naming the store, instead of recording 'killed?' later."""
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert_refused([*DEMO, "--storage", "s"], here, capsys, "on a filesystem without file locks")
