"""What `lhdbench benchmark` says before it runs anything: the dry run of the paper's suite, and the
pre-flight refusals (datasets missing, a GPU-sized protocol on a CPU machine): exit 2, one line, within
seconds, nothing written. Also that the CLI answers --help and --version without loading PyTorch or Ray."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time

import pytest

from lhdbench.cli import main


@pytest.fixture
def no_network(monkeypatch):
    """Downloads impossible, as on a machine offline: the dataset check must not find a way out."""
    def refuse(*args, **kwargs):
        raise socket.gaierror("no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_dry_run_of_the_lhd_suite_counts_the_paper_trials_and_writes_nothing(tmp_path, capsys):
    storage = tmp_path / "store"
    assert main(["benchmark", "--suite", "lhd", "--storage", str(storage), "--dry-run", "--gpus", "8"]) == 0
    out = capsys.readouterr().out
    assert not storage.exists() and list(tmp_path.iterdir()) == []
    plan = next(line for line in out.splitlines() if line.startswith("plan:"))
    assert "180 searches, 0 selections and 720 evaluations" in plan and "900 to run" in plan, plan
    assert "GPU-hours of what is to run" in out
    total = next(line for line in out.splitlines() if line.startswith("total:"))
    hours = re.search(r"([\d,]+) h of GPU time; on 8 GPUs", total)
    assert hours and int(hours.group(1).replace(",", "")) > 1000, total


def test_dry_run_counts_what_the_store_already_holds(tmp_path, capsys):
    storage = tmp_path / "store"
    assert main(["benchmark", "--suite", "smoke", "--baselines", "darts", "--seeds", "0",
                 "--executor", "serial", "--storage", str(storage)]) == 0
    capsys.readouterr()
    before = sorted(p.relative_to(storage) for p in storage.rglob("*"))
    assert main(["benchmark", "--suite", "smoke", "--baselines", "darts,gdas", "--seeds", "0",
                 "--storage", str(storage), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.relative_to(storage) for p in storage.rglob("*")) == before
    assert "2 searches, 0 selections and 8 evaluations; the store holds 5 of them done" in out, out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ")}
    assert rows["darts"][1:4] == ["-", "-", "-"], out  # nothing of darts left to run
    assert rows["gdas"][1] == "1:" and "4:" in rows["gdas"], out


def test_lhd_without_its_datasets_is_refused_in_one_line_before_anything_is_written(
        tmp_path, capsys, no_network):
    storage, data = tmp_path / "store", tmp_path / "data"
    began = time.monotonic()
    assert main(["benchmark", "--suite", "lhd", "--storage", str(storage), "--data-root", str(data)]) == 2
    assert time.monotonic() - began < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "cifar10" in err[0] and str(data) in err[0]
    assert list(tmp_path.iterdir()) == []


def test_a_gpu_sized_protocol_is_refused_on_a_cpu_machine_unless_asked_for(tmp_path, capsys, monkeypatch):
    """The paper protocol on CIFAR-10 (files present, so the dataset check passes) on a machine without
    a GPU: refused before anything is written."""
    import torch

    from lhdbench.data.testing import write_torchvision_files

    write_torchvision_files("cifar10", tmp_path / "data", train=20, test=10)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    storage = tmp_path / "store"
    assert main(["benchmark", "--suite", "lhd", "--baselines", "random", "--datasets", "cifar10",
                 "--seeds", "0", "--storage", str(storage), "--data-root", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allow-cpu" in err[0] and "paper" in err[0], err
    assert not storage.exists()


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["benchmark", "--help"], ["report", "--help"],
                                  ["arch", "draw", "--help"]])
def test_help_and_version_load_neither_torch_nor_ray(argv):
    code = ("import sys\nfrom lhdbench.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
            "    pass\nprint('LOADED', sorted(m for m in ('torch', 'ray', 'torchvision', 'pandas') "
            "if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "LOADED []", run.stdout[-500:]


def test_an_auxiliary_head_on_images_too_small_for_it_is_refused_before_anything_runs(tmp_path, capsys):
    storage = tmp_path / "store"
    assert main(["benchmark", "--suite", "smoke", "--datasets", "digits16", "--baselines", "random",
                 "--seeds", "0", "--storage", str(storage), "--executor", "serial"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "digits16 (16x16)" in err[0] and "auxiliary_weight: 0" in err[0], err
    assert not storage.exists()


@pytest.mark.parametrize("image_size", [16, 20, 24, 28, 32, 36, 40])
def test_the_auxiliary_head_check_agrees_with_the_network(image_size):
    """auxiliary_head_fits(size) exactly when the final network's auxiliary head runs on that size."""
    import numpy as np
    import torch

    from lhdbench.space import POLICIES, ArchWeights, FinalNetwork, discretize
    from lhdbench.space.layout import auxiliary_head_fits

    rng = np.random.default_rng(0)
    weights = ArchWeights.from_logits(*(rng.normal(size=s) for s in ((20, 7), (20, 7), (2, 5), (2, 5))))
    torch.manual_seed(0)
    model = FinalNetwork(discretize(weights, POLICIES["base"]), 10, channels=4, layers=3,
                         auxiliary=True).train()
    try:
        model(torch.randn(2, 3, image_size, image_size))
        runs = True
    except RuntimeError:
        runs = False
    assert auxiliary_head_fits(image_size) == runs
