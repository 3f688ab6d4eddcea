"""The steps a Slurm job script of `lhdbench slurm` runs (`python -m lhdbench.slurm.job STEP ...`):

  begin        check that this node sees the store it was submitted for, and can write and lock it;
               record the job's start; with --until-done submit the chain's next job (afterany);
               exit NOTHING_LEFT when every trial of the chain is done already
  nodes        the nodes of the allocation with their CPUs, one "NAME CPUS" line each, this one first
  ray-node     one Ray node (head or worker), supervised (ray_node.py)
  await-head   wait until the head has written its address, print it
  await-nodes  wait until every node of the allocation has joined the head (one line naming the
               missing ones otherwise)
  end          say what this job finished and what is left; record it; cancel the chain's next job
               when nothing is left or when the failure would repeat
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..store import Store
from .chain import SLURM_FOLDER, find_chain, read_chains, updating

NOTHING_LEFT = 3  # `begin`: the chain's trials are all done; the job ends at once
# Driver exits after which a next job would fail the same way: some trials failed for good (or the
# disk is full), a usage error. A stop (75), an interrupt or a kill leave the chain going.
REPEATING_FAILURES = (1, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lhdbench.slurm.job")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--chain", type=int, required=True)
    steps = parser.add_subparsers(dest="step", required=True)
    begin = steps.add_parser("begin")
    begin.add_argument("--token", required=True)
    steps.add_parser("nodes")
    node = steps.add_parser("ray-node")
    node.add_argument("role", choices=("head", "worker"))
    node.add_argument("--cpus", type=int, required=True)
    node.add_argument("--address")
    node.add_argument("--address-file", type=Path)
    head = steps.add_parser("await-head")
    head.add_argument("--address-file", type=Path, required=True)
    head.add_argument("--pid", type=int, required=True)
    head.add_argument("--timeout", type=float, default=300)
    joined = steps.add_parser("await-nodes")
    joined.add_argument("--address", required=True)
    joined.add_argument("--timeout", type=float, default=300)
    end = steps.add_parser("end")
    end.add_argument("--driver-status", type=int, required=True)
    end.add_argument("--signal", default="")
    end.add_argument("--no-driver", action="store_true", help="the Ray cluster did not come up")
    args = parser.parse_args(argv)
    store = Store(args.storage)
    try:
        if args.step == "begin":
            return begin_job(store, args.chain, args.token)
        if args.step == "nodes":
            for name, cpus in allocation():
                print(name, cpus)
            return 0
        if args.step == "ray-node":
            from .ray_node import run_node

            name = this_node()
            log = store.root / SLURM_FOLDER / f"{os.environ.get('SLURM_JOB_ID', 'x')}.ray-{name}.log"
            return run_node(args.role, name, args.cpus, log, args.address, args.address_file)
        if args.step == "await-head":
            print(await_head(args.address_file, args.pid, args.timeout))
            return 0
        if args.step == "await-nodes":
            await_nodes(args.address, [name for name, _ in allocation()], args.timeout)
            return 0
        return end_job(store, args.chain, args.driver_status, args.signal, args.no_driver)
    except JobStepError as error:
        say(str(error), error=True)
        return 1


class JobStepError(RuntimeError):
    """A step that cannot go on; the job says why in one line."""


def say(text: str, error: bool = False) -> None:
    print(f"lhdbench slurm: {text}", file=sys.stderr if error else sys.stdout, flush=True)


def this_node() -> str:
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def job_id() -> str:
    return os.environ.get("SLURM_JOB_ID", "")


# -- the allocation ----------------------------------------------------------------------------------

def allocation() -> list[tuple[str, int]]:
    """The job's nodes in Slurm's order (the first runs this script) with the CPUs it has on each."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST", "")
    answer = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
    names = answer.stdout.split()
    if answer.returncode != 0 or not names:
        raise JobStepError(f"cannot expand the job's node list {nodelist!r}: {answer.stderr.strip()}")
    cpus = cpus_per_node(os.environ.get("SLURM_JOB_CPUS_PER_NODE", ""), len(names))
    head_ip = os.environ.get("LHDBENCH_HEAD_IP", "")
    if len(names) > 1 and (head_ip.startswith("127.") or head_ip in ("localhost", "::1")):
        # Ray keeps to loopback only for a cluster of one node: it refuses to add a worker then.
        raise JobStepError(f"LHDBENCH_HEAD_IP={head_ip} is a loopback address, which takes a one-node "
                           f"allocation; this job has {len(names)} nodes ({', '.join(names)})")
    return list(zip(names, cpus, strict=True))


