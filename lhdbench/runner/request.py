"""What a `benchmark` command line asks for: its suite narrowed by the options, the plan, the store and
the run options. `lhdbench benchmark` and `lhdbench slurm` both make them here, so that a Slurm job's
driver, which runs `benchmark` with the submitted options, cannot refuse what was submitted.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..plan import Plan
from ..suite import Suite
from .options import RunOptions


@dataclass(frozen=True)
class Request:
    suite: Suite  # narrowed by the options
    plan: Plan
    storage: Path
    options: RunOptions


def names(text: str | None) -> list[str] | None:
    """A comma-separated option as a list; None where it was not given (meaning: all)."""
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def benchmark_request(args: argparse.Namespace) -> Request:
    """The plan and options of `benchmark`'s options (plugins registered first, so that their methods
    are known when the suite is read)."""
    from ..methods import add_plugin_files
    from ..plan import load_suite, make_plan

    add_plugin_files(args.plugin or [])
    suite = load_suite(args.suite)
    storage = Path(args.storage or f"runs/{suite.name}")
    check_store_methods(storage, names(args.baselines))
    suite = suite.narrow(
        baselines=names(args.baselines), datasets=names(args.datasets),
        policies=names(args.policies), seeds=args.seeds, preset=args.preset,
        selections=names(args.selections))
    options = RunOptions(executor=args.executor, retries=args.retries, cpus_per_trial=args.cpus_per_trial,
                         gpus_per_trial=args.gpus_per_trial, gpu_memory_gb=args.gpu_memory,
                         address=args.address,
                         data_root=str(Path(args.data_root).resolve()) if args.data_root else None,
                         device=args.device, log_to=tuple(names(args.log_to) or ()),
                         adopt_old_code=args.adopt_old_code)
    return Request(suite, make_plan(suite), storage, options)


def check_store_methods(storage: Path, asked: list[str] | None) -> None:
    """A store's methods that are not registered now (a plugin file not passed again): an error when
    asked for by name, else a line saying they are left out of this run; both name the file."""
    from ..methods import method_names
    from ..store import Store, method_sources

    known = set(method_names())
    sources = method_sources(Store(storage))
    for name in asked or []:
        if name not in known and name in sources:
            raise UsageError(f"unknown baseline {name!r}: the trials of it in {storage} come from "
                             f"{sources[name]}; pass --plugin with that file")
    if asked is None:
        missing = sorted(set(sources) - known)
        if missing:
            print(f"lhdbench: {storage} also holds trials of " + ", ".join(
                f"{name} ({sources[name]})" for name in missing) + ", not loaded now, so not part of this "
                "run; pass --plugin FILE to include them", file=sys.stderr)
