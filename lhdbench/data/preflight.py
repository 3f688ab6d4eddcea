"""The pre-flight check: can a dataset be loaded from this data root, answered before a benchmark starts
(and writes anything), in milliseconds when the files are there and within a few seconds when not.

It looks only at names: that every file torchvision reads is present under the root (layout.py), and
where one is not, whether torchvision could download it (downloads allowed, the root writable, the
download host answering a TCP connection). It reads no file and checks no md5 sum, downloads and
writes nothing, and does not import torchvision; load_images does the rest (torchvision checks the md5
sums when it reads the files, and a file that fails raises DatasetUnavailable there).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from .layout import Split, brace, torchvision_layout
from .sources import ENV_VAR, _short, data_root, is_file
from .specs import get_dataset

PROBE_TIMEOUT = 3.0  # seconds for the whole reachability probe, name lookup included


def check_available(name: str, root: str | os.PathLike[str] | None = None, *, train: bool | None = None,
                    download: bool = True, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None if `load_images(name, ..., root=root, download=download)` can be expected to find its
    files, else why not, as one line that names the dataset, the folder, the files looked for (and which
    are missing), why they cannot be downloaded, and how to provide them.

    * `train`: None checks both splits (a benchmark searches on train and evaluates on test); True or
      False checks that split only.
    * None when: the dataset is `digits` (embedded); or every file torchvision reads for the splits is
      present under `data_root(root)` as a regular file; or, with `download`, the missing ones can be
      had: torchvision's archive for them is already in the root (CIFAR: unpacked on first load,
      without a download), or the root is writable and the download host (or the proxy urllib would
      use) accepts a TCP connection within `timeout`.
    * Presence is by name only: no md5 sums (hashing CIFAR-10 alone takes about half a second), so a
      corrupted file passes here and fails in load_images with a DatasetUnavailable.
    * Raises ValueError for an unknown name; never raises for missing files, unreadable folders or a
      network failure. Downloads, writes and locks nothing.
    * Time: a few stat calls when the files are present; when they are not, at most about `timeout`
      more (one connection attempt, bounded as a whole: a name lookup that hangs does not extend it).
    """
    spec = get_dataset(name)
    if spec.embedded:
        return None
    folder = data_root(root)
    layout = torchvision_layout(spec.name)
    splits = [layout["train"], layout["test"]] if train is None else [layout["train" if train else "test"]]
    if spec.name == "svhn" and importlib.util.find_spec("scipy") is None:
        return "svhn: reading its .mat files needs scipy, which is not installed (pip install scipy)"
    paths = list(dict.fromkeys(path for split in splits for path in split.paths))  # CIFAR's meta: once
    missing = [path for path in paths if not is_file(folder / path)]
    if not missing:
        return None
    # Splits torchvision would have to fetch: an archive already in the root is unpacked instead.
    fetch = [split for split in splits if set(split.paths) & set(missing)
             and not (split.archive and is_file(folder / split.archive))]
    if download and not fetch:
        return None
    reason = "downloads are off" if not download else _cannot_download(folder, fetch, timeout)
    if reason is None:
        return None
    if len(missing) < len(paths):
        which = f"missing {brace(missing)}"
    else:
        which = "none of them is there" if len(paths) > 1 else "not there"
    archives = list(dict.fromkeys(split.archive for split in splits if split.archive))
    alternative = f" (or {', '.join(archives)})" if download and archives else ""
    return (f"{spec.name} is not available: files missing under {folder} "
            f"(looked for {brace(paths)}; {which}) and {reason}. Put the torchvision files{alternative} "
            f"there, or pass --data-root / set {ENV_VAR} to the folder that has them")


def _cannot_download(folder: Path, fetch: list[Split], timeout: float) -> str | None:
    """Why torchvision could not download the files into `folder`, or None if it can be expected to."""
    existing = folder
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        is_folder = existing.is_dir()
    except OSError as error:
        return f"cannot be downloaded there ({_short(error, 120)})"
    if not is_folder:
        return f"cannot be downloaded there ({existing} is not a folder)"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot be downloaded there ({existing} is not writable)"
    routes = list(dict.fromkeys(_route(split.url) for split in fetch))
    failures = _probe([(host, port) for host, port, _ in routes], timeout)
    for (host, port, via), failure in zip(routes, failures, strict=True):
        if failure is not None:
            return f"cannot be downloaded ({via}{host}:{port} unreachable: {failure})"
    return None


def _route(url: str) -> tuple[str, int, str]:
    """(host, port, description) of the first hop a download of `url` takes: the host itself, or the
    proxy urllib (and so torchvision) would use for it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        hop = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return hop.hostname or "", hop.port or (443 if hop.scheme == "https" else 80), f"proxy for {host} "
    return host, parts.port or (443 if parts.scheme == "https" else 80), "download host "


def _probe(addresses: list[tuple[str, int]], timeout: float) -> list[str | None]:
    """For each (host, port): None if it accepts a TCP connection, else why not. All are tried at once,
    each in a daemon thread, and the whole takes at most `timeout` seconds (socket timeouts do not
    cover the name lookup, which can hang for much longer where no DNS server answers)."""
    results: list[str | None] = [f"no answer within {timeout:g} s"] * len(addresses)
    done = [threading.Event() for _ in addresses]

    def attempt(i: int, host: str, port: int) -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            results[i] = None
        except OSError as error:
            results[i] = _short(error, 120)
        done[i].set()

    for i, (host, port) in enumerate(addresses):
        threading.Thread(target=attempt, args=(i, host, port), name="lhdbench-probe", daemon=True).start()
    deadline = time.monotonic() + timeout
    for event in done:
        event.wait(max(0.0, deadline - time.monotonic()))
    return [result if event.is_set() else f"no answer within {timeout:g} s"
            for result, event in zip(results, done, strict=True)]
