"""Bad input and the checks before a run, second round: every one is one line on stderr, exit status 2,
nothing written, and the dry run refuses what the run refuses. Also what the newcomer found: "did you
mean", `--gpus 0`, the dry run's data warnings and its estimate of bigger networks, the report's default
folder, the banner's counts."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import pytest

from lhdbench.cli import main

DEMO = ["benchmark", "--suite", "smoke", "--baselines", "random", "--seeds", "0", "--policies", "base",
        "--executor", "serial"]


def files_under(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")}


def run_main(argv: list[str], capsys) -> tuple[int, list[str], str]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own usage errors
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


def assert_refused(argv, folder: Path, capsys, message: str) -> str:
    """Exit 2, one line containing `message`, `folder` as it was. Returns the line."""
    before = files_under(folder)
    code, lines, _ = run_main(argv, capsys)
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert message in lines[0], lines
    assert files_under(folder) == before, files_under(folder) - before
    return lines[0]


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default store is runs/SUITE under the working directory
    return tmp_path


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise socket.gaierror("no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def suite_file(folder: Path, transfer: str) -> str:
    path = folder / "transfer.yaml"
    path.write_text("name: t\npreset: smoke\nbaselines: [random]\ndatasets: [digits]\npolicies: [base]\n"
                    f"seeds: [0]\ntransfer: {transfer}\n")
    return str(path)


# -- suites: a transfer target counted once --------------------------------------------------------

@pytest.mark.parametrize(("transfer", "message"), [
    ("{digits: [digits16, digits16]}", "transfer digits -> digits16 is listed twice"),
    ("{digits: [digits]}", "a search is always evaluated on its own dataset"),
    ("{digits: [cifar-10]}", "did you mean cifar10?")])
def test_a_transfer_target_listed_twice_or_equal_to_its_source_is_refused(here, capsys, transfer, message):
    suite = suite_file(here, transfer)
    assert_refused(["benchmark", "--suite", suite, "--executor", "serial"], here, capsys, message)
    assert_refused(["benchmark", "--suite", suite, "--dry-run"], here, capsys, message)


# -- did you mean ----------------------------------------------------------------------------------

def test_names_fold_case_and_punctuation_before_they_are_compared():
    from lhdbench.names import closest

    methods = ["beta-darts", "darts", "darts-minus", "pcd-darts", "pcdarts", "gdas"]
    assert closest("DARTS", methods) == "darts"
    assert closest("pc-darts", methods) == "pcdarts" and closest("PCD_DARTS", methods) == "pcd-darts"
    assert closest("gdass", methods) == "gdas"
    assert closest("cifar-10", ["cifar10", "cifar100", "svhn"]) == "cifar10"
    assert closest("xyzzy", methods) is None
    assert closest("darts", methods) != "darts"  # a known name is never its own suggestion


@pytest.mark.parametrize(("option", "value", "suggestion"), [
    ("--baselines", "DARTS", "did you mean darts?"), ("--baselines", "pc-darts", "did you mean pcdarts?"),
    ("--datasets", "cifar-10", "did you mean cifar10?"), ("--policies", "1M", "did you mean 1m?"),
    ("--preset", "Smoke", "did you mean smoke?"), ("--suite", "lhd_extended", "did you mean lhd-extended?")])
def test_an_unknown_name_suggests_the_known_one_it_is_closest_to(here, capsys, option, value, suggestion):
    argv = [*DEMO]
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    assert_refused(argv, here, capsys, suggestion)


def test_single_trial_commands_suggest_too(here, capsys):
    assert_refused(["search", "--baseline", "PC-DARTS", "--dataset", "digits", "--seed", "0", "--preset",
                    "smoke", "--out", "o"], here, capsys, "did you mean pcdarts?")
    assert_refused(["search", "--baseline", "darts", "--dataset", "cifar-10", "--seed", "0", "--out", "o"],
                   here, capsys, "did you mean cifar10?")
    assert_refused(["evaluate", "a.npz", "--policy", "4OUT", "--dataset", "digits", "--seed", "0",
                    "--out", "o"], here, capsys, "did you mean 4out?")


# -- every method setting is checked at planning ---------------------------------------------------

@pytest.mark.parametrize(("baseline", "section", "message"), [
    ("pcd-darts", "{pcd-darts: {cycle_epochs: 3}}",
     "methods.pcd-darts.cycle_epochs: expected an even number"),
    ("gdas", "{gdas: {tau_min: 5.0, tau_max: 1.0}}", "need tau_min <= tau_max"),
    ("pcdarts", "{pcdarts: {partial_channels: 3}}",
     "does not divide the supernet's width (init_channels 4)")])
def test_a_setting_checked_across_keys_is_refused_before_anything_is_written(here, capsys, baseline,
                                                                            section, message):
    """Each of these checks lived in the method's constructor (or its edges'), so planning passed,
    the store was written, and every attempt of the trial failed."""
    protocol = Path(__file__).resolve().parents[1] / "conditions" / "protocols" / "smoke.yaml"
    (here / "p.yaml").write_text(protocol.read_text() + f"\nmethods: {section}\n")
    argv = [*DEMO, "--preset", str(here / "p.yaml")]
    argv[argv.index("--baselines") + 1] = baseline
    assert_refused(argv, here, capsys, message)
    assert_refused([*argv, "--dry-run"], here, capsys, message)
    assert_refused(["search", "--baseline", baseline, "--dataset", "digits", "--seed", "0", "--preset",
                    str(here / "p.yaml"), "--out", "o"], here, capsys, message)


def test_the_defaults_of_every_method_pass_its_own_checks():
    from lhdbench.methods import get_method, method_names, resolve_settings
    from lhdbench.protocol import load_protocol

    for preset in ("paper", "smoke", "demo"):
        for name in method_names():
            resolve_settings(get_method(name), load_protocol(preset))  # raises if a check fails


# -- GPU options where they would be ignored or cannot be met --------------------------------------

@pytest.mark.parametrize(("extra", "message"), [
    (["--gpus-per-trial", "0.5"], "--gpus-per-trial sizes the GPU shares of Ray trials"),
    (["--gpu-memory", "80"], "--gpu-memory sizes the GPU shares of Ray trials")])
def test_gpu_shares_with_the_serial_executor_are_refused(here, capsys, extra, message):
    assert_refused([*DEMO, *extra], here, capsys, message)


def test_gpu_shares_with_device_cpu_or_without_a_gpu_are_refused_before_ray_starts(here, capsys,
                                                                                  monkeypatch):
    import torch

    ray = [a for a in DEMO if a not in ("--executor", "serial")]
    assert_refused([*ray, "--device", "cpu", "--gpu-memory", "80"], here, capsys,
                   "--gpu-memory asks for GPU shares and --device cpu for none")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    began = time.monotonic()
    assert_refused([*ray, "--gpus-per-trial", "0.25"], here, capsys, "this machine has no GPU")
    assert time.monotonic() - began < 20
    import sys

    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_gpus_zero_and_gpus_without_a_dry_run_are_usage_errors(here, capsys):
    assert_refused([*DEMO, "--dry-run", "--gpus", "0"], here, capsys, "expected an integer >= 1")
    assert_refused([*DEMO, "--gpus", "2"], here, capsys, "--gpus N sizes the wall time of --dry-run only")


# -- the dry run refuses what the run refuses ------------------------------------------------------

@pytest.mark.parametrize("spoil", ["plan", "file"])
def test_the_dry_run_refuses_a_store_the_run_refuses_with_the_same_line(here, capsys, spoil):
    if spoil == "plan":
        (here / "store").mkdir()
        (here / "store" / "plan.json").write_text("{")
    else:
        (here / "store").write_text("not a folder")
    argv = [*DEMO, "--storage", "store"]
    line = assert_refused(argv, here, capsys, "plan.json" if spoil == "plan" else "is a file, not a folder")
    assert assert_refused([*argv, "--dry-run"], here, capsys, "") == line


def test_the_dry_run_warns_of_each_missing_dataset_and_still_prints_the_plan(here, capsys, no_network):
    data = here / "data"
    code, lines, out = run_main(["benchmark", "--suite", "lhd", "--baselines", "random", "--seeds", "0",
                                 "--datasets", "cifar10,svhn", "--data-root", str(data), "--storage",
                                 str(here / "store"), "--dry-run"], capsys)
    assert code == 0, lines
    assert len(lines) == 2, lines
    assert lines[0].startswith("lhdbench: warning: cifar10 is not available") and str(data) in lines[0]
    assert lines[1].startswith("lhdbench: warning: svhn")
    assert "plan: 2 searches, 0 selections and 8 evaluations" in out
    assert files_under(here) == set()


def test_every_dataset_is_looked_for_on_disk_before_any_download_host(tmp_path, monkeypatch):
    """cifar10 is missing, svhn is on disk: svhn's files are looked at before the network is tried."""
    import lhdbench.data.preflight as preflight
    from lhdbench.data.testing import write_torchvision_files
    from lhdbench.plan import load_suite, make_plan
    from lhdbench.preflight import missing_datasets

    pytest.importorskip("scipy")
    write_torchvision_files("svhn", tmp_path, train=20, test=10)
    seen = []
    real_is_file = preflight.is_file
    monkeypatch.setattr(preflight, "is_file", lambda path: seen.append(path.name) or real_is_file(path))

    def network(*args, **kwargs):
        seen.append("NETWORK")
        raise socket.gaierror("no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", network)
    monkeypatch.setattr(socket, "create_connection", network)
    plan = make_plan(load_suite("lhd").narrow(baselines=["random"], seeds=[0], datasets=["cifar10", "svhn"]))
    problems = missing_datasets(plan, str(tmp_path))
    assert len(problems) == 1 and problems[0].startswith("cifar10")
    assert "NETWORK" in seen and "train_32x32.mat" in seen
    assert seen.index("train_32x32.mat") < seen.index("NETWORK")


