"""How big a bundle of the full lhd suite is: a synthetic store of the lhd plan's 900 trials (180
searches of 50 epochs, 720 evaluations of 600 epochs, the paper protocol), with records shaped like
real ones (every epoch's history; a search's exported weights after every epoch; a done search's
arch.npz), exported with `lhdbench export`.

    python benchmarks/bundle_size.py --out benchmarks/results/bundle-size.json

The values have the shapes the loops write (accuracies as fractions of the images, a mean loss at full
float precision, a float32 drop-path ramp, weights at 5 significant digits) but random digits, which
compress worse than real training curves: the measured size is an upper estimate for a real store.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from lhdbench import __version__
from lhdbench.environment import code_version
from lhdbench.plan import load_suite, make_plan
from lhdbench.record import Environment, Resources, TrialRecord, Worker
from lhdbench.results.bundle import export_bundle
from lhdbench.search import ARCH_FILE
from lhdbench.space import ArchWeights, discretize, get_policy
from lhdbench.store import Store


def random_weights(rng: np.random.Generator) -> ArchWeights:
    return ArchWeights.from_logits(rng.normal(size=(20, 7)), rng.normal(size=(20, 7)),
                                   rng.normal(size=(2, 5)), rng.normal(size=(2, 5)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    plan = make_plan(load_suite("lhd"))
    protocol = plan.protocol.to_dict()
    env = Environment(device="cuda:0", device_name="NVIDIA H100 80GB HBM3", lhdbench=__version__,
                      torch="2.11.0", cuda="13.0", python="3.11.7", host="node")
    worker = Worker(host="node", pid=1, cuda_visible_devices="0", started_at=0.0, finished_at=1.0)
    weights: dict[str, ArchWeights] = {}
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "store")
        store.add_to_plan(plan.run_entry(), {t.trial_id: {**t.to_dict(), "protocol": plan.protocol.name}
                                             for t in plan.trials})
        for trial in plan.trials:
            common = {**trial.to_dict(), "protocol": protocol, "environment": env, "worker": worker,
                      "attempts": 1, "resources": Resources(cpu=1.0, gpu=0.5), "wall_time_s": 3600.0,
                      "code": code_version(), "epochs_per_s": 0.01}
            if trial.phase == "search":
                arch = weights[trial.trial_id] = random_weights(rng)
                folder_of = store.trial_dir(trial.trial_id)
                folder_of.mkdir(parents=True)
                arch.save(folder_of / ARCH_FILE)
                # As the loop writes them: a cosine learning rate, an accuracy over the 25,000-image
                # half, a mean loss, and the weights at 5 significant digits (search.py).
                history = [{"epoch": e, "lr": 0.0003 + 0.0247 * (1 + np.cos(np.pi * (e + 1) / 50)) / 2,
                            "train_acc": int(rng.integers(25_000)) / 25_000,
                            "train_loss": float(rng.random() * 2)} for e in range(50)]
                shapes = (("normal", (20, 7)), ("reduce", (20, 7)), ("normal_output", (2, 5)),
                          ("reduce_output", (2, 5)))
                arch_history = [{"epoch": e, **{k: [[float(f"{v:.5g}") for v in row] for row in rng.random(s)]
                                                for k, s in shapes}} for e in range(50)]
                record = TrialRecord.done(**common, settings=protocol["search"], hparams={},
                                          arch_file=ARCH_FILE, history=history, arch_history=arch_history,
                                          epochs=50, arch_half_acc=float(rng.random()))
            else:
                genotype = discretize(weights[trial.search_trial_id], get_policy(trial.policy))
                # A float32 drop-path ramp, accuracies over 50,000 training and 10,000 test images
                # (the test set from epoch 401 on, as the paper protocol evaluates it), a mean loss.
                history = [{"epoch": e, "drop_path_prob": float(np.float32(0.2 * e / 600)),
                            "train_acc": int(rng.integers(50_000)) / 50_000,
                            "train_loss": float(rng.random() * 2),
                            **({"test_acc": int(rng.integers(10_000)) / 10_000} if e > 400 else {})}
                           for e in range(600)]
                record = TrialRecord.done(**common, settings=protocol["evaluate"],
                                          genotype=genotype.to_dict(), arch_sha256="0" * 64, history=history,
                                          epochs=600, final_test_acc=float(rng.random()),
                                          best_test_acc=float(rng.random()), best_epoch=500,
                                          best_after_epoch=400, params=3_000_000)
            store.write_record(record)
        raw = sum(p.stat().st_size for p in store.root.rglob("*") if p.is_file())
        began = time.monotonic()
        bundle = Path(folder) / "lhd.zip"
        manifest = export_bundle(store.root, bundle)
        seconds = time.monotonic() - began
        size = bundle.stat().st_size
        parts: dict[str, int] = {}
        with zipfile.ZipFile(bundle) as archive:
            for info in archive.infolist():
                kind = ("search records" if info.filename.startswith("records/search-") else
                        "evaluation records" if info.filename.startswith("records/") else
                        "arch.npz files" if info.filename.endswith("arch.npz") else "plan and manifest")
                parts[kind] = parts.get(kind, 0) + info.compress_size
    result = {"what": "a bundle of a synthetic store of the full lhd suite (paper protocol)",
              "trials": len(plan.trials), "searches": len(plan.searches),
              "evaluations": len(plan.of_phase("evaluate")), "members": len(manifest["members"]),
              "store_bytes": raw, "bundle_bytes": size, "bundle_mb": round(size / 1e6, 2),
              "compressed_bytes_by_part": dict(sorted(parts.items())),
              "export_seconds": round(seconds, 1), "machine": platform.processor() or platform.machine(),
              "lhdbench": __version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
