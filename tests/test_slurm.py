"""`lhdbench slurm` against a real Slurm: Debian's slurmctld, slurmd and munged, started by a fixture
with a configuration of their own in a temporary folder, one node, every address on 127.0.0.1
(LHDBENCH_HEAD_IP=127.0.0.1 keeps Ray there too).

They need root (munged and slurmd run as root) and the packages `slurmctld slurmd slurm-client munge`
(.ci/run installs them). Without them the tests skip with a message, except in CI (`CI` set), where
they fail: there they must run. Each test waits for real jobs, so they are slow (about a minute each).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from lhdbench.runner import STOPPED_EXIT
from lhdbench.store import Store

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
PLUGIN = HERE / "plugins" / "slow_methods.py"
LHDBENCH = str(Path(sys.executable).with_name("lhdbench"))
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel", "scontrol")
PACKAGES = "apt-get install -y slurmctld slurmd slurm-client munge"
LIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED"}
SMOKE = ["--suite", "smoke", "--preset", "smoke"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """A one-node Slurm (node n1, two CPUs) with its own munged, all state in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        f = self.folder
        key = f / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._run(["munged", "--force", f"--socket={f}/munge.socket", f"--key-file={key}",
                   f"--pid-file={f}/munged.pid", f"--log-file={f}/munged.log",
                   f"--seed-file={f}/munged.seed"])
        for name in ("ctld", "d"):
            (f / name).mkdir()
        self.conf.write_text("\n".join([
            "ClusterName=lhdbtest", "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", f"AuthInfo=socket={f}/munge.socket", "CredType=cred/munge",
            f"StateSaveLocation={f}/ctld", f"SlurmdSpoolDir={f}/d", f"SlurmctldPidFile={f}/ctld.pid",
            f"SlurmdPidFile={f}/d.pid", f"SlurmctldLogFile={f}/ctld.log", f"SlurmdLogFile={f}/d.log",
            # What works in a container: no cgroups, no CPU binding.
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core", "MpiDefault=none", "ReturnToService=2",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none", "MinJobAge=600",
            # Job ids of this cluster's own, so that no two test sessions' jobs share a name in /tmp.
            f"FirstJobId={random.randrange(10_000, 60_000_000)}",
            "NodeName=n1 NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN",
            "PartitionName=debug Nodes=n1 Default=YES MaxTime=INFINITE State=UP", ""]))
        self._run(["slurmctld", "-f", str(self.conf)])
        self._run(["slurmd", "-f", str(self.conf), "-N", "n1"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
            if state.stdout.strip() == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"the node did not become idle: {state.stdout.strip()} {state.stderr.strip()}")

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]}: {(done.stderr or done.stdout).strip()[-500:]}")

    def jobs(self) -> dict[str, str]:
        answer = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], env=self.env,
                                capture_output=True, text=True)
        return dict(line.split() for line in answer.stdout.splitlines() if line.strip())

    def wait(self, job: str, timeout: float = 400) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.jobs().get(job)
            if state not in LIVE:
                return state
            time.sleep(1)
        raise AssertionError(f"job {job} still {state} after {timeout} s")

    def wait_all(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and set(self.jobs().values()) & LIVE:
            time.sleep(1)

    def stop(self) -> None:
        live = [job for job, state in self.jobs().items() if state in LIVE]
        if live:
            subprocess.run(["scancel", *live], env=self.env, capture_output=True)
            self.wait_all(120)
        for name in ("d.pid", "ctld.pid", "munged.pid"):
            try:
                pid = int((self.folder / name).read_text())
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.1)
            except (OSError, ValueError):
                pass
        shutil.rmtree(self.folder, ignore_errors=True)


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "not root (munged and slurmd run as root)"
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        return f"{', '.join(missing)} not installed ({PACKAGES})"
    return None


@pytest.fixture(scope="module")
def slurm():
    why = unavailable()
    if why is None:
        cluster = LocalSlurm(Path(tempfile.mkdtemp(prefix="lhdb-sl-", dir="/tmp")))
        try:
            cluster.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            cluster.stop()
            why = f"a local Slurm did not start: {error}"
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Slurm tests: {why}")
        pytest.skip(f"Slurm tests skipped: {why}")
    yield cluster
    cluster.stop()