def cpus_per_node(text: str, nodes: int) -> list[int]:
    """SLURM_JOB_CPUS_PER_NODE ("72(x2),36": 72 on each of the first two nodes, 36 on the third)."""
    counts: list[int] = []
    for part in filter(None, text.split(",")):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            raise JobStepError(f"SLURM_JOB_CPUS_PER_NODE={text!r}: not understood")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    if len(counts) != nodes:
        raise JobStepError(f"SLURM_JOB_CPUS_PER_NODE={text!r} does not name {nodes} node(s)")
    return counts


# -- the chain ---------------------------------------------------------------------------------------

def chain_trials_done(store: Store, chain: dict[str, Any]) -> int:
    done = {t for t, r in store.records().items() if r.status == "done"}
    return sum(t in done for t in chain.get("trials") or [])


def begin_job(store: Store, number: int, token: str) -> int:
    not_seen = JobStepError(
        f"node {this_node()} does not see the store {store.root} that `lhdbench slurm` submitted this job "
        f"for (no chain {number} there): is {store.root} on a filesystem that every node mounts at the "
        "same path?")
    if not (store.root / SLURM_FOLDER).is_dir():
        raise not_seen  # and nothing is created here, on what may be this node's own disk
    try:
        store.check_usable()
        store.check_locking()
    except ValueError as error:
        raise JobStepError(f"on node {this_node()}: {error}") from None
    me = job_id()
    # Under the lock: `lhdbench slurm` holds it from sbatch until it has recorded the chain.
    with updating(store.root) as data:
        chain = find_chain(data, number)
        if chain is None or chain.get("token") != token:
            raise not_seen
        done = chain_trials_done(store, chain)
        total = len(chain.get("trials") or [])
        jobs = chain["jobs"]
        entry = next((j for j in jobs if j.get("job_id") == me), None)
        if entry is None:  # sbatch run on the script by hand: it joins the chain
            entry = {"job_id": me, "dependency": None, "submitted_at": None}
            jobs.append(entry)
        entry.update(started_at=time.time(), nodes=os.environ.get("SLURM_JOB_NODELIST"), done_at_start=done)
        position = jobs.index(entry) + 1
        follow_up = None
        if chain.get("until_done") and done < total and position >= len(jobs):
            if position < int(chain.get("max_jobs") or 1):
                follow_up = submit_follow_up(store, chain)
                if follow_up is not None:
                    jobs.append({"job_id": follow_up, "dependency": f"afterany:{me}",
                                 "submitted_at": time.time()})
            else:
                say(f"job {me} is the last of chain {number} (--max-jobs {chain.get('max_jobs')}): no "
                    "follow-up job")
    of = f" of at most {chain.get('max_jobs')}" if chain.get("until_done") else ""
    say(f"job {me} ({position}{of} of chain {number}) on {os.environ.get('SLURM_JOB_NODELIST')}: {done} of "
        f"{total} trials done, {total - done} left"
        + (f"; next job {follow_up} submitted, to start once this one has ended" if follow_up else ""))
    if done >= total:
        with updating(store.root) as data:
            chain = find_chain(data, number)
            entry = next(j for j in chain["jobs"] if j.get("job_id") == me)
            entry.update(ended_at=time.time(), done_at_end=done, outcome="nothing left")
        say("nothing left to run")
        return NOTHING_LEFT
    return 0


