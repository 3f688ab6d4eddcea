"""Import of the upstream LHD `.pl` files: pickled lists of four float32 numpy arrays.

The LHD search scripts write them at their last epoch (e.g. chaoji90/LHD
`search/DARTS/train_search_darts.py`); the published ones are under `results/` there.

Unpickling can run arbitrary code, so the loader resolves only the three globals a pickled float
array needs, each replaced by a checking wrapper; anything else in the file is refused before it can
run, and the result must be exactly four float matrices of the right shapes.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .arch_weights import SUFFIX as NPZ_SUFFIX
from .arch_weights import ArchFileError, ArchWeights, load_arch_weights, validation_error

SUFFIX = ".pl"
ARCH_SUFFIXES = (SUFFIX, NPZ_SUFFIX)  # what `load_any` reads
# Real files are about 2 kB; anything far larger is not an architecture file.
MAX_BYTES = 1 << 20
_FLOAT_DTYPES = {"f2", "f4", "f8", "<f2", "<f4", "<f8"}


def _reconstruct(cls, shape, placeholder):
    # numpy's pickled arrays start from an empty ndarray and fill it with BUILD (ndarray.__setstate__).
    if cls is not np.ndarray or placeholder not in (b"b", "b"):
        raise pickle.UnpicklingError("array reconstruction with unexpected arguments")
    return np.ndarray(shape, dtype=np.uint8)


def _dtype(spec, align=False, copy=True):
    if spec not in _FLOAT_DTYPES:
        raise pickle.UnpicklingError(f"dtype {spec!r} is not a float type")
    return np.dtype(spec)


def _frombuffer(buffer, dtype, shape, order):
    # Protocol-5 pickles (Python 3.14's default) rebuild arrays from a raw buffer.
    if not isinstance(dtype, np.dtype) or dtype.kind != "f" or order not in ("C", "F"):
        raise pickle.UnpicklingError("array buffer with a non-float dtype or unknown order")
    return np.frombuffer(bytes(buffer), dtype=dtype).reshape(shape, order=order).copy()


_ALLOWED = {
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id")


def load_upstream_pl(path: str | os.PathLike) -> ArchWeights:
    """Read an upstream `.pl` file into ArchWeights, running no code from it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ArchFileError(f"{path}: cannot read ({error.strerror or error})") from None
    if not data:
        raise ArchFileError(f"{path}: empty file")
    if len(data) > MAX_BYTES:
        raise ArchFileError(f"{path}: {len(data)} bytes is too large for an architecture file")
    try:
        value = _ArrayOnlyUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as error:
        raise ArchFileError(f"{path}: not a plain list of float arrays ({error})") from None
    except EOFError:
        raise ArchFileError(f"{path}: truncated file") from None
    except Exception as error:
        raise ArchFileError(f"{path}: malformed pickle ({type(error).__name__}: {error})") from None
    if not isinstance(value, list):
        raise ArchFileError(f"{path}: expected a list of 4 arrays, found {type(value).__name__}")
    problem = validation_error(value)
    if problem:
        raise ArchFileError(f"{path}: {problem}")
    return ArchWeights(*value, metadata={"imported_from": str(path)})


def load_any(path: str | os.PathLike) -> ArchWeights:
    """Load an upstream `.pl` or an lhdbench ArchWeights file, chosen by suffix."""
    path = Path(path)
    if path.suffix == SUFFIX:
        return load_upstream_pl(path)
    if path.suffix == NPZ_SUFFIX:
        return load_arch_weights(path)
    raise ArchFileError(f"{path}: unknown architecture file type (expected {SUFFIX} or {NPZ_SUFFIX})")


def arch_files(paths: Sequence[str]) -> list[Path]:
    """The architecture files named by `paths` (as `lhdbench arch show` and `arch draw` take them); a
    directory stands for every one under it."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in ARCH_SUFFIXES and p.is_file())
            if not found:
                raise UsageError(f"{path}: no architecture files ({' or '.join(ARCH_SUFFIXES)}) under it")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    return files
