"""DropNAS on LHD: grouped op dropout per (node, input) row with group redraws, the joint node softmax
over kept pairs only, only kept ops computed, the two-step iteration with partial decay, adjust_alphas
per node; single level; export of the unmasked LHD transform."""

import contextlib
import copy
import dataclasses
import math
from itertools import product

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_resume_equals_whole, smoke_search_moving_every_arch_parameter
from lhdbench.baselines.dropnas import (
    ALPHA_GRAD_EPS,
    GROUP_N,
    GROUP_P,
    DropEdge,
    adjust_alphas_,
    drop_probabilities,
    kept_log_odds,
    kept_share,
    masked_cell_weights,
    partial_decay_gradients,
    sample_keep_masks,
)
from torch import nn

from lhdbench.methods import SearchContext, get_method, resolve_settings
from lhdbench.protocol import ProtocolError, load_protocol
from lhdbench.space import PRIMITIVES
from lhdbench.space.layout import NUM_EDGES, NUM_NODES, NUM_OPS, node_rows
from lhdbench.space.supernet import lhd_cell_weights

SMOKE = load_protocol("smoke")


def make_method(epochs: int = 50, protocol=SMOKE, **hparams):
    cls = get_method("dropnas")
    settings, checked = resolve_settings(cls, protocol.replace(methods={"dropnas": hparams}))
    return cls(dataclasses.replace(settings, epochs=epochs), checked)


def small_net(method, layers: int = 3, scale: float = 1.0):
    method.settings = dataclasses.replace(method.settings, layers=layers, init_channels=4)
    net = method.build_supernet(10)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0.0, scale)
    return net


def context(method, net):
    weight_opt, arch_opt = method.configure_optimizers(net)
    return SearchContext(net, lambda x: method.forward(net, x), weight_opt, arch_opt, method.settings,
                         contextlib.nullcontext)


def batch(g, n=4):
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


# --- settings --------------------------------------------------------------------------------------

def test_defaults_single_level_and_no_decay_inside_the_optimisers():
    cls = get_method("dropnas")
    assert not cls.bilevel and cls.trains and not cls.static_graph
    settings, hparams = resolve_settings(cls, load_protocol("paper"))
    # DropNAS's optimisation constants ...
    assert (settings.weight_lr, settings.weight_lr_min, settings.grad_clip) == (0.0375, 0.0015, 3.0)
    assert (settings.weight_decay, settings.arch_weight_decay) == (3e-4, 1e-3)
    assert (settings.arch_lr, tuple(settings.arch_betas), settings.momentum) == (3e-4, (0.5, 0.999), 0.9)
    # ... on LHD's protocol: 50 epochs, batch 176, 8 cells of width 16
    assert (settings.epochs, settings.batch_size, settings.layers, settings.init_channels) == (50, 176, 8, 16)
    assert hparams == {"drop_rate": 3e-5, "n_group_drop": "fourth_root", "warmup_epochs": 0,
                       "dropped_op_momentum": True}
    method = make_method()
    net = method.build_supernet(10)
    weight_opt, arch_opt = method.configure_optimizers(net)
    assert isinstance(weight_opt, torch.optim.SGD) and isinstance(arch_opt, torch.optim.Adam)
    assert weight_opt.param_groups[0]["weight_decay"] == 0 and arch_opt.param_groups[0]["weight_decay"] == 0
    assert all(isinstance(e, DropEdge) for cell in net.cells for e in cell.edges)
    for bad in ({"drop_rate": 1.0}, {"drop_rate": -0.1}, {"n_group_drop": "half"}, {"warmup_epochs": -1}):
        with pytest.raises(ProtocolError):
            make_method(**bad)


def test_groups_are_the_parametric_and_the_parameter_free_ops():
    assert [PRIMITIVES[i] for i in GROUP_P] == ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
                                                "dil_conv_5x5"]
    assert [PRIMITIVES[i] for i in GROUP_N] == ["max_pool_3x3", "avg_pool_3x3", "skip_connect"]


# --- F11: mask sampling ----------------------------------------------------------------------------

