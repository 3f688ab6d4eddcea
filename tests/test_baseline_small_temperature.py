"""PCD-DARTS and EDD-DARTS: T = a / ln(1 + d k) (PCD's cyclic table, EDD's entropy EMA), the T = 1
gradient path added to the normal node alphas in the arch step, export at the last epoch's T."""

import contextlib
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_resume_equals_whole, smoke_search_moving_every_arch_parameter
from lhdbench.baselines import small_temperature as st

from lhdbench.data import get_dataset
from lhdbench.methods import SearchContext, get_method, resolve_settings
from lhdbench.protocol import ProtocolError, load_protocol
from lhdbench.space import CellWeights, Supernet
from lhdbench.space.layout import NUM_NODES, node_rows
from lhdbench.space.supernet import joint_node_softmax, lhd_cell_weights

SMOKE = load_protocol("smoke")
# F3: upstream's tables (a = 0.000399, d = 0.11), rounded to 6 decimals
CYCLE = [1, .003823, .002007, .001399, .001094, .000910, .001094, .001399, .002007, .003823]
FINAL = [.003823, .002007, .001399, .001094, .000910, .000787, .000699, .000632, .000580, .000538]


def make_method(name: str, epochs: int = 50, **hparams):
    cls = get_method(name)
    settings, checked = resolve_settings(cls, SMOKE.replace(methods={name: hparams}))
    return cls(dataclasses.replace(settings, epochs=epochs), checked)


# --- settings -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pcd-darts", "edd-darts"])
def test_optimizers_are_rule_6_on_the_lhd_budget(name):
    settings, hparams = resolve_settings(get_method(name), load_protocol("paper"))
    assert settings.weight_lr == settings.weight_lr_min == 0.025
    assert settings.arch_lr == 3e-4 and settings.arch_weight_decay == 0.0
    assert settings.epochs == 50 and settings.batch_size == 176
    assert hparams["temperature_numerator"] == 0.000399 and hparams["smooth_gradient"] == "normal"
    assert hparams["final_epochs"] == 10


def test_hyperparameters_are_typed_and_overridable():
    assert make_method("pcd-darts", decay_strength=0.13).cycle[1] == pytest.approx(0.000399 / math.log(1.13))
    assert make_method("edd-darts", entropy_scale="raw").entropy_scale == "raw"
    for name, bad in [("pcd-darts", {"decay_strength": 0}), ("pcd-darts", {"cycle_epochs": 1}),
                      ("pcd-darts", {"smooth_gradient": "reduce"}), ("edd-darts", {"decay_rate": 0.0}),
                      ("edd-darts", {"update_interval": 0}), ("edd-darts", {"entropy_scale": "bits"}),
                      ("edd-darts", {"temperature_numerator": -1.0})]:
        with pytest.raises(ProtocolError, match=f"methods.{name}"):
            make_method(name, **bad)
    with pytest.raises(ProtocolError, match="even"):
        make_method("pcd-darts", cycle_epochs=7)


# --- PCD ------------------------------------------------------------------------------------------

def test_f3_pcd_cycle_and_final_tables():
    cycle, final = st.pcd_tables()
    np.testing.assert_allclose(cycle, CYCLE, atol=5e-7, rtol=0)
    np.testing.assert_allclose(final, FINAL, atol=5e-7, rtol=0)
    assert cycle[0] == 1.0 and len(cycle) == len(final) == 10


def test_pcd_temperature_per_epoch_of_a_50_epoch_search():
    method = make_method("pcd-darts", 50)
    temperatures = []
    for epoch in range(50):
        method.on_epoch_start(epoch)
        temperatures.append(method.temperature)
    expected = [method.cycle[e % 10] for e in range(40)] + method.final
    assert temperatures == expected
    assert [e for e, t in enumerate(temperatures) if t == 1.0] == [0, 10, 20, 30]
    assert min(temperatures[:40]) == method.cycle[5] == temperatures[35]
    assert method.export_temperature() == method.final[-1] == pytest.approx(0.000538, abs=5e-7)
    resumed = make_method("pcd-darts", 50)
    method.on_epoch_start(23)
    resumed.load_state_dict(method.state_dict())
    assert resumed.temperature == method.cycle[3]


def test_pcd_final_descent_takes_the_last_ten_epochs_of_any_length():
    cycle, final = st.pcd_tables()
    assert [st.pcd_temperature(e, 2, cycle, final) for e in range(2)] == final[8:]  # smoke
    assert [st.pcd_temperature(e, 15, cycle, final) for e in range(15)] == cycle[:5] + final
    assert [st.pcd_temperature(e, 100, cycle, final) for e in range(100)][85:95] == cycle[5:] + final[:5]


