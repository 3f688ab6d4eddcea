"""SP-DARTS: temperature 10 in the warm-up, then 0.0015 with probability C and 0.015 otherwise, drawn
per step and shared by the step's two forwards; constant LR; export at T = 0.0015."""

import contextlib
import dataclasses

import numpy as np
import pytest
import torch
from conftest import smoke_search_moving_every_arch_parameter
from lhdbench.baselines.spdarts import AUTHORS_CONSTANTS

from lhdbench.methods import SearchContext, get_method, resolve_settings
from lhdbench.protocol import ProtocolError, load_protocol
from lhdbench.space import Supernet
from lhdbench.space.layout import NUM_NODES, node_rows
from lhdbench.space.supernet import lhd_cell_weights

SMOKE = load_protocol("smoke")


def make_method(epochs: int = 50, **hparams):
    cls = get_method("spdarts")
    settings, checked = resolve_settings(cls, SMOKE.replace(methods={"spdarts": hparams}))
    return cls(dataclasses.replace(settings, epochs=epochs), checked)


def test_defaults_constant_lr_and_flags():
    cls = get_method("spdarts")
    settings, hparams = resolve_settings(cls, SMOKE)
    assert settings.weight_lr == settings.weight_lr_min == 0.025
    assert settings.arch_lr == 3e-4 and settings.batch_size == SMOKE.search.batch_size
    assert hparams == {"warmup_epochs": 5, "scale_warmup": True, "warmup_temperature": 10.0,
                       "small_temperature": 0.0015, "warmup_factor": 10.0, "infer_temperature": 0.00015}
    assert cls.bilevel and cls.trains and cls.static_graph


def test_warmup_is_5_of_50_epochs_scaled_to_the_search_length():
    assert make_method(50).warmup == 5
    assert make_method(2).warmup == 0  # smoke: both epochs run the post-warm-up schedule
    assert make_method(20).warmup == 2
    assert make_method(25).warmup == 3  # 2.5 rounds up
    assert make_method(2, scale_warmup=False).warmup == 5
    with pytest.raises(ProtocolError):
        make_method(warmup_epochs=-1)


def test_temperature_is_10_in_every_warmup_step():
    torch.manual_seed(0)
    method = make_method(50)
    for epoch in range(5):
        method.on_epoch_start(epoch)
        assert method.sparse_probability == 0.0
        assert {method.draw_temperature() for _ in range(200)} == {10.0}
    method.on_epoch_start(30)
    resumed = make_method(50)
    resumed.load_state_dict(method.state_dict())
    assert resumed.schedule(30) == (0.0015, 0.015, pytest.approx(26 / 45))
    assert (resumed.sparse_temperature, resumed.sparse_probability) == (0.0015, pytest.approx(26 / 45))
    # the paper's description (warm-up at temperature 1) is one setting away
    described = make_method(50, warmup_temperature=1.0)
    described.on_epoch_start(4)
    assert {described.draw_temperature() for _ in range(50)} == {1.0}


@pytest.mark.parametrize("epoch", [5, 20, 40, 49])
def test_after_warmup_the_small_temperature_has_probability_c(epoch):
    torch.manual_seed(epoch)
    method = make_method(50)
    method.on_epoch_start(epoch)
    c = (epoch - 4) / 45
    assert method.sparse_probability == pytest.approx(c)
    n = 4000
    draws = [method.draw_temperature() for _ in range(n)]
    assert set(draws) <= {0.0015, 0.015}
    frequency = draws.count(0.0015) / n
    assert abs(frequency - c) <= 5 * (c * (1 - c) / n) ** 0.5 + 1e-12
    if epoch == 49:
        assert frequency == 1.0


def recording_step(method, net, steps):
    """Run `steps` real steps and record the temperature of every supernet forward."""
    temperatures = []
    original = net.forward

    def forward(x, temperature=1.0, weights_fn=None):
        temperatures.append(temperature)
        return original(x, temperature, weights_fn)

    net.forward = forward
    weight_opt, arch_opt = method.configure_optimizers(net)
    ctx = SearchContext(net, lambda x: method.forward(net, x), weight_opt, arch_opt, method.settings,
                        contextlib.nullcontext)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = lambda: (torch.randn(2, 3, 8, 8, generator=g), torch.randint(0, 10, (2,), generator=g))  # noqa: E731
        method.step(ctx, batch(), batch())
    return temperatures


def test_each_step_uses_one_temperature_for_its_arch_and_weight_forwards():
    torch.manual_seed(1)
    method = make_method(50)
    net = Supernet(10, 4, 3)
    method.on_epoch_start(0)
    assert recording_step(method, net, 2) == [10.0] * 4
    method.on_epoch_start(27)  # C = 23/45
    temperatures = recording_step(method, net, 8)
    pairs = list(zip(temperatures[::2], temperatures[1::2], strict=True))
    assert all(a == b for a, b in pairs)
    assert {a for a, _ in pairs} == {0.0015, 0.015}  # both occur in 8 draws at C ~ 0.5 (seeded)
    # evaluation (the final arch-half accuracy) runs at upstream's infer temperature temp / 10
    temperatures.clear()
    net.eval()
    with torch.no_grad():
        method.forward(net, torch.randn(2, 3, 8, 8))
    assert temperatures == [0.00015]