# -- the dry run's estimate of bigger networks -----------------------------------------------------

def test_unmeasured_policies_are_timed_by_the_size_of_their_networks():
    """At paper scale only base's training step is measured; 1m's network (>= 1.5M parameters, 25
    cells) is over twice base's, and its evaluations are estimated that much longer."""
    from lhdbench.estimate import dry_run, estimate, network_params, params_ratio
    from lhdbench.plan import load_suite, make_plan

    plan = make_plan(load_suite("lhd").narrow(baselines=["random"], seeds=[0], datasets=["cifar10"]))
    costs = {c.trial.policy: c for c in estimate(plan).costs if c.trial.phase == "evaluate"}
    assert costs["base"].basis == "measured" and costs["base"].scale is None
    assert network_params("1m", 10, None, None) >= 1_500_000 > network_params("base", 10, None, None)
    ratio = params_ratio("1m", "cifar10", plan.protocol.evaluate)
    assert ratio > 2 and costs["1m"].scale == pytest.approx(ratio)
    assert costs["1m"].seconds == pytest.approx(costs["base"].seconds * ratio)
    assert 1 < costs["3ops"].scale < costs["4out"].scale < ratio
    lines = dry_run(plan, set(), set(), 1, "gpu")
    assert any("1m x2." in line and "parameters" in line for line in lines), lines

    # Where the protocol fixes the network's size (smoke), 1m's network is base's size.
    smoke = make_plan(load_suite("smoke").narrow(baselines=["random"], seeds=[0]))
    assert params_ratio("1m", "digits", smoke.protocol.evaluate) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("preset", ["paper", "fast"])
