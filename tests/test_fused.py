"""The fused search cell computes what the per-edge reference cell computes."""

import pytest
import torch

from lhdbench.space import Supernet
from lhdbench.space.fused import DEPTHWISE, FusedSearchCell
from lhdbench.space.layout import NUM_NODES, node_rows
from lhdbench.space.supernet import MixedOp, SearchCell, lhd_cell_weights


def copy_reference_weights(reference: SearchCell, fused: FusedSearchCell) -> None:
    fused.preprocess0.load_state_dict(reference.preprocess0.state_dict())
    fused.preprocess1.load_state_dict(reference.preprocess1.state_dict())
    with torch.no_grad():
        for source, group in enumerate(fused.groups):
            first = NUM_NODES - group.edges
            for e in range(group.edges):
                edge = reference.edges[node_rows(first + e).start + source]
                for k, conv in enumerate(group.convs):
                    c = group.channels
                    conv.weight.view(c, group.edges, *conv.weight.shape[1:])[:, e] = edge.ops[3 + k][1].weight
                if group.stride == 2:
                    half = group.channels // 2
                    for name in ("1", "2"):
                        target = getattr(group, f"reduce_{name}").weight
                        source_weight = getattr(edge.ops[2], f"conv_{name}").weight
                        target.view(group.edges, half, *target.shape[1:])[e] = source_weight


@pytest.mark.parametrize("reduction", [False, True])
def test_fused_cell_matches_the_reference_cell(reduction):
    torch.manual_seed(0)
    c = 8
    reference = SearchCell(c, 3 * c, 2 * c if reduction else c, reduction, MixedOp).double()
    fused = FusedSearchCell(c, 3 * c, 2 * c if reduction else c, reduction).double()
    assert sum(p.numel() for p in reference.parameters()) == sum(p.numel() for p in fused.parameters())
    copy_reference_weights(reference, fused)
    alphas = torch.randn(20, 7, dtype=torch.double, requires_grad=True)
    out_alphas = torch.randn(2, 5, dtype=torch.double, requires_grad=True)
    s0 = torch.randn(3, c, 16, 16, dtype=torch.double, requires_grad=True)
    s1 = torch.randn(3, 3 * c, 16, 16, dtype=torch.double, requires_grad=True)

    results = []
    for cell in (reference, fused):
        weights = lhd_cell_weights(alphas, out_alphas)
        sum_out, concat = cell(s0, s1, weights)
        loss = (sum_out * torch.linspace(-1, 1, sum_out.numel(), dtype=torch.double).view_as(sum_out)).sum() \
            + (concat ** 2).mean()
        cell.zero_grad()
        grads = torch.autograd.grad(loss, [alphas, out_alphas, s0, s1], retain_graph=True)
        loss.backward()  # the cells' own weights
        results.append((sum_out.detach(), concat.detach(), grads))
    (ref_sum, ref_cat, ref_grads), (f_sum, f_cat, f_grads) = results
    torch.testing.assert_close(f_sum, ref_sum)
    torch.testing.assert_close(f_cat, ref_cat)
    for got, expected in zip(f_grads, ref_grads, strict=True):
        torch.testing.assert_close(got, expected)
    # Every conv weight gets the gradient its reference edge gets.
    for name in ("preprocess0", "preprocess1"):
        for (_, a), (_, b) in zip(getattr(reference, name).named_parameters(),
                                  getattr(fused, name).named_parameters(), strict=True):
            torch.testing.assert_close(b.grad, a.grad)
    for source, group in enumerate(fused.groups):
        first = NUM_NODES - group.edges
        for e in range(group.edges):
            edge = reference.edges[node_rows(first + e).start + source]
            for k, conv in enumerate(group.convs):
                got = conv.weight.grad.view(group.channels, group.edges, *conv.weight.shape[1:])[:, e]
                torch.testing.assert_close(got, edge.ops[3 + k][1].weight.grad)
            if group.stride == 2:
                half = group.channels // 2
                for index in ("1", "2"):
                    target = getattr(group, f"reduce_{index}").weight
                    got = target.grad.view(group.edges, half, *target.shape[1:])[e]
                    torch.testing.assert_close(got, getattr(edge.ops[2], f"conv_{index}").weight.grad)

    # Eval mode uses running statistics, which the shared BNs accumulate identically.
    reference.eval(), fused.eval()
    with torch.no_grad():
        weights = lhd_cell_weights(alphas, out_alphas)
        torch.testing.assert_close(fused(s0, s1, weights)[1], reference(s0, s1, weights)[1])


def test_supernet_defaults_to_fused_cells_and_keeps_reference_on_request():
    assert all(isinstance(cell, FusedSearchCell) for cell in Supernet(10, 4, 3).cells)
    assert all(isinstance(cell, SearchCell) for cell in Supernet(10, 4, 3, mixed_op=MixedOp).cells)


def test_depthwise_geometry_matches_the_primitive_order():
    assert DEPTHWISE == ((3, 1), (5, 1), (3, 2), (5, 2))  # sep 3x3, sep 5x5, dil 3x3, dil 5x5
