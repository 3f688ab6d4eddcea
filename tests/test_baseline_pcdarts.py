"""PC-DARTS (baselines/pcdarts.py): partial channels with shuffle, parameter counts, arch warm-up."""

import pytest
import torch
from lhdbench.baselines.pcdarts import PartialMixedOp, PcDarts, channel_shuffle
from torch import nn

from lhdbench.methods import get_method, resolve_settings, scaled_epochs
from lhdbench.protocol import ProtocolError, load_protocol
from lhdbench.search import ARCH_FILE, run_search
from lhdbench.space import load_arch_weights
from lhdbench.space.ops import PRIMITIVES

SKIP = PRIMITIVES.index("skip_connect")


@pytest.fixture(scope="module")
def smoke():
    return load_protocol("smoke")


def make_method(protocol, **overrides):
    if overrides:
        protocol = protocol.replace(methods={"pcdarts": overrides})
    settings, hparams = resolve_settings(get_method("pcdarts"), protocol)
    return PcDarts(settings, hparams)


def test_registered_with_the_upstream_settings():
    cls = get_method("pcdarts")
    assert cls is PcDarts and cls.bilevel
    settings, hparams = resolve_settings(cls, load_protocol("paper"))
    assert (settings.batch_size, settings.weight_lr, settings.weight_lr_min, settings.arch_lr) == \
        (576, 0.1, 0.0, 6e-4)
    assert hparams == {"partial_channels": 4, "arch_warmup_epochs": 15, "scale_warmup": True}


@pytest.mark.parametrize(("classes", "expected"), [(10, 186_314), (100, 220_964)])
def test_supernet_weight_count_matches_upstream(classes, expected):
    net = make_method(load_protocol("paper")).build_supernet(classes)  # C=16, 8 cells
    assert sum(p.numel() for p in net.weight_parameters()) == expected


def test_ops_are_built_for_a_quarter_of_the_channels():
    edge = PartialMixedOp(16, 2)
    assert edge.ops[PRIMITIVES.index("sep_conv_3x3")][1].weight.shape[0] == 4
    assert edge.ops[SKIP].conv_1.weight.shape[:2] == (2, 4)  # FactorizedReduce(4, 4)
    with pytest.raises(ValueError, match="divisible"):
        PartialMixedOp(6, 1)


def test_channel_shuffle_interleaves_the_groups():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]


def test_skip_only_edge_is_the_shuffled_input():
    """Only skip (identity) weighted: the op part is the first C/4 channels unchanged, so the edge is
    just the channel shuffle of the input."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    weights = torch.zeros(7)
    weights[SKIP] = 1.0
    out = PartialMixedOp(8, 1)(x, weights)
    torch.testing.assert_close(out, x[:, [0, 2, 4, 6, 1, 3, 5, 7]])


def test_stride_two_bypass_is_max_pooled_and_the_op_part_shuffled_in():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    out = PartialMixedOp(8, 2)(x, torch.zeros(7))
    assert out.shape == (2, 8, 3, 3)
    pooled = nn.functional.max_pool2d(x[:, 2:], 2, 2)  # bypass channels 2..7 -> pre-shuffle 2..7
    order = [0, 2, 4, 6, 1, 3, 5, 7]  # out channel i = pre-shuffle channel order[i]
    for i, pre in enumerate(order):
        if pre < 2:  # the op part, all weights zero
            assert torch.count_nonzero(out[:, i]) == 0
        else:
            torch.testing.assert_close(out[:, i], pooled[:, pre - 2])


def test_weighted_op_part_uses_only_the_first_channels():
    torch.manual_seed(0)
    edge = PartialMixedOp(8, 1)
    weights = torch.rand(7)
    x = torch.randn(2, 8, 6, 6)
    changed = x.clone()
    changed[:, 2:] += 1.0
    a, b = edge(x, weights), edge(changed, weights)
    op_positions = [0, 4]  # pre-shuffle channels 0 and 1
    torch.testing.assert_close(a[:, op_positions], b[:, op_positions])


@pytest.mark.parametrize(("warmup", "epochs", "expected"),
                         [(15, 50, 15), (15, 2, 1), (15, 1, 0), (15, 100, 30), (15, 5, 2), (15, 10, 3),
                          (0, 50, 0)])
def test_warmup_scales_with_the_budget(warmup, epochs, expected):
    assert scaled_epochs(warmup, epochs) == expected


def test_warmup_can_be_taken_literally_and_overridden(smoke):
    assert make_method(smoke).warmup == 1  # 2 epochs: round(15 * 2 / 50)
    assert make_method(smoke, arch_warmup_epochs=0).warmup == 0
    assert make_method(smoke, arch_warmup_epochs=2, scale_warmup=False).warmup == 2
    assert scaled_epochs(15, 2, scale=False) == 15
    for bad in ({"arch_warmup_epochs": -1}, {"arch_warmup_epochs": 1.5}, {"scale_warmup": "yes"},
                {"partial_channels": 0}):
        with pytest.raises(ProtocolError, match="methods.pcdarts"):
            make_method(smoke, **bad)


def test_smoke_search_keeps_the_architecture_during_warmup(tmp_path, smoke, monkeypatch):
    """Smoke (2 epochs): warm-up 1, so epoch 0 trains the weights only and epoch 1 moves the arch."""
    nets, arch_at, weight_at = [], {}, {}
    build, start, export = PcDarts.build_supernet, PcDarts.on_epoch_start, PcDarts.export

    def building(self, classes):
        nets.append(build(self, classes))
        return nets[-1]

    def starting(self, epoch):
        arch_at[epoch] = [p.detach().clone() for p in nets[0].arch_parameters()]
        weight_at[epoch] = [p.detach().clone() for p in nets[0].weight_parameters()]
        start(self, epoch)

    def exporting(self, supernet):
        arch_at["end"] = [p.detach().clone() for p in supernet.arch_parameters()]
        return export(self, supernet)

    monkeypatch.setattr(PcDarts, "build_supernet", building)
    monkeypatch.setattr(PcDarts, "on_epoch_start", starting)
    monkeypatch.setattr(PcDarts, "export", exporting)
    record = run_search("pcdarts", "digits", 0, smoke, tmp_path, progress=False)
    assert record.status == "done" and record.hparams["arch_warmup_epochs"] == 15

    assert all(torch.equal(a, b) for a, b in zip(arch_at[0], arch_at[1], strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(weight_at[0], weight_at[1], strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(arch_at[1], arch_at["end"], strict=True))
    assert load_arch_weights(tmp_path / ARCH_FILE).metadata["arch_warmup_epochs"] == 1
