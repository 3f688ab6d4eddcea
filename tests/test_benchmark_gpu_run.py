"""benchmarks/gpu.sh (its runner, benchmarks/gpu_run.py) runs on a GPU machine once per lease, with no
chance to debug it there, so its behaviour is pinned here on the CPU: a step killed at its limit leaves
the rest running and keeps what it wrote (and nothing it started lives on); a failing step does not
stop the run; a budget too short for the steps still ends with summary.json naming what is missing;
results reach $OUT after every step; a failing summary is replaced by one that says so; the header's
time plan is the runner's; lhdbench goes on PYTHONPATH where `pip install -e .` fails; the driver's
memory figure is read for this process. Steps are stand-ins (small Python programs) in the fast tests;
the slow ones run the script itself: the whole rehearsal, a real run on this CPU machine (it must stop
within a minute), a budget too short for the steps, and a run stopped from outside."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gpu_run = load(ROOT / "benchmarks" / "gpu_run.py", "gpu_run_under_test")

# A stand-in step: writes its JSON (with what $OUT held when it started) and then behaves as told.
STEP = """
import json, os, subprocess, sys, time
mode, out = sys.argv[1], sys.argv[sys.argv.index('--out') + 1]
where = os.environ.get('OUT', '')
seen = sorted(os.listdir(where)) if os.path.isdir(where) else []
def write(status, **more):
    json.dump({'status': status, 'seen_in_out': seen, **more}, open(out, 'w'))
write('running')
if mode == 'ok':
    write('done')
elif mode == 'fail':
    sys.exit(1)
elif mode == 'hang':
    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
    write('running', child=child.pid)
    time.sleep(120)
