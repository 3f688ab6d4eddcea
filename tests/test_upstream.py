"""lhdbench.space.upstream: safe import of the upstream `.pl` pickles (chaoji90/LHD `results/`).

Valid and invalid pickles are built here with `pickle.dumps`, so only the tests over the real files
need ../shared/lhd-reference-archs.
"""

from __future__ import annotations

import builtins
import collections
import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    DARTS_BILEVEL_FILE,
    NUM_REFERENCE_FILES,
    random_arch_weights,
    reference_files,
    require_reference_archs,
)

from lhdbench.space.arch_weights import ArchFileError, ArchWeights
from lhdbench.space.upstream import MAX_BYTES, load_any, load_upstream_pl


@pytest.fixture
def weights(rng) -> ArchWeights:
    return random_arch_weights(rng)


def write_pickle(path: Path, value, protocol: int = 3) -> Path:
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    return path


def assert_refused(path: Path) -> ArchFileError:
    with pytest.raises(ArchFileError) as info:
        load_upstream_pl(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message
    return info.value


# --- the reference files ------------------------------------------------------------------------------

def test_all_reference_files_load(archs_dir):
    root = archs_dir
    files = reference_files()
    assert len(files) == NUM_REFERENCE_FILES
    for path in files:
        weights = load_upstream_pl(path)
        assert [m.shape for m in weights.matrices()] == [(20, 7), (20, 7), (2, 5), (2, 5)]
        assert all(m.dtype == np.float32 for m in weights.matrices())
        assert weights.metadata["imported_from"] == str(path)
        # The loaded values are exactly the pickled ones (plain pickle is fine on these trusted files).
        with open(path, "rb") as handle:
            raw = pickle.load(handle)  # noqa: S301 - the reference files are trusted
        assert all(np.array_equal(a, b) for a, b in zip(weights.matrices(), raw, strict=True))
    assert root in files[0].parents


def test_real_file_dispatch_and_truncation(tmp_path):
    path = require_reference_archs() / DARTS_BILEVEL_FILE
    assert np.array_equal(load_any(path).normal, load_upstream_pl(path).normal)
    data = path.read_bytes()
    half = tmp_path / "half.pl"
    half.write_bytes(data[: len(data) // 2])
    assert_refused(half)


def test_absent_reference_folder_skips_with_clear_message(tmp_path, monkeypatch):
    import conftest

    monkeypatch.setattr(conftest, "reference_archs_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(pytest.skip.Exception) as info:
        conftest.require_reference_archs()
    assert "lhd-reference-archs not found" in str(info.value)
    assert conftest.reference_files() == []


def test_reference_folder_is_beside_the_checkout():
    import conftest

    tests_dir = Path(conftest.__file__).resolve().parent
    assert conftest.reference_archs_dir() == tests_dir.parent.parent / "shared" / "lhd-reference-archs"


# --- valid self-made pickles --------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [3, 4])
def test_self_made_pickle_round_trip(tmp_path, weights, protocol):
    path = write_pickle(tmp_path / "ok.pl", weights.matrices(), protocol)
    loaded = load_upstream_pl(path)
    assert all(np.array_equal(a, b) for a, b in zip(weights.matrices(), loaded.matrices(), strict=True))
    assert loaded.metadata == {"imported_from": str(path)}


def test_protocol5_pickle_loads(tmp_path, weights):
    path = write_pickle(tmp_path / "p5.pl", weights.matrices(), protocol=5)
    loaded = load_upstream_pl(path)
    assert all(np.array_equal(a, b) for a, b in zip(weights.matrices(), loaded.matrices(), strict=True))


# --- malicious pickles --------------------------------------------------------------------------------

class SystemPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class ExecPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


class SubprocessPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


def make_payload(kind: str, marker: Path, weights: ArchWeights):
    if kind == "system":
        return SystemPayload(marker)
    if kind == "exec":
        return ExecPayload(marker)
    if kind == "subprocess":
        return SubprocessPayload(marker)
    if kind == "after_arrays":  # four valid arrays first, the payload as a fifth element
        return [*weights.matrices(), SystemPayload(marker)]
    if kind == "inside_list":  # the payload replaces one of the arrays
        return [weights.normal, ExecPayload(marker), weights.normal_output, weights.reduce_output]
    raise AssertionError(kind)


def plain_unpickle_in_child(path: Path, cwd: Path) -> None:
    """Unpickle `path` with plain pickle in a separate Python process (proves the payload is live)."""
    code = "import pickle, sys; pickle.loads(open(sys.argv[1], 'rb').read())"
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=cwd, check=False,
                   capture_output=True, timeout=60)


@pytest.mark.parametrize("kind", ["system", "exec", "subprocess", "after_arrays", "inside_list"])
def test_malicious_pickle_is_refused_without_running(tmp_path, weights, kind):
    marker = tmp_path / "MARKER"
    path = write_pickle(tmp_path / "evil.pl", make_payload(kind, marker, weights))
    # The payload is real: plain pickle runs it.
    plain_unpickle_in_child(path, tmp_path)
    assert marker.exists(), "payload did not fire under plain pickle; the test would prove nothing"
    marker.unlink()
    # The loader refuses it and nothing runs.
    error = assert_refused(path)
    assert "refused" in str(error)
    assert not marker.exists()
    # load_any takes the same path.
    with pytest.raises(ArchFileError):
        load_any(path)
    assert not marker.exists()


# --- other refused content ---------------------------------------------------------------------------

def four(weights: ArchWeights, index: int, value) -> list:
    arrays = weights.matrices()
    arrays[index] = value
    return arrays


def refused_cases(weights: ArchWeights) -> dict:
    ordered = collections.OrderedDict((str(i), m) for i, m in enumerate(weights.matrices()))
    return {
        "ordered_dict": ordered,
        "list_with_ordered_dict": four(weights, 0, collections.OrderedDict(a=1)),
        "object_array": four(weights, 0, weights.normal.astype(object)),
        "int_array": four(weights, 2, np.zeros((2, 5), dtype=np.int64)),
        "bool_array": four(weights, 2, np.zeros((2, 5), dtype=bool)),
        "numpy_scalar": four(weights, 0, np.float32(0.5)),
        "python_lists": [m.tolist() for m in weights.matrices()],
        "dict": {name: m for name, m in zip("abcd", weights.matrices(), strict=True)},
        "tuple": tuple(weights.matrices()),
        "three_arrays": weights.matrices()[:3],
        "five_arrays": [*weights.matrices(), weights.normal],
        "shape_20x6": four(weights, 0, weights.normal[:, :6].copy()),
        "shape_transposed": four(weights, 3, weights.reduce_output.T.copy()),
        "nan": four(weights, 1, np.full((20, 7), np.nan, dtype=np.float32)),
        "nan_gate": four(weights, 2, np.where(np.eye(2, 5, dtype=bool), np.nan,
                                             weights.normal_output).astype(np.float32)),
        "unnormalized": four(weights, 0, 2 * weights.normal),
        "none": None,
        "string": "hello",
    }


CASE_NAMES = list(refused_cases(random_arch_weights(np.random.default_rng(0))))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_invalid_content_is_refused(tmp_path, weights, case):
    path = write_pickle(tmp_path / f"{case}.pl", refused_cases(weights)[case])
    assert_refused(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pl"
    path.write_bytes(b"")
    assert_refused(path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_self_made_pickle(tmp_path, weights, fraction):
    data = pickle.dumps(weights.matrices(), protocol=3)
    path = tmp_path / "cut.pl"
    path.write_bytes(data[: int(len(data) * fraction)])
    assert_refused(path)


def test_garbage_bytes(tmp_path):
    path = tmp_path / "noise.pl"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    assert_refused(path)


def test_oversized_file_is_refused_before_parsing(tmp_path, weights):
    # A valid pickle followed by padding: it would load if the size were not checked.
    data = pickle.dumps(weights.matrices(), protocol=3)
    small = tmp_path / "small.pl"
    small.write_bytes(data + b"\0" * 100)
    load_upstream_pl(small)  # control: trailing bytes alone are not the reason
    big = tmp_path / "big.pl"
    big.write_bytes(data + b"\0" * (MAX_BYTES + 1 - len(data)))
    assert big.stat().st_size > 1 << 20
    error = assert_refused(big)
    assert "large" in str(error)


def test_missing_file(tmp_path):
    assert_refused(tmp_path / "absent.pl")


def test_directory_instead_of_file(tmp_path):
    folder = tmp_path / "folder.pl"
    folder.mkdir()
    assert_refused(folder)


# --- load_any ------------------------------------------------------------------------------------------

def test_load_any_dispatches_on_suffix(tmp_path, weights):
    npz = weights.save(tmp_path / "w.npz")
    pl = write_pickle(tmp_path / "w.pl", weights.matrices())
    from_npz, from_pl = load_any(npz), load_any(pl)
    for loaded in (from_npz, from_pl):
        assert all(np.array_equal(a, b) for a, b in zip(weights.matrices(), loaded.matrices(), strict=True))
    assert "imported_from" in from_pl.metadata and "imported_from" not in from_npz.metadata
    # The suffix decides the reader: a pickle named .npz goes to the npz reader and is refused.
    disguised = tmp_path / "pickle.npz"
    disguised.write_bytes(pl.read_bytes())
    with pytest.raises(ArchFileError):
        load_any(disguised)
    npz_as_pl = tmp_path / "archive.pl"
    npz_as_pl.write_bytes(npz.read_bytes())
    with pytest.raises(ArchFileError):
        load_any(npz_as_pl)


@pytest.mark.parametrize("name", ["w.pkl", "w.pickle", "w", "w.json", "w.PL", "w.npy", "w.pl.bak"])
def test_load_any_rejects_unknown_suffix(tmp_path, weights, name):
    path = write_pickle(tmp_path / name, weights.matrices())
    with pytest.raises(ArchFileError) as info:
        load_any(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert ".pl" in message and ".npz" in message