def test_export_is_the_lhd_transform_at_t_0_0015_and_nearly_one_hot():
    torch.manual_seed(2)
    method = make_method(50)
    net = Supernet(10, 4, 3)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    weights = method.export(net)
    assert weights.metadata["export_temperature"] == 0.0015
    near_one_hot = []
    for cell, prefix in (("normal", "alphas_normal"), ("reduce", "alphas_reduce")):
        nodes, outputs = weights.cell(cell)
        expected = lhd_cell_weights(getattr(net, prefix), getattr(net, f"{prefix}_output"), 0.0015)
        np.testing.assert_allclose(nodes, expected.nodes.detach().numpy(), atol=1e-6)
        np.testing.assert_allclose(outputs, expected.outputs.detach().numpy(), atol=1e-6)
        near_one_hot += [nodes[node_rows(n)].max() > 0.99 for n in range(NUM_NODES)]
        assert outputs[0].max() > 0.99
        # the gates take no temperature
        np.testing.assert_allclose(outputs[1], torch.sigmoid(getattr(net, f"{prefix}_output")[1])
                                   .detach().numpy(), rtol=1e-6)
    assert all(near_one_hot)


@pytest.mark.slow
def test_smoke_search_completes_with_constant_lr_and_moves_the_architecture(tmp_path):
    record, weights, _ = smoke_search_moving_every_arch_parameter("spdarts", SMOKE, tmp_path)
    assert {h["lr"] for h in record.history} == {0.025}
    assert weights.metadata["method"] == "spdarts" and weights.metadata["export_temperature"] == 0.0015


# --- the authors' DARTS-space constants (chaoji90/SP-DARTS `SP-DARTS/train_search_mf.py`) -------------

def test_authors_constants_are_four_constants_chosen_by_one_key():
    assert AUTHORS_CONSTANTS == {"warmup_epochs": 1, "small_temperature": 0.001, "infer_temperature": 0.0001,
                                 "weight_lr": 0.05, "weight_lr_min": 0.05}
    # The key picks the set; the same values given one by one make the same method, and so the same
    # search (the key is not a hyperparameter of its own).
    cls = get_method("spdarts")

    def resolved(**keys):
        return resolve_settings(cls, SMOKE.replace(methods={"spdarts": keys}))

    by_key, by_values = resolved(constants="authors"), resolved(**AUTHORS_CONSTANTS)
    assert by_key == by_values and "constants" not in by_key[1]
    assert resolved(constants="lhd") == resolve_settings(cls, SMOKE)
    with pytest.raises(ProtocolError, match="methods.spdarts.constants: expected one of lhd, authors"):
        make_method(50, constants="paper")
    method = make_method(50, constants="authors")
    s = method.settings
    assert s.weight_lr == s.weight_lr_min == 0.05  # constant 0.05
    assert s.batch_size == SMOKE.search.batch_size and s.arch_lr == 3e-4  # the rest is the protocol's
    assert method.warmup == 1 and method.hparams["scale_warmup"] and method.hparams["warmup_factor"] == 10.0
    assert method.export_temperature() == 0.001 and method.infer_temperature == 0.0001
    # the warm-up is scaled like the LHD one: 1 of 50 epochs, 0 of the smoke protocol's 2, 1 of 25
    assert [make_method(e, **AUTHORS_CONSTANTS).warmup for e in (2, 25, 100)] == [0, 1, 2]
    assert make_method(2, **AUTHORS_CONSTANTS, scale_warmup=False).warmup == 1


def test_f6_authors_schedule_t10_in_epoch_0_then_c_is_e_over_49():
    torch.manual_seed(3)
    method = make_method(50, constants="authors")
    method.on_epoch_start(0)
    assert method.schedule(0) == (10.0, 10.0, 0.0)
    assert {method.draw_temperature() for _ in range(100)} == {10.0}
    for epoch in range(1, 50):
        assert method.schedule(epoch) == (0.001, pytest.approx(0.01), pytest.approx(epoch / 49))
    method.on_epoch_start(25)
    assert sorted({method.draw_temperature() for _ in range(200)}) == [0.001, pytest.approx(0.01)]
    method.on_epoch_start(49)
    assert {method.draw_temperature() for _ in range(100)} == {0.001}


def test_f6_lhd_constants_are_unchanged_c_is_e_minus_4_over_45():
    method = make_method(50)
    for epoch in range(5):
        assert method.schedule(epoch) == (10.0, 10.0, 0.0)
    for epoch in range(5, 50):
        assert method.schedule(epoch) == (0.0015, pytest.approx(0.015), pytest.approx((epoch - 4) / 45))
    assert (method.settings.weight_lr, method.settings.weight_lr_min) == (0.025, 0.025)
    assert method.export_temperature() == 0.0015 and method.infer_temperature == 0.00015


def test_an_explicit_key_wins_over_the_authors_constants():
    method = make_method(50, constants="authors", warmup_epochs=3, weight_lr_min=0.0003)
    assert method.warmup == 3
    assert method.schedule(3) == (0.001, pytest.approx(0.01), pytest.approx(1 / 47))
    assert (method.settings.weight_lr, method.settings.weight_lr_min) == (0.05, 0.0003)
