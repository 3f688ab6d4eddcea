"""Per-epoch metrics through Ray Tune's logger callbacks (`--log-to`), each read back offline: the
TensorBoard event files, MLflow's local file store and W&B's offline runs. Slow: starts Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lhdbench.store import Store

pytestmark = pytest.mark.slow
LHDBENCH = str(Path(sys.executable).with_name("lhdbench"))


def test_log_to_tensorboard_mlflow_and_wandb_get_every_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    storage = tmp_path / "s"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb"), "WANDB_SILENT": "true",
           "MLFLOW_TRACKING_URI": (tmp_path / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}
    (tmp_path / "wandb").mkdir()
    result = subprocess.run([LHDBENCH, "benchmark", "--suite", "smoke", "--baselines", "darts",
                             "--seeds", "0", "--policies", "base", "--storage", str(storage),
                             "--log-to", "tensorboard,mlflow,wandb"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    records = Store(storage).records()
    losses = {tid: [h["train_loss"] for h in r.history] for tid, r in records.items()}
    assert len(losses) == 2 and all(len(v) == 2 for v in losses.values())

    # TensorBoard: one event file per trial, its train_loss scalars the record's, epoch by epoch.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    seen = {}
    for events in (storage / "ray").rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        tag = next(t for t in accumulator.Tags()["scalars"] if t.endswith("/train_loss"))
        seen[events.parent.name] = [round(e.value, 5) for e in accumulator.Scalars(tag)]
    assert {k: [round(v, 5) for v in vals] for k, vals in losses.items()} == seen

    # MLflow: a run per trial in the experiment named after the suite, with the metric history.
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("lhdbench-smoke")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    for run in runs:
        history = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train_loss"),
                                           key=lambda m: m.step)]
        assert [round(v, 5) for v in history] in [[round(x, 5) for x in v] for v in losses.values()]

    # W&B offline: a run per trial, read from its .wandb log, with every epoch's loss.
    logged = []
    for log in (tmp_path / "wandb").rglob("run-*.wandb"):
        history = [h["train_loss"] for h in wandb_history(log) if "train_loss" in h]
        logged.append([round(v, 5) for v in history])
    assert sorted(logged) == sorted([round(x, 5) for x in v] for v in losses.values())


def wandb_history(path: Path) -> list[dict]:
    """The history rows of an offline W&B run file: a LevelDB-style log (a 7-byte W&B header, 32 KiB
    blocks of checksummed chunks) of wandb_internal protobuf records."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    rows, pending, position, block = [], b"", 7, 32768
    while position + 7 <= len(data):
        room = block - position % block
        if room < 7:  # a block's tail too short for a chunk header is padding
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if length == 0 and kind == 0:
            position += room
            continue
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # full, first / middle, last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def test_log_to_needs_ray_and_a_known_tracker(tmp_path):
    from lhdbench.cli import main

    os.chdir(tmp_path)
    base = ["benchmark", "--suite", "smoke", "--baselines", "random", "--seeds", "0", "--policies", "base"]
    assert main([*base, "--executor", "serial", "--log-to", "tensorboard"]) == 2
    assert main([*base, "--log-to", "neptune"]) == 2
    assert not (tmp_path / "runs").exists()
