"""summary.json from what benchmarks/gpu.sh measured (each key null where its measurement is missing):

* device: the GPU the numbers come from; rehearsal: true when they come from a CPU rehearsal (then
  they mean nothing, only that every part ran);
* gpu_tests: how many of tests/gpu passed, and which failed (gpu-tests.json);
* train_step_speedup: the evaluation training step, plain fp32 eager time over the fastest graphed
  variant's (gpu-train-step.json), with the graphed fp32 step's difference from the plain one in
  details.train.equality_fp32;
* compiled_step_speedup: plain over torch.compile(mode="reduce-overhead") (gpu-compiled.json), and
  compile_first_step_s, its first step (the compilation); details.compiled also has
  torch.compile(backend="cudagraphs"), which compiles without Inductor;
* packed_throughput_gain: the best aggregate training throughput of one GPU with 1, 2 or 4 graphed
  trials over one trial's (gpu-packing.json), and trials_per_gpu, the count that gives it (ties within
  3% go to the smaller count; benchmarks/measurements.py writes it for the runner's cap);
* streams_over_processes: the four policies' networks trained in one process on four CUDA streams,
  aggregate throughput over the same four in four processes (gpu-streams.json);
* search_step_speedup: the search step, reference cell fp32 over the fastest fused variant
  (gpu-throughput-search.json);
* methods_measured: how many methods' search steps gpu-methods.json holds;
* suite_gpu_hours: the lhd suite with the paper protocol, from lhdbench's own estimate (the step times
  in conditions/measurements.yaml, one trial per GPU) with the evaluations' plain training step replaced
  by the GPU's best packed throughput, and the searches scaled by the fastest measured search step
  against the one the estimate uses;
* steps: each step of the run as gpu.sh recorded it (gpu-steps.json): done, failed, killed, skipped;
* missing: one line per part that is absent or incomplete, naming its file and what happened.

    python benchmarks/summary.py [--out DIR/summary.json]     # reads the other files of DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
KEYS = ("device", "rehearsal", "gpu_tests", "train_step_speedup", "compiled_step_speedup",
        "compile_first_step_s", "packed_throughput_gain", "trials_per_gpu", "streams_over_processes",
        "search_step_speedup", "methods_measured", "suite_gpu_hours", "missing")
# file -> the step of gpu.sh that writes it
FILES = {"gpu-tests.json": "gpu-tests", "gpu-train-step.json": "train-step", "gpu-packing.json": "packing",
         "gpu-throughput-search.json": "search-step", "gpu-streams.json": "streams",
         "gpu-compiled.json": "compiled", "gpu-methods.json": "methods"}


def load(results: Path, name: str) -> tuple[dict | None, str | None]:
    """(the file's content, why it is unusable or None)."""
    path = results / name
    if not path.exists():
        return None, "absent"
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return None, f"unreadable ({type(error).__name__})"
    return (value, None) if isinstance(value, dict) else (None, "not a JSON object")


def best_count(rates: dict[str, float | None]) -> int | None:
    """The number of trials per GPU with the best aggregate throughput; one within 3% of a larger count's
    is preferred (fewer processes, less memory for the same work)."""
    measured = {int(k): v for k, v in rates.items() if v}
    if not measured:
        return None
    top = max(measured.values())
    return min(c for c, v in measured.items() if v >= 0.97 * top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None,
                        help="where to write it (default benchmarks/results/summary.json); the measurements "
                             "are read from the same folder")
    parser.add_argument("--rehearse", action="store_true", help="(what the files say decides)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else RESULTS / "summary.json"
    results = out.parent
    summary: dict = dict.fromkeys(KEYS)
    summary.update(missing=[], details={})
    steps, _ = load(results, "gpu-steps.json")
    summary["steps"] = {s["name"]: s for s in (steps or {}).get("steps", [])}
    if steps and steps.get("stopped"):
        summary["missing"].append(f"everything: {steps['stopped']}")
    files = {}
    for name, step in FILES.items():
        data, why = load(results, name)
        files[name] = data
        ran = summary["steps"].get(step, {})
        if data is None:
            summary["missing"].append(f"{name} ({why}; step {step}: {ran.get('status', 'not run')})")
        elif data.get("status") != "done":
            summary["missing"].append(f"{name} (incomplete; step {step}: {ran.get('status', 'unknown')})")
        for part, error in (data or {}).get("errors", {}).items():
            summary["missing"].append(f"{name}: {part} ({error.get('error', 'failed')})")
    summary["rehearsal"] = any(bool(d.get("rehearsal")) for d in files.values() if d) or None

    tests = files["gpu-tests.json"]
    if tests and "passed" in tests:
        summary["gpu_tests"] = {k: tests[k] for k in ("passed", "skipped", "failed")}

    train, compiled = files["gpu-train-step.json"], files["gpu-compiled.json"]
    variants = (train or {}).get("variants", {})
    plain = variants.get("plain", {}).get("step_s")
    if train:
        summary["device"] = train.get("device", {}).get("device_name")
    graphed = {k: v["step_s"] for k, v in variants.items() if k.startswith("graphed") and v.get("step_s")}
    if plain and graphed:
        fastest = min(graphed, key=graphed.get)
        summary["train_step_speedup"] = plain / graphed[fastest]
        summary["details"]["train"] = {"fastest": fastest, "plain_step_s": plain, "step_s": graphed,
                                       "equality_fp32": train.get("equality_fp32"),
                                       "memory": {k: v.get("memory") for k, v in variants.items()}}
    elif train:
        summary["missing"].append("train_step_speedup (needs the plain and a graphed variant)")
    compiled_variants = (compiled or {}).get("variants", {})
    c = compiled_variants.get("compiled", {})
    summary["compile_first_step_s"] = c.get("first_step_s")
    if plain and c.get("step_s"):
        summary["compiled_step_speedup"] = plain / c["step_s"]
    elif compiled:
        status = c.get("status", "not run")
        summary["missing"].append(f"compiled_step_speedup (the compiled variant: {status}, "
                                  f"{compiled.get('elapsed_s')}s into its step)")
    if compiled_variants:
        summary["details"]["compiled"] = {
            name: {**{k: v.get(k) for k in ("status", "step_s", "first_step_s", "warmup_s", "memory")},
                   "speedup": plain / v["step_s"] if plain and v.get("step_s") else None}
            for name, v in compiled_variants.items()}

    packing = files["gpu-packing.json"]
    best_rate = None
    for variant, runs in ((packing or {}).get("runs") or {}).items():
        rates = {k: r.get("aggregate_images_per_s") for k, r in runs.items()}
        count = best_count(rates)
        if count is None or not rates.get("1"):
            continue
        if best_rate is None or rates[str(count)] > best_rate:
            best_rate = rates[str(count)]
            summary["packed_throughput_gain"] = best_rate / rates["1"]
            summary["trials_per_gpu"] = count
            summary["details"]["packing"] = {"variant": variant, "trials_per_gpu": count,
                                             "aggregate_images_per_s": rates}
    if packing and best_rate is None:
        summary["missing"].append("packed_throughput_gain (no phase with one trial and a rate)")
    summary["device"] = summary["device"] or (packing or {}).get("device")

    streams = files["gpu-streams.json"]
    if streams:
        summary["streams_over_processes"] = streams.get("streams_over_processes")
        summary["details"]["streams"] = {k: r.get("aggregate_images_per_s")
                                         for k, r in (streams.get("runs") or {}).items()}

    search = files["gpu-throughput-search.json"]
    r = (search or {}).get("results") or {}
    search_plain = r.get("search/plain", {}).get("step_s")
    fused = {k: v["step_s"] for k, v in r.items() if k != "search/plain" and v.get("step_s")}
    if search_plain and fused:
        best = min(fused, key=fused.get)
        summary["search_step_speedup"] = search_plain / fused[best]
        summary["details"]["search"] = {"fastest": best, "plain_step_s": search_plain, "step_s": fused}
    summary["device"] = summary["device"] or (search or {}).get("device", {}).get("device_name")

    methods = files["gpu-methods.json"]
    if methods:
        summary["methods_measured"] = sum(1 for v in methods.get("methods", {}).values() if v.get("step_s"))

    batch = (train or {}).get("batch", 64)
    summary["details"]["suite"] = suite_hours(plain, batch, best_rate, fused)
    summary["suite_gpu_hours"] = summary["details"]["suite"].pop("hours")
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in KEYS}, indent=2))


