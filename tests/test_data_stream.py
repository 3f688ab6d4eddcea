"""lhdbench.data.stream.GpuBatchStream: coverage of epochs and of the endless stream, normalization,
crop/flip/Cutout semantics, the SVHN no-augmentation rule, reproducibility and state round trips.
Every test runs on the CPU and, where one is present, on CUDA."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from lhdbench.data import DatasetSpec, GpuBatchStream, ImageSet, get_dataset, load_images

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# mean 0, std 1: a batch is u / 255, so round(x * 255) gives back the uint8 pixels exactly.
PLAIN = DatasetSpec("plain", 10, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), augment=True, cutout=True)


@pytest.fixture(autouse=True)
def one_cpu_thread():
    """These tensors are tiny: intra-op threads only add synchronization, which costs tens of
    milliseconds per op on a busy machine. Restored afterwards so other tests are unaffected."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


def indexed_set(n: int) -> ImageSet:
    """n blank images whose labels are their indices."""
    return ImageSet(torch.zeros(n, 3, 32, 32, dtype=torch.uint8), torch.arange(n))


def constant_set(n: int, rgb: tuple[int, int, int]) -> ImageSet:
    images = torch.tensor(rgb, dtype=torch.uint8).view(1, 3, 1, 1).expand(n, 3, 32, 32).contiguous()
    return ImageSet(images, torch.arange(n))


def coordinate_set(n: int) -> ImageSet:
    """Channel 0 = row + 1, channel 1 = column + 1, channel 2 = 255: every pixel says where it is and
    every zero is padding."""
    grid = torch.arange(1, 33, dtype=torch.uint8)
    image = torch.stack([grid[:, None].expand(32, 32), grid[None, :].expand(32, 32),
                         torch.full((32, 32), 255, dtype=torch.uint8)])
    return ImageSet(image.expand(n, 3, 32, 32).contiguous(), torch.arange(n))


def pixels(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.cpu() * 255).to(torch.uint8)


def all_batches(stream: GpuBatchStream) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(stream.epoch())


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ------------------------------------------------------------------------------------- shapes, length


@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_shapes_dtypes_and_device(device, channels_last):
    data = load_images("digits", train=True).head(256)
    stream = GpuBatchStream(data, get_dataset("digits"), 64, device=device, augment=True, cutout=16,
                            channels_last=channels_last)
    assert stream.images.device.type == device and stream.images.dtype == torch.uint8
    assert stream.labels.device.type == device
    for x, y in [stream.next_batch(), next(iter(stream.epoch()))]:
        assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and x.device.type == device
        assert y.shape == (64,) and y.dtype == torch.int64 and y.device.type == device
        assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert set(y.tolist()) <= set(range(10))


def test_channels_last_changes_only_the_layout(device):
    data = load_images("digits", train=True).head(100)
    kwargs = dict(device=device, augment=True, cutout=16, seed=3)
    a = GpuBatchStream(data, get_dataset("digits"), 25, **kwargs)
    b = GpuBatchStream(data, get_dataset("digits"), 25, channels_last=True, **kwargs)
    assert_same_batches(all_batches(a), all_batches(b))
    assert_same_batches([a.next_batch()], [b.next_batch()])


@pytest.mark.parametrize("n, batch_size, batches", [(10, 4, 3), (10, 5, 2), (10, 10, 1), (10, 11, 1),
                                                    (25_000, 176, 143)])
def test_len_is_batches_per_epoch(n, batch_size, batches):
    stream = GpuBatchStream(indexed_set(n), PLAIN, batch_size)
    assert len(stream) == batches
    if n < 1000:
        assert len(all_batches(stream)) == batches


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        GpuBatchStream(indexed_set(4), PLAIN, 0)
    with pytest.raises(ValueError):
        GpuBatchStream(indexed_set(4), PLAIN, 2, cutout=-1)
    with pytest.raises(ValueError):
        GpuBatchStream(indexed_set(0), PLAIN, 2)


# ------------------------------------------------------------------------------------------- coverage


def test_epoch_covers_every_index_once_with_a_short_last_batch(device):
    stream = GpuBatchStream(indexed_set(103), PLAIN, 10, device=device, seed=1)
    first = [y.cpu() for _, y in stream.epoch()]
    assert [len(y) for y in first] == [10] * 10 + [3]
    order = torch.cat(first)
    assert torch.equal(order.sort().values, torch.arange(103))
    assert not torch.equal(order, torch.arange(103))  # shuffled
    second = torch.cat([y.cpu() for _, y in stream.epoch()])
    assert torch.equal(second.sort().values, torch.arange(103))
    assert not torch.equal(second, order)  # a fresh permutation each epoch


def test_epoch_without_shuffle_is_dataset_order(device):
    stream = GpuBatchStream(indexed_set(10), PLAIN, 4, device=device, shuffle=False)
    for _ in range(2):
        assert [y.tolist() for _, y in stream.epoch()] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("n, batch_size", [(10, 4), (12, 4), (3, 8)])
