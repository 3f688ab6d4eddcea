"""The real-data path offline: small CIFAR-10, CIFAR-100 and SVHN files in torchvision's own on-disk
formats (lhdbench.data.testing) in a temporary data root, loaded through load_images and so through
torchvision's dataset classes, its integrity check and its archive handling.

torchvision checks every file's md5 sum against the published one, with download=False as with
download=True, so these files only load where a test puts their sums in place of the published ones
(`trust`); the tests without `trust` pin down what happens to files that fail the check. No test
reaches the network: every name lookup fails (and is recorded) here.
"""

from __future__ import annotations

import hashlib
import socket
import tarfile

import numpy as np
import pytest
import torch

from lhdbench.data import (
    DatasetUnavailable,
    GpuBatchStream,
    check_available,
    get_dataset,
    load_images,
    search_split,
)
from lhdbench.data.layout import _source_attributes, _splits, _vars_of, torchvision_layout
from lhdbench.data.testing import WrittenFiles, write_torchvision_files

NAMES = ["cifar10", "cifar100", "svhn"]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def lookups(monkeypatch) -> list:
    """No network: every name lookup fails at once; the hosts asked for are recorded."""
    asked: list = []

    def refuse(host, *args, **kwargs):
        asked.append(host)
        raise socket.gaierror(-2, "Name or service not known (network disabled by the test)")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return asked


def trust(monkeypatch, written: WrittenFiles, archive_md5: str | None = None) -> None:
    """Make torchvision expect the md5 sums of the files written (and of an archive made of them)."""
    from torchvision.datasets import cifar, svhn

    md5 = written.md5
    if written.name == "svhn":
        for split in ("train", "test"):
            url, filename, _ = svhn.SVHN.split_list[split]
            monkeypatch.setitem(svhn.SVHN.split_list, split, [url, filename, md5[filename]])
        return
    cls = cifar.CIFAR10 if written.name == "cifar10" else cifar.CIFAR100
    for attr in ("train_list", "test_list"):
        monkeypatch.setattr(cls, attr, [[f, md5[f"{cls.base_folder}/{f}"]] for f, _ in getattr(cls, attr)])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5[f"{cls.base_folder}/{cls.meta['filename']}"]})
    if archive_md5 is not None:
        monkeypatch.setattr(cls, "tgz_md5", archive_md5)


def md5_of(path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def stored(written: WrittenFiles, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split's images (N, 3072 for CIFAR; 32, 32, 3, N for SVHN) and labels exactly as stored."""
    files = [written.arrays[path] for path in written.splits[split]]
    if written.name == "svhn":
        return files[0]["X"], files[0]["y"]
    return np.concatenate([f["data"] for f in files]), np.concatenate([f["labels"] for f in files])


@pytest.fixture
def written(request, tmp_path, monkeypatch) -> WrittenFiles:
    files = write_torchvision_files(request.param, tmp_path / "data")
    trust(monkeypatch, files)
    return files


# ------------------------------------------------------------------------------ torchvision's layout


def test_layout_names_are_torchvisions_and_read_without_importing_it():
    from torchvision.datasets import CIFAR10, CIFAR100, SVHN

    for name, cls in (("cifar10", CIFAR10), ("cifar100", CIFAR100), ("svhn", SVHN)):
        module = "svhn" if name == "svhn" else "cifar"
        assert _splits(name, _source_attributes(module, cls.__name__)) == _splits(name, _vars_of(cls))
    # CIFAR: either split needs every data file and the meta file (torchvision checks them all).
    cifar10 = torchvision_layout("cifar10")
    batches = tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6))
    for split in ("train", "test"):
        assert cifar10[split].paths == (*batches, "cifar-10-batches-py/test_batch",
                                        "cifar-10-batches-py/batches.meta")
    assert cifar10["train"].data == batches and cifar10["test"].data == ("cifar-10-batches-py/test_batch",)
    assert cifar10["train"].archive == "cifar-10-python.tar.gz"
    cifar100 = torchvision_layout("cifar100")
    for split in ("train", "test"):
        assert cifar100[split].paths == ("cifar-100-python/train", "cifar-100-python/test",
                                         "cifar-100-python/meta")
        assert cifar100[split].data == (f"cifar-100-python/{split}",)
    for split in ("train", "test"):
        assert torchvision_layout("svhn")[split].paths == (f"{split}_32x32.mat",)
        assert torchvision_layout("svhn")[split].data == (f"{split}_32x32.mat",)
        assert torchvision_layout("svhn")[split].archive is None
    assert {torchvision_layout(n)[s].address for n in NAMES[:2] for s in ("train", "test")} == {
        ("www.cs.toronto.edu", 443)}
    assert {torchvision_layout("svhn")[s].address for s in ("train", "test")} == {("ufldl.stanford.edu", 80)}


# ------------------------------------------------------------------------------- loading the files


