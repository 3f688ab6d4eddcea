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
import sys
from collections.abc import Sequence
from pathlib import Path

DRAW_FORMATS = ("png", "pdf", "svg")


def parse_draw_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """`png,pdf,svg` or a subset, in that order; ValueError (a usage error) for anything else."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    items = [t for t in items if t]
    unknown = sorted(set(items) - set(DRAW_FORMATS))
    if unknown or not items:
        raise ValueError(f"unknown format(s) {', '.join(unknown) or '(none given)'} "
                         f"(known: {', '.join(DRAW_FORMATS)})")
    return tuple(f for f in DRAW_FORMATS if f in items)


def drawing_names(paths: Sequence[str]) -> list[tuple[Path, str]]:
    """(file, name) per architecture file named by `paths`, as `lhdbench arch show` finds them: a file
    is named by its stem, a file found under a directory by its path below it (`cifar10-darts-x` for
    DIR/cifar10/darts/x.pl). Two inputs with the same name are a usage error, before anything is drawn."""
    from ..cli import UsageError, arch_files

    found: list[tuple[Path, str]] = []
    for raw in paths:
        root = Path(raw)
        for path in arch_files([raw]):
            name = "-".join(path.relative_to(root).with_suffix("").parts) if root.is_dir() else path.stem
            found.append((path, name))
    seen: dict[str, Path] = {}
    for path, name in found:
        if name in seen and seen[name] != path:
            raise UsageError(f"{seen[name]} and {path} would both be drawn as {name}-*; "
                             "draw them into different --out folders")
        seen[name] = path
    unique = {}
    for path, name in found:  # a file named twice (a file and its folder) is drawn once
        unique.setdefault(name, path)
    return [(path, name) for name, path in unique.items()]


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
            title = (f"{path.name}\npolicy {policy.name}; {args.dataset}: {shape.layers} cells, width "
                     f"{shape.channels}, {shape.params / 1e6:.2f}M parameters (without the auxiliary head)")
            for written in plots.save(cells.draw_genotype(genotype, title), out / f"{name}-{policy.name}",
                                      formats):
                print(written)
    return 1 if failures else 0