def test_f11_drop_probability_is_the_fourth_root_of_the_drop_rate():
    p_param, p_nonparam = drop_probabilities(3e-5)
    assert p_param == p_nonparam == pytest.approx(0.0740083, abs=5e-8)
    assert p_param ** 4 == pytest.approx(3e-5, rel=1e-12)  # a whole group of 4 drops with probability r
    _, cube = drop_probabilities(3e-5, "cube_root")
    assert cube ** 3 == pytest.approx(3e-5, rel=1e-12) and cube == pytest.approx(0.0310723, abs=5e-8)
    assert drop_probabilities(0.0) == (0.0, 0.0)
    method = make_method(drop_rate=0.3, n_group_drop="cube_root")
    assert (method.p_param, method.p_nonparam) == (pytest.approx(0.3 ** 0.25), pytest.approx(0.3 ** (1 / 3)))


@pytest.mark.parametrize("drop_rate", [3e-5, 0.3, 0.99])
def test_every_row_keeps_at_least_one_op_of_each_group(drop_rate):
    torch.manual_seed(0)
    p_param, p_nonparam = drop_probabilities(drop_rate)
    keep = sample_keep_masks(500, p_param, p_nonparam)
    assert keep.shape == (500, NUM_EDGES, NUM_OPS) and keep.dtype == torch.bool
    assert keep[..., list(GROUP_P)].any(-1).all() and keep[..., list(GROUP_N)].any(-1).all()


@pytest.mark.parametrize("n_group_drop", ["fourth_root", "cube_root"])
def test_each_op_is_dropped_with_probability_p_then_empty_groups_are_redrawn(n_group_drop):
    """With r = 0.3 (p = 0.74), every keep pattern of a group must occur with its probability under
    independent drops with probability p, conditioned on keeping one op: (1-p)^k p^(n-k) / (1 - p^n).
    Seeded, and each bound is 6 standard errors wide, so it cannot flake."""
    torch.manual_seed(1)
    p_param, p_nonparam = drop_probabilities(0.3, n_group_drop)
    keep = sample_keep_masks(5000, p_param, p_nonparam).view(-1, NUM_OPS)  # 100,000 rows
    n = keep.shape[0]
    for group, p in ((GROUP_P, p_param), (GROUP_N, p_nonparam)):
        sub = keep[:, list(group)]
        codes = (sub.long() * (2 ** torch.arange(len(group)))).sum(1)
        counts = torch.bincount(codes, minlength=2 ** len(group))
        assert counts[0] == 0  # never all dropped
        for pattern in product([False, True], repeat=len(group)):
            code = sum(2 ** i for i, kept in enumerate(pattern) if kept)
            if code == 0:
                continue
            k = sum(pattern)
            expected = (1 - p) ** k * p ** (len(group) - k) / (1 - p ** len(group))
            observed = float(counts[code]) / n
            assert abs(observed - expected) <= 6 * math.sqrt(expected * (1 - expected) / n), pattern
        # hence each op's marginal drop rate (p - p^n) / (1 - p^n), below p because of the redraws
        marginal = (p - p ** len(group)) / (1 - p ** len(group))
        observed = (~sub).float().mean(0)
        assert (observed - marginal).abs().max() <= 6 * math.sqrt(marginal * (1 - marginal) / n)


def test_warmup_epochs_drop_nothing():
    method = make_method(warmup_epochs=1)
    assert (method.p_param, method.p_nonparam) == (0.0, 0.0)
    assert method.draw_masks().all()
    method.on_epoch_start(1)
    assert method.p_param == pytest.approx(3e-5 ** 0.25)
    resumed = make_method(warmup_epochs=1)
    resumed.load_state_dict(method.state_dict())
    assert resumed.p_param == method.p_param


# --- F12: kept-only softmax, kept-only compute -----------------------------------------------------

