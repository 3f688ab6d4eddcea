"""benchmarks/measurements.py carries the measured number of trials per GPU from a GPU run's
gpu-packing.json into conditions/measurements.yaml, where the runner reads its cap (a rehearsal's
numbers never get there)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from lhdbench import estimate
from lhdbench.runner.gpu_share import DEFAULT_TRIALS_PER_GPU, max_trials_per_gpu
from lhdbench.yamlfile import parse_yaml

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "measurements.py"


def run(tmp_path, monkeypatch, packing: dict) -> dict:
    spec = importlib.util.spec_from_file_location("gpu_measurements", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path)
    monkeypatch.setattr(module, "OUT", tmp_path / "measurements.yaml")
    monkeypatch.setattr(module, "ROOT", tmp_path)
    (tmp_path / "gpu-packing.json").write_text(json.dumps(packing))
    module.main()
    return parse_yaml((tmp_path / "measurements.yaml").read_text(), "measurements.yaml")


def rates(*values):
    return {str(c): {"aggregate_images_per_s": v} for c, v in zip((1, 2, 4), values, strict=True)}


def test_the_measured_trials_per_gpu_become_the_runners_cap(tmp_path, monkeypatch, capsys):
    parsed = run(tmp_path, monkeypatch, {"device": "NVIDIA H100 80GB HBM3",
                                         "runs": {"graphed-fp32": rates(3500.0, 5200.0, 5300.0)}})
    assert parsed["packing"]["trials_per_gpu"] == 2  # four are within 3% of two
    monkeypatch.setattr(estimate, "measurements", lambda: parsed)
    cap, source = max_trials_per_gpu()
    assert cap == 2 and "gpu-packing.json" in source and "H100" in source


def test_a_rehearsals_packing_is_not_a_measurement(tmp_path, monkeypatch, capsys):
    parsed = run(tmp_path, monkeypatch, {"rehearsal": True, "device": "cpu",
                                         "runs": {"graphed-fp32": rates(50.0, 90.0, 95.0)}})
    assert "packing" not in (parsed or {})
    monkeypatch.setattr(estimate, "measurements", lambda: parsed or {})
    assert max_trials_per_gpu()[0] == DEFAULT_TRIALS_PER_GPU