# --- EDD ------------------------------------------------------------------------------------------

def uniform_supernet() -> Supernet:
    net = Supernet(10, 4, 3)
    with torch.no_grad():
        net.alphas_normal.zero_()
    return net


def test_f4_uniform_entropy_at_epoch_5():
    """H = ln 7 (a uniform normal cell, on the DARTS scale) at epoch 5 -> d = 0.058377, T = 0.0070325."""
    method = make_method("edd-darts", 50)
    method.supernet = uniform_supernet()
    for epoch in range(5):
        method.on_epoch_start(epoch)
        assert method.temperature == 1.0 and method.decay == 0.0
    method.on_epoch_start(5)
    assert method.entropy == pytest.approx(math.log(7), rel=1e-12)
    assert method.decay == pytest.approx(0.058377, abs=5e-7)
    assert method.temperature == pytest.approx(0.0070325, abs=5e-8)
    assert method.count == 2


@pytest.mark.parametrize("scale", ["darts", "raw"])
def test_edd_adapts_to_a_measured_entropy(scale):
    """Node i keeps k_i equal (input, op) pairs and pushes the rest to ~0 probability: its entropy is
    ln k_i, so H is known in closed form."""
    keep = [2, 3, 5, 8, 13]
    alphas = torch.full((20, 7), -1e4)
    for node, k in enumerate(keep):
        alphas[node_rows(node)].view(-1)[:k] = 0.0
    per_node = [math.log(k) * (math.log(7) / math.log(7 * (node + 2)) if scale == "darts" else 1.0)
                for node, k in enumerate(keep)]
    h = sum(per_node) / NUM_NODES
    assert st.node_entropy(alphas, 1.0, scale) == pytest.approx(h, rel=1e-12)
    method = make_method("edd-darts", 50, entropy_scale=scale)
    method.supernet = net = Supernet(10, 4, 3)
    with torch.no_grad():
        net.alphas_normal.copy_(alphas)
    method.on_epoch_start(5)
    d = 0.06 * h * 0.5
    assert method.decay == pytest.approx(d, rel=1e-12)
    assert method.temperature == pytest.approx(0.000399 / math.log(1 + d), rel=1e-12)
    # the next update measures at the current T: the same alphas, sharper (here: unchanged) blocks
    method.on_epoch_start(10)
    d2 = 0.06 * h * 0.5 + 0.5 * d
    assert method.decay == pytest.approx(d2, rel=1e-9)
    assert method.temperature == pytest.approx(0.000399 / math.log(1 + 2 * d2), rel=1e-9)


def edd_reference(epochs: int, warmup: int, entropy: float, final_epochs: int = 10) -> list[float]:
    """Upstream train_search_pl.py's loop with a fixed entropy and the final phase as its last
    `final_epochs` epochs (10 upstream): T per epoch."""
    temp, d, k, interval, out = 1.0, 0.0, 1, 5, []
    for epoch in range(epochs):
        final = epoch >= epochs - final_epochs
        if epoch >= warmup and (epoch == warmup or (epoch > warmup and epoch % interval == 0) or final):
            if not final:
                d = 0.06 * entropy * 0.5 + 0.5 * d
            else:
                interval = 1
                d = 0.12 * entropy * 0.5 + 0.5 * d
            temp = 0.000399 / math.log(1 + d * k)
            k += 1
        out.append(temp)
    return out


def test_edd_schedule_over_50_epochs_and_resume(monkeypatch):
    seen = []

    def fake_entropy(alphas, temperature, scale="darts"):
        seen.append(temperature)
        return 1.5

    monkeypatch.setattr(st, "node_entropy", fake_entropy)
    method = make_method("edd-darts", 50)
    method.supernet = uniform_supernet()
    temperatures, updates = [], []
    for epoch in range(50):
        before = method.count
        method.on_epoch_start(epoch)
        temperatures.append(method.temperature)
        if method.count != before:
            updates.append(epoch)
        if epoch == 22:
            state = method.state_dict()
    assert updates == [5, 10, 15, 20, 25, 30, 35] + list(range(40, 50))
    assert temperatures == pytest.approx(edd_reference(50, 5, 1.5), rel=1e-12)
    # each update measures the entropy at the temperature in force before it
    assert seen == [1.0] + [temperatures[e - 1] for e in updates[1:]]
    assert method.export_temperature() == temperatures[-1]
    resumed = make_method("edd-darts", 50)
    resumed.supernet = method.supernet
    resumed.load_state_dict(state)
    for epoch in range(23, 50):
        resumed.on_epoch_start(epoch)
    assert (resumed.temperature, resumed.decay, resumed.count) == (method.temperature, method.decay,
                                                                   method.count)
    # a start called twice for one epoch does not update twice
    resumed.on_epoch_start(49)
    assert resumed.count == method.count