def test_next_batch_is_full_and_passes_every_index_before_repeating(device, n, batch_size):
    stream = GpuBatchStream(indexed_set(n), PLAIN, batch_size, device=device, seed=2)
    ys = [stream.next_batch()[1].cpu() for _ in range(3 * n)]
    assert all(len(y) == batch_size for y in ys)
    flat = torch.cat(ys)
    blocks = flat[: len(flat) // n * n].view(-1, n)
    for block in blocks:  # consecutive runs of n items are permutations
        assert torch.equal(block.sort().values, torch.arange(n))
    if n > 3:
        assert len({tuple(b.tolist()) for b in blocks}) > 1  # reshuffled when exhausted


def test_next_batch_continues_across_calls_independently_of_epoch(device):
    stream = GpuBatchStream(indexed_set(10), PLAIN, 4, device=device, shuffle=False)
    assert stream.next_batch()[1].tolist() == [0, 1, 2, 3]
    assert stream.next_batch()[1].tolist() == [4, 5, 6, 7]
    assert len(all_batches(stream)) == 3  # a whole epoch in between does not move the stream
    assert stream.next_batch()[1].tolist() == [8, 9, 0, 1]  # wraps into the next pass, full
    assert stream.next_batch()[1].tolist() == [2, 3, 4, 5]


# -------------------------------------------------------------------------------------- normalization


def test_normalization_of_a_constant_image(device):
    rgb = (10, 128, 250)
    spec = get_dataset("cifar10")
    stream = GpuBatchStream(constant_set(8, rgb), spec, 8, device=device)
    x, _ = stream.next_batch()
    expected = [(v / 255 - m) / s for v, m, s in zip(rgb, spec.mean, spec.std, strict=True)]
    for c in range(3):
        assert torch.allclose(x[:, c].cpu(), torch.full((8, 32, 32), expected[c]), atol=1e-5, rtol=0)


def test_without_augment_batches_are_the_plain_images(device):
    data = load_images("digits", train=True).head(64)
    stream = GpuBatchStream(data, PLAIN, 64, device=device, shuffle=False)
    x, y = stream.next_batch()
    assert torch.equal(pixels(x), data.images) and torch.equal(y.cpu(), data.labels)


# ------------------------------------------------------------------------------------------ crop, flip


def decode_augmentation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For coordinate_set batches: per sample (dy, dx) in padded coordinates, flip, and the window of
    the zero-padded image those imply (flipped where flip)."""
    u = pixels(x).long()
    # The centre pixel is inside the image for every shift |s| <= 4.
    row, col, right = u[:, 0, 16, 16], u[:, 1, 16, 16], u[:, 1, 16, 17]
    flip = right < col  # columns run backwards
    dy = row - 13  # padded row dy + 16 holds image row dy + 12, stored as dy + 13
    dx = torch.where(flip, col - 12, col - 13)  # flipped: output column 16 is padded column dx + 15
    padded = F.pad(coordinate_set(1).images[0], (4, 4, 4, 4))
    windows = []
    for a, b, f in zip(dy.tolist(), dx.tolist(), flip.tolist(), strict=True):
        w = padded[:, a:a + 32, b:b + 32] if 0 <= a <= 8 and 0 <= b <= 8 else torch.zeros(3, 32, 32)
        windows.append(w.flip(-1) if f else w)
    return dy, dx, flip, torch.stack(windows).to(torch.uint8)


def test_crop_is_a_shifted_window_of_the_zero_padded_image(device):
    stream = GpuBatchStream(coordinate_set(512), PLAIN, 512, device=device, augment=True, seed=5)
    x, _ = stream.next_batch()
    dy, dx, _, windows = decode_augmentation(x)
    assert torch.equal(pixels(x), windows)
    assert set(dy.tolist()) == set(range(9)) and set(dx.tolist()) == set(range(9))  # shifts -4..4
    assert ((dy != 4) | (dx != 4)).any()


def test_flip_mirrors_about_half_the_samples(device):
    stream = GpuBatchStream(coordinate_set(512), PLAIN, 512, device=device, augment=True, seed=6)
    x, _ = stream.next_batch()
    _, _, flip, windows = decode_augmentation(x)
    assert torch.equal(pixels(x), windows)  # flipped samples are mirrored windows
    assert 0.4 < flip.double().mean().item() < 0.6
    unflipped = GpuBatchStream(coordinate_set(4), PLAIN, 4, device=device, augment=False).next_batch()[0]
    assert (pixels(unflipped)[:, 1, :, 1:] > pixels(unflipped)[:, 1, :, :-1]).all()


def test_augmentation_draws_differ_between_batches(device):
    stream = GpuBatchStream(coordinate_set(64), PLAIN, 64, device=device, augment=True, shuffle=False)
    assert not torch.equal(stream.next_batch()[0], stream.next_batch()[0])


# --------------------------------------------------------------------------------------------- cutout


@pytest.mark.parametrize("length", [16, 5])
def test_cutout_zeroes_one_clipped_square_per_sample(device, length):
    spec = DatasetSpec("grey", 10, (0.5,) * 3, (0.25,) * 3, augment=True, cutout=True)
    data = constant_set(256, (200, 200, 200))  # (200/255 - 0.5) / 0.25 != 0
    x, _ = GpuBatchStream(data, spec, 256, device=device, cutout=length, seed=7).next_batch()
    ref, _ = GpuBatchStream(data, spec, 256, device=device, cutout=0, seed=7).next_batch()
    assert not (ref == 0).any()
    x, ref = x.cpu(), ref.cpu()
    zero = x == 0
    assert torch.equal(x[~zero], ref[~zero])  # nothing else changes
    assert (zero == zero[:, :1]).all()  # the same square in every channel
    mask = zero[:, 0]
    rows, cols = mask.any(dim=2), mask.any(dim=1)  # (B, 32) each
    assert torch.equal(mask, rows[:, :, None] & cols[:, None, :])  # a rectangle...
    full, clipped = 0, 0
    for r, c in zip(rows, cols, strict=True):
        for line in (r, c):
            where = line.nonzero().flatten()
            assert len(where) >= max(1, length // 2)  # the centre is in the image
            assert len(where) == where[-1] - where[0] + 1  # ...of consecutive rows and columns
            assert len(where) <= length
            at_border = where[0] == 0 or where[-1] == 31
            assert len(where) == length or at_border  # ...only clipped at the border
        if int(r.sum()) == int(c.sum()) == length:
            full += 1
        else:
            clipped += 1
    assert full > 0 and clipped > 0


def test_cutout_needs_the_spec_to_allow_it(device):
    spec = DatasetSpec("nocut", 10, (0.5,) * 3, (0.25,) * 3, augment=True, cutout=False)
    stream = GpuBatchStream(constant_set(16, (200, 200, 200)), spec, 16, device=device, cutout=16)
    assert stream.cutout == 0
    assert not (stream.next_batch()[0] == 0).any()


def test_svhn_is_never_augmented(device):
    spec = get_dataset("svhn")
    rng = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=rng)
    data = ImageSet(images, torch.arange(40) % 10)
    stream = GpuBatchStream(data, spec, 16, device=device, augment=True, cutout=16, shuffle=False)
    assert stream.augment is False and stream.cutout == 0
    plain = GpuBatchStream(data, spec, 16, device=device, shuffle=False)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    for (x, _), (p, _), start in zip(stream.epoch(), plain.epoch(), range(0, 40, 16), strict=True):
        assert torch.equal(x, p)
        expected = (images[start:start + 16].float() / 255 - mean) / std
        assert torch.allclose(x.cpu(), expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- seeds and state dicts


def digits_stream(device: str, seed: int) -> GpuBatchStream:
    data = load_images("digits", train=True).head(64)
    return GpuBatchStream(data, get_dataset("digits"), 16, device=device, augment=True, cutout=16, seed=seed)


def test_same_seed_same_batches_different_seed_different(device):
    a, b, c = digits_stream(device, 11), digits_stream(device, 11), digits_stream(device, 12)
    batches_a = all_batches(a) + [a.next_batch() for _ in range(8)]
    batches_b = all_batches(b) + [b.next_batch() for _ in range(8)]
    batches_c = all_batches(c) + [c.next_batch() for _ in range(8)]
    assert_same_batches(batches_a, batches_b)
    assert not torch.equal(batches_a[0][1], batches_c[0][1])
    assert not torch.equal(batches_a[-1][0], batches_c[-1][0])


def test_state_dict_round_trip_continues_identically(device):
    original = digits_stream(device, 21)
    for _ in range(2):
        original.next_batch()
    all_batches(original)
    original.next_batch()  # 48 of 64 used: the stream is part-way through its permutation

    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # only tensors and ints inside
    assert 0 < state["pos"] < len(state["perm"])

    restored = digits_stream(device, 999)  # a different seed: everything must come from the state
    restored.load_state_dict(state)

    def rest(stream):
        out = [stream.next_batch() for _ in range(9)]  # crosses into new permutations
        out += all_batches(stream)
        out += [stream.next_batch() for _ in range(3)]
        out += all_batches(stream)
        return out

    assert_same_batches(rest(original), rest(restored))


def test_state_dict_of_a_fresh_stream_round_trips(device):
    a, b = digits_stream(device, 31), digits_stream(device, 0)
    b.load_state_dict(a.state_dict())
    assert_same_batches([a.next_batch(), *all_batches(a)], [b.next_batch(), *all_batches(b)])


def test_state_dict_refuses_a_different_stream():
    state = GpuBatchStream(indexed_set(10), PLAIN, 4).state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        GpuBatchStream(indexed_set(10), PLAIN, 5).load_state_dict(state)
    with pytest.raises(ValueError, match="num_samples"):
        GpuBatchStream(indexed_set(11), PLAIN, 4).load_state_dict(state)


def test_pass_preparation_in_chunks_gives_the_same_batches(device, monkeypatch):
    from lhdbench.data import stream as stream_module

    whole = [*all_batches(digits_stream(device, 41))]
    monkeypatch.setattr(stream_module, "CHUNK", 7)  # 64 samples: 9 uneven chunks
    chunked = [*all_batches(digits_stream(device, 41))]
    assert_same_batches(whole, chunked)
