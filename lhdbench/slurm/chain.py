"""A store's Slurm jobs: `STORE/slurm.json`, one entry per `lhdbench slurm` submission (a chain) with
its jobs, and their states from Slurm where it still knows them.

```
{"chains": [{"chain": 1, "token": "...", "command": "lhdbench slurm ...", "script": "slurm/chain-1.sh",
             "until_done": true, "max_jobs": 5, "trials": ["search-...", ...], "submitted_at": 1.7e9,
             "submitted_from": "login1",
             "jobs": [{"job_id": "12", "dependency": null, "submitted_at": ..., "started_at": ...,
                       "nodes": "n[1-2]", "done_at_start": 0, "ended_at": ..., "done_at_end": 8,
                       "driver_exit": 75, "signal": "USR1", "outcome": "stopped"}, ...]}]}
```

Written under `STORE/.slurm.lock`, atomically (the submitting command and the jobs both update it).
Standard library only: `lhdbench status` reads it without importing Slurm, torch or Ray.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..files import atomic_write_json, file_lock

CHAIN_FILE = "slurm.json"
CHAIN_LOCK = ".slurm.lock"
SLURM_FOLDER = "slurm"  # the chains' job scripts and every job's output (JOBID.out)
QUERY_TIMEOUT_S = 10


class ChainFileError(ValueError):
    """slurm.json cannot be read or is not of the expected shape; one line."""


def read_chains(store_root: str | Path) -> dict[str, Any]:
    path = Path(store_root) / CHAIN_FILE
    if not path.exists():
        return {"chains": []}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ChainFileError(f"{path}: unreadable ({' '.join(str(error).split())})") from None
    if not (isinstance(data, dict) and isinstance(data.get("chains"), list)
            and all(isinstance(c, dict) and isinstance(c.get("jobs"), list) for c in data["chains"])):
        raise ChainFileError(f'{path}: not a Slurm chain file (expected {{"chains": [...]}} with jobs)')
    return data


@contextlib.contextmanager
def updating(store_root: str | Path) -> Iterator[dict[str, Any]]:
    """slurm.json to change in the block, held under the lock and written back atomically."""
    root = Path(store_root)
    with file_lock(root / CHAIN_LOCK):
        data = read_chains(root)
        yield data
        atomic_write_json(root / CHAIN_FILE, data)


def find_chain(data: dict[str, Any], number: int) -> dict[str, Any] | None:
    return next((c for c in data["chains"] if c.get("chain") == number), None)


def job_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm's state of each job it still knows: sacct (accounting, kept for long) where it works,
    else squeue (which forgets a job minutes after it ended). Empty without Slurm."""
    ids = [j for j in job_ids if j]
    if not ids:
        return {}
    for command in (["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(ids)],
                    ["squeue", "-h", "-t", "all", "-o", "%i|%T", "-j", ",".join(ids)]):
        if shutil.which(command[0]) is None:
            continue
        try:
            answer = subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError):
            continue
        states = {}
        for line in answer.stdout.splitlines():
            job, _, state = line.partition("|")
            if job.strip() in ids and state.strip():
                states[job.strip()] = state.split()[0]  # "CANCELLED by 0" -> CANCELLED
        if answer.returncode == 0 and states:
            return states
    return {}


def chain_summary(store_root: str | Path) -> dict[str, Any] | None:
    """The store's chains for `lhdbench status`, each job with Slurm's state where known; None when the
    store was never submitted to Slurm."""
    data = read_chains(store_root)
    if not data["chains"]:
        return None
    states = job_states([str(j.get("job_id")) for c in data["chains"] for j in c["jobs"]])
    chains = []
    for chain in data["chains"]:
        jobs = []
        for job in chain["jobs"]:
            done = (job.get("done_at_end") - job.get("done_at_start")
                    if isinstance(job.get("done_at_end"), int) and isinstance(job.get("done_at_start"), int)
                    else None)
            jobs.append({"job_id": str(job.get("job_id")), "state": states.get(str(job.get("job_id"))),
                         "dependency": job.get("dependency"), "outcome": job.get("outcome"),
                         "finished_trials": done, "nodes": job.get("nodes"),
                         "submitted_at": job.get("submitted_at"), "started_at": job.get("started_at"),
                         "ended_at": job.get("ended_at"), "driver_exit": job.get("driver_exit")})
        chains.append({"chain": chain.get("chain"), "command": chain.get("command"),
                       "until_done": bool(chain.get("until_done")), "max_jobs": chain.get("max_jobs"),
                       "trials": len(chain.get("trials") or []), "jobs": jobs})
    return {"chains": chains}


def format_chains(summary: dict[str, Any]) -> list[str]:
    lines = []
    for chain in summary["chains"]:
        how = (f"--until-done, at most {chain['max_jobs']} jobs" if chain["until_done"] else "one job")
        lines.append(f"Slurm chain {chain['chain']} ({how}): {chain['command']}")
        for job in chain["jobs"]:
            state = job["state"] or ("ended" if job["ended_at"] else "unknown to Slurm now")
            parts = [f"  job {job['job_id']:<8} {state:<11}"]
            if job["outcome"]:
                parts.append(job["outcome"])
            if job["finished_trials"] is not None:
                parts.append(f"finished {job['finished_trials']} trial(s)")
            if job["nodes"]:
                parts.append(f"on {job['nodes']}")
            if job["dependency"] and not job["started_at"]:
                parts.append(f"waits for {job['dependency']}")
            lines.append(" ".join(parts[:1]) + " " + "; ".join(parts[1:]) if len(parts) > 1 else parts[0])
        if not chain["jobs"]:
            lines.append("  (no job submitted)")
    return lines