def test_edd_short_searches_scale_the_warmup(monkeypatch):
    monkeypatch.setattr(st, "node_entropy", lambda alphas, temperature, scale="darts": 1.5)
    for epochs, warmup in [(2, 0), (20, 2), (100, 10)]:
        method = make_method("edd-darts", epochs)
        method.supernet = uniform_supernet()
        assert method.warmup == warmup
        temperatures = []
        for epoch in range(epochs):
            method.on_epoch_start(epoch)
            temperatures.append(method.temperature)
        assert temperatures == pytest.approx(edd_reference(epochs, warmup, 1.5), rel=1e-12)
    assert make_method("edd-darts", 2, scale_warmup=False).warmup == 5


# The final phase where it starts between two regular updates: epoch counts that are not multiples of 5.
# Expected update epochs written out: after the fixed 5-epoch warm-up, every 5th epoch, and every epoch
# of the last `final_epochs` (from max(epochs - final_epochs, 5) on).
EDD_UPDATES = {(23, 10): [5, 10, *range(13, 23)], (17, 10): [5, *range(7, 17)], (31, 10): [5, 10, 15, 20,
               *range(21, 31)], (12, 10): list(range(5, 12)), (8, 10): [5, 6, 7], (23, 7): [5, 10, 15,
               *range(16, 23)], (26, 3): [5, 10, 15, 20, 23, 24, 25]}


@pytest.mark.parametrize("epochs,final_epochs", sorted(EDD_UPDATES))
def test_edd_final_phase_is_the_last_final_epochs_at_any_length(monkeypatch, epochs, final_epochs):
    monkeypatch.setattr(st, "node_entropy", lambda alphas, temperature, scale="darts": 1.5)
    method = make_method("edd-darts", epochs, scale_warmup=False, final_epochs=final_epochs)
    method.supernet = uniform_supernet()
    temperatures, updates, decays = [], [], []
    for epoch in range(epochs):
        before = method.count
        method.on_epoch_start(epoch)
        temperatures.append(method.temperature)
        if method.count != before:
            updates.append(epoch)
            decays.append(method.decay)
    assert updates == EDD_UPDATES[(epochs, final_epochs)]
    # d <- c H beta + (1 - beta) d with c = 0.12 in the final phase and 0.06 before it (H = 1.5).
    d, expected = 0.0, []
    for epoch in updates:
        d = (0.12 if epoch >= epochs - final_epochs else 0.06) * 1.5 * 0.5 + 0.5 * d
        expected.append(d)
    assert decays == pytest.approx(expected, rel=1e-12)
    assert temperatures == pytest.approx(edd_reference(epochs, 5, 1.5, final_epochs), rel=1e-12)


@pytest.mark.parametrize("epochs,final_epochs", [(23, 10), (17, 10), (31, 10), (23, 7), (12, 4)])
def test_pcd_final_descent_is_the_last_final_epochs_at_any_length(epochs, final_epochs):
    def t(i):
        return 0.000399 / math.log(1 + 0.11 * i)

    cycle = [1.0] + [t(i) for i in range(1, 6)] + [t(i) for i in range(4, 0, -1)]
    final = [t(i) for i in range(1, final_epochs + 1)]
    expected = [cycle[e % 10] for e in range(epochs - final_epochs)] + final
    method = make_method("pcd-darts", epochs, final_epochs=final_epochs)
    temperatures = []
    for epoch in range(epochs):
        method.on_epoch_start(epoch)
        temperatures.append(method.temperature)
        resumed = make_method("pcd-darts", epochs, final_epochs=final_epochs)
        resumed.load_state_dict(method.state_dict())  # T is a function of the epoch on resume too
        assert resumed.temperature == method.temperature
    assert temperatures == pytest.approx(expected, rel=1e-12)
    assert method.export_temperature() == pytest.approx(t(final_epochs), rel=1e-12)


# --- the smooth-gradient term ---------------------------------------------------------------------

class RecordingOptimizer(torch.optim.SGD):
    """An arch optimizer that changes nothing and records the gradients its `step` sees."""

    def __init__(self, params):
        super().__init__(params, lr=0.0)
        self.seen: list[list[torch.Tensor]] = []

    def step(self, closure=None):
        self.seen.append([p.grad.detach().clone() for p in self.param_groups[0]["params"]])