def suite_hours(plain_step_s: float | None, batch: int, best_rate: float | None,
                fused: dict[str, float]) -> dict:
    sys.path.insert(0, str(ROOT))
    from lhdbench.estimate import estimate, measurements
    from lhdbench.plan import load_suite, make_plan

    plan = make_plan(load_suite("lhd"))
    result = estimate(plan, kind="gpu")
    hours = {"search": 0.0, "evaluate": 0.0}
    for cost in result.costs:
        if cost.seconds is not None:
            hours[cost.trial.phase] = hours.get(cost.trial.phase, 0.0) + cost.seconds / 3600
    entry = measurements().get("paper", {}).get("gpu", {})
    eval_factor = search_factor = None
    if best_rate and plain_step_s:
        # The estimate's training step is the plain fp32 one of a trial alone on its GPU: the GPU's
        # best packed throughput divides it.
        eval_factor = (batch / plain_step_s) / best_rate
    used = entry.get("search", {}).get("darts", {}).get("seconds")
    if fused and used:
        search_factor = min(fused.values()) / used
    total = None
    if eval_factor is not None:
        total = hours["search"] * (search_factor or 1.0) + hours["evaluate"] * eval_factor
    return {"hours": total, "estimate_hours_today": hours, "evaluation_factor": eval_factor,
            "search_factor": search_factor, "estimate_device": result.device}


if __name__ == "__main__":
    main()