def test_f12_softmax_over_the_kept_pairs_of_each_node_only():
    torch.manual_seed(2)
    alphas, outputs = torch.randn(NUM_EDGES, NUM_OPS), torch.randn(2, 5)
    keep = sample_keep_masks(1, *drop_probabilities(0.3))[0]
    weights = masked_cell_weights(alphas, outputs, keep)
    nodes = weights.nodes
    assert torch.equal(nodes[~keep], torch.zeros(int((~keep).sum())))  # dropped: exactly 0
    a, k = alphas.double().numpy(), keep.numpy()
    for node in range(NUM_NODES):
        rows = node_rows(node)
        block = nodes[rows]
        assert float(block.sum()) == pytest.approx(1.0, abs=1e-6)
        expected = np.where(k[rows], np.exp(a[rows]), 0.0) / np.exp(a[rows])[k[rows]].sum()
        np.testing.assert_allclose(block.numpy(), expected, rtol=1e-5, atol=1e-7)
        # DropNAS's ratio: the kept share of the node's whole exp-mass, and its log-odds
        share = np.exp(a[rows])[k[rows]].sum() / np.exp(a[rows]).sum()
        assert float(kept_share(alphas, keep)[node]) == pytest.approx(share, rel=1e-5)
        assert float(kept_log_odds(alphas, keep)[node]) == pytest.approx(math.log(share / (1 - share)),
                                                                          rel=1e-5, abs=1e-5)
    # the output rows are the plain LHD ones (no output path is dropped)
    torch.testing.assert_close(weights.outputs, lhd_cell_weights(alphas, outputs).outputs)


def test_only_the_kept_ops_run_with_one_mask_per_cell_type_and_forward():
    torch.manual_seed(3)
    method = make_method(drop_rate=0.3)
    net = small_net(method, layers=5)
    calls, seen = [], []
    for c, cell in enumerate(net.cells):
        cell.register_forward_pre_hook(lambda m, args, c=c: seen.append((c, args[2])))
        for row, edge in enumerate(cell.edges):
            for k, op in enumerate(edge.ops):
                op.register_forward_hook(lambda m, i, o, key=(c, row, k): calls.append(key))
    net.train()
    logits = method.forward(net, torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 10)
    keep = method.keep
    assert keep.shape == (2, NUM_EDGES, NUM_OPS) and not keep.all()
    for c, weights in seen:
        mask = keep[int(net.cells[c].reduction)]
        ran = sorted((row, k) for cc, row, k in calls if cc == c)
        assert ran == sorted(tuple(ix) for ix in mask.nonzero().tolist())
        assert torch.equal(weights.nodes != 0, mask)  # the weights handed to the cell match the mask
    assert len(calls) == sum(int(keep[int(cell.reduction)].sum()) for cell in net.cells)
    assert all(edge.kept is None for cell in net.cells for edge in cell.edges)  # plan cleared
    # the next forward draws new masks
    method.forward(net, torch.randn(2, 3, 8, 8))
    assert not torch.equal(method.keep, keep)


def test_eval_forward_runs_every_op_with_the_plain_lhd_weights():
    torch.manual_seed(4)
    method = make_method(drop_rate=0.3)
    net = small_net(method)
    calls = []
    for cell in net.cells:
        for edge in cell.edges:
            for op in edge.ops:
                op.register_forward_hook(lambda m, i, o: calls.append(1))
    net.eval()
    with torch.no_grad():
        method.forward(net, torch.randn(2, 3, 8, 8))
    assert len(calls) == len(net.cells) * NUM_EDGES * NUM_OPS


def test_drop_edge_without_a_plan_runs_the_ops_with_non_zero_weight():
    torch.manual_seed(5)
    edge = DropEdge(4, 1)
    x = torch.randn(2, 4, 8, 8)
    calls = []
    for k, op in enumerate(edge.ops):
        op.register_forward_hook(lambda m, i, o, k=k: calls.append(k))
    w = torch.tensor([0.0, 0.25, 0.0, 0.75, 0.0, 0.0, 0.0])
    torch.testing.assert_close(edge(x, w), 0.25 * edge.ops[1](x) + 0.75 * edge.ops[3](x))
    assert calls == [1, 3, 1, 3]


def test_dropped_ops_and_alphas_get_no_gradient():
    torch.manual_seed(6)
    method = make_method(drop_rate=0.3)
    net = small_net(method)
    net.train()
    F.cross_entropy(method.forward(net, torch.randn(4, 3, 8, 8)), torch.randint(0, 10, (4,))).backward()
    keep = method.keep
    for reduction, name in ((0, "alphas_normal"), (1, "alphas_reduce")):
        grad = getattr(net, name).grad
        assert torch.equal(grad[~keep[reduction]], torch.zeros(int((~keep[reduction]).sum())))
        assert (grad[keep[reduction]] != 0).all()
    for cell in net.cells:
        for row, edge in enumerate(cell.edges):
            for k, op in enumerate(edge.ops):
                if not keep[int(cell.reduction), row, k]:
                    assert all(p.grad is None for p in op.parameters())