def batches():
    g = torch.Generator().manual_seed(0)
    make = lambda: (torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g))  # noqa: E731
    return make(), make()


def block_jacobian_vjp(alphas: torch.Tensor, g: torch.Tensor, temperature: float) -> torch.Tensor:
    """J^T g of the joint softmax of alphas / T, with the Jacobian written out per node block:
    J = (diag(p) - p p^T) / T, symmetric."""
    out = torch.zeros_like(alphas, dtype=torch.float64)
    for node in range(NUM_NODES):
        rows = node_rows(node)
        p = torch.softmax(alphas[rows].double().flatten() / temperature, dim=0)
        jacobian = (torch.diag(p) - torch.outer(p, p)) / temperature
        out[rows] = (jacobian @ g[rows].double().flatten()).view(-1, alphas.shape[1])
    return out


def independent_gradients(net: Supernet, x, y, temperature: float):
    """(plain architecture gradients at T, g_normal, g_reduce): g is the loss gradient at each cell
    type's node-softmax output, taken with that output as a leaf fed to all cells of the type."""
    arch = net.arch_parameters()
    plain = torch.autograd.grad(F.cross_entropy(net(x, temperature=temperature), y), arch)
    leaves = {r: joint_node_softmax(net.alphas_reduce if r else net.alphas_normal, temperature)
              .detach().requires_grad_() for r in (False, True)}

    def weights_fn(n, reduction, t):
        return CellWeights(leaves[reduction], n.cell_weights(reduction, t).outputs)

    loss = F.cross_entropy(net(x, temperature=temperature, weights_fn=weights_fn), y)
    g_normal, g_reduce = torch.autograd.grad(loss, [leaves[False], leaves[True]])
    return plain, g_normal, g_reduce


def arch_step_gradients(method, net, train, arch):
    weight_opt, _ = method.configure_optimizers(net)
    recorder = RecordingOptimizer(net.arch_parameters())
    ctx = SearchContext(net, lambda x: method.forward(net, x), weight_opt, recorder, method.settings,
                        contextlib.nullcontext)
    method.step(ctx, train, arch)
    assert len(recorder.seen) == 1
    return recorder.seen[0]


def supernet_with_two_normal_cells(seed: int = 0, alpha_std: float = 1e-3) -> Supernet:
    torch.manual_seed(seed)
    net = Supernet(10, 4, 4)  # cells 0 and 3 normal, 1 and 2 reduction
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0.0, alpha_std)
    return net


@pytest.mark.parametrize("smooth", ["normal", "both", "none"])
def test_f5_t1_gradient_term_on_normal_alphas_only(smooth):
    # alphas as they are some way into a search: at T = t5 many entries of a node block are ~0, where
    # the ordinary gradient (1/T) p (g - <p, g>) vanishes and the T = 1 term is what remains
    net = supernet_with_two_normal_cells(0, alpha_std=1e-2)
    assert [c.reduction for c in net.cells] == [False, True, True, False]
    method = make_method("pcd-darts", 50, smooth_gradient=smooth)
    method.on_epoch_start(5)
    t = method.temperature
    assert t == pytest.approx(0.000910, abs=5e-7)
    train, arch = batches()
    plain, g_normal, g_reduce = independent_gradients(net, *arch, t)
    got = arch_step_gradients(method, net, train, arch)
    # the ordinary gradient is J_T^T g (the same g), as autograd gives it (float32, scaled by 1/T)
    scale = [float(p.abs().max()) for p in plain]
    torch.testing.assert_close(plain[0].double(), block_jacobian_vjp(net.alphas_normal, g_normal, t),
                               rtol=1e-4, atol=1e-5 * scale[0])
    extra_normal = block_jacobian_vjp(net.alphas_normal, g_normal, 1.0)
    extra_reduce = block_jacobian_vjp(net.alphas_reduce, g_reduce, 1.0)
    assert ((extra_normal.abs() > plain[0].abs()) & (extra_normal.abs() > 1e-6)).any()  # it matters here
    zero = torch.zeros_like(extra_normal)
    expected_extra = [extra_normal if smooth != "none" else zero, extra_reduce if smooth == "both" else zero,
                      torch.zeros_like(plain[2], dtype=torch.float64),
                      torch.zeros_like(plain[3], dtype=torch.float64)]
    for got_grad, base, extra, size in zip(got, plain, expected_extra, scale, strict=True):
        # what the step added on top of the ordinary gradient, up to float32 rounding of the sum
        torch.testing.assert_close(got_grad.double() - base.double(), extra, rtol=1e-3, atol=5e-7 * size)
    if smooth != "none":
        assert ((got[0] - plain[0]).abs() > 0.5 * plain[0].abs() + 1e-7).any()
    if smooth != "both":
        torch.testing.assert_close(got[1], plain[1], rtol=1e-5, atol=1e-10)


