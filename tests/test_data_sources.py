"""lhdbench.data.sources and specs: data root, search split, the embedded digits set, torchvision
loading (conversion with fake datasets, failures without network) and the error messages.

Loading through torchvision itself, from small files in its on-disk formats, is in test_data_files.py;
the pre-flight check in test_data_check.py."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from lhdbench.data import (
    DATASETS,
    DatasetUnavailable,
    ImageSet,
    check_available,
    data_root,
    get_dataset,
    load_images,
    search_split,
)


def zeros_set(n: int) -> ImageSet:
    """n black images (one buffer, expanded: cheap at CIFAR/SVHN sizes), labelled by their index."""
    return ImageSet(torch.zeros(1, 3, 32, 32, dtype=torch.uint8).expand(n, 3, 32, 32), torch.arange(n))


# ------------------------------------------------------------------------------------------ data root


def test_data_root_prefers_explicit_then_env_then_default(monkeypatch, tmp_path):
    monkeypatch.setenv("LHDBENCH_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert data_root(str(tmp_path / "explicit")) == tmp_path / "explicit"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("LHDBENCH_DATA")
    assert data_root() == Path.home() / ".cache" / "lhdbench" / "data"
    monkeypatch.setenv("LHDBENCH_DATA", "")  # set but empty counts as unset
    assert data_root() == Path.home() / ".cache" / "lhdbench" / "data"


def test_data_root_is_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert data_root("rel") == tmp_path / "rel"


# ------------------------------------------------------------------------------------------- ImageSet


def test_imageset_head_keeps_dataset_order():
    data = zeros_set(10)
    assert len(data) == 10
    assert data.head(None) is data
    assert data.head(4).labels.tolist() == [0, 1, 2, 3]
    assert len(data.head(0)) == 0
    assert len(data.head(50)) == 10
    with pytest.raises(ValueError):
        data.head(-1)


def test_imageset_rejects_wrong_dtypes_and_shapes():
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="int64"):
        ImageSet(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="int64"):
        ImageSet(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))


# --------------------------------------------------------------------------------------- search split


@pytest.mark.parametrize("n, weight, arch", [(50_000, 25_000, 25_000), (73_257, 36_628, 36_629)])
def test_search_split_sizes_match_upstream(n, weight, arch):
    w, a = search_split(zeros_set(n))
    assert (len(w), len(a)) == (weight, arch)


def test_search_split_is_in_dataset_order():
    data = zeros_set(73_257)
    w, a = search_split(data)
    assert torch.equal(w.labels, torch.arange(36_628))  # exactly the first floor(N/2), in order
    assert torch.equal(a.labels, torch.arange(36_628, 73_257))
    assert w.images.shape == (36_628, 3, 32, 32) and a.images.shape == (36_629, 3, 32, 32)


def test_search_split_other_portion_and_bad_portions():
    w, a = search_split(zeros_set(11), portion=0.7)  # floor(7.7) = 7
    assert w.labels.tolist() == list(range(7)) and a.labels.tolist() == list(range(7, 11))
    for bad in (0.0, 1.0, -0.5, 1.5):
        with pytest.raises(ValueError):
            search_split(zeros_set(10), portion=bad)
    with pytest.raises(ValueError, match="empty"):
        search_split(zeros_set(1))


# --------------------------------------------------------------------------------------------- digits


def test_digits_is_a_dataset_choice_with_cifar_code_paths():
    spec = get_dataset("digits")
    assert "digits" in DATASETS
    assert (spec.num_classes, spec.augment, spec.cutout) == (10, True, True)


@pytest.mark.parametrize("train, n", [(True, 1437), (False, 360)])
def test_digits_shape_dtype_classes(train, n):
    data = load_images("digits", train=train)
    for name in ("digits", "digits16"):  # the counts the cost and memory estimates use
        assert (DATASETS[name].train_images if train else DATASETS[name].test_images) == len(data)
    assert data.images.shape == (n, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.labels.shape == (n,) and data.labels.dtype == torch.int64
    assert data.images.device.type == "cpu"
    assert set(data.labels.tolist()) == set(range(10))
    assert int(data.images.min()) == 0 and int(data.images.max()) == 255
    # grey replicated to 3 channels; nearest upsampling: constant 4x4 blocks
    grey = data.images[:, :1].expand(-1, 3, -1, -1)
    assert torch.equal(data.images, grey)
    blocks = data.images[:, 0].reshape(n, 8, 4, 8, 4)
    assert torch.equal(blocks, blocks[:, :, :1, :, :1].expand_as(blocks))


def test_digits_split_is_sklearn_order_80_20():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, test = load_images("digits", train=True), load_images("digits", train=False)
    labels = torch.cat([train.labels, test.labels])
    assert torch.equal(labels, torch.from_numpy(bunch.target.astype(np.int64)))
    small = torch.cat([train.images, test.images])[:, 0, ::4, ::4].double()
    assert torch.equal(torch.round(small * 16 / 255), torch.from_numpy(bunch.images))


def test_digits_ignores_root_and_download(tmp_path):
    data = load_images("digits", train=True, root=tmp_path / "nothing", download=False)
    assert len(data) == 1437
    assert not (tmp_path / "nothing").exists()


def test_digits_spec_statistics_match_the_training_images():
    x = load_images("digits", train=True).images.double() / 255
    spec = get_dataset("digits")
    mean = x.mean(dim=(0, 2, 3))
    std = x.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False)
    assert torch.allclose(mean, torch.tensor(spec.mean, dtype=torch.float64), atol=1e-4, rtol=0)
    assert torch.allclose(std, torch.tensor(spec.std, dtype=torch.float64), atol=1e-4, rtol=0)


def test_loaded_sets_are_independent_copies():
    a = load_images("digits", train=True)
    a.images.zero_()
    assert int(load_images("digits", train=True).images.max()) == 255


# --------------------------------------------------------------------------------- unknown / missing


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        load_images("imagenet", train=True)
    for name in ("cifar10", "cifar100", "svhn", "digits"):
        assert name in str(info.value)


@pytest.mark.parametrize("name, train, looked_for", [
    ("cifar10", True, "cifar-10-batches-py"),
    ("cifar10", False, "cifar-10-batches-py"),
    ("cifar100", True, "cifar-100-python"),
    ("svhn", True, "train_32x32.mat"),
    ("svhn", False, "test_32x32.mat"),
])
def test_missing_files_without_download_raise_one_line(tmp_path, name, train, looked_for):
    root = tmp_path / "empty"
    with pytest.raises(DatasetUnavailable) as info:
        load_images(name, train=train, root=root, download=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(root) in message and looked_for in message
    assert "download disabled" in message and "LHDBENCH_DATA" in message and "--data-root" in message
    assert isinstance(info.value, RuntimeError)


def _no_network(*args, **kwargs):
    raise socket.gaierror(-2, "Name or service not known (network disabled by the test)")


@pytest.mark.parametrize("name", ["cifar10", "svhn"])
def test_failed_download_raises_one_line_with_the_reason(monkeypatch, tmp_path, name):
    # Every name lookup fails at once, so this never touches the network even where there is one.
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    monkeypatch.setenv("LHDBENCH_DATA", str(tmp_path / "via-env"))
    with pytest.raises(DatasetUnavailable) as info:
        load_images(name, train=True, download=True)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "via-env") in message
    assert "download failed" in message and "network disabled by the test" in message


# ------------------------------------------------------------------ torchvision conversion (no files)


def _recording(cls, made: list):
    def make(*args, **kwargs):
        made.append(cls(*args, **kwargs))
        return made[-1]
    return make


class _FakeCifar:
    def __init__(self, root, train, download):
        rng = np.random.default_rng(0 if train else 1)
        self.data = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)  # NHWC like torchvision
        self.targets = [3, 1, 4, 1, 5]
        self.args = (root, train, download)


class _FakeSvhn:
    def __init__(self, root, split, download):
        rng = np.random.default_rng(2)
        # torchvision transposes the .mat into NCHW, giving a non-contiguous array
        self.data = np.transpose(rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8), (3, 2, 0, 1))
        self.labels = np.array([0, 9, 2, 7])
        self.args = (root, split, download)


def test_cifar_numpy_nhwc_becomes_uint8_nchw(monkeypatch, tmp_path):
    import torchvision.datasets as tvd

    made = []
    monkeypatch.setattr(tvd, "CIFAR10", _recording(_FakeCifar, made))
    data = load_images("cifar10", train=False, root=tmp_path, download=False)
    fake = made[0]
    assert fake.args == (str(tmp_path), False, False)
    assert data.images.shape == (5, 3, 32, 32) and data.images.dtype == torch.uint8
    assert torch.equal(data.images, torch.from_numpy(fake.data).permute(0, 3, 1, 2))
    assert data.images.is_contiguous()
    assert data.labels.tolist() == fake.targets and data.labels.dtype == torch.int64


def test_svhn_numpy_nchw_is_kept(monkeypatch, tmp_path):
    import torchvision.datasets as tvd

    made = []
    monkeypatch.setattr(tvd, "SVHN", _recording(_FakeSvhn, made))
    data = load_images("svhn", train=True, root=tmp_path)
    fake = made[0]
    assert fake.args == (str(tmp_path), "train", True)
    assert torch.equal(data.images, torch.from_numpy(np.ascontiguousarray(fake.data)))
    assert data.images.is_contiguous() and data.labels.tolist() == [0, 9, 2, 7]


def test_labels_out_of_range_are_rejected(monkeypatch, tmp_path):
    import torchvision.datasets as tvd

    class Bad(_FakeCifar):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.targets = [0, 1, 2, 3, 10]

    monkeypatch.setattr(tvd, "CIFAR10", Bad)
    with pytest.raises(ValueError, match="out of range"):
        load_images("cifar10", train=True, root=tmp_path)


# ----------------------------------------------------------- real files, only where a user has them
# The one thing written files cannot stand in for: the published files themselves (their md5 sums,
# their sizes, every class present). Skipped unless they are in the data root.


@pytest.mark.parametrize("name, train, n, classes", [
    ("cifar10", True, 50_000, 10), ("cifar10", False, 10_000, 10),
    ("cifar100", True, 50_000, 100), ("cifar100", False, 10_000, 100),
    ("svhn", True, 73_257, 10), ("svhn", False, 26_032, 10),
])
def test_real_dataset_when_present(name, train, n, classes):
    try:
        data = load_images(name, train=train, download=False)
    except DatasetUnavailable as error:
        pytest.skip(f"files not present: {error}")
    assert data.images.shape == (n, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64 and set(data.labels.unique().tolist()) == set(range(classes))
    assert (DATASETS[name].train_images if train else DATASETS[name].test_images) == n
    assert check_available(name, train=train, download=False) is None


def _load_with_a_slow_fake_download(root: str, log: str) -> None:
    """In a fresh process: CIFAR-10 through a stand-in for torchvision that takes a second to
    'download' and logs when it starts and ends."""
    import time

    from torchvision import datasets

    from lhdbench.data.sources import load_images

    class SlowCifar:
        def __init__(self, root, train=True, download=False):
            with open(log, "a") as handle:
                handle.write(f"start {time.monotonic()}\n")
            time.sleep(1.0)
            with open(log, "a") as handle:
                handle.write(f"end {time.monotonic()}\n")
            self.data = np.zeros((2, 32, 32, 3), np.uint8)
            self.targets = [0, 1]

    datasets.CIFAR10 = SlowCifar
    assert len(load_images("cifar10", train=True, root=root)) == 2


@pytest.mark.slow
def test_trials_starting_together_on_a_fresh_data_root_download_one_at_a_time(tmp_path):
    import multiprocessing

    log = tmp_path / "log"
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_load_with_a_slow_fake_download, args=(str(tmp_path / "data"), str(log)))
               for _ in range(3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    events = [line.split() for line in log.read_text().splitlines()]
    assert [kind for kind, _ in events] == ["start", "end"] * 3  # never two at once
    assert (tmp_path / "data" / ".lhdbench-cifar10.lock").exists()