# --- F13: adjust_alphas ----------------------------------------------------------------------------

def test_f13_adjust_alphas_restores_each_nodes_kept_share_exactly():
    torch.manual_seed(7)
    before = torch.randn(NUM_EDGES, NUM_OPS)
    keep = sample_keep_masks(1, *drop_probabilities(0.3))[0]
    keep[node_rows(0)] = True  # node 0: nothing dropped, must stay as it is
    log_odds = kept_log_odds(before, keep)
    after = before + 0.3 * torch.randn(NUM_EDGES, NUM_OPS)  # what the two steps did
    moved = after.clone()
    adjust_alphas_(after, keep, log_odds)
    b, m, a, k = before.double().numpy(), moved.double().numpy(), after.double().numpy(), keep.numpy()
    torch.testing.assert_close(after[node_rows(0)], moved[node_rows(0)], rtol=0, atol=0)
    for node in range(1, NUM_NODES):
        rows = node_rows(node)
        ratio = np.exp(b[rows])[k[rows]].sum() / np.exp(b[rows]).sum()
        updated = np.exp(m[rows])[k[rows]].sum()
        remain = np.exp(m[rows])[~k[rows]].sum()
        shift = math.log(ratio / (1 - ratio) * remain / updated)  # DropNAS's k
        np.testing.assert_allclose(a[rows][k[rows]], m[rows][k[rows]] + shift, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(a[rows][~k[rows]], m[rows][~k[rows]])  # dropped: untouched
        share = np.exp(a[rows])[k[rows]].sum() / np.exp(a[rows]).sum()
        assert share == pytest.approx(ratio, rel=1e-5)


# --- F14: partial decay ----------------------------------------------------------------------------

def test_f14_partial_decay_skips_weights_without_gradient_and_alphas_below_1e_7():
    w_hit, w_missed = nn.Parameter(torch.randn(3, 3)), nn.Parameter(torch.randn(2))
    alpha = nn.Parameter(torch.randn(2, 3))
    loss_grad = torch.tensor([[0.0, 1e-8, 1e-7], [-2e-7, 1.0, -3e-3]])
    for zero_fill in (True, False):
        partial_decay_gradients([w_hit, w_missed], [True, False], [alpha],
                                [loss_grad.abs() > ALPHA_GRAD_EPS], 3e-4, 1e-3, zero_fill)
        torch.testing.assert_close(w_hit.grad, 2 * 3e-4 * w_hit.detach())
        if zero_fill:
            assert torch.equal(w_missed.grad, torch.zeros(2))
        else:
            assert w_missed.grad is None
        expected = 2 * 1e-3 * alpha.detach() * torch.tensor([[0.0, 0, 0], [1, 1, 1]])
        torch.testing.assert_close(alpha.grad, expected)
    # they are the gradients of DropNAS's decay losses, lambda * ||w||^2 and lambda * ||a * mask||^2
    (g,) = torch.autograd.grad(3e-4 * w_hit.norm(2) ** 2, [w_hit])
    torch.testing.assert_close(w_hit.grad, g)


def literal_dropnas_steps(method, net, batches, masks, momentum: bool, warmup: list[bool] | None = None):
    """DropNAS `search.py` / `models/search_cnn.py` transcribed step by step (per node instead of per
    edge), with torch 1.0's zero_grad (zero gradients stay) when `momentum`, else set_to_none. One
    change: a weight counts as having a gradient when any entry of it is non-zero, not its first one
    (on the tiny maps here a dilated 5x5 tap can see only padding, so its gradient is exactly 0).
    `warmup` marks the steps taken in a warm-up epoch: no architecture step on the loss gradient."""
    s = method.settings
    weights = [p for n, p in net.named_parameters() if not n.startswith("alphas")]
    alphas = net.arch_parameters()
    w_optim = torch.optim.SGD(weights, s.weight_lr, momentum=s.momentum, weight_decay=0.0)
    alpha_optim = torch.optim.Adam(alphas, s.arch_lr, betas=(0.5, 0.999), weight_decay=0.0)
    for i, ((x, y), keep) in enumerate(zip(batches, masks, strict=True)):
        w_optim.zero_grad(set_to_none=not momentum)
        alpha_optim.zero_grad(set_to_none=not momentum)
        method.draw_masks = lambda keep=keep: keep
        before = [net.alphas_normal.detach().clone(), net.alphas_reduce.detach().clone()]
        loss_1 = F.cross_entropy(method.forward(net, x), y)
        loss_1.backward()
        nn.utils.clip_grad_norm_(weights, s.grad_clip)
        w_optim.step()
        if not (warmup and warmup[i]):
            alpha_optim.step()
        loss_2 = 0
        for w in weights:
            if w.grad is not None and w.grad.abs().max().item() != 0.0:
                loss_2 = loss_2 + torch.pow(w.norm(2), 2) * s.weight_decay
        for a in alphas:
            loss_2 = loss_2 + torch.sum(torch.pow(a * (a.grad.abs() > 1e-7).float(), 2)) * s.arch_weight_decay
        w_optim.zero_grad(set_to_none=not momentum)
        alpha_optim.zero_grad(set_to_none=not momentum)
        loss_2.backward()
        nn.utils.clip_grad_norm_(weights, s.grad_clip)
        w_optim.step()
        alpha_optim.step()
        with torch.no_grad():
            for alpha, old, mask in ((net.alphas_normal, before[0], keep[0]),
                                     (net.alphas_reduce, before[1], keep[1])):
                for node in range(NUM_NODES):
                    rows = node_rows(node)
                    m = mask[rows]
                    if m.all():
                        continue
                    ratio = (old[rows].exp()[m].sum() / old[rows].exp().sum()).item()
                    updated = alpha[rows].exp()[m].sum().item()
                    remain = alpha[rows].exp()[~m].sum().item()
                    k = math.log(ratio / (1 - ratio) * remain / updated)
                    alpha[rows] += k * m.float()


@pytest.mark.parametrize("momentum", [True, False])
def test_step_equals_a_literal_transcription_of_the_dropnas_iteration(momentum):
    """Three steps with fixed masks, chosen so that ops kept in one step are dropped in the next."""
    torch.manual_seed(8)
    method = make_method(drop_rate=0.3, dropped_op_momentum=momentum)
    net = small_net(method, scale=0.5)
    twin = copy.deepcopy(net)
    masks = [sample_keep_masks(2, *drop_probabilities(0.3)) for _ in range(3)]
    g = torch.Generator().manual_seed(0)
    batches = [batch(g) for _ in range(3)]
    ctx = context(method, net)
    drawn = iter(masks)
    method.draw_masks = lambda: next(drawn)
    for b in batches:
        method.step(ctx, b, None)
    reference = make_method(drop_rate=0.3, dropped_op_momentum=momentum)
    reference.settings = method.settings
    literal_dropnas_steps(reference, twin, batches, masks, momentum)
    for (name, p), q in zip(net.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("momentum", [True, False])
def test_inside_the_warmup_nothing_is_dropped_and_only_the_decay_moves_the_alphas(momentum):
    """warmup_epochs 2: steps in epochs 0 and 1 drop nothing, train the weights and take both decay
    steps, but no architecture step on the loss gradient; steps in epoch 2 drop ops and take it. The
    whole sequence against the literal transcription, with the masks the method drew itself."""
    torch.manual_seed(8)
    method = make_method(warmup_epochs=2, drop_rate=0.3, dropped_op_momentum=momentum)
    net = small_net(method, scale=0.5)
    twin = copy.deepcopy(net)
    ctx = context(method, net)
    drawn, draw = [], method.draw_masks
    method.draw_masks = lambda: drawn.append(draw()) or drawn[-1]
    g = torch.Generator().manual_seed(0)
    batches = [batch(g) for _ in range(4)]
    epochs = [0, 1, 2, 2]
    start, alphas = net.alphas_normal.detach().clone(), []
    for epoch, b in zip(epochs, batches, strict=True):
        method.on_epoch_start(epoch)
        method.step(ctx, b, None)
        alphas.append(net.alphas_normal.detach().clone())
    assert all(bool(keep.all()) for keep in drawn[:2])  # the warm-up drops nothing
    assert not all(bool(keep.all()) for keep in drawn[2:])  # at p = 0.3 ** 0.25 the later steps do
    reference = make_method(drop_rate=0.3, dropped_op_momentum=momentum)
    reference.settings = method.settings
    literal_dropnas_steps(reference, twin, batches, drawn, momentum,
                          warmup=[epoch < 2 for epoch in epochs])
    for (name, p), q in zip(net.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    # The first warm-up step moves the alphas by Adam's first step on the decay gradient g = 2 lambda a
    # alone: lr * g / (|g| + eps) (about arch_lr toward 0), for every alpha the loss reached.
    step = start - alphas[0]
    reached = step != 0
    assert reached.float().mean() > 0.9
    g = 2 * method.settings.arch_weight_decay * start[reached].double()
    torch.testing.assert_close(step[reached].double(), method.settings.arch_lr * g / (g.abs() + 1e-8),
                               rtol=1e-4, atol=2e-7)  # float32 alphas near 1: ulp 1.2e-7


@pytest.mark.parametrize("momentum", [True, False])
def test_a_dropped_op_coasts_on_its_momentum_only_with_dropped_op_momentum(momentum):
    torch.manual_seed(11)
    method = make_method(drop_rate=0.3, dropped_op_momentum=momentum)
    net = small_net(method)
    ctx = context(method, net)
    first = torch.ones(2, NUM_EDGES, NUM_OPS, dtype=torch.bool)
    second = first.clone()
    second[0, :, GROUP_P[0]] = False  # sep3 dropped on every normal row in the second step
    drawn = iter([first, second])
    method.draw_masks = lambda: next(drawn)
    g = torch.Generator().manual_seed(3)
    method.step(ctx, batch(g), None)
    normal = [c for c in net.cells if not c.reduction]
    sep3 = [p for c in normal for e in c.edges for p in e.ops[GROUP_P[0]].parameters()]
    others = [p for c in normal for e in c.edges for p in e.ops[GROUP_P[1]].parameters()]
    after_first = [p.detach().clone() for p in sep3 + others]
    method.step(ctx, batch(g), None)
    moved = [not torch.equal(p, q) for p, q in zip(sep3 + others, after_first, strict=True)]
    assert all(moved[len(sep3):])  # the kept sep5 convs trained
    assert all(moved[:len(sep3)]) if momentum else not any(moved[:len(sep3)])


def test_step_refuses_an_architecture_batch():
    torch.manual_seed(9)
    method = make_method()
    net = small_net(method)
    g = torch.Generator().manual_seed(1)
    with pytest.raises(ValueError, match="single-level"):
        method.step(context(method, net), batch(g), batch(g))


def test_export_is_the_unmasked_lhd_transform_of_the_final_alphas():
    torch.manual_seed(10)
    method = make_method(drop_rate=0.3)
    net = small_net(method)
    g = torch.Generator().manual_seed(2)
    method.step(context(method, net), batch(g), None)
    weights = method.export(net)
    assert weights.metadata["export_temperature"] == 1.0
    for cell, prefix in (("normal", "alphas_normal"), ("reduce", "alphas_reduce")):
        expected = lhd_cell_weights(getattr(net, prefix), getattr(net, f"{prefix}_output"))
        nodes, outputs = weights.cell(cell)
        assert (nodes > 0).all()
        torch.testing.assert_close(torch.from_numpy(nodes), expected.nodes)
        torch.testing.assert_close(torch.from_numpy(outputs), expected.outputs)


# --- the whole search ------------------------------------------------------------------------------

def test_smoke_search_moves_every_arch_parameter(tmp_path):
    record, weights, _ = smoke_search_moving_every_arch_parameter("dropnas", SMOKE, tmp_path)
    assert weights.metadata["method"] == "dropnas"
    assert [h["lr"] for h in record.history] == [pytest.approx(0.0195), pytest.approx(0.0015)]
    assert all(0.0 < h["dropped_fraction"] < 0.2 for h in record.history)
    assert record.arch_half_acc is None  # single level: no architecture half


def test_a_resumed_search_ends_as_an_uninterrupted_one(tmp_path):
    assert_resume_equals_whole("dropnas", SMOKE, tmp_path, seed=1, stop=1)
