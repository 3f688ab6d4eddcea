"""lhdbench.data.check_available, the pre-flight check: files present (the test-written ones), each
missing file named, downloads judged by a TCP connection to torchvision's download host, all fast.

The connection is replaced in every test (`connect`), so nothing here depends on this machine's
network or reaches it.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import threading
import time

import pytest

from lhdbench.data import check_available, data_root
from lhdbench.data.layout import torchvision_layout
from lhdbench.data.testing import write_torchvision_files

NAMES = ["cifar10", "cifar100", "svhn"]
HOSTS = {"cifar10": ("www.cs.toronto.edu", 443), "cifar100": ("www.cs.toronto.edu", 443),
         "svhn": ("ufldl.stanford.edu", 80)}
PROXY_VARS = ["http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
              "ALL_PROXY", "NO_PROXY"]


class Connect:
    """Stands in for socket.create_connection: records the addresses and fails (or succeeds)."""

    def __init__(self) -> None:
        self.addresses: list = []
        self.error: OSError | None = OSError(101, "Network is unreachable")
        self.release = threading.Event()
        self.hang = False

    def __call__(self, address, timeout=None, *args, **kwargs):
        self.addresses.append(address)
        if self.hang:  # a name lookup that never answers
            self.release.wait(30)
        if self.error is not None:
            raise self.error
        return socket.socket()  # closed at once by the check


@pytest.fixture(autouse=True)
def connect(monkeypatch):
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    fake = Connect()
    monkeypatch.setattr(socket, "create_connection", fake)
    yield fake
    fake.release.set()


def one_line(message: str | None) -> str:
    assert message is not None
    assert "\n" not in message
    return message


def timed(*args, **kwargs):
    start = time.perf_counter()
    result = check_available(*args, **kwargs)
    return result, time.perf_counter() - start


# ---------------------------------------------------------------------------------------- available


def test_digits_is_always_available(tmp_path, connect):
    assert check_available("digits", tmp_path / "nothing", download=False) is None
    assert check_available("digits") is None
    assert connect.addresses == [] and not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("name", NAMES)
def test_written_files_are_available_in_milliseconds(tmp_path, connect, name):
    write_torchvision_files(name, tmp_path)
    for kwargs in ({}, {"download": False}, {"train": True}, {"train": False, "download": False}):
        result, seconds = timed(name, tmp_path, **kwargs)
        assert result is None
        assert seconds < 0.2  # a few stat calls; no md5 sums, no torchvision import
    assert connect.addresses == []


def test_root_defaults_to_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LHDBENCH_DATA", str(tmp_path))
    write_torchvision_files("svhn", tmp_path)
    assert data_root() == tmp_path and check_available("svhn") is None


def test_unknown_name_raises_value_error():
    with pytest.raises(ValueError, match="known datasets"):
        check_available("imagenet")


# ---------------------------------------------------------------------------------- missing files


@pytest.mark.parametrize("name", NAMES)
def test_each_missing_file_is_named(tmp_path, connect, name):
    written = write_torchvision_files(name, tmp_path)
    for path in written.md5:
        content = (tmp_path / path).read_bytes()
        (tmp_path / path).unlink()
        message = one_line(check_available(name, tmp_path, download=False))
        assert message.startswith(f"{name} is not available: files missing under {tmp_path} (looked for ")
        assert f"; missing {path}) and downloads are off." in message
        assert "--data-root" in message and "LHDBENCH_DATA" in message
        (tmp_path / path).write_bytes(content)
    assert check_available(name, tmp_path, download=False) is None


def test_message_lists_every_file_looked_for(tmp_path):
    message = one_line(check_available("cifar10", tmp_path, download=False))
    assert (f"cifar10 is not available: files missing under {tmp_path} (looked for cifar-10-batches-py/"
            "{data_batch_1,data_batch_2,data_batch_3,data_batch_4,data_batch_5,test_batch,batches.meta}; "
            "none of them is there) and downloads are off. Put the torchvision files there, or pass "
            "--data-root / set LHDBENCH_DATA to the folder that has them") == message
    svhn = one_line(check_available("svhn", tmp_path, train=False, download=False))
    assert "(looked for test_32x32.mat; not there)" in svhn


def test_only_the_splits_asked_for_are_checked(tmp_path):
    write_torchvision_files("svhn", tmp_path)
    (tmp_path / "test_32x32.mat").unlink()
    assert check_available("svhn", tmp_path, train=True, download=False) is None
    assert "(looked for test_32x32.mat; not there)" in one_line(
        check_available("svhn", tmp_path, train=False, download=False))
    assert "(looked for {train_32x32.mat,test_32x32.mat}; missing test_32x32.mat)" in one_line(
        check_available("svhn", tmp_path, download=False))
    # CIFAR: torchvision checks both splits' files whichever it loads, so the check does too.
    write_torchvision_files("cifar10", tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    assert "missing cifar-10-batches-py/test_batch" in one_line(
        check_available("cifar10", tmp_path, train=True, download=False))


def test_a_folder_with_the_name_of_a_file_does_not_count(tmp_path):
    write_torchvision_files("svhn", tmp_path)
    (tmp_path / "train_32x32.mat").unlink()
    (tmp_path / "train_32x32.mat").mkdir()
    assert "missing train_32x32.mat" in one_line(check_available("svhn", tmp_path, download=False))


# -------------------------------------------------------------------------------------- downloads


@pytest.mark.parametrize("name", NAMES)
def test_unreachable_network_gives_one_line_within_seconds(tmp_path, connect, name):
    result, seconds = timed(name, tmp_path / "fresh")
    message = one_line(result)
    host, port = HOSTS[name]
    assert connect.addresses == [(host, port)]
    assert f"none of them is there) and cannot be downloaded (download host {host}:{port} unreachable: " \
           "OSError: [Errno 101] Network is unreachable)." in message
    assert str(tmp_path / "fresh") in message and "--data-root / set LHDBENCH_DATA" in message
    archive = {"cifar10": " (or cifar-10-python.tar.gz)", "cifar100": " (or cifar-100-python.tar.gz)"}
    assert f"Put the torchvision files{archive.get(name, '')} there, or pass" in message
    assert seconds < 1.0
    assert not (tmp_path / "fresh").exists()  # the check writes nothing


def test_the_probe_asks_torchvisions_download_host(tmp_path, connect):
    check_available("cifar100", tmp_path)
    assert connect.addresses == [torchvision_layout("cifar100")["train"].address]


def test_a_reachable_host_means_the_files_can_be_downloaded(tmp_path, connect):
    connect.error = None
    assert check_available("cifar10", tmp_path / "new" / "root") is None  # the folder will be made
    assert connect.addresses == [HOSTS["cifar10"]]


def test_a_hanging_lookup_is_cut_off_at_the_timeout(tmp_path, connect):
    connect.hang = True
    result, seconds = timed("svhn", tmp_path, timeout=0.3)
    assert "ufldl.stanford.edu:80 unreachable: no answer within 0.3 s)" in one_line(result)
    assert 0.25 < seconds < 1.5


def test_the_default_timeout_is_three_seconds(tmp_path, connect):
    connect.hang = True
    result, seconds = timed("cifar10", tmp_path)
    assert "no answer within 3 s" in one_line(result)
    assert 2.9 < seconds < 4.5


def test_a_proxy_is_probed_instead_of_the_host(tmp_path, connect, monkeypatch):
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    message = one_line(check_available("cifar10", tmp_path))
    assert connect.addresses == [("proxy.example", 3128)]
    assert "(proxy for www.cs.toronto.edu proxy.example:3128 unreachable" in message
    monkeypatch.setenv("no_proxy", "cs.toronto.edu")
    connect.addresses.clear()
    check_available("cifar10", tmp_path)
    assert connect.addresses == [HOSTS["cifar10"]]


def test_no_probe_when_downloads_are_off(tmp_path, connect):
    assert "downloads are off" in one_line(check_available("cifar10", tmp_path, download=False))
    assert connect.addresses == []


def test_an_archive_in_the_root_needs_no_download(tmp_path, connect):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")  # presence only: not opened, not hashed
    assert check_available("cifar10", tmp_path) is None
    assert connect.addresses == []
    assert "downloads are off" in one_line(check_available("cifar10", tmp_path, download=False))
    assert check_available("cifar100", tmp_path) is not None  # another dataset's archive


def test_a_root_that_cannot_be_a_folder_cannot_receive_a_download(tmp_path, connect):
    (tmp_path / "file").write_text("")
    message = one_line(check_available("cifar10", tmp_path / "file" / "data"))
    assert f"cannot be downloaded there ({tmp_path / 'file'} is not a folder)" in message
    assert connect.addresses == []


def test_svhn_without_scipy_is_reported(monkeypatch, tmp_path):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "scipy" else find_spec(name, *a))
    write_torchvision_files("svhn", tmp_path)
    assert "needs scipy" in one_line(check_available("svhn", tmp_path))


# -------------------------------------------------------------------------- in a fresh interpreter


_FRESH = """
import json, socket, sys, time
socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(OSError(101, "Network is unreachable"))
from lhdbench.data import check_available
root, empty = sys.argv[1], sys.argv[2]
times = {}
for name in ("cifar10", "cifar100", "svhn"):
    start = time.perf_counter()
    ok = check_available(name, root)
    times[name] = [time.perf_counter() - start, ok]
start = time.perf_counter()
missing = check_available("cifar10", empty)
print(json.dumps({"times": times, "missing": [time.perf_counter() - start, missing],
                  "torchvision": "torchvision" in sys.modules}))
"""


@pytest.mark.slow  # the interpreter and torch take a few seconds to start; the check itself milliseconds
def test_in_a_fresh_process_the_check_is_fast_and_does_not_import_torchvision(tmp_path):
    import json

    for name in NAMES:
        write_torchvision_files(name, tmp_path / "data")
    out = subprocess.run([sys.executable, "-c", _FRESH, str(tmp_path / "data"), str(tmp_path / "empty")],
                         capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout)
    assert not result["torchvision"]
    for name, (seconds, message) in result["times"].items():
        assert message is None, name
        assert seconds < 0.5, (name, seconds)  # the first call parses torchvision's source: ~10 ms
    seconds, message = result["missing"]
    assert "www.cs.toronto.edu:443 unreachable" in message and seconds < 0.5
