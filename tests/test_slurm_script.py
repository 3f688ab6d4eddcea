"""`lhdbench slurm` without Slurm: the sbatch options, the job script (`--print`), usage errors, the
job steps' bookkeeping and what `status` shows of a chain. Fast; test_slurm.py runs real jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lhdbench.cli import main
from lhdbench.slurm.chain import chain_summary, format_chains
from lhdbench.slurm.job import JobStepError, cpus_per_node
from lhdbench.slurm.options import DEFAULT_SIGNAL, SbatchOptionError, parse_sbatch, time_limit_seconds
from lhdbench.status import format_status, store_status

TINY = ["--suite", "smoke", "--baselines", "random", "--seeds", "0", "--policies", "base"]


def test_sbatch_options_become_one_line_each_with_the_default_warning_first():
    options = parse_sbatch('--partition gpu -N 2 --gpus-per-node=4 --constraint "a100 80gb" -t 1-00:00')
    assert options.lines == [f"--signal={DEFAULT_SIGNAL}", "--partition gpu", "-N 2", "--gpus-per-node=4",
                             '--constraint "a100 80gb"', "-t 1-00:00"]
    assert (options.warning_s, options.time_limit_s) == (900, 86400)
    own = parse_sbatch("--time=10 --signal=B:USR1@60")
    assert own.lines == ["--time=10", "--signal=B:USR1@60"] and own.warning_s == 60


@pytest.mark.parametrize("text, limit", [("90", 5400), ("1:30", 90), ("2:00:00", 7200), ("2-0", 172800),
                                         ("1-2:3", 93780), ("1-2:3:4", 93784), ("UNLIMITED", None)])
def test_slurm_time_formats(text, limit):
    assert time_limit_seconds(text) == limit


@pytest.mark.parametrize("text, message", [
    ("--array=0-3", "--array is not allowed"),
    ("-o out.txt", "--output is not allowed"),
    ("--dependency=afterok:1", "--dependency is not allowed"),
    ("gpu", "is not an option"),
    ("--signal=USR1@60", "must go to the batch shell"),
    ("--signal=B:INT@60", "must go to the batch shell"),
    ("--time=10", "is not shorter than the time limit"),
    ("--time=5:xx", "not a Slurm time"),
    ('--comment "a', "No closing quotation"),
])
def test_sbatch_options_lhdbench_cannot_honour_are_refused(text, message):
    with pytest.raises(SbatchOptionError, match=message):
        parse_sbatch(text)


def test_print_shows_the_script_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plugin = Path(__file__).resolve().parent / "plugins" / "slow_methods.py"
    store = tmp_path / "store"
    assert main(["slurm", *TINY, "--storage", "store", "--plugin", os.path.relpath(plugin), "--until-done",
                 "--max-jobs", "3", "--sbatch=--time=2:00:00 --partition=gpu", "--print"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#!/bin/bash\n#SBATCH --job-name=lhdbench-smoke\n")
    sbatch = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert sbatch[1:] == [f"#SBATCH --output={store}/slurm/%j.out", "#SBATCH --ntasks-per-node=1",
                          f"#SBATCH --signal={DEFAULT_SIGNAL}", "#SBATCH --time=2:00:00",
                          "#SBATCH --partition=gpu"]
    # The driver's command: the options given, paths absolute (the job may start elsewhere).
    driver = next(line for line in script.splitlines() if "-m lhdbench.cli benchmark" in line)
    assert (f"benchmark --suite smoke --baselines random --policies base --seeds 0 --plugin {plugin} "
            f"--storage {store} --address \"$address\"") in driver
    assert f"lhdbench slurm --suite smoke --baselines random --policies base --seeds 0 --plugin {plugin} " \
           f"--storage {store} --until-done --max-jobs 3 --sbatch '--time=2:00:00 --partition=gpu'" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra, message", [
    (["--max-jobs", "3"], "--max-jobs bounds the chain of --until-done"),
    (["--dry-run"], "--dry-run"),
    (["--address", "127.0.0.1:6379"], "--address"),
    (["--executor", "serial"], "--executor serial"),
    (["--sbatch=--array=1-2"], "--array is not allowed"),
    (["--baselines", "no-such-method"], "no-such-method"),
    (["--max-jobs", "0", "--until-done"], "expected an integer >= 1"),
])
def test_usage_errors_are_one_line_exit_2_and_write_nothing(tmp_path, extra, message):
    answer = subprocess.run([str(Path(sys.executable).with_name("lhdbench")), "slurm", *TINY, "--storage",
                             str(tmp_path / "store"), *extra], capture_output=True, text=True, cwd=tmp_path)
    lines = answer.stderr.strip().splitlines()
    assert answer.returncode == 2 and len(lines) == 1 and message in lines[0], answer.stderr
    assert list(tmp_path.iterdir()) == []


def test_no_slurm_here_is_one_line(tmp_path):
    answer = subprocess.run([str(Path(sys.executable).with_name("lhdbench")), "slurm", *TINY, "--storage",
                             str(tmp_path / "store")], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PATH": str(tmp_path)})
    assert answer.returncode == 2 and answer.stderr.count("\n") == 1 and "no Slurm here" in answer.stderr
    assert list(tmp_path.iterdir()) == []


def test_cpus_per_node_reads_slurms_compressed_form():
    assert cpus_per_node("72(x2),36", 3) == [72, 72, 36]
    assert cpus_per_node("4", 1) == [4]
    with pytest.raises(JobStepError):
        cpus_per_node("4(x2)", 3)


def test_a_job_on_a_node_that_does_not_see_the_store_ends_in_one_line_and_creates_nothing(tmp_path):
    missing = tmp_path / "not-shared" / "store"
    answer = subprocess.run([sys.executable, "-m", "lhdbench.slurm.job", "--storage", str(missing), "--chain",
                             "1", "begin", "--token", "abc"], capture_output=True, text=True,
                            env={**os.environ, "SLURM_JOB_ID": "7", "SLURMD_NODENAME": "n3"})
    assert answer.returncode == 1
    assert "node n3 does not see the store" in answer.stderr and answer.stderr.count("\n") == 1
    assert not (tmp_path / "not-shared").exists()


def test_status_shows_the_chain_without_slurm(tmp_path, monkeypatch):
    from lhdbench.store import Store

    store = Store(tmp_path)
    store.add_to_plan({"suite": "x"}, {})
    (tmp_path / "slurm.json").write_text(json.dumps({"chains": [{
        "chain": 1, "command": "lhdbench slurm --suite smoke", "until_done": True, "max_jobs": 3,
        "trials": ["a", "b"], "jobs": [
            {"job_id": "12", "dependency": None, "started_at": 1.0, "ended_at": 2.0, "done_at_start": 0,
             "done_at_end": 1, "outcome": "stopped on SIGUSR1", "nodes": "n1"},
            {"job_id": "13", "dependency": "afterany:12", "started_at": None}]}]}))
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue, no sacct: states unknown
    summary = store_status(tmp_path)
    jobs = summary["slurm"]["chains"][0]["jobs"]
    assert [(j["job_id"], j["state"], j["finished_trials"]) for j in jobs] == [
        ("12", None, 1), ("13", None, None)]
    text = format_status(summary)
    assert "Slurm chain 1 (--until-done, at most 3 jobs): lhdbench slurm --suite smoke" in text
    assert "job 12       ended       stopped on SIGUSR1; finished 1 trial(s); on n1" in text
    assert "waits for afterany:12" in text
    assert chain_summary(tmp_path / "nothing") is None and format_chains({"chains": []}) == []


@pytest.mark.slow
def test_a_ray_node_joins_labelled_a_missing_node_is_named_and_sigterm_leaves_nothing(tmp_path):
    """One Ray node as a job runs it (no Slurm needed): the head is labelled with its Slurm node name,
    the wait names the node that did not join, and SIGTERM ends every process of it and its folder."""
    from lhdbench.slurm.job import await_nodes

    job = f"t{os.getpid()}"
    store = tmp_path / "store"
    (store / "slurm").mkdir(parents=True)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "HOME": str(tmp_path),
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
           "LHDBENCH_HEAD_IP": "127.0.0.1", "SLURMD_NODENAME": "n1", "SLURM_JOB_ID": job}
    head = subprocess.Popen([sys.executable, "-m", "lhdbench.slurm.job", "--storage", str(store), "--chain",
                             "1", "ray-node", "head", "--cpus", "1", "--address-file",
                             str(tmp_path / "address")], env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "address").exists():
            assert head.poll() is None and time.monotonic() < deadline, (store / "slurm").iterdir()
            time.sleep(0.2)
        address = (tmp_path / "address").read_text().strip()
        assert address.startswith("127.0.0.1:")
        await_nodes(address, ["n1"], timeout=60)
        with pytest.raises(JobStepError, match=rf"^Ray on node\(s\) n7 did not join the head at {address} "
                                               r"within 2 s"):
            await_nodes(address, ["n1", "n7"], timeout=2)
        folders = [f"/tmp/{n}" for n in os.listdir("/tmp") if n.startswith(f"lhdb-slurm-{job}-")]
        assert len(folders) == 1
        head.send_signal(signal.SIGTERM)
        assert head.wait(timeout=60) == 0
        assert not os.path.exists(folders[0]) and not processes_naming(folders[0])
        assert "Ray head on n1: 1 CPU(s), 0 GPU(s)" in head.stdout.read()
    finally:
        if head.poll() is None:
            head.kill()


def processes_naming(text: str) -> list[str]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if text in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                found.append(entry)
        except OSError:
            continue
    return found