@pytest.mark.parametrize("written", ["cifar10", "cifar100"], indirect=True)
def test_cifar_pixels_and_labels_arrive_exactly_in_file_order(written, lookups):
    for split, n in (("train", len(stored(written, "train")[1])), ("test", len(stored(written, "test")[1]))):
        data = load_images(written.name, train=split == "train", root=written.root, download=True)
        rows, labels = stored(written, split)
        assert data.images.shape == (n, 3, 32, 32) and data.images.dtype == torch.uint8
        assert data.images.is_contiguous()
        assert data.labels.dtype == torch.int64 and data.labels.tolist() == labels.tolist()
        # The 3072 values of a row: the red plane, then green, then blue, each row-major.
        assert torch.equal(data.images, torch.from_numpy(rows).view(n, 3, 32, 32))
        for i, c, h, w in ((0, 0, 0, 0), (n - 1, 2, 31, 31), (n // 2, 1, 5, 17), (1, 2, 30, 1)):
            assert int(data.images[i, c, h, w]) == int(rows[i, c * 1024 + h * 32 + w])
    assert lookups == []  # every file there: torchvision was not asked to download


def test_cifar10_training_set_is_the_five_batches_in_order(tmp_path, monkeypatch):
    written = write_torchvision_files("cifar10", tmp_path, train=23, test=4)
    trust(monkeypatch, written)
    data = load_images("cifar10", train=True, root=tmp_path)
    start = 0
    for i in range(1, 6):
        batch = written.arrays[f"cifar-10-batches-py/data_batch_{i}"]
        n = len(batch["labels"])
        assert torch.equal(data.images[start:start + n].reshape(n, 3072), torch.from_numpy(batch["data"]))
        assert data.labels[start:start + n].tolist() == batch["labels"].tolist()
        start += n
    assert start == len(data) == 23
    assert set(data.labels.tolist()) == set(range(10))


def test_cifar100_uses_the_fine_labels(tmp_path, monkeypatch):
    written = write_torchvision_files("cifar100", tmp_path)
    trust(monkeypatch, written)
    data = load_images("cifar100", train=True, root=tmp_path)
    fine = written.arrays["cifar-100-python/train"]["labels"]
    coarse = written.arrays["cifar-100-python/train"]["coarse"]
    assert data.labels.tolist() == fine.tolist() != coarse.tolist()
    assert set(data.labels.tolist()) == set(range(100))  # 0..99 all present, none out of range


@pytest.mark.parametrize("written", ["svhn"], indirect=True)
def test_svhn_pixels_from_hwcn_and_label_10_becomes_0(written, lookups):
    for split in ("train", "test"):
        data = load_images("svhn", train=split == "train", root=written.root)
        x, y = stored(written, split)
        n = x.shape[3]
        assert data.images.shape == (n, 3, 32, 32) and data.images.dtype == torch.uint8
        assert data.images.is_contiguous()
        # MATLAB's X(row, column, channel, image) -> image[n, channel, row, column]
        assert torch.equal(data.images, torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1))))
        for i, c, h, w in ((0, 0, 0, 0), (n - 1, 2, 31, 31), (n // 2, 1, 5, 17), (1, 0, 30, 2)):
            assert int(data.images[i, c, h, w]) == int(x[h, w, c, i])
        raw = y.ravel().tolist()
        assert 10 in raw and 0 not in raw  # the file's convention: 1..10
        assert data.labels.dtype == torch.int64
        assert data.labels.tolist() == [0 if v == 10 else v for v in raw]
        assert set(data.labels.tolist()) == set(range(10))
    assert lookups == []


@pytest.mark.parametrize("written", NAMES, indirect=True)
def test_train_and_test_are_different_files(written):
    train = load_images(written.name, train=True, root=written.root)
    test = load_images(written.name, train=False, root=written.root)
    assert (len(train), len(test)) == (len(stored(written, "train")[1]), len(stored(written, "test")[1]))
    assert len(train) != len(test)
    assert not torch.equal(train.images[:len(test)], test.images)


@pytest.mark.parametrize("written", NAMES, indirect=True)
def test_head_and_search_split_in_file_order(written):
    data = load_images(written.name, train=True, root=written.root)
    n = len(data)
    assert torch.equal(data.head(5).images, data.images[:5]) and data.head(5).labels.tolist() == \
        data.labels[:5].tolist()
    weights, arch = search_split(data)
    assert (len(weights), len(arch)) == (n // 2, n - n // 2)  # 23 -> 11/12, 200 -> 100/100, 21 -> 10/11
    assert torch.equal(torch.cat([weights.images, arch.images]), data.images)
    assert torch.equal(torch.cat([weights.labels, arch.labels]), data.labels)


@pytest.mark.parametrize("written", NAMES, indirect=True)
def test_gpu_batch_stream_on_the_loaded_files(written):
    spec = get_dataset(written.name)
    weights, arch = search_split(load_images(written.name, train=True, root=written.root))
    stream = GpuBatchStream(weights, spec, 4, device=DEVICE, augment=True, cutout=16, seed=0)
    labels = torch.cat([y.cpu() for x, y in stream.epoch()])
    assert sorted(labels.tolist()) == sorted(weights.labels.tolist())
    x, y = GpuBatchStream(arch, spec, 4, device=DEVICE, seed=1).next_batch()
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and x.device.type == DEVICE
    plain = GpuBatchStream(arch, spec, len(arch), device=DEVICE, shuffle=False)
    x, y = next(iter(plain.epoch()))
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    assert torch.allclose(x.cpu(), (arch.images.float() / 255 - mean) / std, atol=1e-5)
    assert torch.equal(y.cpu(), arch.labels)


# ------------------------------------------------------------------ md5 sums, archives, missing files


@pytest.mark.parametrize("name", NAMES)
def test_torchvision_refuses_files_that_fail_the_md5_check_even_without_download(tmp_path, name):
    from torchvision import datasets

    write_torchvision_files(name, tmp_path)
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        if name == "svhn":
            datasets.SVHN(str(tmp_path), split="test", download=False)
        else:
            getattr(datasets, name.upper())(str(tmp_path), train=False, download=False)


@pytest.mark.parametrize("name", NAMES)
def test_files_that_fail_the_md5_check_are_named_and_left_alone(tmp_path, name, lookups):
    written = write_torchvision_files(name, tmp_path)
    test_files = [p for p, _ in torchvision_layout(name)["test"].files]
    with pytest.raises(DatasetUnavailable) as info:
        load_images(name, train=False, root=tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message and "md5" in message
    assert all(path.rsplit("/", 1)[-1] in message for path in test_files)
    assert "download disabled" in message and "--data-root" in message
    assert lookups == []
    # With downloads allowed torchvision tries to fetch the originals (which would replace the files);
    # offline that fails and the files stay as they were.
    with pytest.raises(DatasetUnavailable, match="md5 check.*download failed") as info:
        load_images(name, train=False, root=tmp_path, download=True)
    assert "\n" not in str(info.value)
    host = torchvision_layout(name)["test"].address[0]
    assert host in lookups
    assert all(md5_of(tmp_path / path) == md5 for path, md5 in written.md5.items())


def _pack(written: WrittenFiles, archive) -> str:
    """The CIFAR folder as the .tar.gz torchvision downloads; its md5."""
    folder = torchvision_layout(written.name)["train"].paths[0].split("/")[0]
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(written.root / folder, arcname=folder)
    return md5_of(archive)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_archive_in_the_root_is_unpacked_without_a_download(tmp_path, monkeypatch, lookups, name):
    import shutil

    written = write_torchvision_files(name, tmp_path / "src")
    root = tmp_path / "data"
    root.mkdir()
    archive = root / torchvision_layout(name)["train"].archive
    trust(monkeypatch, written, archive_md5=_pack(written, archive))
    shutil.rmtree(tmp_path / "src")
    assert check_available(name, root) is None  # the archive will do ...
    assert check_available(name, root, download=False) is not None  # ... only where it may be unpacked
    with pytest.raises(DatasetUnavailable, match="download disabled"):
        load_images(name, train=True, root=root, download=False)
    data = load_images(name, train=True, root=root)
    rows, labels = stored(written, "train")
    assert torch.equal(data.images, torch.from_numpy(rows).view(-1, 3, 32, 32))
    assert data.labels.tolist() == labels.tolist()
    assert lookups == []
    assert check_available(name, root, download=False) is None  # unpacked now


def test_a_corrupted_file_is_replaced_when_downloads_are_allowed(tmp_path, monkeypatch, lookups):
    written = write_torchvision_files("cifar10", tmp_path)
    trust(monkeypatch, written, archive_md5=_pack(written, tmp_path / "cifar-10-python.tar.gz"))
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:-100])  # truncated
    assert check_available("cifar10", tmp_path, download=False) is None  # names only: looks fine
    with pytest.raises(DatasetUnavailable) as info:
        load_images("cifar10", train=True, root=tmp_path, download=False)
    assert "cifar-10-batches-py/data_batch_3 fails torchvision's md5 check" in str(info.value)
    assert "data_batch_2" not in str(info.value)
    # torchvision's download: the archive in the root has the right sum, so it is unpacked again
    # (no network), over the bad file.
    data = load_images("cifar10", train=True, root=tmp_path, download=True)
    assert md5_of(bad) == written.md5["cifar-10-batches-py/data_batch_3"]
    assert torch.equal(data.images, torch.from_numpy(stored(written, "train")[0]).view(-1, 3, 32, 32))
    assert lookups == []


@pytest.mark.parametrize("written", ["cifar10"], indirect=True)
def test_load_message_names_the_folder_and_the_missing_file(written):
    (written.root / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DatasetUnavailable) as info:
        load_images("cifar10", train=True, root=written.root, download=False)
    message = str(info.value)
    assert "\n" not in message
    assert f"cifar10 (train) not found under {written.root} " in message
    assert "looked for cifar-10-batches-py/{data_batch_1,data_batch_2,data_batch_3,data_batch_4," in message
    assert "missing cifar-10-batches-py/data_batch_4)" in message
    assert "download disabled" in message and "--data-root" in message and "LHDBENCH_DATA" in message
    # torchvision's CIFAR classes check every split's files, so the test split is refused too.
    with pytest.raises(DatasetUnavailable, match=r"cifar10 \(test\) not found.*missing cifar-10-batches-py/"
                                                 r"data_batch_4\)"):
        load_images("cifar10", train=False, root=written.root, download=False)
