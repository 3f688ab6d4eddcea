"""Random: 0.1 * N(0, 1) architecture parameters, no training, no data, seeded by the trial seed."""

import numpy as np
import pytest
import torch

from lhdbench.methods import get_method, resolve_settings
from lhdbench.protocol import load_protocol
from lhdbench.search import ARCH_FILE, run_search
from lhdbench.space import Supernet, load_arch_weights
from lhdbench.space.layout import node_rows


@pytest.fixture(scope="module")
def smoke():
    return load_protocol("smoke")


def implied_logits(weights):
    """Centred logits behind exported weights: log of each node block / sum row (centred per softmax
    group, the only freedom a softmax leaves), logit of each gate."""
    out = []
    for cell in ("normal", "reduce"):
        nodes, outputs = weights.cell(cell)
        for node in range(5):
            block = np.log(nodes[node_rows(node)].astype(np.float64)).ravel()
            out.append(block - block.mean())
        row = np.log(outputs[0].astype(np.float64))
        out.append(row - row.mean())
        gates = outputs[1].astype(np.float64)
        out.append(np.log(gates / (1 - gates)))
    return np.concatenate(out)


def test_flags_and_defaults(smoke):
    cls = get_method("random")
    assert cls.trains is False
    assert resolve_settings(cls, smoke)[1] == {"init_std": 0.1}


def test_alphas_are_drawn_from_torch_rng_as_0_1_normal(smoke):
    cls = get_method("random")
    method = cls(*resolve_settings(cls, smoke))
    torch.manual_seed(0)
    net = method.build_supernet(10)
    values = torch.cat([p.detach().flatten() for p in net.arch_parameters()])
    assert 0.08 < float(values.std()) < 0.12 and abs(float(values.mean())) < 0.03
    assert isinstance(net, Supernet)


def test_search_without_data_exports_random_weights(tmp_path, smoke):
    # cifar10 with a data root that does not exist: the loop must load nothing.
    record = run_search("random", "cifar10", 0, smoke, tmp_path / "trial", data_root=tmp_path / "missing",
                        progress=False)
    assert record.status == "done" and record.history == [] and record.epochs == 0
    assert not (tmp_path / "missing").exists()
    weights = load_arch_weights(tmp_path / "trial" / ARCH_FILE)
    assert weights.metadata["method"] == "random"
    logits = implied_logits(weights)
    assert 0.05 <= logits.std() <= 0.2, logits.std()


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, smoke):
    runs = {}
    for label, seed in (("a", 0), ("b", 0), ("c", 1)):
        run_search("random", "digits", seed, smoke, tmp_path / label, progress=False)
        runs[label] = load_arch_weights(tmp_path / label / ARCH_FILE).matrices()
    for x, y in zip(runs["a"], runs["b"], strict=True):
        np.testing.assert_array_equal(x, y)
    assert all(not np.array_equal(x, z) for x, z in zip(runs["a"], runs["c"], strict=True))