"""
SUMMARY = ("import json, sys\n"
           "json.dump({'from': 'stand-in summary'}, open(sys.argv[sys.argv.index('--out') + 1], 'w'))")


def step(name: str, mode: str, limit: int = 20):
    return gpu_run.Step(name, limit, ("-c", STEP, mode), f"gpu-{name}.json")


def make_run(tmp_path, monkeypatch, budget=120.0, summary=None, min_step_s=1.0):
    out = tmp_path / "out"
    monkeypatch.setenv("OUT", str(out))
    summary = summary or gpu_run.Step("summary", 10, ("-c", SUMMARY), "summary.json")
    return gpu_run.Run(tmp_path / "results", out, budget, rehearse=True, summary=summary,
                       min_step_s=min_step_s)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_step_killed_at_its_limit_leaves_the_rest_running_and_keeps_what_it_wrote(tmp_path, monkeypatch):
    run = make_run(tmp_path, monkeypatch)
    run.steps((step("first", "ok"), step("stuck", "hang", limit=4), step("broken", "fail"),
               step("last", "ok")))
    run.summary()
    statuses = {s["name"]: s["status"] for s in run.record["steps"]}
    assert statuses == {"first": "done", "stuck": "killed", "broken": "failed", "last": "done",
                        "summary": "done"}
    stuck = next(s for s in run.record["steps"] if s["name"] == "stuck")
    assert stuck["seconds"] < 4 + gpu_run.KILL_GRACE_S + 2
    kept = json.loads((tmp_path / "results" / "gpu-stuck.json").read_text())
    assert kept["status"] == "running"  # what it wrote before it was killed
    deadline = time.monotonic() + 5
    while alive(kept["child"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(kept["child"]), "a process the killed step started lives on"
    # Copied after every step: the last step found the earlier ones' files in $OUT when it started.
    last = json.loads((tmp_path / "results" / "gpu-last.json").read_text())
    earlier = {"gpu-first.json", "gpu-stuck.json", "gpu-broken.json", "gpu-steps.json"}
    assert earlier <= set(last["seen_in_out"])
    out = tmp_path / "out"
    assert json.loads((out / "summary.json").read_text()) == {"from": "stand-in summary"}
    assert [s["name"] for s in json.loads((out / "gpu-steps.json").read_text())["steps"]][-1] == "summary"


def test_a_budget_too_short_for_the_steps_still_ends_with_a_summary_naming_what_is_missing(tmp_path,
                                                                                          monkeypatch):
    summary = gpu_run.SUMMARY  # the real one: it reads what the steps left
    run = make_run(tmp_path, monkeypatch, budget=summary.limit_s + 3, summary=summary)
    run.steps((gpu_run.Step("train-step", 30, ("-c", STEP, "hang"), "gpu-train-step.json"),
               gpu_run.Step("packing", 30, ("-c", STEP, "ok"), "gpu-packing.json"),
               gpu_run.Step("methods", 30, ("-c", STEP, "ok"), "gpu-methods.json")))
    steps_done = run.elapsed()
    run.summary()
    assert [s["status"] for s in run.record["steps"]] == ["killed", "skipped", "skipped", "done"]
    assert steps_done <= 3 + gpu_run.KILL_GRACE_S + 1  # the summary's time was held back
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    missing = "\n".join(written["missing"])
    for name, status in (("gpu-train-step.json", "killed"), ("gpu-packing.json", "skipped"),
                         ("gpu-methods.json", "skipped"), ("gpu-streams.json", "not run")):
        assert name in missing and status in missing, missing
    assert written["train_step_speedup"] is None and written["steps"]["packing"]["status"] == "skipped"


def test_a_failing_summary_is_replaced_by_one_that_says_what_is_missing(tmp_path, monkeypatch):
    broken = gpu_run.Step("summary", 10, ("-c", "import sys; sys.exit(2)"), "summary.json")
    run = make_run(tmp_path, monkeypatch, summary=broken)
    run.steps((step("first", "ok"), step("broken", "fail")))
    run.summary()
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["device"] is None and written["rehearsal"] is True
    assert "summary.py failed" in written["missing"][0] and "broken (failed)" in written["missing"]


def test_the_time_plan_in_the_header_is_the_runners(tmp_path):
    """Every step's limit in gpu.sh's header is the one gpu_run.py applies, in the same order, and the
    limits with the set-up add up to the stated total, within the default budget."""
    rows = re.findall(r"^#   (\S+)\s+(\d+)\s", SCRIPT.read_text(), flags=re.MULTILINE)
    plan = [(name, int(limit)) for name, limit in rows if name != "step"]
    steps = (*gpu_run.STEPS, gpu_run.SUMMARY)
    expected = [("set-up", gpu_run.SETUP_S)] + [(s.name, s.limit_s) for s in steps]
    assert plan == expected
    total = int(re.search(r"^#\s+(\d+)\s+of the default budget of (\d+) s", SCRIPT.read_text(),
                          flags=re.MULTILINE).group(1))
    assert total == sum(limit for _, limit in expected) <= gpu_run.BUDGET_S == 480


def test_lhdbench_goes_on_pythonpath_when_pip_install_fails(tmp_path, monkeypatch):
    """A checkout that is not installed, with a Python whose pip fails (site-packages not writable):
    the runner puts a folder shaped like the installed package on PYTHONPATH, and the steps import
    lhdbench, its baselines and presets from this checkout."""
    checkout = tmp_path / "checkout"
    for name in ("lhdbench", "baselines", "conditions", "benchmarks"):
        shutil.copytree(ROOT / name, checkout / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nif [ \"$1\" = -m ] && [ \"$2\" = pip ]; then\n"
                      f"  echo 'ERROR: site-packages is not writable' >&2; exit 1\nfi\n"
                      f"exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    copy = load(checkout / "benchmarks" / "gpu_run.py", "gpu_run_in_a_copy")
    monkeypatch.setattr(copy.tempfile, "tempdir", str(tmp_path))  # where the folder on PYTHONPATH goes
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = copy.Run(tmp_path / "results", None, 100, rehearse=True, python=str(python), env=env)
    assert not run.importable()  # lhdbench imports, but from another checkout
    run.make_importable()
    assert run.record["setup"]["pip_install"].startswith("failed")
    assert run.env["PYTHONPATH"].split(os.pathsep)[0] == run.record["setup"]["pythonpath"]
    done = subprocess.run([str(python), "-c", "import lhdbench, lhdbench.baselines, lhdbench.conditions\n"
                           "from lhdbench.protocol import load_protocol\nload_protocol('paper')\n"
                           "print(lhdbench.__file__)"], env=run.env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve().is_relative_to(checkout)


def test_the_drivers_figure_is_read_for_this_process(monkeypatch):
    gpu_memory = load(ROOT / "benchmarks" / "gpu_memory.py", "gpu_memory_under_test")
    listing = f"123, 9000\n{os.getpid()}, 1500\n"

    def smi(argv, **kwargs):
        assert argv[0] == "nvidia-smi"
        return subprocess.CompletedProcess(argv, 0, stdout=listing, stderr="")

    monkeypatch.setattr(gpu_memory.subprocess, "run", smi)
    assert gpu_memory.driver_process_bytes() == 1500 * 2**20
    listing = "123, 9000\n"  # a container whose process ids the driver does not see
    assert gpu_memory.driver_process_bytes() is None


# ---------------------------------------------------------------------------------- the script itself


def script(tmp_path, *args, timeout=600, **popen):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(SCRIPT), *args, "--results", str(tmp_path / "results")], env=env,
                          capture_output=True, text=True, timeout=timeout, **popen)


@pytest.mark.slow
def test_the_rehearsal_runs_every_step_and_returns_every_file(tmp_path):
    done = script(tmp_path, "--rehearse")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    record = json.loads((out / "gpu-steps.json").read_text())
    assert [s["name"] for s in record["steps"]] == [s.name for s in (*gpu_run.STEPS, gpu_run.SUMMARY)]
    assert {s["status"] for s in record["steps"]} == {"done"}
    for s in gpu_run.STEPS:
        written = json.loads((out / s.writes).read_text())
        assert written["status"] == "done" and written["rehearsal"] is True, s.name
        assert written["errors"] == {}, (s.name, written["errors"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rehearsal"] is True and summary["missing"] == [], summary["missing"]
    for key in ("train_step_speedup", "compiled_step_speedup", "packed_throughput_gain",
                "streams_over_processes", "search_step_speedup", "suite_gpu_hours"):
        assert summary[key] is not None and summary[key] > 0, key
    assert summary["methods_measured"] >= 10 and summary["gpu_tests"]["failed"] == []
    assert (out / "gpu-log.txt").read_text().count("done after") == len(gpu_run.STEPS) + 1


@pytest.mark.slow
def test_a_real_run_without_a_gpu_stops_within_a_minute_with_one_line(tmp_path):
    began = time.monotonic()
    done = script(tmp_path, timeout=120)
    assert time.monotonic() - began < 60
    assert done.returncode == 3
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1 and "no CUDA GPU" in errors[0] and "--rehearse" in errors[0], done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["missing"][0].startswith("everything: no CUDA GPU")
    assert json.loads((tmp_path / "out" / "gpu-steps.json").read_text())["steps"][0]["name"] == "summary"


@pytest.mark.slow
def test_the_script_under_a_budget_too_short_for_its_steps(tmp_path):
    began = time.monotonic()
    done = script(tmp_path, "--rehearse", "--budget", "30")
    assert time.monotonic() - began < 30 + 15
    assert done.returncode == 1, done.stdout[-2000:]
    record = json.loads((tmp_path / "out" / "gpu-steps.json").read_text())
    skipped = [s["name"] for s in record["steps"] if s["status"] == "skipped"]
    assert "methods" in skipped and record["steps"][-1] == {**record["steps"][-1], "name": "summary",
                                                             "status": "done"}
    missing = "\n".join(json.loads((tmp_path / "out" / "summary.json").read_text())["missing"])
    assert "gpu-methods.json (absent; step methods: skipped)" in missing


@pytest.mark.slow
def test_a_run_stopped_from_outside_keeps_what_it_wrote_and_a_summary(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(["bash", str(SCRIPT), "--rehearse", "--results", str(tmp_path / "results")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    steps = tmp_path / "out" / "gpu-steps.json"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if steps.exists() and json.loads(steps.read_text())["steps"]:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output[-2000:]
    out = tmp_path / "out"
    assert json.loads((out / "gpu-tests.json").read_text())["status"] == "done"
    summary = json.loads((out / "summary.json").read_text())
    assert "interrupted" in summary["missing"][0] + json.dumps(summary["missing"])
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # nothing of the run is left
