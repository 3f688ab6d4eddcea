"""Several evaluation trials on one GPU at once: the aggregate training throughput of 1, 2, 4 and 8
processes, each training the paper's base network (batch 64) as an evaluation trial does, against one
process alone. This is what the runner's fractional GPU shares buy (runner/gpu_share.py).

Each process builds its network, warms up, waits for a common start time, then counts its steps for
`--seconds`; the parent sums their images per second. No CUDA MPS: the processes time-share the GPU,
as Ray's fractional GPUs give them.

    python benchmarks/packing.py --out benchmarks/results/gpu-packing.json [--counts 1,2,4,8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(variant: str, start_at: float, seconds: float) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    from throughput import stream
    from train_step import VARIANTS, make_step, network

    device = torch.device("cuda", 0)
    torch.backends.cudnn.benchmark = True
    model = network(device)
    step, _ = make_step(model, VARIANTS[variant], device)
    model.drop_path_prob = 0.2 * 0.01 * len(model.genotype.normal.concat)
    data = stream(20_000, 64, device, False, 16)
    for _ in range(15):
        step.step(*data.next_batch())
    torch.cuda.synchronize(device)
    late = time.time() > start_at
    while time.time() < start_at:
        time.sleep(0.01)
    steps, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        step.step(*data.next_batch())
        steps += 1
        if steps % 10 == 0:
            torch.cuda.synchronize(device)
    torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - began
    print(json.dumps({"steps": steps, "seconds": elapsed, "images_per_s": 64 * steps / elapsed,
                      "started_late": late, "peak_memory_bytes": torch.cuda.max_memory_allocated(device)}))


def run(variant: str, count: int, seconds: float, ready_s: float) -> dict:
    start_at = time.time() + ready_s
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", variant, str(start_at), str(seconds)],
                              stdout=subprocess.PIPE, text=True) for _ in range(count)]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=ready_s + seconds + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"a packing worker failed (exit {proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return {"processes": count, "aggregate_images_per_s": sum(r["images_per_s"] for r in results),
            "any_started_late": any(r["started_late"] for r in results), "workers": results}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", default="plain,graphed-fp32")
    parser.add_argument("--counts", default="1,2,4,8")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ready", type=float, default=40.0, help="seconds the workers get to start")
    args = parser.parse_args()
    result: dict = {"batch": 64, "seconds": args.seconds, "runs": {}, "gain": {}}
    try:
        import torch

        result["device"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        sys.exit("benchmarks/packing.py needs a GPU")
    for variant in args.variants.split(","):
        runs = result["runs"].setdefault(variant, {})
        for count in (int(c) for c in args.counts.split(",")):
            runs[str(count)] = run(variant, count, args.seconds, args.ready)
            alone = runs["1"]["aggregate_images_per_s"] if "1" in runs else None
            if alone:
                gain = runs[str(count)]["aggregate_images_per_s"] / alone
                result["gain"].setdefault(variant, {})[str(count)] = gain
            print(variant, count, round(runs[str(count)]["aggregate_images_per_s"], 1), file=sys.stderr,
                  flush=True)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["gain"]))


if __name__ == "__main__":
    main()
