"""SS-DARTS: constant weight lr, arch Adam 1e-3 / wd 1e-3, the normal cell's per-epoch op magnitude, and
the selective stop that exports the weights of the epoch where the parametric mass peaks."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import assert_resume_equals_whole, smoke_search_moving_every_arch_parameter
from lhdbench.baselines.ss_darts import (
    PARAMETRIC,
    gated_peak,
    op_magnitude,
    peak_epochs,
    selective_stop_epoch,
)

from lhdbench.checkpoint import load_checkpoint
from lhdbench.methods import get_method, resolve_settings
from lhdbench.protocol import ProtocolError, load_protocol
from lhdbench.search import ARCH_HISTORY
from lhdbench.space import PRIMITIVES, ArchWeights, Supernet

SMOKE = load_protocol("smoke")
COLUMNS = [PRIMITIVES.index(op) for op in PARAMETRIC]


def make_method(epochs: int = 50, **hparams):
    cls = get_method("ss-darts")
    settings, checked = resolve_settings(cls, SMOKE.replace(methods={"ss-darts": hparams}))
    return cls(dataclasses.replace(settings, epochs=epochs), checked)


def weights_with_magnitude(share, seed: int = 0) -> ArchWeights:
    """ArchWeights whose normal node blocks give op o the share `share[o]` of every node (so m = 5 share):
    logits log(share[o]) in column o of every row. The other matrices are random."""
    rng = np.random.default_rng(seed)
    logits = np.tile(np.log(np.asarray(share, dtype=np.float64)), (20, 1))
    return ArchWeights.from_logits(logits, rng.standard_normal((20, 7)), rng.standard_normal((2, 5)),
                                   rng.standard_normal((2, 5)))


def share(top: str, top_value: float, param_each: float) -> np.ndarray:
    """A 7-vector of shares summing to 1: `top` gets top_value, each other parametric op param_each,
    the parameter-free ops share the rest equally."""
    s = np.zeros(7)
    s[PRIMITIVES.index(top)] = top_value
    for c in COLUMNS:
        if PRIMITIVES[c] != top:
            s[c] = param_each
    free = [c for c in range(7) if c not in COLUMNS and PRIMITIVES[c] != top]
    s[free] = (1 - s.sum()) / len(free)
    assert (s > 0).all() and abs(s.sum() - 1) < 1e-12
    return s


def test_defaults_are_the_authors_learning_rates_on_the_lhd_budget():
    cls = get_method("ss-darts")
    settings, hparams = resolve_settings(cls, load_protocol("paper"))
    assert settings.weight_lr == settings.weight_lr_min == 0.025
    assert settings.arch_lr == 1e-3 and settings.arch_weight_decay == 1e-3
    assert settings.arch_betas == (0.5, 0.999)
    assert settings.epochs == 50 and settings.batch_size == 176  # LHD's protocol, not 75 x 80
    assert hparams == {"selective_stop": True, "stop_reference": "parametric", "stop_gate": "top_op",
                       "stop_cell": "normal"}
    assert make_method(stop_reference="sep_conv_3x3").hparams["stop_reference"] == "sep_conv_3x3"
    for bad in ({"stop_reference": "conv"}, {"stop_gate": "majority"}, {"selective_stop": 1}):
        with pytest.raises(ProtocolError, match="methods.ss-darts"):
            make_method(**bad)


def test_magnitude_is_the_column_sum_of_the_joint_softmax(rng):
    """F1: m_e sums to the number of softmax units (5 nodes here, 14 edges upstream)."""
    weights = ArchWeights.from_logits(*(rng.standard_normal(s) for s in ((20, 7), (20, 7), (2, 5), (2, 5))))
    m = op_magnitude(weights)
    np.testing.assert_allclose(m, weights.normal.astype(np.float64).sum(axis=0))
    assert m.shape == (7,) and m.sum() == pytest.approx(5.0, abs=1e-5)
    both = op_magnitude(weights, "both")
    np.testing.assert_allclose(both, m + weights.reduce.astype(np.float64).sum(axis=0))
    assert both.sum() == pytest.approx(10.0, abs=1e-5)
    np.testing.assert_allclose(op_magnitude(weights_with_magnitude(share("skip_connect", 0.4, 0.1))),
                               5 * share("skip_connect", 0.4, 0.1), rtol=1e-5)


def test_per_op_peak_epoch_takes_the_first_maximum():
    """F1: the DARTS-space log, numpy argmax over epochs (ties -> the first epoch)."""
    m = [np.array([1, 2, 0, 0, 0, 0, 2.0]), np.array([3, 2, 0, 0, 0, 0, 0.0]),
         np.array([3, 1, 1, 0, 0, 0, 0.0])]
    assert peak_epochs(m) == [1, 0, 2, 0, 0, 0, 0]


def test_gated_peak_follows_the_nb201_bootstrap_rule():
    # bootstrap epochs 0-1 are recorded (the gate never opened yet); epoch 3 is closed after the gate
    # opened at 2, so its larger value counts as 0
    assert gated_peak([1.0, 1.5, 1.2, 9.0, 1.1], [False, False, True, False, True]) == 1
    assert gated_peak([1.0, 1.5, 1.2, 9.0, 1.6], [False, False, True, False, True]) == 4
    assert gated_peak([3.0, 1.0, 2.0], [False, True, True]) == 0  # a bootstrap epoch can win
    assert gated_peak([2.0, 2.0, 2.0], [True, True, True]) == 0  # ties -> the first epoch
    assert gated_peak([5.0, 1.0], [False, False]) == 0  # never open: the plain peak


def test_a_majority_gate_on_the_mass_itself_would_change_nothing(rng):
    """Why the gate looks at the top op: gating on "the parametric ops hold the majority (> 2.5)" can
    never move the peak of that same mass (every open epoch beats every closed or bootstrap one)."""
    for _ in range(300):
        values = list(rng.uniform(1.5, 3.5, size=int(rng.integers(1, 12))))
        assert gated_peak(values, [v > 2.5 for v in values]) == int(np.argmax(values))


def test_stop_rule_on_hand_made_sequences():
    rising_then_falling = [5 * share("sep_conv_3x3", 0.16, 0.15), 5 * share("sep_conv_3x3", 0.2, 0.17),
                           5 * share("sep_conv_5x5", 0.25, 0.18), 5 * share("dil_conv_3x3", 0.2, 0.16)]
    assert selective_stop_epoch(rising_then_falling) == 2
    # epoch 3 has the largest parametric mass (0.76 x 5), but skip is the top op: gated out
    skip_takes_over = [5 * share("sep_conv_3x3", 0.16, 0.15), 5 * share("sep_conv_3x3", 0.2, 0.16),
                       5 * share("skip_connect", 0.22, 0.19), 5 * share("skip_connect", 0.23, 0.19)]
    assert [round(m[COLUMNS].sum(), 6) for m in skip_takes_over] == [3.05, 3.4, 3.8, 3.8]
    assert selective_stop_epoch(skip_takes_over) == 1
    assert selective_stop_epoch(skip_takes_over, gate="none") == 2  # plain peak: first of the tie
    # a single reference op (the NB201 form): sep_conv_3x3's own column and its own top-op gate
    assert selective_stop_epoch(rising_then_falling, reference="sep_conv_3x3") == 1
    # final_top_parametric: dil_conv_3x3 leads the parametric ops after the last epoch
    assert selective_stop_epoch(rising_then_falling, reference="final_top_parametric") == 3


def test_final_export_returns_the_stop_epochs_snapshot_not_the_last():
    method = make_method(3)
    epochs = [weights_with_magnitude(share("sep_conv_3x3", 0.16, 0.15), seed=0),
              weights_with_magnitude(share("sep_conv_3x3", 0.25, 0.17), seed=1),
              weights_with_magnitude(share("skip_connect", 0.3, 0.1), seed=2)]
    torch.manual_seed(0)
    net = Supernet(10, 4, 3)
    chosen = method.final_export(net, epochs)
    for got, expected in zip(chosen.matrices(), epochs[1].matrices(), strict=True):
        np.testing.assert_array_equal(got, expected)
    assert chosen.metadata["stop_epoch"] == 1
    assert chosen.metadata["stop_reference_ops"] == list(PARAMETRIC)
    assert chosen.metadata["peak_epoch_per_op"]["skip_connect"] == 2
    last = make_method(3, selective_stop=False).final_export(net, epochs)
    for got, expected in zip(last.matrices(), make_method(3).export(net).matrices(), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_on_epoch_end_records_the_magnitudes_the_stop_rule_uses():
    torch.manual_seed(4)
    method = make_method(50)
    method.supernet = net = Supernet(10, 4, 3)
    with torch.no_grad():
        net.alphas_normal.normal_()
    values = method.on_epoch_end(0)
    m = op_magnitude(method.export(net))
    assert [values[f"mag_{op}"] for op in PRIMITIVES] == [float(v) for v in m]
    assert values["reference_mass"] == float(m[COLUMNS].sum())


def test_smoke_search_exports_the_weights_of_the_epoch_the_rule_picks(tmp_path):
    record, weights, _ = smoke_search_moving_every_arch_parameter("ss-darts", SMOKE, tmp_path)
    assert {h["lr"] for h in record.history} == {0.025}
    loop = load_checkpoint(tmp_path / "checkpoint.pt", torch.device("cpu"))["loop"]
    snapshots = [ArchWeights(*s["matrices"]) for s in loop["values"][ARCH_HISTORY]]
    assert len(snapshots) == SMOKE.search.epochs
    magnitudes = [op_magnitude(s) for s in snapshots]
    for entry, m in zip(record.history, magnitudes, strict=True):
        assert [entry[f"mag_{op}"] for op in PRIMITIVES] == [float(v) for v in m]
    stop = selective_stop_epoch(magnitudes)
    assert weights.metadata["stop_epoch"] == stop
    for got, expected in zip(weights.matrices(), snapshots[stop].matrices(), strict=True):
        np.testing.assert_array_equal(got, expected)
    if stop != len(snapshots) - 1:  # seed 0 stops at epoch 0 here: the export is not the last epoch
        assert any(not np.array_equal(a, b)
                   for a, b in zip(weights.matrices(), snapshots[-1].matrices(), strict=True))


def test_resume_equals_uninterrupted_search(tmp_path):
    record = assert_resume_equals_whole("ss-darts", SMOKE, tmp_path, seed=1, stop=1)
    assert "reference_mass" in record.history[0]
