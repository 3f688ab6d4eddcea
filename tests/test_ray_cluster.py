"""Ray the way its users run it: a private instance that is really private and dies with its driver,
and a token-authenticated cluster (Ray >= 2.59) started with `ray start --head`, joined by address.
Everything on 127.0.0.1. Slow: each test starts Ray."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
LHDBENCH = str(BIN / "lhdbench")
PLUGIN = Path(__file__).resolve().parent / "plugins" / "faulty_methods.py"
TINY = ["benchmark", "--suite", "smoke", "--baselines", "random", "--seeds", "0", "--policies", "base"]


def base_env(home: Path) -> dict[str, str]:
    """No Ray settings from the caller's environment; a HOME of the test's own (Ray keeps tokens there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "HOME": str(home), "OMP_NUM_THREADS": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def processes_using(folder: str) -> list[int]:
    """Processes whose command line names `folder` or that hold a file open under it."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if folder in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry))
                continue
            if any(os.readlink(f"/proc/{entry}/fd/{fd}").startswith(folder)
                   for fd in os.listdir(f"/proc/{entry}/fd")):
                found.append(int(entry))
        except OSError:
            continue
    return found


def kill_all(folder: str) -> None:
    for _ in range(20):
        pids = [p for p in processes_using(folder) if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Head:
    """A one-node cluster from `ray start --head`, stopped by killing exactly its processes (`ray stop`
    would kill every Ray process on the machine)."""

    def __init__(self, home: Path, token: str | None) -> None:
        self.folder = tempfile.mkdtemp(prefix="lhdb-head-", dir="/tmp")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        env = base_env(home)
        if token is not None:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        else:
            env.update(RAY_AUTH_MODE="disabled")
        started = subprocess.run(
            [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
             f"--temp-dir={self.folder}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
             "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stderr[-2000:]

    def stop(self) -> None:
        kill_all(self.folder)
        marker = Path("/tmp/ray/ray_current_cluster")  # written by `ray start`, removed by `ray stop`
        if marker.exists() and self.address in marker.read_text():
            marker.unlink()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def home(tmp_path) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


def test_a_token_cluster_is_refused_in_one_line_without_the_token_and_joined_with_it(tmp_path, home):
    token = secrets.token_hex(32)
    head = Head(home, token)
    try:
        for env, message in [({}, "requires token authentication: set RAY_AUTH_MODE=token"),
                             ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)},
                              "rejected this driver's token")]:
            began = time.monotonic()
            result = subprocess.run([LHDBENCH, *TINY, "--address", head.address, "--storage", "s"],
                                    env={**base_env(home), **env}, cwd=tmp_path, capture_output=True,
                                    text=True, timeout=120)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
            assert time.monotonic() - began < 30  # Ray's own retries took 20-40 s
            assert not (tmp_path / "s").exists()

        joined = subprocess.run([LHDBENCH, *TINY, "--address", head.address, "--storage", "s"],
                                env={**base_env(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token},
                                cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert joined.returncode == 0, joined.stderr[-3000:]
        status = json.loads(subprocess.run([LHDBENCH, "status", "--storage", "s", "--json"], cwd=tmp_path,
                                           env=base_env(home), capture_output=True, text=True).stdout)
        assert (status["planned"], status["done"]) == (2, 2)
        assert not (home / ".ray").exists()  # the token came from the environment, nothing was written
    finally:
        head.stop()


def test_an_address_nobody_listens_on_is_one_line_within_seconds(tmp_path, home):
    began = time.monotonic()
    result = subprocess.run([LHDBENCH, *TINY, "--address", f"127.0.0.1:{free_port()}", "--storage", "s"],
                            env=base_env(home), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "cannot reach the Ray cluster" in lines[0]
    assert time.monotonic() - began < 20 and not (tmp_path / "s").exists()


def private_folder(driver: subprocess.Popen, before: set[str], deadline: float) -> str:
    """The temp folder of the private instance the driver started (new under /tmp, held open by it)."""
    while time.monotonic() < deadline:
        for name in set(os.listdir("/tmp")) - before:
            if name.startswith("lhdb-ray-") and driver.pid in processes_using(f"/tmp/{name}"):
                return f"/tmp/{name}"
        assert driver.poll() is None, "the driver ended before its Ray instance was seen"
        time.sleep(0.2)
    raise AssertionError("no private Ray instance appeared")


def test_without_an_address_the_run_never_joins_a_cluster_on_the_machine(tmp_path, home):
    head = Head(home, token=None)
    try:
        before = set(os.listdir("/tmp"))
        driver = subprocess.Popen([LHDBENCH, *TINY, "--storage", "s"], env=base_env(home), cwd=tmp_path,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        folder = private_folder(driver, before, time.monotonic() + 120)
        assert driver.pid not in processes_using(head.folder)  # not connected to the other cluster
        _, err = driver.communicate(timeout=600)
        assert driver.returncode == 0, err[-3000:]
        assert not os.path.exists(folder)  # a clean exit removes the instance's folder
    finally:
        head.stop()


def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path, home):
    """SIGKILL of the driver mid-run: every process of its private instance is gone within a minute
    (Ray's dashboard and runtime-env agents alone would linger about as long again)."""
    env = {**base_env(home), "LHDBENCH_PLUGINS": str(PLUGIN)}
    before = set(os.listdir("/tmp"))
    driver = subprocess.Popen([LHDBENCH, "benchmark", "--suite", "smoke", "--baselines", "test-sleepy",
                               "--seeds", "0,1", "--policies", "base", "--storage", "s"], env=env,
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        folder = private_folder(driver, before, time.monotonic() + 120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list((tmp_path / "s" / "trials").glob("*/events.jsonl")):
            time.sleep(0.2)  # a trial has started: Ray's workers are up
        assert len(processes_using(folder)) > 3
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and processes_using(folder):
            time.sleep(1)
        left = processes_using(folder)
        names = [Path(f"/proc/{p}/cmdline").read_bytes()[:60] for p in left if Path(f"/proc/{p}").exists()]
        assert not left, f"still running a minute after the driver's death: {names}"
    finally:
        if driver.poll() is None:
            driver.kill()
        kill_all(folder) if "folder" in locals() else None