def test_no_extra_term_in_t1_epochs():
    net = supernet_with_two_normal_cells(1)
    method = make_method("pcd-darts", 50, smooth_gradient="both")
    method.on_epoch_start(10)
    assert method.temperature == 1.0
    train, arch = batches()
    plain, _, _ = independent_gradients(net, *arch, 1.0)
    for got, want in zip(arch_step_gradients(method, net, train, arch), plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-10)


def test_the_smooth_path_changes_no_value_and_only_the_arch_forward_carries_it():
    net = supernet_with_two_normal_cells(2)
    method = make_method("pcd-darts", 50)
    method.on_epoch_start(3)
    calls = []
    original = net.forward

    def forward(x, temperature=1.0, weights_fn=None):
        calls.append((temperature, weights_fn is not None))
        return original(x, temperature, weights_fn)

    net.forward = forward
    train, arch = batches()
    arch_step_gradients(method, net, train, arch)
    assert calls == [(method.cycle[3], True), (method.cycle[3], False)]  # arch pass, then weight pass
    x = arch[0]
    method._arch_pass = True
    smooth = method.forward(net, x)
    method._arch_pass = False
    assert torch.equal(smooth, method.forward(net, x))  # s - s.detach() adds exactly 0


def test_export_at_the_last_temperature_with_gates_untouched():
    torch.manual_seed(3)
    method = make_method("pcd-darts", 50)
    method.on_epoch_start(49)
    net = Supernet(10, 4, 3)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.mul_(10)
    weights = method.export(net)
    t = weights.metadata["export_temperature"]
    assert t == method.final[-1]
    for cell, prefix in (("normal", "alphas_normal"), ("reduce", "alphas_reduce")):
        nodes, outputs = weights.cell(cell)
        expected = lhd_cell_weights(getattr(net, prefix), getattr(net, f"{prefix}_output"), t)
        np.testing.assert_allclose(nodes, expected.nodes.detach().numpy(), atol=1e-6)
        np.testing.assert_allclose(outputs, expected.outputs.detach().numpy(), atol=1e-6)
        np.testing.assert_allclose(outputs[1], torch.sigmoid(getattr(net, f"{prefix}_output")[1])
                                   .detach().numpy(), rtol=1e-6)


# --- whole searches -------------------------------------------------------------------------------

def test_pcd_smoke_search_runs_the_end_of_the_final_descent(tmp_path):
    record, weights, _ = smoke_search_moving_every_arch_parameter("pcd-darts", SMOKE, tmp_path)
    _, final = st.pcd_tables()
    assert [h["temperature"] for h in record.history] == final[8:]
    assert {h["lr"] for h in record.history} == {0.025}
    assert weights.metadata["export_temperature"] == final[-1]


def test_edd_smoke_search_adapts_from_the_initial_entropy(tmp_path):
    record, weights, _ = smoke_search_moving_every_arch_parameter("edd-darts", SMOKE, tmp_path)
    cls = get_method("edd-darts")
    torch.manual_seed(0)  # the loop seeds with the trial seed, then builds the supernet
    start = cls(*resolve_settings(cls, SMOKE)).build_supernet(get_dataset("digits").num_classes)
    h0 = st.node_entropy(start.alphas_normal, 1.0)
    d0 = 0.12 * h0 * 0.5  # the 2-epoch search lies in the final phase: warm-up 0, every epoch updates
    first = record.history[0]
    assert first["decay"] == pytest.approx(d0, rel=1e-12)
    assert first["temperature"] == pytest.approx(0.000399 / math.log(1 + d0), rel=1e-12)
    # the entropy logged after epoch 0 is the one epoch 1's update measured
    d1 = 0.12 * first["entropy"] * 0.5 + 0.5 * d0
    assert record.history[1]["temperature"] == pytest.approx(0.000399 / math.log(1 + 2 * d1), rel=1e-12)
    assert weights.metadata["export_temperature"] == record.history[1]["temperature"]


@pytest.mark.parametrize("name", ["pcd-darts", "edd-darts"])
def test_resume_equals_uninterrupted_search(name, tmp_path):
    record = assert_resume_equals_whole(name, SMOKE, tmp_path, seed=2, stop=1)
    assert all(h["temperature"] < 1 for h in record.history)
