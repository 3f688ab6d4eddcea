"""The GPU tests (tests/gpu) as one step of benchmarks/gpu.sh: runs them with pytest and writes each
test's outcome, duration, failure message and recorded figures (pytest's `record_property`: the memory
tests' figures against the measured peaks) into a JSON file, at the start and after every test, so a
run cut short keeps the tests that finished. On a machine without CUDA every test skips.

    python benchmarks/gpu_tests.py --out benchmarks/results/gpu-tests.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from result_file import ResultFile  # noqa: E402


class Collect:
    """A pytest plugin that keeps every test's outcome in the result file."""

    def __init__(self, out: ResultFile) -> None:
        self.out = out
        self.tests: dict = out.data["tests"]

    def pytest_runtest_logreport(self, report) -> None:
        entry = self.tests.setdefault(report.nodeid, {"outcome": "passed", "duration_s": 0.0})
        entry["duration_s"] = round(entry["duration_s"] + report.duration, 3)
        if report.failed:
            entry["outcome"] = "failed" if report.when == "call" else f"error in {report.when}"
            entry["message"] = str(report.longrepr).strip().splitlines()[-1][:500] if report.longrepr else ""
        elif report.skipped:
            entry["outcome"] = "skipped"
            entry["message"] = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
        for key, value in report.user_properties:
            try:
                entry.setdefault("figures", {})[key] = json.loads(value)
            except (TypeError, ValueError):
                entry.setdefault("figures", {})[key] = value
        if report.when == "teardown":
            self.out.save()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rehearse", action="store_true", help="(the tests skip without CUDA anyway)")
    args = parser.parse_args()
    import pytest

    out = ResultFile(args.out, rehearsal=args.rehearse, tests={})
    code = pytest.main(["-q", "-s", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
                        str(ROOT / "tests" / "gpu")], plugins=[Collect(out)])
    outcomes = [t["outcome"] for t in out.data["tests"].values()]
    failed = [k for k, t in out.data["tests"].items() if t["outcome"] not in ("passed", "skipped")]
    out.data.update(exit_code=int(code), passed=outcomes.count("passed"), skipped=outcomes.count("skipped"),
                    failed=failed)
    out.done()
    print(json.dumps({k: out.data[k] for k in ("exit_code", "passed", "skipped", "failed")}))
    sys.exit(0 if code in (0, 5) else 1)


if __name__ == "__main__":
    main()
