"""One test over every registered search method (as timm tests every model): a smoke search on the
embedded dataset, the exported weights, resume after one epoch, and that the architecture moved.
A method added to baselines/ or installed as a plugin is covered without editing this file."""


import pytest
import torch
from conftest import ARCH_NAMES, assert_resume_equals_whole

from lhdbench.checkpoint import load_checkpoint
from lhdbench.methods import get_method, method_names, resolve_settings
from lhdbench.protocol import load_protocol
from lhdbench.search import ARCH_FILE, run_search
from lhdbench.space import load_arch_weights
from lhdbench.space.layout import NUM_NODES, node_rows

SMOKE = load_protocol("smoke")


def initial_arch_parameters(cls, seed: int) -> list[torch.Tensor]:
    """The architecture parameters a search starts from (the loop seeds, then builds, the same way)."""
    settings, hparams = resolve_settings(cls, SMOKE)
    torch.manual_seed(seed)
    return [p.detach().clone() for p in cls(settings, hparams).build_supernet(10).arch_parameters()]


@pytest.mark.slow
@pytest.mark.parametrize("name", method_names())
def test_smoke_search(name, tmp_path):
    cls = get_method(name)
    if cls.trains:
        # Stop at the start of epoch 1, then resume: the result must equal the uninterrupted run.
        record = assert_resume_equals_whole(name, SMOKE, tmp_path, seed=3, stop=1)
    else:
        record = run_search(name, "digits", 3, SMOKE, tmp_path / "whole", progress=False)
    assert record.status == "done"

    weights = load_arch_weights(tmp_path / "whole" / ARCH_FILE)
    assert weights.metadata["method"] == name
    for cell in ("normal", "reduce"):
        nodes, outputs = weights.cell(cell)
        assert nodes.shape == (20, 7) and outputs.shape == (2, 5)
        for node in range(NUM_NODES):
            block = nodes[node_rows(node)]
            assert block.min() >= 0 and abs(block.sum() - 1) < 1e-4
        assert outputs[0].min() >= 0 and abs(outputs[0].sum() - 1) < 1e-4
        assert ((outputs[1] > 0) & (outputs[1] < 1)).all()

    if not cls.trains:
        return
    final = load_checkpoint(tmp_path / "whole" / "checkpoint.pt", torch.device("cpu"))["supernet"]
    start = initial_arch_parameters(cls, 3)
    moved = [not torch.equal(final[n], before) for n, before in zip(ARCH_NAMES, start, strict=True)]
    assert any(moved), f"{name}: no architecture parameter moved in a smoke search"