@pytest.fixture
def env(slurm, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    values = {k: v for k, v in slurm.env.items() if not k.startswith(("RAY_", "LHDBENCH_"))}
    return {**values, "HOME": str(home), "OMP_NUM_THREADS": "1", "LHDBENCH_HEAD_IP": "127.0.0.1"}


def submit(arguments: list[str], env: dict[str, str], cwd: Path) -> str:
    answer = subprocess.run([LHDBENCH, "slurm", *arguments], env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=300)
    assert answer.returncode == 0, answer.stderr[-3000:]
    return answer.stdout.split("submitted job ")[1].split()[0]


def status(store: Path, env: dict[str, str]) -> dict:
    answer = subprocess.run([LHDBENCH, "status", "--storage", str(store), "--json"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, answer.stderr
    return json.loads(answer.stdout)


def ray_left_by(job: str) -> list[str]:
    """What is left of a job's Ray: its node-local folders under /tmp, and processes naming them."""
    folders = [f"/tmp/{name}" for name in os.listdir("/tmp") if name.startswith(f"lhdb-slurm-{job}")]
    processes = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if f"lhdb-slurm-{job}" in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                processes.append(entry)
        except OSError:
            continue
    return folders + processes


def events(store: Store, trial_id: str) -> list[str]:
    return [e["event"] for e in store.events(trial_id)]


def test_a_smoke_suite_ends_complete_in_one_job_and_leaves_no_ray_behind(slurm, env, tmp_path):
    store = tmp_path / "store"
    job = submit([*SMOKE, "--baselines", "random,darts", "--seeds", "0", "--policies", "base,4out",
                  "--storage", str(store), "--sbatch=--time=10 --cpus-per-task=2 --signal=B:USR1@60"],
                 env, tmp_path)
    assert slurm.wait(job) == "COMPLETED", (store / "slurm" / f"{job}.out").read_text()
    output = (store / "slurm" / f"{job}.out").read_text()
    assert "Ray cluster up at 127.0.0.1:" in output and "1 node(s), 2 CPU(s)" in output
    summary = status(store, env)
    assert (summary["planned"], summary["done"], summary["failed"]) == (6, 6, 0)
    [chain] = summary["slurm"]["chains"]
    assert [(j["job_id"], j["state"], j["outcome"], j["finished_trials"]) for j in chain["jobs"]] == [
        (job, "COMPLETED", "complete", 6)]
    assert ray_left_by(job) == []
    text = subprocess.run([LHDBENCH, "status", "--storage", str(store)], env=env, capture_output=True,
                          text=True).stdout
    assert f"job {job}" in text and "complete" in text


def test_a_time_limit_stops_the_job_and_its_chained_job_completes_the_store(slurm, env, tmp_path):
    """The first job's time limit comes while the searches run: Slurm's warning signal stops them at a
    checkpoint, the chained job resumes them, and no epoch and no trial runs twice."""
    # Slurm sends the warning up to a minute early (its documented resolution): with a 3-minute limit and
    # 60 s asked for, 90 to 120 s after the start. Searches of 8 epochs of at least 15 s are still running
    # then however fast the machine; the chain has room for a slow one.
    log = tmp_path / "epochs.log"
    env = {**env, "LHDBENCH_TEST_EPOCH_LOG": str(log), "LHDBENCH_TEST_EPOCH_SECONDS": "15"}
    store = tmp_path / "store"
    protocol = smoke_protocol(tmp_path, search_epochs=8)
    job = submit(["--suite", "smoke", "--preset", str(protocol), "--baselines", "test-slow", "--seeds", "0,1",
                  "--policies", "base", "--plugin", str(PLUGIN), "--storage", str(store), "--until-done",
                  "--max-jobs", "4", "--sbatch=--time=3 --cpus-per-task=2 --signal=B:USR1@60"],
                 env, tmp_path)
    slurm.wait(job)
    slurm.wait_all()
    chain = json.loads((store / "slurm.json").read_text())["chains"][0]
    outputs = "\n".join((store / "slurm" / f"{j['job_id']}.out").read_text() for j in chain["jobs"]
                        if (store / "slurm" / f"{j['job_id']}.out").exists())
    ran = [j for j in chain["jobs"] if j.get("started_at")]
    first, *later = chain["jobs"]
    assert first["job_id"] == job and first["outcome"] == "stopped on SIGUSR1", outputs
    assert first["driver_exit"] == STOPPED_EXIT and len(ran) >= 2, outputs
    assert ran[-1]["outcome"] == "complete" and len(chain["jobs"]) <= 4, outputs
    for waiting in chain["jobs"][len(ran):]:  # the next job, submitted at the start: no longer needed
        assert waiting["outcome"] == f"cancelled by job {ran[-1]['job_id']}", outputs
        assert slurm.jobs()[waiting["job_id"]] == "CANCELLED"
    assert all(j["dependency"] == f"afterany:{p['job_id']}"
               for p, j in zip(chain["jobs"], later, strict=False))
    summary = status(store, env)
    assert (summary["planned"], summary["done"]) == (4, 4)
    s = Store(store)
    assert Counter(tuple(map(int, line.split())) for line in log.read_text().splitlines()) == Counter(
        {(seed, epoch): 1 for seed in (0, 1) for epoch in range(8)})
    trails = {t: events(s, t) for t in s.read_plan()["trials"]}
    assert any("stopped" in trail for trail in trails.values()), trails
    for trail in trails.values():  # ended once; every later start resumes a stopped attempt
        assert trail.count("done") == 1 and "failed" not in trail, trails
        assert all(trail[i - 1] == "stopped" for i, e in enumerate(trail) if e == "start" and i), trails
    assert all(ray_left_by(j["job_id"]) == [] for j in chain["jobs"])


def test_scancel_in_the_middle_then_a_resubmission_loses_nothing(slurm, env, tmp_path):
    log = tmp_path / "epochs.log"
    env = {**env, "LHDBENCH_TEST_EPOCH_LOG": str(log), "LHDBENCH_TEST_EPOCH_SECONDS": "2"}
    store = tmp_path / "store"
    arguments = ["--suite", "smoke", "--preset", str(smoke_protocol(tmp_path, 6)), "--baselines",
                 "test-slow,random", "--seeds", "0", "--policies", "base", "--plugin", str(PLUGIN),
                 "--storage", str(store), "--sbatch=--time=10 --cpus-per-task=2 --signal=B:USR1@60"]
    job = submit(arguments, env, tmp_path)
    s = Store(store)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (s.records_dir.is_dir() and list(s.records_dir.glob("*.json"))
                                               and log.exists() and len(log.read_text().splitlines()) >= 2):
        assert slurm.jobs().get(job) in LIVE, (store / "slurm" / f"{job}.out").read_text()
        time.sleep(0.5)
    subprocess.run(["scancel", job], env=env, check=True)
    slurm.wait(job)
    kept = {p.name: p.read_bytes() for p in s.records_dir.glob("*.json")}
    assert kept and status(store, env)["done"] < 4

    again = submit(arguments, env, tmp_path)
    assert slurm.wait(again) == "COMPLETED", (store / "slurm" / f"{again}.out").read_text()
    assert (status(store, env)["done"], status(store, env)["failed"]) == (4, 0)
    assert {p.name: p.read_bytes() for p in s.records_dir.glob("*.json") if p.name in kept} == kept
    for name in kept:  # finished before the scancel: never started again
        assert events(s, name[:-len(".json")]).count("start") == 1
    assert ray_left_by(job) == [] and ray_left_by(again) == []


def test_bad_input_is_one_line_exit_2_and_submits_nothing(slurm, env, tmp_path):
    tiny = [*SMOKE, "--baselines", "random", "--seeds", "0", "--policies", "base"]
    before = set(slurm.jobs())
    read_only, unwritable = unwritable_folder(tmp_path)
    cases = [
        (["--storage", str(tmp_path / "a"), "--sbatch=--partition nosuch --time=5 --signal=B:USR1@60"],
         env, "invalid partition"),
        (["--storage", str(tmp_path / "b"), "--sbatch=--no-such-option"], env, "sbatch refuses the job"),
        (["--storage", str(tmp_path / "c"), "--sbatch=--time=1"], env, "is not shorter than the time"),
        (["--storage", str(tmp_path / "d")], {**env, "PATH": "/nonexistent"}, "no Slurm here"),
        (["--storage", str(read_only / "store")], env, unwritable),
    ]
    try:
        for arguments, environment, message in cases:
            answer = subprocess.run([LHDBENCH, "slurm", *tiny, *arguments], env=environment, cwd=tmp_path,
                                    capture_output=True, text=True, timeout=300)
            lines = answer.stderr.strip().splitlines()
            assert answer.returncode == 2 and len(lines) == 1, (arguments, answer.stderr)
            assert message in lines[0], (arguments, answer.stderr)
            assert not answer.stdout
        assert set(slurm.jobs()) == before
        assert not any((tmp_path / name).exists() for name in "abcd")
        assert not (read_only / "store").exists()
    finally:
        subprocess.run(["chattr", "-i", str(read_only)], capture_output=True)


def unwritable_folder(tmp_path: Path) -> tuple[Path, str]:
    """A folder root cannot write in (immutable), and the message; where the filesystem has no such
    flag, a 'folder' that is a file."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)],
                                                 capture_output=True).returncode == 0:
        return folder, "is not writable"
    folder.rmdir()
    folder.write_text("")
    return folder, "is a file, not a folder"


def smoke_protocol(folder: Path, search_epochs: int) -> Path:
    """The smoke protocol with longer searches."""
    import importlib.resources

    text = (importlib.resources.files("lhdbench.conditions") / "protocols" / "smoke.yaml").read_text()
    path = folder / f"smoke{search_epochs}.yaml"
    path.write_text(text.replace("search:\n  epochs: 2\n", f"search:\n  epochs: {search_epochs}\n", 1))
    assert f"epochs: {search_epochs}" in path.read_text()
    return path
