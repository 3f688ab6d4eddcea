"""The seven LHD primitives (LHD code, chaoji90/LHD `search/genotypes.py`, `search/operations_five_dr.py`).

They differ from DARTS on purpose: there is no `none` op, sep/dil convs are a single depthwise conv
with no pointwise conv (so they never mix channels), and the pools carry their own non-affine BN,
which stays in the final network.
"""

from __future__ import annotations

import torch
from torch import nn

from .layout import PRIMITIVES  # noqa: F401 - the op names are part of this module's interface


class PoolBN(nn.Sequential):
    """3x3 pool followed by a BatchNorm that is non-affine whatever the caller asks for."""

    def __init__(self, kind: str, channels: int, stride: int) -> None:
        if kind == "max":
            pool: nn.Module = nn.MaxPool2d(3, stride=stride, padding=1)
        else:
            pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        super().__init__(pool, nn.BatchNorm2d(channels, affine=False))


class DepthwiseConv(nn.Sequential):
    """ReLU -> depthwise kxk conv (optionally dilated) -> BN; LHD's `sep_conv` and `dil_conv`."""

    def __init__(self, channels: int, kernel: int, stride: int, dilation: int, affine: bool) -> None:
        padding = dilation * (kernel - 1) // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(channels, channels, kernel, stride=stride, padding=padding,
                      dilation=dilation, groups=channels, bias=False),
            nn.BatchNorm2d(channels, affine=affine),
        )


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv (no bias) -> BN; the cells' 1x1 preprocessing."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 affine: bool) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class FactorizedReduce(nn.Module):
    """Halves the resolution with two 1x1 stride-2 convs, the second on the input shifted by one
    pixel, so that no input pixel is ignored."""

    def __init__(self, c_in: int, c_out: int, affine: bool) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def build_op(name: str, channels: int, stride: int, affine: bool) -> nn.Module:
    """One primitive on `channels` channels (in = out)."""
    if name == "max_pool_3x3":
        return PoolBN("max", channels, stride)
    if name == "avg_pool_3x3":
        return PoolBN("avg", channels, stride)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, affine)
    if name == "sep_conv_3x3":
        return DepthwiseConv(channels, 3, stride, 1, affine)
    if name == "sep_conv_5x5":
        return DepthwiseConv(channels, 5, stride, 1, affine)
    if name == "dil_conv_3x3":
        return DepthwiseConv(channels, 3, stride, 2, affine)
    if name == "dil_conv_5x5":
        return DepthwiseConv(channels, 5, stride, 2, affine)
    raise ValueError(f"unknown op {name!r}; known ops: {', '.join(PRIMITIVES)}")
