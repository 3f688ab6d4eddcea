"""benchmarks/results/summary.json from what benchmarks/gpu.sh measured, with the cost issue's keys:

* device: the GPU the numbers come from;
* train_step_speedup: the evaluation training step, plain fp32 eager time over the fastest graphed
  variant's (gpu-train-step.json), and whether the graphed fp32 step computed the plain one;
* packed_throughput_gain: the best aggregate training throughput of a GPU with at most as many trials
  as the runner puts on one (runner/gpu_share.py, MAX_TRIALS_PER_GPU), over one trial's of the same
  variant (gpu-packing.json);
* search_step_speedup: the search step, reference cell fp32 over the fastest fused variant
  (gpu-throughput-search.json);
* suite_gpu_hours: the lhd suite with the paper protocol, from lhdbench's own estimate (the step times
  in conditions/measurements.yaml, one trial per GPU) with the evaluations' plain training step replaced
  by the GPU's best packed throughput, and the searches scaled by the fastest measured search step
  against the one the estimate uses.

A key whose measurement is missing is null, and `missing` says which file it needed.

    python benchmarks/summary.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from lhdbench.estimate import estimate, measurements
    from lhdbench.plan import load_suite, make_plan
    from lhdbench.runner.gpu_share import MAX_TRIALS_PER_GPU

    summary: dict = {"device": None, "train_step_speedup": None, "packed_throughput_gain": None,
                     "search_step_speedup": None, "suite_gpu_hours": None, "missing": [], "details": {}}
    train, packing = load("gpu-train-step.json"), load("gpu-packing.json")
    search = load("gpu-throughput-search.json")
    fastest_train = None
    if train and "speedup" in train:
        summary["device"] = train["device"]["device_name"]
        fastest_train = max(train["speedup"], key=train["speedup"].get)
        summary["train_step_speedup"] = train["speedup"][fastest_train]
        summary["details"]["train"] = {"fastest": fastest_train, "speedups": train["speedup"],
                                       "plain_step_s": train["variants"]["plain"]["step_s"],
                                       "equality_fp32": train["equality_fp32"]}
    else:
        summary["missing"].append("gpu-train-step.json")
    best_packed = None  # (aggregate images/s, variant, trials per GPU)
    if packing and packing.get("runs"):
        for variant, runs in packing["runs"].items():
            for count, run in runs.items():
                if int(count) <= MAX_TRIALS_PER_GPU and "1" in runs:
                    candidate = (run["aggregate_images_per_s"], variant, int(count))
                    best_packed = max(best_packed or candidate, candidate)
    if best_packed:
        rate, variant, count = best_packed
        summary["packed_throughput_gain"] = rate / packing["runs"][variant]["1"]["aggregate_images_per_s"]
        summary["details"]["packing"] = {"variant": variant, "trials_per_gpu": count,
                                         "aggregate_images_per_s": rate, "gains": packing.get("gain")}
        summary["device"] = summary["device"] or packing.get("device")
    else:
        summary["missing"].append("gpu-packing.json")
    if search and search.get("results"):
        r = search["results"]
        plain = r.get("search/plain", {}).get("step_s")
        fused = {k: v["step_s"] for k, v in r.items() if k != "search/plain" and v.get("step_s")}
        if plain and fused:
            best = min(fused, key=fused.get)
            summary["search_step_speedup"] = plain / fused[best]
            summary["details"]["search"] = {"fastest": best, "plain_step_s": plain, "step_s": fused}
        summary["device"] = summary["device"] or search["device"]["device_name"]
    else:
        summary["missing"].append("gpu-throughput-search.json")

    plan = make_plan(load_suite("lhd"))
    result = estimate(plan, kind="gpu")
    hours = {"search": 0.0, "evaluate": 0.0}
    for cost in result.costs:
        if cost.seconds is not None:
            hours[cost.trial.phase] = hours.get(cost.trial.phase, 0.0) + cost.seconds / 3600
    entry = measurements().get("paper", {}).get("gpu", {})
    eval_factor = search_factor = None
    if best_packed and train:
        # The estimate's training step is the plain fp32 one of a trial alone on its GPU: the GPU's
        # best packed throughput (of any variant, at most MAX_TRIALS_PER_GPU trials) divides it.
        plain_alone = 64 / train["variants"]["plain"]["step_s"]
        eval_factor = plain_alone / best_packed[0]
    if "search" in summary["details"]:
        used = entry.get("search", {}).get("darts", {}).get("seconds")
        fastest = min(summary["details"]["search"]["step_s"].values())
        search_factor = fastest / used if used else None
    if eval_factor is not None:
        searches = hours["search"] * (search_factor or 1.0)
        summary["suite_gpu_hours"] = searches + hours["evaluate"] * eval_factor
    summary["details"]["suite"] = {"estimate_hours_today": hours, "evaluation_factor": eval_factor,
                                   "search_factor": search_factor, "estimate_device": result.device}
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    keys = ("device", "train_step_speedup", "packed_throughput_gain", "search_step_speedup",
            "suite_gpu_hours", "missing")
    print(json.dumps({k: summary[k] for k in keys}, indent=2))


if __name__ == "__main__":
    main()
