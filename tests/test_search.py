"""The search loop on the embedded digits set with the smoke protocol (CPU, deterministic)."""

import contextlib
import json

import numpy as np
import pytest
import torch

from lhdbench.engine import TrialFailed
from lhdbench.methods import SearchContext, SearchMethod, get_method, resolve_settings
from lhdbench.protocol import ProtocolError, load_protocol
from lhdbench.search import ARCH_FILE, RECORD_FILE, run_search
from lhdbench.space import load_arch_weights


@pytest.fixture(scope="module")
def smoke():
    return load_protocol("smoke")


def test_darts_step_moves_weights_and_architecture(smoke):
    torch.manual_seed(0)
    settings, hparams = resolve_settings(get_method("darts"), smoke)
    method = get_method("darts")(settings, hparams)
    net = method.build_supernet(10)
    weight_opt, arch_opt = method.configure_optimizers(net)
    ctx = SearchContext(net, lambda x: method.forward(net, x), weight_opt, arch_opt, settings,
                        contextlib.nullcontext)
    before_w = [p.detach().clone() for p in net.weight_parameters()]
    before_a = [p.detach().clone() for p in net.arch_parameters()]
    batch = (torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    metrics = method.step(ctx, batch, (torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))))
    assert set(metrics) >= {"loss_sum", "correct", "count"}
    assert all(not torch.equal(a, p) for a, p in zip(before_a, net.arch_parameters(), strict=True))
    assert sum(not torch.equal(a, p) for a, p in zip(before_w, net.weight_parameters(), strict=True)) \
        > len(before_w) // 2


def test_smoke_search_writes_arch_and_record(tmp_path, smoke):
    record = run_search("darts", "digits", 0, smoke, tmp_path / "s", progress=False)
    assert record.status == "done"
    stored = json.loads((tmp_path / "s" / RECORD_FILE).read_text())
    assert stored == json.loads(record.to_json())
    for key in ("baseline", "dataset", "seed", "protocol", "history", "wall_time_s", "environment",
                "arch_file", "arch_half_acc", "peak_gpu_memory_bytes", "epochs_per_s"):
        assert key in stored, key
    assert stored["environment"]["torch"] == torch.__version__
    assert len(stored["history"]) == smoke.search.epochs
    weights = load_arch_weights(tmp_path / "s" / ARCH_FILE)
    assert weights.metadata["method"] == "darts" and weights.metadata["seed"] == 0


def test_a_finished_trial_is_not_run_again(tmp_path, smoke, monkeypatch):
    first = run_search("darts", "digits", 0, smoke, tmp_path, progress=False)
    monkeypatch.setattr(SearchMethod, "step", lambda *a: pytest.fail("a finished trial ran again"))
    assert run_search("darts", "digits", 0, smoke, tmp_path, progress=False) == first


def test_resume_after_an_epoch_equals_an_uninterrupted_run(tmp_path, smoke):
    longer = smoke.replace(search={**smoke.to_dict()["search"], "epochs": 3})
    run_search("darts", "digits", 1, longer, tmp_path / "whole", progress=False)

    stopped = tmp_path / "stopped"
    original = get_method("darts").on_epoch_start

    def stop_at_epoch_1(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        original(self, epoch)

    darts = get_method("darts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(darts, "on_epoch_start", stop_at_epoch_1)
        with pytest.raises(KeyboardInterrupt):
            run_search("darts", "digits", 1, longer, stopped, progress=False)
    assert (stopped / "checkpoint.pt").exists() and not (stopped / RECORD_FILE).exists()
    resumed = run_search("darts", "digits", 1, longer, stopped, progress=False)
    whole = json.loads((tmp_path / "whole" / RECORD_FILE).read_text())
    a, b = load_arch_weights(tmp_path / "whole" / ARCH_FILE), load_arch_weights(stopped / ARCH_FILE)
    for x, y in zip(a.matrices(), b.matrices(), strict=True):
        np.testing.assert_array_equal(x, y)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole["history"]]


def test_non_finite_loss_fails_the_trial_with_a_reason(tmp_path, smoke, monkeypatch):
    original = SearchMethod.forward
    monkeypatch.setattr(SearchMethod, "forward", lambda self, net, x: original(self, net, x) * float("nan"))
    with pytest.raises(TrialFailed, match="non-finite"):
        run_search("darts", "digits", 0, smoke, tmp_path, progress=False)
    record = json.loads((tmp_path / RECORD_FILE).read_text())
    assert record["status"] == "failed" and "non-finite" in record["reason"]
    assert not (tmp_path / ARCH_FILE).exists()


def test_unknown_method_override_key_is_named(smoke):
    bad = smoke.replace(methods={"darts": {"batch_sise": 3}})
    with pytest.raises(ProtocolError, match="methods.darts.batch_sise"):
        resolve_settings(get_method("darts"), bad)


def test_protocol_method_overrides_reach_the_settings(smoke):
    settings, _ = resolve_settings(get_method("darts"), smoke.replace(methods={"darts": {"batch_size": 7}}))
    assert settings.batch_size == 7


def test_bf16_autocast_keeps_architecture_weights_fp32_and_close_to_fp32():
    """The CUDA bf16 path, checked with CPU autocast: op weights stay fp32, outputs stay close."""
    from lhdbench.space import Supernet

    torch.manual_seed(0)
    net = Supernet(10, channels=4, layers=3).eval()
    x = torch.randn(4, 3, 32, 32)
    seen = []

    def recording(supernet, reduction, temperature):
        weights = supernet.cell_weights(reduction, temperature)
        seen.append(weights.nodes.dtype)
        return weights

    expected = net(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = net(x, weights_fn=recording)
    assert seen and all(dtype == torch.float32 for dtype in seen)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, rtol=0.05, atol=0.05)


def test_channels_last_supernet_matches_contiguous():
    from lhdbench.space import Supernet

    torch.manual_seed(0)
    net = Supernet(10, channels=4, layers=3).eval()
    x = torch.randn(4, 3, 32, 32)
    expected = net(x)
    net = net.to(memory_format=torch.channels_last)
    torch.testing.assert_close(net(x.to(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-5)


def test_a_folder_of_another_trial_is_refused(tmp_path, smoke):
    run_search("darts", "digits", 0, smoke, tmp_path, progress=False)
    before = (tmp_path / RECORD_FILE).read_bytes()
    with pytest.raises(ValueError, match="belongs to another trial .*seed"):
        run_search("darts", "digits", 7, smoke, tmp_path, progress=False)
    assert (tmp_path / RECORD_FILE).read_bytes() == before
    (tmp_path / RECORD_FILE).unlink()  # only the checkpoint is left: still refused
    with pytest.raises(ValueError, match="belongs to another trial"):
        run_search("darts", "digits", 7, smoke, tmp_path, progress=False)


def test_a_bad_device_is_a_usage_error():
    from lhdbench.engine import pick_device

    with pytest.raises(ValueError, match="unknown device"):
        pick_device("foo")