def test_the_gpu_sized_presets_are_refused_on_a_cpu_whatever_the_slice(tmp_path, capsys, monkeypatch, preset):
    """README: paper and fast are refused without a GPU unless --allow-cpu; both have trials far
    above the one GPU-hour the check draws the line at, even for one search and one evaluation."""
    import torch

    from lhdbench.data.testing import write_torchvision_files
    from lhdbench.estimate import estimate
    from lhdbench.plan import load_suite, make_plan
    from lhdbench.preflight import GPU_SIZED_SECONDS

    plan = make_plan(load_suite("lhd").narrow(baselines=["random"], seeds=[0], datasets=["cifar10"],
                                              policies=["base"], preset=preset))
    assert max(c.seconds for c in estimate(plan).costs) > 2 * GPU_SIZED_SECONDS
    write_torchvision_files("cifar10", tmp_path / "data", train=20, test=10)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["benchmark", "--suite", "lhd", "--preset", preset, "--baselines", "random", "--datasets",
            "cifar10", "--policies", "base", "--seeds", "0", "--storage", str(tmp_path / "s"),
            "--data-root", str(tmp_path / "data"), "--executor", "serial"]
    assert_refused(argv, tmp_path, capsys, "--allow-cpu")


# -- tracking servers that do not answer -----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_mlflow_server_is_one_line_within_seconds(here, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:secret@127.0.0.1:{free_port()}")
    ray = [a for a in DEMO if a not in ("--executor", "serial")]
    began = time.monotonic()
    line = assert_refused([*ray, "--log-to", "mlflow"], here, capsys, "the tracking server at http://127.0.0.1")
    assert time.monotonic() - began < 20 and "secret" not in line


