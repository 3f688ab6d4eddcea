"""What benchmarks/gpu.sh runs (its header has the time plan): a set-up, the steps in the order of
STEPS, each under its own time limit, and the summary, which never skips.

* Set-up: lhdbench must import from this checkout. Where it does not, `pip install -e .` (no
  dependencies) is tried, and where that fails too (a Python whose site-packages is not writable), a
  folder of links shaped like the installed package goes on PYTHONPATH. Then, on a real run, the CUDA
  check: a machine without a CUDA GPU stops here, within a minute, with one line saying so.
* Each step is a process group of its own, killed (TERM, then KILL) when its limit is up or the run's
  budget would leave the summary no time; a step that fails or is killed leaves the rest running, and
  what it wrote stays (every benchmark writes its JSON at its start and after each measurement).
* After the set-up and after every step, gpu-steps.json (what ran, for how long, how it ended) is
  written and every result file is copied to $OUT when it is set, so a run that is cut short from
  outside still returns what it measured.
* The summary runs last with its reserved time; where it fails, a summary.json with null figures and
  the reason in `missing` is written in its place.

    python benchmarks/gpu_run.py [--rehearse] [--budget SECONDS] [--results DIR]

Exit status: 0 when every step finished, 1 when one failed, was killed or skipped, 2 for bad usage,
3 when the set-up stopped the run (no CUDA GPU on a real run, lhdbench not importable).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 480  # the whole run on an H100, set-up included (the window gives about 9 minutes)
SETUP_S = 30  # pip (when needed), the import and CUDA checks
MIN_STEP_S = 5  # a step offered less than this is skipped
KILL_GRACE_S = 3  # between TERM and KILL


@dataclass(frozen=True)
class Step:
    name: str
    limit_s: int  # on an H100; a rehearsal runs under the same limits
    command: tuple[str, ...]  # after the Python executable; `--out FILE` is added, and `--rehearse`
    writes: str  # the file in the results folder
    gpu_args: tuple[str, ...] = field(default=())  # on a real run only (a rehearsal has its own sizes)


# In the order of what they decide (benchmarks/gpu.sh's header gives the plan with the reasons).
STEPS = (
    Step("gpu-tests", 50, ("benchmarks/gpu_tests.py",), "gpu-tests.json"),
    Step("train-step", 55, ("benchmarks/train_step.py", "--variants", "plain,graphed-fp32,graphed-bf16"),
         "gpu-train-step.json"),
    Step("packing", 60, ("benchmarks/packing.py", "--mode", "packing"), "gpu-packing.json"),
    Step("search-step", 45, ("benchmarks/throughput.py", "--parts", "search", "--paths",
                             "plain,fused-fp32,fused-bf16"), "gpu-throughput-search.json",
         ("--steps", "8", "--warmup", "3")),
    Step("streams", 70, ("benchmarks/packing.py", "--mode", "streams"), "gpu-streams.json"),
    Step("compiled", 75, ("benchmarks/train_step.py", "--variants", "compiled-cudagraphs,compiled"),
         "gpu-compiled.json"),
    Step("methods", 50, ("benchmarks/methods.py",), "gpu-methods.json", ("--steps", "5")),
)
SUMMARY = Step("summary", 15, ("benchmarks/summary.py",), "summary.json")
SUMMARY_KEYS = ("device", "rehearsal", "gpu_tests", "train_step_speedup", "compiled_step_speedup",
                "compile_first_step_s", "packed_throughput_gain", "trials_per_gpu", "streams_over_processes",
                "search_step_speedup", "methods_measured", "suite_gpu_hours")


class Stop(Exception):
    """The set-up cannot go on: one line for the user."""


class Run:
    def __init__(self, results: Path, out: Path | None, budget_s: float, rehearse: bool,
                 python: str = sys.executable, env: dict[str, str] | None = None,
                 summary: Step = SUMMARY, min_step_s: float = MIN_STEP_S) -> None:
        self.results, self.out, self.budget_s, self.rehearse = results, out, budget_s, rehearse
        self.python, self.summary_step, self.min_step_s = python, summary, min_step_s
        self.env = dict(os.environ if env is None else env)
        self.began = time.monotonic()
        self.results.mkdir(parents=True, exist_ok=True)
        # An earlier run's files would pass for this one's where a step does not run (git keeps them).
        stale = [*self.results.glob("gpu-*.json"), *self.results.glob("summary.json")]
        for path in stale:
            path.unlink()
        self.log_path = self.results / "gpu-log.txt"
        self.log_path.write_text("")
        if stale:
            self.say(f"removed {len(stale)} file(s) of an earlier run from {self.results}")
        self.record: dict = {"rehearsal": rehearse, "budget_s": budget_s, "python": python,
                             "plan": [{"name": s.name, "limit_s": s.limit_s} for s in (*STEPS, SUMMARY)],
                             "setup": {}, "steps": [], "stopped": None}
        self.current: subprocess.Popen | None = None

    # ------------------------------------------------------------------------------ bookkeeping

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def say(self, text: str) -> None:
        line = f"gpu.sh [{self.elapsed():.0f}s] {text}"
        print(line, flush=True)
        with self.log_path.open("a") as log:
            log.write(line + "\n")

    def save(self) -> None:
        """gpu-steps.json, then every result file to $OUT."""
        self.record["elapsed_s"] = round(self.elapsed(), 1)
        path = self.results / "gpu-steps.json"
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(self.record, indent=2) + "\n")
        os.replace(temporary, path)
        self.copy_out()

    def copy_out(self) -> None:
        if self.out is None or self.out.resolve() == self.results.resolve():
            return
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            for path in sorted(self.results.iterdir()):
                if path.is_file() and (path.name.startswith("gpu-") or path.name == "summary.json"):
                    shutil.copyfile(path, self.out / path.name)
        except OSError as error:  # the run goes on; its files stay in the results folder
            if not self.record.get("copy_error"):
                self.record["copy_error"] = f"{self.out}: {error}"
                self.say(f"cannot copy to $OUT: {error}")

    # ---------------------------------------------------------------------------------- set-up

    def check(self, code: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([self.python, "-c", code], capture_output=True, text=True, timeout=timeout,
                              env=self.env, cwd=tempfile.gettempdir())

    def importable(self) -> bool:
        """Whether lhdbench (with its baselines and presets) imports from this checkout."""
        try:
            done = self.check("import lhdbench, lhdbench.baselines, lhdbench.conditions, pydantic\n"
                              "print(lhdbench.__file__)")
        except subprocess.TimeoutExpired:
            return False
        lines = done.stdout.strip().splitlines()
        return done.returncode == 0 and bool(lines) and Path(lines[-1]).resolve().is_relative_to(ROOT)

    def setup(self) -> None:
        self.make_importable()
        if self.rehearse:
            self.env["CUDA_VISIBLE_DEVICES"] = ""
            self.env.setdefault("OMP_NUM_THREADS", "1")
        self.check_cuda()

    def make_importable(self) -> None:
        """lhdbench from this checkout for every step: as it is, else installed, else on PYTHONPATH."""
        setup = self.record["setup"]
        if self.importable():
            return
        wheels = ROOT / "benchmarks" / "wheels"
        if wheels.is_dir():
            self.pip(["install", "-q", "--no-index", "--find-links", str(wheels), "pydantic"])
        setup["pip_install"] = self.pip(["install", "-q", "--no-index", "--no-deps", "--no-build-isolation",
                                         "-e", str(ROOT)])
        if self.importable():
            return
        shim = self.shim()
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), self.env.get("PYTHONPATH")]))
        setup["pythonpath"] = str(shim)
        self.say(f"pip install -e . {setup['pip_install']}, lhdbench not importable: PYTHONPATH={shim}")
        if not self.importable():
            raise Stop("lhdbench does not import from this checkout, installed or on PYTHONPATH "
                       "(are its dependencies other than Ray installed? see gpu-log.txt)")

    def check_cuda(self) -> None:
        """torch's version and GPU; on a real run, a machine without a CUDA GPU stops the run here."""
        code = ("import torch, sys\nok = torch.cuda.is_available()\n"
                "print('torch', torch.__version__, 'CUDA', torch.version.cuda, "
                "torch.cuda.get_device_name(0) if ok else 'no CUDA device')\nsys.exit(0 if ok else 3)")
        try:
            done = self.check(code, 45)
            found, ok = (done.stdout.strip() or done.stderr.strip()[-300:]), done.returncode == 0
        except subprocess.TimeoutExpired:
            found, ok = "torch did not answer within 45 s", False
        self.record["setup"]["torch"] = found
        self.say(found)
        if not ok and not self.rehearse:
            raise Stop(f"no CUDA GPU ({found}): nothing to measure; `bash benchmarks/gpu.sh --rehearse` "
                       "rehearses the run on the CPU")

    def pip(self, args: list[str]) -> str:
        try:
            done = subprocess.run([self.python, "-m", "pip", *args], capture_output=True, text=True,
                                  timeout=45, env={**self.env, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
                                  cwd=ROOT)
        except subprocess.TimeoutExpired:
            return "timed out"
        with self.log_path.open("a") as log:
            log.write(done.stdout + done.stderr)
        return "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"

    def shim(self) -> Path:
        """A folder holding `lhdbench` as it installs: the package's files, with `baselines/` and
        `conditions/` inside it (setup.cfg's package_dir), all as links into this checkout."""
        shim = Path(tempfile.mkdtemp(prefix="lhdbench-path-"))
        package = shim / "lhdbench"
        package.mkdir()
        for entry in (ROOT / "lhdbench").iterdir():
            if entry.name != "__pycache__":
                (package / entry.name).symlink_to(entry)
        for name in ("baselines", "conditions"):
            (package / name).symlink_to(ROOT / name)
        return shim

    # ------------------------------------------------------------------------------------ steps

    def run_step(self, step: Step, limit: float) -> dict:
        argv = [self.python, *step.command, "--out", str(self.results / step.writes)]
        argv += ["--rehearse"] if self.rehearse else list(step.gpu_args)
        entry = {"name": step.name, "limit_s": round(limit, 1), "started_s": round(self.elapsed(), 1),
                 "command": " ".join(argv[1:])}
        self.say(f"{step.name} (at most {limit:.0f}s)")
        began = time.monotonic()
        with self.log_path.open("a") as log:
            self.current = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            cwd=ROOT, start_new_session=True)
            try:
                code = self.current.wait(timeout=limit)
                entry["status"] = "done" if code == 0 else "failed"
                entry["exit_code"] = code
            except subprocess.TimeoutExpired:
                entry["status"] = "killed"
                entry["exit_code"] = None
            finally:
                self.end_group()
        entry["seconds"] = round(time.monotonic() - began, 1)
        written = self.results / step.writes
        entry["wrote"] = written.is_file()
        self.say(f"{step.name}: {entry['status']} after {entry['seconds']}s"
                 + ("" if entry["status"] == "done" else
                    f" (exit {entry['exit_code']})" if entry["status"] == "failed" else " (its time limit)"))
        return entry

    def end_group(self) -> None:
        """End the current step's process group: its leader and whatever it started (packing workers)."""
        proc, self.current = self.current, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break  # nothing left of the group
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            if sig == signal.SIGTERM:
                time.sleep(0.2)  # the leader is gone; any member left gets the KILL

    def steps(self, steps: tuple[Step, ...]) -> None:
        deadline = self.budget_s - self.summary_step.limit_s
        for step in steps:
            left = deadline - self.elapsed()
            limit = min(step.limit_s, left)
            if limit < self.min_step_s:
                entry = {"name": step.name, "status": "skipped",
                         "reason": f"{max(left, 0):.0f}s left of the {self.budget_s:.0f}s budget before the "
                                   "summary's reserve"}
                self.say(f"{step.name}: skipped, {entry['reason']}")
            else:
                entry = self.run_step(step, limit)
            self.record["steps"].append(entry)
            self.save()

    def summary(self) -> None:
        """The summary, whatever happened before; a stand-in naming the failure where it fails."""
        summary = self.summary_step
        path = self.results / summary.writes
        before = path.stat().st_mtime_ns if path.exists() else None
        entry = self.run_step(summary, summary.limit_s)
        self.record["steps"].append(entry)
        fresh = path.exists() and path.stat().st_mtime_ns != before
        if entry["status"] != "done" or not fresh:
            self.stand_in(path, f"benchmarks/summary.py {entry['status']}: see gpu-log.txt")
        self.save()

    def stand_in(self, path: Path, why: str) -> None:
        """A summary.json with null figures, naming why it stands in and what did not finish."""
        summary = dict.fromkeys(SUMMARY_KEYS)
        summary["rehearsal"] = self.rehearse or None
        summary["missing"] = [f"summary.json ({why})"]
        summary["missing"] += [f"{s['name']} ({s['status']})" for s in self.record["steps"]
                               if s["status"] != "done" and s["name"] != self.summary_step.name]
        if self.record["stopped"]:
            summary["missing"].insert(0, f"everything: {self.record['stopped']}")
        summary["steps"] = {s["name"]: s for s in self.record["steps"]}
        path.write_text(json.dumps(summary, indent=2) + "\n")
        self.say("summary.json written in the summary's place, naming what is missing")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rehearse", action="store_true",
                        help="the same steps with tiny networks and iteration counts, on the CPU")
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help=f"seconds for the whole run (default {BUDGET_S}); steps that would leave the "
                             "summary no time are skipped")
    parser.add_argument("--results", default=None,
                        help="where the files go (default: benchmarks/results, or a new temporary folder "
                             "for a rehearsal); copied to $OUT after every step when OUT is set")
    args = parser.parse_args(argv)
    if not args.budget > 0:
        parser.error(f"--budget must be a positive number of seconds, got {args.budget}")
    if args.results:
        results = Path(args.results)
    elif args.rehearse:
        results = Path(tempfile.mkdtemp(prefix="gpu-rehearsal-"))
    else:
        results = ROOT / "benchmarks" / "results"
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    run = Run(results.resolve(), out, args.budget, args.rehearse,
              python=os.environ.get("PYTHON") or sys.executable)
    run.say(f"{'rehearsal on the CPU' if args.rehearse else 'GPU run'}; results in {run.results}"
            + (f", copied to {out}" if out else "") + f"; budget {args.budget:.0f}s")

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        try:
            run.setup()
        except Stop as stop:
            run.record["stopped"] = str(stop)
            run.say(f"stopped: {stop}")
            print(f"gpu.sh: {stop}", file=sys.stderr)
            run.save()
            run.summary()
            return 3
        run.save()
        run.steps(STEPS)
        run.summary()
    except KeyboardInterrupt:
        run.end_group()
        run.record["stopped"] = "interrupted (a signal from outside)"
        run.say("interrupted: what was written is kept")
        summary_path = run.results / SUMMARY.writes  # an earlier run's was removed at the start
        if not summary_path.exists():
            run.stand_in(summary_path, "the run was interrupted before its summary")
        run.save()
        return 130
    failed = [s["name"] for s in run.record["steps"] if s["status"] != "done"]
    run.say(f"done: {len(failed)} step(s) not finished" + (f" ({', '.join(failed)})" if failed else ""))
    run.save()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
