"""How long the README's main job takes, and what it learns: runs its benchmark command (the demo suite
through a local Ray instance) in a fresh folder, times it, reports on it, and writes the measurement.

    python benchmarks/demo.py --out benchmarks/results/demo-cpu.json [--keep DIR]

Run it on an otherwise idle machine: the result names the CPU, its cores and the load average before
the run. Besides the wall time it records the trials' time per image (what `lhdbench benchmark
--dry-run` estimates the demo from, via benchmarks/measurements.py) and the leaderboard's mean accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lhdbench.data.specs import test_images, train_images
from lhdbench.plan import load_suite, make_plan
from lhdbench.results.bundle import export_bundle
from lhdbench.store import Store

COMMAND = ["benchmark", "--suite", "demo"]  # the README's main job, without --storage (added here)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def per_image(store: Store, plan) -> dict:
    """Seconds per image of a training step (a search step: of its architecture and weight batches),
    per search method and per evaluation policy, from the records: the medians over the trials."""
    by_id = {t.trial_id: t for t in plan.trials}
    settings = plan.protocol.evaluate
    search, train = {}, {}
    for trial_id, record in store.records().items():
        trial = by_id.get(trial_id)
        if trial is None or record.status != "done" or not record.wall_time_s or not record.epochs:
            continue
        if trial.phase == "search":
            bilevel = record.arch_half_acc is not None
            images = min(train_images(trial.dataset), record.settings["max_train_images"] or math.inf)
            images = images // 2 if bilevel else images  # split for bilevel methods
            batch = min(record.settings["batch_size"], images)
            steps = record.epochs * math.ceil(images / batch)
            search.setdefault(trial.baseline, []).append(record.wall_time_s / (steps * batch))
        elif trial.phase == "evaluate":
            trained = settings.epochs * train_images(trial.dataset)
            tested = sum(1 for h in record.history if "test_acc" in h) * test_images(trial.dataset)
            # A forward-only test image costs about a third of a trained one.
            train.setdefault(trial.policy, []).append(record.wall_time_s / (trained + tested / 3))
    return {"search": {k: statistics.median(v) for k, v in sorted(search.items())},
            "train": {k: statistics.median(v) for k, v in sorted(train.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--keep", default=None, help="keep the store's records and plan, and a bundle of "
                        "it, here (e.g. results/demo)")
    args = parser.parse_args()
    lhdbench = str(Path(sys.executable).with_name("lhdbench"))
    folder = Path(tempfile.mkdtemp(prefix="lhdbench-demo-"))
    storage, report = folder / "store", folder / "report"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    load = os.getloadavg()
    began = time.monotonic()
    run = subprocess.run([lhdbench, *COMMAND, "--storage", str(storage)], env=env, text=True,
                         capture_output=True)
    wall = time.monotonic() - began
    if run.returncode != 0:
        sys.exit(f"the benchmark failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    subprocess.run([lhdbench, "report", "--storage", str(storage), "--out", str(report)], env=env, check=True,
                   capture_output=True)
    plan = make_plan(load_suite("demo"))
    store = Store(storage)
    records = store.records()
    accuracies = [r.final_test_acc for r in records.values() if r.phase == "evaluate"]
    cells = {}
    for r in records.values():
        if r.phase == "evaluate":
            cells.setdefault((r.baseline, r.policy), []).append(r.final_test_acc)
    result = {
        "command": "lhdbench " + " ".join(COMMAND), "machine": {
            "cpu": cpu_name(), "cores": os.cpu_count(), "load_average_before": load,
            "platform": platform.platform(), "python": platform.python_version()},
        "trials": len(records), "searches": len(plan.searches), "evaluations": len(accuracies),
        "benchmark_wall_s": wall, "benchmark_minutes": wall / 60,
        "mean_test_acc_over_cells": statistics.fmean(statistics.fmean(v) for v in cells.values()),
        "min_cell_test_acc": min(statistics.fmean(v) for v in cells.values()),
        "seconds_per_image": per_image(store, plan),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("benchmark_minutes", "mean_test_acc_over_cells",
                                              "min_cell_test_acc")}, indent=2))
    if args.keep:
        keep = Path(args.keep)
        (keep / "store").mkdir(parents=True, exist_ok=True)
        shutil.rmtree(keep / "store" / "records", ignore_errors=True)
        shutil.copytree(storage / "records", keep / "store" / "records")
        shutil.copy2(storage / "plan.json", keep / "store" / "plan.json")
        # The same results as a bundle, with the searched architectures the store copy leaves out.
        export_bundle(storage, keep / "demo-bundle.zip")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
