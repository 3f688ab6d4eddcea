"""`lhdbench arch draw`: architecture files discretized under a policy, their cells drawn (cells.py).

    lhdbench arch draw PATH... --policy P [--dataset D] --out DIR [--formats png,pdf,svg]

Kept free of matplotlib and torch at import time: the command line imports this module to build its
parser. The subcommand, in `build_parser` of lhdbench/cli.py after `arch show`:

    from .report.arch_draw import DRAW_FORMATS, arch_draw

    draw = arch_commands.add_parser(
        "draw", help="discretize architecture files under a policy and draw their cells")
    draw.add_argument("paths", nargs="+", metavar="PATH",
                      help="upstream .pl or lhdbench .npz ArchWeights file, or a directory of them")
    draw.add_argument("--policy", required=True, choices=list(POLICIES))
    draw.add_argument("--dataset", choices=list(DATASETS), default="cifar10",
                      help="the dataset whose network size the title states (default cifar10)")
    draw.add_argument("--out", required=True, help="output folder: OUT/<name>-<policy>.<format> per file")
    draw.add_argument("--formats", default=",".join(DRAW_FORMATS),
                      help=f"comma-separated subset of {','.join(DRAW_FORMATS)} (default: all)")
    draw.set_defaults(handler=arch_draw)
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..space.upstream import arch_files

DRAW_FORMATS = ("png", "pdf", "svg")
# The name every search gives its exported weights (lhdbench/search.py's ARCH_FILE, which imports torch):
# such files are told apart by the method, dataset and seed in their metadata.
SEARCH_FILE = "arch.npz"


def parse_draw_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """`png,pdf,svg` or a subset, in that order; ValueError (a usage error) for anything else."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    items = [t for t in items if t]
    unknown = sorted(set(items) - set(DRAW_FORMATS))
    if unknown or not items:
        raise ValueError(f"unknown format(s) {', '.join(unknown) or '(none given)'} "
                         f"(known: {', '.join(DRAW_FORMATS)})")
    return tuple(f for f in DRAW_FORMATS if f in items)


def search_metadata(path: Path) -> dict[str, Any] | None:
    """The metadata of an lhdbench `.npz` file when it names the method and seed of a search, else None
    (also for a file that cannot be read: drawing it reports why)."""
    if path.suffix != ".npz":
        return None
    from ..space import ArchFileError, load_arch_weights

    try:
        metadata = load_arch_weights(path).metadata
    except ArchFileError:
        return None
    return metadata if "method" in metadata and "seed" in metadata else None


def search_label(metadata: dict[str, Any]) -> str:
    """`darts-cifar10-s0`, filename-safe."""
    parts = [metadata["method"], metadata.get("dataset"), f"s{metadata['seed']}"]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(str(p) for p in parts if p is not None))


def drawing_names(paths: Sequence[str]) -> list[tuple[Path, str]]:
    """(file, name) per architecture file named by `paths`, as `lhdbench arch show` finds them: a file
    is named by its stem, a file found under a directory by its path below it (`cifar10-darts-x` for
    DIR/cifar10/darts/x.pl). A search's `arch.npz` is named by the method, dataset and seed in its
    metadata (`darts-cifar10-s0`), or by its trial folder where two such names coincide (one search run
    by two code versions, or in two stores). Two inputs still named alike are a usage error, before
    anything is drawn."""
    found: list[tuple[Path, str]] = []
    searches: set[Path] = set()
    for raw in paths:
        root = Path(raw)
        for path in arch_files([raw]):
            metadata = search_metadata(path) if path.name == SEARCH_FILE else None
            if metadata is not None:
                name = search_label(metadata)
                searches.add(path)
            else:
                name = "-".join(path.relative_to(root).with_suffix("").parts) if root.is_dir() else path.stem
            found.append((path, name))
    shared = {name for name in {n for _, n in found}
              if len({p.resolve() for p, n in found if n == name}) > 1}
    found = [(path, path.parent.name if name in shared and path in searches else name)
             for path, name in found]
    seen: dict[str, Path] = {}
    for path, name in found:
        if name in seen and seen[name].resolve() != path.resolve():
            raise UsageError(f"{seen[name]} and {path} would both be drawn as {name}-*; "
                             "draw them into different --out folders")
        seen[name] = path
    unique = {}
    for path, name in found:  # a file named twice (a file and its folder) is drawn once
        unique.setdefault(name, path)
    return [(path, name) for name, path in unique.items()]


def drawing_title(path: Path) -> str:
    """What the drawing is of: the search its metadata names (`darts searched on cifar10, seed 0`),
    else the file's name."""
    metadata = search_metadata(path)
    if metadata is None:
        return path.name
    where = f" on {metadata['dataset']}" if metadata.get("dataset") else ""
    named = "" if path.name == SEARCH_FILE else f" ({path.name})"
    return f"{metadata['method']} searched{where}, seed {metadata['seed']}{named}"


def arch_draw(args: argparse.Namespace) -> int:
    """Draw each file's normal and reduction cells under `--policy` into OUT/<name>-<policy>.<format>.
    A file that cannot be read is named on stderr in one line and the others are still drawn (exit 1)."""
    from ..data import get_dataset
    from ..space import ArchFileError, discretize, get_policy, load_any, network_shape
    from . import cells, plots

    formats = parse_draw_formats(args.formats)
    policy = get_policy(args.policy)
    num_classes = get_dataset(args.dataset).num_classes
    inputs = drawing_names(args.paths)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: not a folder")
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    with plots.style():
        for path, name in inputs:
            try:
                genotype = discretize(load_any(path), policy)
            except ArchFileError as error:
                print(f"lhdbench: {error}", file=sys.stderr)
                failures += 1
                continue
            shape = network_shape(genotype, policy, num_classes)
            title = (f"{drawing_title(path)}\npolicy {policy.name}; {args.dataset}: {shape.layers} cells, "
                     f"width {shape.channels}, {shape.params / 1e6:.2f}M parameters (without the auxiliary "
                     "head)")
            for written in plots.save(cells.draw_genotype(genotype, title), out / f"{name}-{policy.name}",
                                      formats):
                print(written)
    return 1 if failures else 0
