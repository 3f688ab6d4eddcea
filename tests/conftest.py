"""Shared helpers for the lhdbench test suite.

The 135 upstream architecture files live outside the repository, in ``../shared/lhd-reference-archs``
(beside the checkout). They are never copied into the repository; tests that need them skip when the
folder is absent.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    import lhdbench  # noqa: F401
except ImportError:  # not installed: use the checkout this tests folder belongs to
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lhdbench.space import ArchWeights  # noqa: E402

SKIP_MESSAGE = ("../shared/lhd-reference-archs not found: the upstream architecture files are not "
                "shipped with lhdbench; tests that need them are skipped")
# Three published files whose upstream final-network sizes tests/test_network.py pins down.
DARTS_BILEVEL_FILE = "cifar10/darts_bilevel/20211010-140512-concate-sum-darts-bilevel.pl"
SPDARTS_SVHN_GLOB = "svhn/sp-darts/20211023-222350*.pl"
PCDARTS_C100_GLOB = "cifar100/pcdarts/20211022-033330*.pl"
NUM_REFERENCE_FILES = 135


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running test (deselect with -m 'not slow')")
    # Ray reads these when it is imported, which an earlier test may have done before the runner could
    # set them: keep every in-process Ray instance on loopback and out of ~/.ray.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import torch

    # The tests use tiny tensors, where a second intra-op thread gains nothing, and on a busy 2-core
    # machine spinning OpenMP threads slow small ops down by up to two orders of magnitude.
    torch.set_num_threads(1)


def reference_archs_dir() -> Path:
    """Where the upstream `.pl` files are expected: ``$LHDBENCH_REFERENCE_ARCHS``, else
    ``<checkout>/../shared/lhd-reference-archs``."""
    if os.environ.get("LHDBENCH_REFERENCE_ARCHS"):
        return Path(os.environ["LHDBENCH_REFERENCE_ARCHS"])
    return Path(__file__).resolve().parents[1].parent / "shared" / "lhd-reference-archs"


def require_reference_archs() -> Path:
    """The reference folder, or skip the calling test with a clear message when it is absent."""
    folder = reference_archs_dir()
    if not folder.is_dir():
        pytest.skip(SKIP_MESSAGE)
    return folder


def reference_files() -> list[Path]:
    """All reference `.pl` files, sorted (empty when the folder is absent)."""
    folder = reference_archs_dir()
    return sorted(folder.rglob("*.pl")) if folder.is_dir() else []


def reference_file(pattern: str) -> Path:
    """The single reference file matching `pattern` (relative glob); skips when the folder is absent."""
    matches = sorted(require_reference_archs().glob(pattern))
    assert len(matches) == 1, f"expected one file for {pattern!r}, found {matches}"
    return matches[0]


def dataset_of(path: Path) -> str:
    """cifar10 / cifar100 / svhn, from the file's folder under the reference root."""
    return path.relative_to(reference_archs_dir()).parts[0]


def num_classes_of(path: Path) -> int:
    return 100 if dataset_of(path) == "cifar100" else 10


@pytest.fixture
def archs_dir() -> Path:
    """Fixture form of `require_reference_archs`."""
    return require_reference_archs()


# --- building valid ArchWeights -------------------------------------------------------------------

def arch_weights_from_logits(normal: np.ndarray, reduce: np.ndarray, normal_output: np.ndarray,
                             reduce_output: np.ndarray, metadata: dict | None = None) -> ArchWeights:
    return ArchWeights.from_logits(normal, reduce, normal_output, reduce_output, metadata)


def random_arch_weights(rng: np.random.Generator, scale: float = 1.0,
                        metadata: dict | None = None) -> ArchWeights:
    """A random valid ArchWeights: joint softmax per node block, softmax row 0, sigmoid row 1."""
    return arch_weights_from_logits(scale * rng.standard_normal((20, 7)),
                                    scale * rng.standard_normal((20, 7)),
                                    scale * rng.standard_normal((2, 5)),
                                    scale * rng.standard_normal((2, 5)), metadata)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(scope="module")
def single_thread_torch():
    """Run a module's torch work on one intra-op thread, restoring the setting afterwards.

    The tests use tiny batches, where extra threads gain nothing, and on a busy 2-core machine
    oversubscribed OpenMP threads slow small convolutions down by up to two orders of magnitude."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- search-method helpers shared by the test_baseline_* files ---------------------------------------

ARCH_NAMES = ("alphas_normal", "alphas_reduce", "alphas_normal_output", "alphas_reduce_output")


def smoke_search_moving_every_arch_parameter(name: str, protocol, out: Path, seed: int = 0):
    """Run a smoke search of `name` and check that it ran every epoch and moved every architecture
    parameter from its seeded start. Returns (record, exported ArchWeights, final supernet state)."""
    import torch

    from lhdbench.checkpoint import load_checkpoint
    from lhdbench.methods import get_method, resolve_settings
    from lhdbench.search import ARCH_FILE, run_search
    from lhdbench.space import load_arch_weights

    record = run_search(name, "digits", seed, protocol, out, progress=False)
    assert record.status == "done" and len(record.history) == protocol.search.epochs
    final = load_checkpoint(out / "checkpoint.pt", torch.device("cpu"))["supernet"]
    cls = get_method(name)
    torch.manual_seed(seed)
    start = cls(*resolve_settings(cls, protocol)).build_supernet(10)
    assert all(not torch.equal(final[n], getattr(start, n)) for n in ARCH_NAMES)
    return record, load_arch_weights(out / ARCH_FILE), final


def stop_at_epoch(cls, stop: int):
    """An on_epoch_start for `cls` that interrupts the search when epoch `stop` begins."""
    original = cls.on_epoch_start

    def on_epoch_start(self, epoch):
        if epoch == stop:
            raise KeyboardInterrupt
        return original(self, epoch)

    return on_epoch_start


def assert_resume_equals_whole(name: str, protocol, tmp_path: Path, seed: int, stop: int) -> dict:
    """Interrupt a search of `name` when epoch `stop` begins, resume it, and check that it ends with
    the same architecture weights and losses as an uninterrupted run. Returns the whole run's record."""
    from lhdbench.engine import RECORD_FILE
    from lhdbench.methods import get_method
    from lhdbench.search import ARCH_FILE, run_search
    from lhdbench.space import load_arch_weights

    whole = run_search(name, "digits", seed, protocol, tmp_path / "whole", progress=False)
    cls = get_method(name)
    with pytest.MonkeyPatch.context() as patch:
        # monkeypatch removes the attribute again instead of leaving a copy on `cls`
        patch.setattr(cls, "on_epoch_start", stop_at_epoch(cls, stop))
        with pytest.raises(KeyboardInterrupt):
            run_search(name, "digits", seed, protocol, tmp_path / "stopped", progress=False)
    assert not (tmp_path / "stopped" / RECORD_FILE).exists()
    resumed = run_search(name, "digits", seed, protocol, tmp_path / "stopped", progress=False)
    a = load_arch_weights(tmp_path / "whole" / ARCH_FILE)
    b = load_arch_weights(tmp_path / "stopped" / ARCH_FILE)
    for x, y in zip(a.matrices(), b.matrices(), strict=True):
        np.testing.assert_array_equal(x, y)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    return whole
