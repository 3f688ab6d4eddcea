"""Tests that need a CUDA GPU: skipped without one (the CPU suite and CI never have one); run by
benchmarks/gpu.sh on a GPU machine."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (benchmarks/gpu.sh runs these on one)")
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)
