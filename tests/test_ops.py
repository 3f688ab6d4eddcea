"""lhdbench.space.ops: the seven LHD primitives (chaoji90/LHD `search/operations_five_dr.py`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lhdbench.space.ops import PRIMITIVES, FactorizedReduce, ReLUConvBN, build_op

pytestmark = pytest.mark.usefixtures("single_thread_torch")

CONVS = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")

def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def expected_params(name: str, c: int, stride: int, affine: bool) -> int:
    """Parameter counts of the upstream ops."""
    bn = 2 * c if affine else 0
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        return 0
    if name == "skip_connect":
        return 0 if stride == 1 else c * c + bn
    kernel = int(name[-1])
    return kernel * kernel * c + bn


def test_primitive_order_is_the_alpha_column_order():
    assert PRIMITIVES == ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                          "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
    assert "none" not in PRIMITIVES


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("channels", [16, 36])
def test_parameter_counts_match_table(name, stride, affine, channels):
    assert n_params(build_op(name, channels, stride, affine)) == expected_params(name, channels, stride,
                                                                                 affine)


@pytest.mark.parametrize(("name", "affine", "stride", "count"), [
    ("sep_conv_3x3", False, 1, 9 * 16), ("sep_conv_3x3", True, 1, 11 * 16),
    ("sep_conv_5x5", False, 2, 25 * 16), ("sep_conv_5x5", True, 2, 27 * 16),
    ("dil_conv_3x3", False, 2, 9 * 16), ("dil_conv_3x3", True, 1, 11 * 16),
    ("dil_conv_5x5", False, 1, 25 * 16), ("dil_conv_5x5", True, 2, 27 * 16),
    ("skip_connect", False, 2, 16 * 16), ("skip_connect", True, 2, 16 * 16 + 2 * 16),
    ("skip_connect", True, 1, 0),
    ("max_pool_3x3", True, 1, 0), ("max_pool_3x3", True, 2, 0),
    ("avg_pool_3x3", True, 1, 0), ("avg_pool_3x3", True, 2, 0),
])
def test_parameter_counts_literal_c16(name, affine, stride, count):
    # Literal numbers for C=16, independent of the helper above.
    assert n_params(build_op(name, 16, stride, affine)) == count


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", PRIMITIVES)
def test_output_shapes(name, stride, affine):
    torch.manual_seed(0)
    op = build_op(name, 8, stride, affine)
    out = op(torch.randn(2, 8, 12, 12))
    size = 12 // stride
    assert out.shape == (2, 8, size, size)


def test_skip_connect_stride1_is_identity_and_stride2_is_factorized_reduce():
    op = build_op("skip_connect", 8, 1, affine=True)
    x = torch.randn(2, 8, 6, 6)
    assert torch.equal(op(x), x)
    assert isinstance(build_op("skip_connect", 8, 2, affine=True), FactorizedReduce)


@pytest.mark.parametrize("name", ["max_pool_3x3", "avg_pool_3x3"])
@pytest.mark.parametrize("affine", [False, True])
def test_pool_batchnorm_is_never_affine(name, affine):
    op = build_op(name, 8, 1, affine)
    bns = [m for m in op.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 1
    assert bns[0].affine is False
    assert bns[0].num_features == 8


@pytest.mark.parametrize("name", CONVS)
@pytest.mark.parametrize("affine", [False, True])
def test_conv_ops_batchnorm_follows_affine(name, affine):
    bns = [m for m in build_op(name, 8, 1, affine).modules() if isinstance(m, nn.BatchNorm2d)]
    assert [bn.affine for bn in bns] == [affine]


def test_avg_pool_excludes_padding_from_the_average():
    # All-ones input: with count_include_pad=False every window averages to exactly 1 (corners too).
    op = build_op("avg_pool_3x3", 4, 1, affine=True).eval()
    out = op(torch.ones(1, 4, 5, 5))
    expected = 1.0 / (1.0 + op[1].eps) ** 0.5  # eval BN with running stats (0, 1)
    torch.testing.assert_close(out, torch.full_like(out, expected))


@pytest.mark.parametrize(("name", "offsets"), [
    ("sep_conv_3x3", {-1, 0, 1}),
    ("sep_conv_5x5", {-2, -1, 0, 1, 2}),
    ("dil_conv_3x3", {-2, 0, 2}),
    ("dil_conv_5x5", {-4, -2, 0, 2, 4}),
])
def test_conv_receptive_field_and_dilation(name, offsets):
    torch.manual_seed(0)
    op = build_op(name, 3, 1, affine=True).eval()
    x = (torch.rand(1, 3, 11, 11) + 0.1).requires_grad_()  # positive: the leading ReLU passes all
    op(x)[0, 1, 5, 5].backward()
    grad = x.grad[0, 1]
    touched = {(int(r) - 5, int(c) - 5) for r, c in grad.nonzero()}
    assert touched == {(dr, dc) for dr in offsets for dc in offsets}


@pytest.mark.parametrize("name", CONVS)
def test_conv_ops_are_channelwise(name):
    # No pointwise conv: a change in one input channel changes only that output channel.
    torch.manual_seed(0)
    op = build_op(name, 6, 1, affine=True).eval()
    x = torch.rand(2, 6, 9, 9) + 0.1
    y = x.clone()
    y[:, 2] += 1.0
    diff = (op(x) - op(y)).abs().sum(dim=(0, 2, 3))
    assert diff[2] > 0
    assert torch.all(diff[torch.arange(6) != 2] == 0)


def test_factorized_reduce_second_conv_reads_the_shifted_pixels():
    torch.manual_seed(0)
    op = FactorizedReduce(4, 4, affine=True).eval()
    x = torch.rand(1, 4, 8, 8) + 0.1
    base = op(x)
    odd = x.clone()
    odd[0, :, 1, 1] += 1.0  # read only by conv_2 (input shifted by one pixel)
    even = x.clone()
    even[0, :, 0, 0] += 1.0  # read only by conv_1
    d_odd, d_even = (op(odd) - base).abs(), (op(even) - base).abs()
    assert d_odd[:, :2].sum() == 0 and d_odd[:, 2:].sum() > 0
    assert d_even[:, :2].sum() > 0 and d_even[:, 2:].sum() == 0


def test_factorized_reduce_rejects_odd_channels():
    with pytest.raises(ValueError, match="even"):
        FactorizedReduce(5, 5, affine=True)


def test_relu_conv_bn_preprocessing():
    op = ReLUConvBN(48, 16, 1, 1, 0, affine=False)
    assert n_params(op) == 48 * 16
    assert n_params(ReLUConvBN(48, 16, 1, 1, 0, affine=True)) == 48 * 16 + 2 * 16
    assert op(torch.randn(2, 48, 8, 8)).shape == (2, 16, 8, 8)


@pytest.mark.parametrize("bad", ["none", "sep_conv_7x7", "conv_7x1_1x7", "Skip_Connect", ""])
def test_unknown_op_raises_value_error_listing_known_ops(bad):
    with pytest.raises(ValueError) as info:
        build_op(bad, 8, 1, affine=True)
    message = str(info.value)
    assert repr(bad) in message
    for name in PRIMITIVES:
        assert name in message
