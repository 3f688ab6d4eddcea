"""Several evaluation trials on one GPU at once, as the runner's fractional GPU shares put them
(runner/gpu_share.py), each training a final network (batch 64) as an evaluation trial does:

  * --mode packing: 1, 2 and 4 processes, each training the paper's base network with the graphed fp32
    step, against one process alone (`gain`); a rehearsal runs 1 and 2 (and two policies in streams);
  * --mode streams: the four policies' networks of one searched architecture (base, 1m, 3ops, 4out),
    each step graphed: in four processes at once (`processes`), against all four trained in one
    process, each network's step replayed on a CUDA stream of its own (`streams`, benchmarks/streams.py).

The worker processes are started once and warmed up (graphs captured) together; then each phase tells
its workers to start at a common time and count their steps for `--seconds`, while the others wait
(they launch nothing, they only hold their memory). The parent sums the images per second of the
phase's workers. No CUDA MPS: the processes time-share the GPU, as Ray's fractional GPUs give them.
A worker that fails to start fails only the phases that need it; each phase's errors are recorded and
the JSON is written after every phase.

    python benchmarks/packing.py --out benchmarks/results/gpu-packing.json --mode packing
    python benchmarks/packing.py --out benchmarks/results/gpu-streams.json --mode streams
    python benchmarks/packing.py --out /tmp/x.json --mode packing --rehearse   # tiny, on the CPU
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
POLICIES = ("base", "1m", "3ops", "4out")
VARIANT = "graphed-fp32"


def modes(policies: tuple[str, ...] = POLICIES) -> dict[str, tuple[list[str], dict[str, list[int]]]]:
    """mode -> (worker specs "kind:variant:policy+policy...", phases: label -> the workers it runs), for
    len(policies) trials at most (a rehearsal runs two, to start fewer processes on a small CPU)."""
    k = len(policies)
    counts = [c for c in (1, 2, 4) if c <= k]
    return {
        "packing": ([f"net:{VARIANT}:base"] * k, {str(c): list(range(c)) for c in counts}),
        "streams": ([f"net:{VARIANT}:{p}" for p in policies] + [f"streams:{VARIANT}:{'+'.join(policies)}"],
                    {"processes": list(range(k)), "streams": [k]}),
    }



# ------------------------------------------------------------------------------------------ worker


def worker(spec: str, rehearse: bool) -> None:
    """Set up what `spec` names, say it is ready, then time phases as the parent asks (one JSON line
    out per line in)."""
    import torch

    sys.path.insert(0, str(HERE))
    from gpu_memory import memory_figures
    from sizes import PAPER, REHEARSAL
    from streams import Together
    from throughput import stream, sync
    from train_step import make_step, network

    def say(value: dict) -> None:
        print(json.dumps(value), flush=True)

    size = REHEARSAL if rehearse else PAPER
    try:
        if rehearse:
            device = torch.device("cpu")
            torch.set_num_threads(1)
        else:
            device = torch.device("cuda", 0)
            torch.backends.cudnn.benchmark = True
        _, variant, what = spec.split(":")
        policies = what.split("+")
        steps, data = [], []
        for policy in policies:
            model = network(device, size, policy)
            model.drop_path_prob = 0.2 * 0.01 * len(model.genotype.normal.concat)
            steps.append(make_step(model, variant, device)[0])
            data.append(stream(size.images, size.batch, device, False, 16))
        together = Together(steps, data, device)
        began = time.perf_counter()
        for _ in range(size.warmup):
            together.step()
        sync(device)
        say({"ready": True, "spec": spec, "warmup_s": time.perf_counter() - began, "pid": os.getpid()})
    except Exception as error:  # noqa: BLE001 - reported to the parent, which records it
        say({"ready": False, "error": f"{type(error).__name__}: {error}".splitlines()[0][:300]})
        raise
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            return
        start_at, seconds = float(words[1]), float(words[2])
        try:
            late = time.time() > start_at
            while time.time() < start_at:
                time.sleep(0.005)
            count, began = 0, time.perf_counter()
            while time.perf_counter() - began < seconds:
                together.step()
                count += 1
                if count % 10 == 0:
                    sync(device)
            sync(device)
            elapsed = time.perf_counter() - began
            images = size.batch * len(policies) * count
            say({"steps": count, "networks": len(policies), "seconds": elapsed,
                 "images_per_s": images / elapsed, "started_late": late, "memory": memory_figures(device)})
        except Exception as error:  # noqa: BLE001
            say({"error": f"{type(error).__name__}: {error}".splitlines()[0][:300]})


# ------------------------------------------------------------------------------------------ parent


class Worker:
    def __init__(self, spec: str, rehearse: bool, logs: Path) -> None:
        self.spec = spec
        self.log = tempfile.NamedTemporaryFile("w+", dir=logs, prefix="worker-", suffix=".txt", delete=False)
        argv = [sys.executable, __file__, "--worker", spec] + (["--rehearse"] if rehearse else [])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.error: str | None = None
        self.ready: dict | None = None

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def answer(self, deadline: float) -> dict | None:
        """The worker's next JSON line, or None when it died or the deadline passed (error set)."""
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.error = self.error or "no answer in time"
                return None
            if line is None:
                self.error = self.error or f"exited ({self.proc.wait()}): {self.stderr_tail()}"
                return None
            try:
                return json.loads(line)
            except ValueError:
                continue  # a stray print of a library

    def send(self, text: str) -> None:
        try:
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.error = self.error or f"gone: {self.stderr_tail()}"

    def stderr_tail(self) -> str:
        try:
            lines = [s for s in Path(self.log.name).read_text().splitlines() if s.strip()]
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def stop(self) -> None:
        self.send("quit")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def phase(workers: list[Worker], chosen: list[int], seconds: float) -> dict:
    failed = {i: workers[i].error for i in chosen if workers[i].ready is None or workers[i].error}
    if failed:
        return {"processes": len(chosen), "aggregate_images_per_s": None,
                "errors": [f"worker {i} ({workers[i].spec}): {e or 'not ready'}" for i, e in failed.items()]}
    start_at = time.time() + 1.0
    for i in chosen:
        workers[i].send(f"go {start_at} {seconds}")
    deadline = time.monotonic() + 1.0 + seconds + 60
    answers = {i: workers[i].answer(deadline) for i in chosen}
    errors = [f"worker {i} ({workers[i].spec}): {a.get('error') if a else workers[i].error}"
              for i, a in answers.items() if not a or "error" in a]
    done = [a for a in answers.values() if a and "error" not in a]
    return {"processes": len(chosen), "networks": sum(a["networks"] for a in done),
            "aggregate_images_per_s": None if errors else sum(a["images_per_s"] for a in done),
            "any_started_late": any(a["started_late"] for a in done), "errors": errors, "workers": done}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], "--rehearse" in sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--mode", choices=sorted(modes()), default="packing")
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed seconds per phase (5; 1 rehearsing)")
    parser.add_argument("--ready", type=float, default=None,
                        help="seconds the workers get to start and warm up (60; 150 rehearsing)")
    parser.add_argument("--rehearse", action="store_true", help="tiny networks on the CPU")
    args = parser.parse_args()
    seconds = args.seconds or (1.0 if args.rehearse else 5.0)
    ready_s = args.ready or (150.0 if args.rehearse else 60.0)
    sys.path.insert(0, str(HERE))
    from result_file import ResultFile
    from sizes import PAPER, REHEARSAL

    size = REHEARSAL if args.rehearse else PAPER
    device = "cpu"
    if not args.rehearse:
        import torch

        if not torch.cuda.is_available():
            sys.exit("benchmarks/packing.py needs a GPU (--rehearse runs it on the CPU)")
        device = torch.cuda.get_device_name(0)
    specs, phases = modes(POLICIES[:2] if args.rehearse else POLICIES)[args.mode]
    out = ResultFile(args.out, rehearsal=args.rehearse, mode=args.mode, device=device, batch=size.batch,
                     variant=VARIANT, seconds=seconds, workers=specs, runs={})
    result = out.data
    with tempfile.TemporaryDirectory(prefix="packing-") as logs:
        workers = [Worker(spec, args.rehearse, Path(logs)) for spec in specs]
        try:
            deadline = time.monotonic() + ready_s
            for i, w in enumerate(workers):
                answer = w.answer(deadline)
                if answer and answer.get("ready"):
                    w.ready = answer
                else:
                    w.error = w.error or (answer or {}).get("error", "not ready")
                    result["errors"][f"worker {i}"] = {"error": f"{w.spec}: {w.error}"}
            result["ready_s"] = {str(i): (w.ready or {}).get("warmup_s") for i, w in enumerate(workers)}
            out.save()
            for label, chosen in phases.items():
                run = phase(workers, chosen, seconds)
                if args.mode == "packing":
                    result["runs"].setdefault(VARIANT, {})[label] = run
                    alone = result["runs"][VARIANT].get("1", {}).get("aggregate_images_per_s")
                    result["gain"] = {VARIANT: {k: r["aggregate_images_per_s"] / alone
                                                for k, r in result["runs"][VARIANT].items()
                                                if alone and r["aggregate_images_per_s"]}}
                else:
                    result["runs"][label] = run
                    rates = [result["runs"].get(k, {}).get("aggregate_images_per_s")
                             for k in ("streams", "processes")]
                    result["streams_over_processes"] = rates[0] / rates[1] if all(rates) else None
                print(args.mode, label, run["aggregate_images_per_s"], run["errors"], file=sys.stderr,
                      flush=True)
                out.save()
        finally:
            for w in workers:
                w.stop()
    out.done()
    print(json.dumps({k: result.get(k) for k in ("gain", "streams_over_processes") if k in result}))


if __name__ == "__main__":
    main()
