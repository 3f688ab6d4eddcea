"""One Ray node of a Slurm job: `ray start --block` with the CPUs and GPUs Slurm gave this node,
supervised so that the node leaves nothing behind.

`ray start --block` keeps Ray's processes its children, so Slurm's process tracking sees them (a
daemonized Ray would escape `proctrack/linuxproc`). `ray stop` is never used: it stops every Ray on the
node, another job's included. Instead, on SIGTERM (the job script stopping Ray, or Slurm ending the
job) this process stops its own `ray start`, then kills whatever still names or holds open the node's
own temp folder (Ray's workers keep their log files there), and removes the folder.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NODE_LABEL = "slurm-node"  # each Ray node's Slurm node name, so a missing one can be named
ADDRESS_FILE = "ray_current_cluster"  # where `ray start --head` writes the GCS address, in its temp dir
# How long `ray start` may take to stop its node before it is killed. It drains quickly while Ray is
# healthy, but waits out its own 30 s when Slurm's SIGTERM killed the raylet first, and the whole stop
# must end within Slurm's KillWait (30 s by default).
STOP_GRACE_S = 10


def label_value(node: str) -> str:
    """A Slurm node name as a Ray label value (63 characters of [A-Za-z0-9_.-])."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", node)[:63].strip("-_.") or "node"


def visible_gpus() -> int:
    """The GPUs Slurm gave this job step: it sets CUDA_VISIBLE_DEVICES to them (and SLURM_GPUS_ON_NODE
    to their count); without either the node has none for this job, whatever the machine holds."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "NoDevFiles"])
    count = os.environ.get("SLURM_GPUS_ON_NODE", "")
    return int(count) if count.isdigit() else 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def ray_start_command(role: str, node: str, cpus: int, gpus: int, folder: Path,
                      address: str | None = None) -> list[str]:
    # Ports Ray would otherwise take at fixed defaults (the client server 10001, the dashboard agent
    # 52365) clash with a second Ray on the node, another job's: free ones instead.
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", f"--num-cpus={cpus}",
               f"--num-gpus={gpus}", f"--temp-dir={folder}", "--disable-usage-stats",
               f"--labels={NODE_LABEL}={label_value(node)}", f"--dashboard-agent-listen-port={free_port()}"]
    if role == "head":
        command += ["--head", "--port=0", "--include-dashboard=false",
                    f"--ray-client-server-port={free_port()}"]
        head_ip = os.environ.get("LHDBENCH_HEAD_IP", "").strip()
        if head_ip:
            command.append(f"--node-ip-address={head_ip}")
    else:
        command.append(f"--address={address}")
    return command


def run_node(role: str, node: str, cpus: int, log: Path, address: str | None = None,
             address_file: Path | None = None) -> int:
    """Start this node's Ray (its own output to `log`) and supervise it until SIGTERM or its end; the
    exit status of Ray."""
    job = os.environ.get("SLURM_JOB_ID", "x")
    # Short and node-local: Ray's unix sockets live under it (a path may hold 107 characters).
    scratch = "/tmp" if os.path.isdir("/tmp") else None
    folder = Path(tempfile.mkdtemp(prefix=f"lhdb-slurm-{job}-", dir=scratch))
    gpus = visible_gpus()
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _stop_with_parent()
    print(f"lhdbench slurm: Ray {role} on {node}: {cpus} CPU(s), {gpus} GPU(s)", flush=True)
    with open(log, "ab") as output:
        ray = subprocess.Popen(ray_start_command(role, node, cpus, gpus, folder, address),
                               stdout=output, stderr=subprocess.STDOUT)
    published = role != "head"
    try:
        while not stopping and ray.poll() is None:
            if not published and (folder / ADDRESS_FILE).exists():
                text = (folder / ADDRESS_FILE).read_text().strip()
                if text and address_file is not None:
                    tmp = address_file.with_name(address_file.name + ".tmp")
                    tmp.write_text(text + "\n")
                    os.replace(tmp, address_file)
                    published = True
            time.sleep(0.2)
        if ray.poll() is not None and not stopping:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            print(f"lhdbench slurm: Ray {role} on {node} ended with status {ray.returncode} ({log}): "
                  + " | ".join(line.strip() for line in tail), file=sys.stderr, flush=True)
        return ray.returncode if ray.returncode is not None else 0
    finally:
        _stop(ray, folder)


def _stop_with_parent() -> None:
    """SIGTERM when the job script (or srun) that started this process dies, SIGKILL included: an
    orphan would escape Slurm's process tracking and keep the node's Ray running after the job."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the job script's own stop is the only one
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)  # the parent died before prctl took effect


def _stop(ray: subprocess.Popen, folder: Path) -> None:
    if ray.poll() is None:
        ray.terminate()  # `ray start --block` drains the node and ends its processes
        try:
            ray.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            ray.kill()
            ray.wait()
    for _ in range(20):  # what is left (a worker still starting): killed by its folder
        victims = [int(p) for p in os.listdir("/proc")
                   if p.isdigit() and int(p) != os.getpid() and _uses(int(p), str(folder))]
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.5)
    shutil.rmtree(folder, ignore_errors=True)


def _uses(pid: int, folder: str) -> bool:
    """Whether a process names `folder` on its command line or holds a file open under it (Ray's
    workers rename themselves, but keep their logs open). Like runner/ray_watchdog.py, which cannot be
    imported here without the runner package, torch and all."""
    try:
        if folder in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return True
        fds = os.listdir(f"/proc/{pid}/fd")
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(folder) for fd in fds)
    except OSError:
        return False