def slurm_environment() -> dict[str, str]:
    """This job's environment without its SLURM_* values, so that a job submitted from it is not taken
    for a step of this one (SLURM_CONF, naming the cluster's configuration, stays)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}


def submit_follow_up(store: Store, chain: dict[str, Any]) -> str | None:
    script = store.root / chain["script"]
    command = ["sbatch", "--parsable", f"--dependency=afterany:{job_id()}", str(script)]
    try:
        answer = subprocess.run(command, capture_output=True, text=True, env=slurm_environment(),
                                timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        say(f"could not submit the next job ({error}); resubmit with the chain's command", error=True)
        return None
    if answer.returncode != 0:
        say(f"could not submit the next job: {' '.join(answer.stderr.split())}", error=True)
        return None
    return answer.stdout.strip().split(";")[0]


def end_job(store: Store, number: int, driver_status: int, signal_name: str, no_driver: bool = False) -> int:
    me = job_id()
    chain = find_chain(read_chains(store.root), number)
    if chain is None:
        raise JobStepError(f"no chain {number} in {store.root}/slurm.json")
    done = chain_trials_done(store, chain)
    total = len(chain.get("trials") or [])
    with updating(store.root) as data:
        chain = find_chain(data, number)
        assert chain is not None
        entry = next((j for j in chain["jobs"] if j.get("job_id") == me), None)
        if entry is None:
            entry = {"job_id": me}
            chain["jobs"].append(entry)
        later = chain["jobs"][chain["jobs"].index(entry) + 1:]
        pending = [j["job_id"] for j in later if not j.get("started_at")]
        repeats = driver_status in REPEATING_FAILURES and not signal_name and not no_driver
        if done >= total:
            outcome = "complete"
        elif no_driver:
            # Perhaps a bad node: the next job of the chain (other nodes, perhaps) tries again.
            outcome = "the Ray cluster did not come up"
        elif signal_name:
            outcome = f"stopped on SIG{signal_name}"
        elif driver_status in REPEATING_FAILURES:
            outcome = "failed trials" if driver_status == 1 else "usage error"
        else:
            outcome = f"ended (driver exit {driver_status})"
        finished = done - entry.get("done_at_start", done)
        entry.update(ended_at=time.time(), done_at_end=done, driver_exit=driver_status,
                     signal=signal_name or None, outcome=outcome)
        cancel = pending if done >= total or repeats else []
        for job in cancel:
            try:
                subprocess.run(["scancel", job], capture_output=True, env=slurm_environment(), timeout=60)
            except (OSError, subprocess.SubprocessError) as error:
                say(f"could not cancel job {job} ({error}): cancel it by hand", error=True)
                continue
            later_entry = next(j for j in chain["jobs"] if j["job_id"] == job)
            later_entry["outcome"] = f"cancelled by job {me}"
    what = f"job {me}: {outcome}; finished {finished} trial(s) in this job; {done} of {total} done, " \
           f"{total - done} left"
    if done >= total:
        say(what + (f"; cancelled the chain's next job {', '.join(cancel)}" if cancel else ""))
    elif cancel:
        say(what + f"; cancelled the chain's next job {', '.join(cancel)}: a rerun would fail the same way "
            f"(`lhdbench status --storage {store.root}` lists the failures); resubmit once fixed")
    elif pending:
        say(what + f"; job {pending[0]} goes on with them")
    else:
        say(what + f"; resubmit to go on: {chain.get('command')}")
    return 0


# -- the Ray cluster ---------------------------------------------------------------------------------

def await_head(address_file: Path, pid: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if address_file.exists() and address_file.read_text().strip():
            return address_file.read_text().strip()
        if not _alive(pid):
            raise JobStepError(f"the Ray head on {this_node()} ended before it was up (its log: "
                               f"{SLURM_FOLDER}/{job_id()}.ray-{this_node()}.log in the store)")
        time.sleep(0.5)
    raise JobStepError(f"the Ray head on {this_node()} was not up within {timeout:.0f} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (ended, not yet reaped by the job script) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def await_nodes(address: str, nodes: list[str], timeout: float) -> None:
    """Return once a Ray node labelled with each Slurm node's name is alive in the cluster."""
    from .ray_node import NODE_LABEL, label_value

    wanted = {label_value(n): n for n in nodes}
    deadline = time.monotonic() + timeout
    while True:
        alive = alive_nodes(address)
        joined = {labels.get(NODE_LABEL) for labels, _ in alive}
        missing = [name for label, name in wanted.items() if label not in joined]
        if not missing:
            cpus = sum(r.get("CPU", 0) for _, r in alive)
            gpus = sum(r.get("GPU", 0) for _, r in alive)
            say(f"Ray cluster up at {address}: {len(alive)} node(s), {cpus:g} CPU(s), {gpus:g} GPU(s)")
            return
        if time.monotonic() > deadline:
            raise JobStepError(
                f"Ray on node(s) {', '.join(missing)} did not join the head at {address} within "
                f"{timeout:.0f} s (their Ray logs: {SLURM_FOLDER}/{job_id()}.ray-NODE.log in the store)")
        time.sleep(1)


def alive_nodes(address: str) -> list[tuple[dict[str, str], dict[str, float]]]:
    """(labels, total resources) of each live node, read from the head's GCS. Ray's GCS client is
    private, but it answers without joining the cluster as a driver (as runner/ray_cluster.py uses it)."""
    from ray._raylet import GcsClient

    info = GcsClient(address=address).get_all_node_info(timeout=30)
    return [(dict(node.labels), dict(node.resources_total)) for node in info.values() if node.state == 0]


if __name__ == "__main__":
    sys.exit(main())
