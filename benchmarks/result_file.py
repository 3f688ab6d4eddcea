"""A benchmark's JSON file as benchmarks/gpu.sh needs it: written when the benchmark starts and after
every measurement (atomically, so a step killed at its time limit leaves a whole file holding what it
measured), with a failing measurement recorded under `errors` instead of ending the benchmark.

    from result_file import ResultFile   # with benchmarks/ on sys.path
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lhdbench.files import atomic_write_json


class ResultFile:
    def __init__(self, path: str | Path, **fields: Any) -> None:
        self.path = Path(path)
        self.began = time.monotonic()
        self.data: dict[str, Any] = {"status": "running", **fields, "errors": {}}
        self.save()

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - self.began, 3)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, self.data)

    def measure(self, name: str, run: Callable[[], Any]) -> Any:
        """run(), or None with the error kept under errors[name] (and the file saved either way)."""
        try:
            return run()
        except Exception as error:  # noqa: BLE001 - one failing measurement must not cost the others
            self.failed(name, error)
            return None
        finally:
            self.save()

    def failed(self, name: str, error: BaseException) -> None:
        line = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        tail = traceback.format_exception(error)[-6:]
        self.data["errors"][name] = {"error": line, "traceback": "".join(tail)[-2000:]}
        print(f"{name} FAILED: {line}", file=sys.stderr, flush=True)

    def done(self) -> None:
        self.data["status"] = "done"
        self.save()