def test_tracking_servers_are_checked_by_whether_they_answer_at_all():
    from lhdbench.runner.tracking import tracking_problem

    class Quiet(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server hook
            self.send_response(404)  # any answer means a server is there
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts connections, never answers
    try:
        answering = f"http://127.0.0.1:{server.server_address[1]}"
        assert tracking_problem("mlflow", {"MLFLOW_TRACKING_URI": answering}) is None
        assert tracking_problem("wandb", {"WANDB_BASE_URL": answering}) is None
        quiet = f"http://127.0.0.1:{silent.getsockname()[1]}"
        problem = tracking_problem("mlflow", {"MLFLOW_TRACKING_URI": quiet}, timeout=0.5)
        assert problem and "does not answer" in problem
        assert "WANDB_MODE=offline" in tracking_problem("wandb", {"WANDB_BASE_URL": quiet}, timeout=0.5)
    finally:
        server.shutdown()
        silent.close()
    # Local stores and offline modes reach no server.
    assert tracking_problem("mlflow", {"MLFLOW_TRACKING_URI": "file:///tmp/mlruns"}) is None
    assert tracking_problem("mlflow", {}) is None
    assert tracking_problem("wandb", {"WANDB_MODE": "offline", "WANDB_BASE_URL": quiet}) is None


# -- what the run and the report say ---------------------------------------------------------------

def test_the_banner_counts_searches_selections_and_evaluations(here, capsys, monkeypatch):
    import lhdbench.runner

    def announce_and_stop(plan, storage, options, announce=None, **kwargs):
        announce()
        raise KeyboardInterrupt

    monkeypatch.setattr(lhdbench.runner, "run_plan", announce_and_stop)
    argv = [*DEMO, "--selections", "magnitude,perturbation"]
    del argv[argv.index("--policies"):argv.index("--policies") + 2]  # all four policies
    code, lines, _ = run_main(argv, capsys)
    assert code == 130
    assert "1 searches, 3 selections and 8 evaluations" in lines[0], lines


def test_the_report_goes_beside_the_store_by_default_and_counts_its_files(here, capsys):
    assert main([*DEMO, "--storage", "runs/small"]) == 0
    capsys.readouterr()
    code, lines, _ = run_main(["report", "--storage", "runs/small", "--formats", "md"], capsys)
    assert code == 0, lines
    assert (here / "runs" / "small-report" / "leaderboard.md").is_file()
    assert lines[-1].endswith("; 1 file under runs/small-report"), lines
    code, lines, _ = run_main(["report", "--storage", "runs/small", "--formats", "md,csv"], capsys)
    assert code == 0 and " files under runs/small-report" in lines[-1], lines
