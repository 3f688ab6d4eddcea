"""The first-order DARTS search loop against the same steps written out here: an Adam step on the
architecture with an arch-half batch, then a clipped SGD step on the weights with a weight-half batch,
under a cosine schedule per epoch."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from lhdbench.data import GpuBatchStream, ImageSet, get_dataset, load_images
from lhdbench.methods import get_method, resolve_settings
from lhdbench.protocol import load_protocol
from lhdbench.search import run_search
from lhdbench.space import Supernet

SEED = 2
ARCH_NAMES = ("alphas_normal", "alphas_reduce", "alphas_normal_output", "alphas_reduce_output")
# Values apart from their defaults and from each other: the weights' decay is large and the
# architecture's zero, so handing one optimizer the other's decay shows; grad_clip is below the
# gradient norm of every step (the reference asserts it).
SEARCH = {"epochs": 2, "weight_lr": 0.06, "weight_lr_min": 0.005, "momentum": 0.7, "weight_decay": 0.3,
          "grad_clip": 0.1, "arch_lr": 0.02, "arch_betas": [0.6, 0.95], "arch_weight_decay": 0.0,
          "steps_per_epoch": 2}
ADAM_EPS = 1e-8


@pytest.fixture(scope="module")
def protocol():
    return load_protocol("smoke").replace(search=SEARCH)


def reference_search(protocol) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """First-order DARTS written out with hand-made Adam and SGD steps. Returns (history, state)."""
    s = protocol.search
    spec = get_dataset("digits")
    torch.manual_seed(SEED)
    net = Supernet(spec.num_classes, s.init_channels, s.layers)
    train = load_images("digits", train=True).head(s.max_train_images)
    half = math.floor(s.train_portion * len(train))  # weights: the first part, in dataset order
    weight_data = ImageSet(train.images[:half], train.labels[:half])
    arch_data = ImageSet(train.images[half:], train.labels[half:])
    batch = min(s.batch_size, len(weight_data), len(arch_data))
    # One stream per half, seeded 2 * seed and 2 * seed + 1.
    weight_stream = GpuBatchStream(weight_data, spec, batch, augment=True, seed=2 * SEED)
    arch_stream = GpuBatchStream(arch_data, spec, batch, augment=True, seed=2 * SEED + 1)

    arch = [getattr(net, name) for name in ARCH_NAMES]
    weights = [p for name, p in net.named_parameters() if name not in ARCH_NAMES]
    assert len(weights) + len(arch) == len(list(net.parameters()))
    beta1, beta2 = s.arch_betas
    adam_m = [torch.zeros_like(p) for p in arch]
    adam_v = [torch.zeros_like(p) for p in arch]
    velocity: list[torch.Tensor | None] = [None] * len(weights)

    def cosine(epoch: int) -> float:
        high, low = s.weight_lr, s.weight_lr_min
        return low + (high - low) * (1 + math.cos(math.pi * epoch / s.epochs)) / 2

    history, t = [], 0
    for epoch in range(s.epochs):
        lr = cosine(epoch)
        net.train()
        loss_sum, correct, count = 0.0, 0, 0
        for _, (x, y) in zip(range(s.steps_per_epoch), weight_stream.epoch(), strict=False):
            xa, ya = arch_stream.next_batch()
            t += 1
            grads = torch.autograd.grad(F.cross_entropy(net(xa), ya), arch)
            with torch.no_grad():
                for p, g, m, v in zip(arch, grads, adam_m, adam_v, strict=True):
                    g = g + s.arch_weight_decay * p
                    m.mul_(beta1).add_((1 - beta1) * g)
                    v.mul_(beta2).add_((1 - beta2) * g * g)
                    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
                    p -= s.arch_lr * m_hat / (v_hat.sqrt() + ADAM_EPS)

            logits = net(x)
            loss = F.cross_entropy(logits, y)
            grads = torch.autograd.grad(loss, weights, allow_unused=True)
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads if g is not None]))
            assert norm > s.grad_clip  # else clipping by norm could not be told from no clipping
            scale = s.grad_clip / (norm + 1e-6)
            with torch.no_grad():
                for i, (p, g) in enumerate(zip(weights, grads, strict=True)):
                    if g is None:
                        continue
                    d = g * scale + s.weight_decay * p
                    velocity[i] = d if velocity[i] is None else s.momentum * velocity[i] + d
                    p -= lr * velocity[i]
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
        history.append({"epoch": epoch, "train_loss": loss_sum / count, "train_acc": correct / count,
                        "lr": cosine(epoch + 1)})
    return history, net.state_dict()


def test_darts_search_matches_the_steps_written_out(protocol, tmp_path):
    # The reference reads the protocol's search section; darts adds no defaults of its own on top.
    assert resolve_settings(get_method("darts"), protocol)[0] == protocol.search
    run_search("darts", "digits", SEED, protocol, tmp_path, progress=False)
    record = json.loads((tmp_path / "record.json").read_text())
    stored = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["supernet"]
    history, state = reference_search(protocol)
    assert len(record["history"]) == len(history)
    for mine, theirs in zip(history, record["history"], strict=True):
        assert theirs["epoch"] == mine["epoch"]
        assert theirs["train_loss"] == pytest.approx(mine["train_loss"], rel=1e-5)
        assert theirs["train_acc"] == mine["train_acc"]
        assert theirs["lr"] == pytest.approx(mine["lr"], rel=1e-9)  # the lr the next epoch uses
    assert set(stored) == set(state)
    for name in ARCH_NAMES:  # the architecture moved, and moved as written out
        assert not torch.allclose(state[name], torch.zeros_like(state[name]), atol=1e-2)
    for name, tensor in state.items():
        torch.testing.assert_close(stored[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
