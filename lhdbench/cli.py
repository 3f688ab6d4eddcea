"""The `lhdbench` command."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .data.specs import DATASETS
from .errors import UsageError
from .names import did_you_mean
from .space.genotype import CellGenotype
from .space.policies import POLICIES, get_policy
from .space.upstream import arch_files

# Only light modules above: `--help`, `--version` and usage errors answer without importing torch or
# Ray; each command imports what it needs.


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _input_name(index: int) -> str:
    return {0: "sum_in", 1: "concat_in"}.get(index, f"node{index - 2}")


def describe_cell(name: str, cell: CellGenotype) -> list[str]:
    lines = [f"  {name}: {len(cell.edges)} edges, sum {list(cell.sum)}, concat {list(cell.concat)}"]
    for node in sorted(cell.live_nodes()):
        ops = ", ".join(f"{e.op}({_input_name(e.input)})" for e in cell.edges if e.node == node)
        lines.append(f"    node{node} <- {ops}")
    return lines


def arch_show(args: argparse.Namespace) -> int:
    from .data.specs import get_dataset
    from .space import ArchFileError, discretize, load_any, network_shape

    policy = get_policy(args.policy)
    num_classes = get_dataset(args.dataset).num_classes
    failures = 0
    for path in arch_files(args.paths):
        try:
            genotype = discretize(load_any(path), policy)
        except ArchFileError as error:
            print(f"lhdbench: {error}", file=sys.stderr)
            failures += 1
            continue
        shape = network_shape(genotype, policy, num_classes)
        if args.json:
            print(json.dumps({"file": str(path), "policy": policy.name, "dataset": args.dataset,
                              **genotype.to_dict(), "layers": shape.layers,
                              "init_channels": shape.channels, "params": shape.params}))
        else:
            print(f"{path}  [policy {policy.name}, dataset {args.dataset}]")
            print("\n".join(describe_cell("normal", genotype.normal)
                            + describe_cell("reduce", genotype.reduce)))
            print(f"  network: {shape.layers} cells, width {shape.channels}, "
                  f"{shape.params:,} parameters (without the auxiliary head)\n")
    return 1 if failures else 0


def baselines_list(args: argparse.Namespace) -> int:
    from .methods import add_plugin_files, get_method, method_names, method_source, plugin_failures

    add_plugin_files(args.plugin or [])
    rows = []
    for name in method_names():
        cls = get_method(name)
        rows.append({"name": name, "description": cls.description, "paper": cls.paper,
                     "source": method_source(name), "defaults": dict(cls.defaults),
                     "bilevel": cls.bilevel, "trains": cls.trains})
    failures = plugin_failures()
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
    else:
        width = max(len(r["name"]) for r in rows)
        for row in rows:
            print(f"{row['name']:<{width}}  {row['description']}")
            print(f"{'':<{width}}  paper: {row['paper'] or '-'}; source: {row['source']}")
    for failure in failures:
        print(f"lhdbench: plugin {failure.name} failed to load: {failure.error}", file=sys.stderr)
    return 0


def _protocol(args: argparse.Namespace):
    from .methods import check_protocol_methods
    from .protocol import load_protocol

    protocol = load_protocol(args.preset)
    check_protocol_methods(protocol)
    return protocol


def search_command(args: argparse.Namespace) -> int:
    from .methods import add_plugin_files
    from .search import ARCH_FILE, run_search

    add_plugin_files(args.plugin or [])

    record = run_search(args.baseline, args.dataset, args.seed, _protocol(args), args.out,
                        device=args.device, data_root=args.data_root)
    print(f"search done: {Path(args.out) / ARCH_FILE} ({record.wall_time_s:.1f} s); "
          f"record in {Path(args.out) / 'record.json'}")
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from .evaluate import run_evaluation
    from .space import load_any

    weights = load_any(args.arch)
    record = run_evaluation(weights, get_policy(args.policy), args.dataset, args.seed, _protocol(args),
                            args.out, device=args.device, data_root=args.data_root,
                            arch_file=str(Path(args.arch).resolve()))
    best = record.best_test_acc
    print(f"evaluation done: final test accuracy {record.final_test_acc:.4f}"
          + (f", best after epoch {record.best_after_epoch} {best:.4f}" if best is not None else "")
          + f", {record.params:,} parameters ({record.wall_time_s:.1f} s); "
          f"record in {Path(args.out) / 'record.json'}")
    return 0


_SEED_ITEM = re.compile(r"(\d+)(?:-(\d+))?")


def seed_list(text: str) -> list[int]:
    """Seeds as `0,1,2`, a range `0-4`, or both (`0-2,7`); each in 0..2^32-1, none twice."""
    from .record import MAX_SEED

    expected = f"--seeds {text!r}: expected seeds from 0 to {MAX_SEED} like 0,1,2 or a range like 0-4"
    parts = [part.strip() for part in text.split(",")]
    if not parts or any(not part for part in parts):
        raise argparse.ArgumentTypeError(expected)
    seeds: list[int] = []
    for part in parts:
        match = _SEED_ITEM.fullmatch(part)
        if match is None:
            raise argparse.ArgumentTypeError(expected)
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise argparse.ArgumentTypeError(f"--seeds {text!r}: the range {part} runs backwards")
        if high > MAX_SEED:
            raise argparse.ArgumentTypeError(expected)
        if high - low > 10_000:
            raise argparse.ArgumentTypeError(f"--seeds {text!r}: the range {part} is implausibly long")
        seeds.extend(range(low, high + 1))
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: a seed is listed twice")
    return seeds


def seed_value(text: str) -> int:
    from .record import MAX_SEED

    if not re.fullmatch(r"\d+", text.strip()) or int(text) > MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {MAX_SEED}, got {text!r}")
    return int(text)


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _share(text: str) -> float:
    value = _positive_number(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a share of one GPU in (0, 1], got {text!r}")
    return value


def _known(noun: str, known) -> Callable[[str], str]:
    """An argument type for a name from `known`: an unknown one is refused with the closest known name
    (argparse's own `choices` message suggests nothing)."""
    def check(text: str) -> str:
        if text not in known:
            raise argparse.ArgumentTypeError(f"unknown {noun} {text!r} (known: {', '.join(known)})"
                                             f"{did_you_mean(text, known)}")
        return text

    return check


def _count(text: str) -> int:
    if not re.fullmatch(r"\d+", text.strip()):
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def _positive_count(text: str) -> int:
    if not re.fullmatch(r"\d+", text.strip()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def benchmark_command(args: argparse.Namespace) -> int:
    from .runner import run_plan
    from .runner.request import benchmark_request

    request = benchmark_request(args)
    suite, plan, storage, options = request.suite, request.plan, request.storage, request.options
    if args.dry_run:
        return _dry_run(plan, storage, args, options)
    if args.gpus is not None:
        raise UsageError("--gpus N sizes the wall time of --dry-run only; a run uses the GPUs Ray finds "
                         "(or --gpus-per-trial)")
    _preflight(plan, options, args)

    def announce() -> None:
        print(f"lhdbench: suite {suite.name}, protocol {plan.protocol.name}: {len(plan.searches)} searches, "
              f"{len(plan.of_phase('select'))} selections and {len(plan.of_phase('evaluate'))} evaluations; "
              f"store {storage.resolve()}", file=sys.stderr)

    try:
        dispatch = run_plan(plan, storage, options, announce=announce)
    except KeyboardInterrupt:
        print(f"lhdbench: stopped; finished trials are stored. Rerun the same command to resume "
              f"(`lhdbench status --storage {storage}` shows where it stands).", file=sys.stderr)
        return 130
    if dispatch.stopping:
        from .runner import STOPPED_EXIT

        print(f"lhdbench: stopped on {dispatch.stop.signal_name}: this run finished "
              f"{dispatch.counts['done']} trial(s), {dispatch.to_run} of {len(plan.trials)} are left "
              f"({dispatch.stopped} stopped at a checkpoint, to resume from it); rerun the same command "
              "to go on.", file=sys.stderr)
        return STOPPED_EXIT
    failed = dispatch.counts["failed"]
    if failed:
        print(f"lhdbench: {failed} trial(s) failed; `lhdbench status --storage {storage}` lists the "
              "reasons. Rerunning the same command retries them.", file=sys.stderr)
        return 1
    return 0


def _dry_run(plan, storage: Path, args: argparse.Namespace, options) -> int:
    from .estimate import dry_run, measurements, scale_of
    from .runner import check_run
    from .runner.stale import describe as describe_stale
    from .runner.stale import find_stale
    from .store import Store

    store = Store(storage)
    check_run(store, options)  # what the run would refuse, the dry run refuses too
    if _checks_data_here(options, args):
        from .preflight import missing_datasets

        for problem in missing_datasets(plan, options.data_root):
            print(f"lhdbench: warning: {problem}", file=sys.stderr)
    records = store.records() if store.root.is_dir() else {}
    done = {t for t, r in records.items() if r.status == "done"}
    failed = {t for t, r in records.items() if r.status == "failed"}
    # The GPUs given, else those here; a GPU-scale protocol on a machine without one is still shown
    # on one measured GPU, since that is where it would run.
    note = None
    if args.gpus is not None:
        count, kind = args.gpus, "gpu"
    else:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        kind = "gpu" if count else "cpu"
        measured = measurements().get(scale_of(plan.protocol.name), {})
        if not count and "gpu" in measured and "cpu" not in measured:
            count, kind, note = 1, "gpu", "no GPU here; --gpus N estimates the wall time on N GPUs"
    lines = dry_run(plan, done, failed, max(count, 1), kind)
    print("\n".join(lines + ([note] if note else []) + _settings_lines(plan)
                    + [f"note: {line}" for line in describe_stale(find_stale(plan, records),
                                                                   adopting=args.adopt_old_code)]))
    return 0


def _settings_lines(plan) -> list[str]:
    """Each method's effective search settings that differ from the protocol's, and why."""
    from .methods import get_method
    from .methods.settings import differing_settings

    lines = []
    for name in plan.suite.baselines:
        differing = differing_settings(get_method(name), plan.protocol)
        if differing:
            lines.append(f"  {name}: {'; '.join(differing)}")
    if not lines:
        return [f"search settings: every method runs protocol {plan.protocol.name}'s"]
    return [f"search settings that differ from protocol {plan.protocol.name}'s:"] + lines


def _preflight(plan, options, args: argparse.Namespace) -> None:
    """Checks that only this machine can make, so only for runs on it (not for a cluster's nodes)."""
    from .preflight import check_datasets, check_fits_datasets, check_fits_device

    check_fits_datasets(plan)  # wherever the trials run
    if not _checks_data_here(options, args):
        return
    check_datasets(plan, options.data_root)
    if not args.allow_cpu and options.device != "cpu":
        import torch

        check_fits_device(plan, torch.cuda.is_available())


def _checks_data_here(options, args: argparse.Namespace) -> bool:
    """Whether the trials run on this machine (not on a cluster's nodes), so that its data root and
    device are theirs."""
    return options.executor == "serial" or not (args.address or os.environ.get("RAY_ADDRESS"))


def status_command(args: argparse.Namespace) -> int:
    from .status import format_status, store_status

    summary = store_status(args.storage)
    for message in summary["invalid_records"]:
        print(f"lhdbench: warning: {message}; it counts as not done (`benchmark` moves it aside and "
              "runs the trial again)", file=sys.stderr)
    print(json.dumps(summary, indent=2, sort_keys=True) if args.json else format_status(summary))
    return 0


def report_command(args: argparse.Namespace) -> int:
    from .report import ReportError, build_report, write_report
    from .report.build import parse_formats

    try:
        formats = parse_formats(args.formats)
        report = build_report(args.storage, metric=args.metric, protocol=args.protocol,
                              alpha=args.alpha, references=args.reference or (),
                              mix_protocols=args.mix_protocols)
    except ReportError as error:
        raise UsageError(str(error)) from None
    if args.out is None:
        args.out = str(default_report_folder(args.storage))
    # The command as given (not resolved paths), so the header does not depend on where it ran.
    command = " ".join(["lhdbench report", f"--storage {args.storage}"]
                       + [f"--reference {r}" for r in args.reference or []]
                       + [f"--out {args.out}", f"--metric {args.metric}"]
                       + ([f"--protocol {args.protocol}"] if args.protocol else [])
                       + (["--mix-protocols"] if args.mix_protocols else [])
                       + [f"--formats {','.join(formats)}"])
    for note in report.trials.notes:
        if note.startswith("left out, not a valid trial record"):
            print(f"lhdbench: warning: {note}", file=sys.stderr)
    written = write_report(report, args.out, formats, command=command)
    print(f"report: {len(report.baselines)} baselines, {len(report.conditions)} conditions, protocol "
          f"{report.trials.protocol}; {len(written)} file{'' if len(written) == 1 else 's'} under {args.out}",
          file=sys.stderr)
    return 0


def export_command(args: argparse.Namespace) -> int:
    from .results.bundle import BundleError, export_bundle

    try:
        manifest = export_bundle(args.storage, args.out, checkpoints=args.checkpoints)
    except BundleError as error:
        raise UsageError(str(error)) from None
    import hashlib

    digest = hashlib.sha256(Path(args.out).read_bytes()).hexdigest()
    counts = manifest["counts"]
    print(f"bundle {args.out}: {counts['search']} searches, {counts['select']} selections, "
          f"{counts['evaluate']} evaluations ({counts['done']} done, {counts['failed']} failed), "
          f"{len(manifest['members'])} members, {Path(args.out).stat().st_size:,} bytes; sha256 {digest}")
    return 0


def import_command(args: argparse.Namespace) -> int:
    from .results.bundle import BundleError
    from .results.imports import import_bundle

    try:
        bundle, summary = import_bundle(args.bundle, args.storage)
    except BundleError as error:
        raise UsageError(str(error)) from None
    for line in summary.lines(bundle, Path(args.storage)):
        print(f"lhdbench: {line}", file=sys.stderr)
    return 0


def compare_command(args: argparse.Namespace) -> int:
    from .report import ReportError
    from .report.compare import compare_sources, write_comparison

    try:
        comparison = compare_sources(args.a, args.b, metric=args.metric, protocol_a=args.protocol_a,
                                     protocol_b=args.protocol_b, resamples=args.resamples)
    except ReportError as error:
        raise UsageError(str(error)) from None
    # The command as given, so the Markdown does not depend on where it ran.
    command = " ".join(["lhdbench compare", args.a, args.b, f"--out {args.out}", f"--metric {args.metric}"]
                       + [f"--protocol-{side} {name}" for side, name in
                          (("a", args.protocol_a), ("b", args.protocol_b)) if name]
                       + [f"--resamples {args.resamples}"])
    for note in comparison.notes:
        if "not a valid trial record" in note:
            print(f"lhdbench: warning: {note}", file=sys.stderr)
    written = write_comparison(comparison, args.out, command)
    taus = comparison.agreement["tau"].dropna()
    print(f"compare: protocol {comparison.a.protocol} against {comparison.b.protocol}, "
          f"{len(comparison.conditions)} condition(s) in common"
          + (f", mean Kendall tau {taus.mean():.2f}" if len(taus) else "")
          + f"; {len(written)} files under {args.out}", file=sys.stderr)
    return 0


def default_report_folder(storage: str) -> Path:
    """Where `report` writes without --out: beside the store, named after it (runs/demo ->
    runs/demo-report), so that the report is never mixed into the store's own files."""
    path = Path(storage)
    if path.name in ("", ".", ".."):
        path = path.resolve()
    if not path.name:
        raise UsageError(f"--storage {storage}: give --out, the report cannot go beside the root folder")
    return path.with_name(f"{path.name}-report")


def _add_trial_options(parser: argparse.ArgumentParser) -> None:
    from .protocol import preset_names

    parser.add_argument("--dataset", required=True, choices=list(DATASETS),
                        type=_known("dataset", DATASETS))
    parser.add_argument("--seed", type=seed_value, required=True, help="0 to 2^32-1")
    parser.add_argument("--preset", default="paper",
                        help=f"protocol preset ({', '.join(preset_names())}) or a YAML file")
    parser.add_argument("--out", required=True, help="trial folder; a checkpoint there is resumed")
    parser.add_argument("--data-root", default=None,
                        help="dataset folder (default: $LHDBENCH_DATA or ~/.cache/lhdbench/data)")
    parser.add_argument("--device", default=None, help="e.g. cpu or cuda:0 (default: first GPU, else CPU)")


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the command."""

    def error(self, message: str):
        print(f"lhdbench: error: {_one_line(message)} (`{self.prog} --help` lists the options)",
              file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lhdbench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lhdbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    arch = commands.add_parser("arch", help="inspect architecture files")
    arch_commands = arch.add_subparsers(dest="arch_command", required=True)
    show = arch_commands.add_parser(
        "show", help="discretize architecture files under a policy and describe the result")
    show.add_argument("paths", nargs="+", metavar="PATH",
                      help="upstream .pl or lhdbench .npz ArchWeights file, or a directory of them")
    show.add_argument("--policy", choices=list(POLICIES), type=_known("policy", POLICIES), default="base")
    show.add_argument("--dataset", choices=list(DATASETS), type=_known("dataset", DATASETS),
                      default="cifar10")
    show.add_argument("--json", action="store_true", help="one JSON object per line per file")
    show.set_defaults(handler=arch_show)

    from .report.arch_draw import DRAW_FORMATS, arch_draw

    draw = arch_commands.add_parser(
        "draw", help="discretize architecture files under a policy and draw their cells")
    draw.add_argument("paths", nargs="+", metavar="PATH",
                      help="upstream .pl or lhdbench .npz ArchWeights file, or a directory of them")
    draw.add_argument("--policy", required=True, choices=list(POLICIES), type=_known("policy", POLICIES))
    draw.add_argument("--dataset", choices=list(DATASETS), type=_known("dataset", DATASETS),
                      default="cifar10",
                      help="the dataset whose network size the title states (default cifar10)")
    draw.add_argument("--out", required=True, help="output folder: OUT/<name>-<policy>.<format> per file")
    draw.add_argument("--formats", default=",".join(DRAW_FORMATS),
                      help=f"comma-separated subset of {','.join(DRAW_FORMATS)} (default: all)")
    draw.set_defaults(handler=arch_draw)

    baselines = commands.add_parser("baselines", help="search methods")
    baselines_commands = baselines.add_subparsers(dest="baselines_command", required=True)
    listing = baselines_commands.add_parser(
        "list", help="every registered method with its description and where it comes from")
    listing.add_argument("--json", action="store_true", help="one JSON object per line per method")
    listing.add_argument("--plugin", action="append", metavar="FILE",
                         help="a Python file that registers a search method (repeatable)")
    listing.set_defaults(handler=baselines_list)

    search = commands.add_parser("search", help="run one architecture search")
    search.add_argument("--baseline", required=True, help="search method (lhdbench baselines list)")
    search.add_argument("--plugin", action="append", metavar="FILE",
                        help="a Python file that registers a search method (repeatable)")
    _add_trial_options(search)
    search.set_defaults(handler=search_command)

    evaluate = commands.add_parser("evaluate", help="train one discretized architecture from scratch")
    evaluate.add_argument("arch", metavar="ARCH", help="ArchWeights .npz or upstream .pl file")
    evaluate.add_argument("--policy", required=True, choices=list(POLICIES),
                          type=_known("policy", POLICIES))
    _add_trial_options(evaluate)
    evaluate.set_defaults(handler=evaluate_command)

    from .suite import suite_names

    bench = commands.add_parser("benchmark", help="run a suite of searches and evaluations (resumable)")
    bench.add_argument("--suite", required=True,
                       help=f"suite ({', '.join(suite_names())}) or a suite YAML file")
    bench.add_argument("--preset", default=None, help="protocol preset or YAML file (default: the suite's)")
    bench.add_argument("--baselines", help="comma-separated methods (default: the suite's)")
    bench.add_argument("--datasets", help="comma-separated datasets (default: the suite's)")
    bench.add_argument("--policies", help="comma-separated policies (default: the suite's)")
    bench.add_argument("--seeds", type=seed_list, help="e.g. 0,1 or 0-4 (default: the suite's)")
    bench.add_argument("--selections", help="comma-separated: magnitude (the policies' rules on the searched "
                       "weights), perturbation (DARTS-PT on the searched supernet) (default: the suite's)")
    bench.add_argument("--storage", help="results store folder (default: runs/SUITE)")
    bench.add_argument("--executor", choices=("ray", "serial"), default="ray",
                       help="ray: trials in parallel on Ray; serial: one after another in this process")
    bench.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local instance)")
    bench.add_argument("--gpus-per-trial", type=_share, default=None,
                       help="GPU share per trial, in (0, 1] (default: from the trial's peak memory)")
    bench.add_argument("--gpu-memory", type=_positive_number, default=None, metavar="GB",
                       help="memory of one cluster GPU, for the shares where the driver sees no GPU "
                       "(an autoscaling cluster without GPU nodes yet): trials then ask for GPUs")
    bench.add_argument("--cpus-per-trial", type=_positive_number, default=1.0,
                       help="CPUs per trial (default 1)")
    bench.add_argument("--retries", type=_count, default=2, help="retries of a failed trial (default 2)")
    bench.add_argument("--plugin", action="append", metavar="FILE",
                       help="a Python file that registers a search method (repeatable)")
    bench.add_argument("--data-root", default=None,
                       help="dataset folder (default: $LHDBENCH_DATA or ~/.cache/lhdbench/data)")
    bench.add_argument("--log-to", metavar="T,...",
                       help="send every trial's per-epoch metrics to tensorboard, mlflow and/or wandb "
                       "(Ray executor; pip install 'lhdbench[tracking]')")
    bench.add_argument("--adopt-old-code", action="store_true",
                       help="keep the stored results of trials whose only difference is the method's "
                       "code (an edit that cannot change results, or a store of lhdbench 0.1) instead of "
                       "running them again; adopted records say adopted_from")
    bench.add_argument("--dry-run", action="store_true",
                       help="print the plan, what the store holds and the estimated cost; write nothing")
    bench.add_argument("--gpus", type=_positive_count, default=None, metavar="N",
                       help="with --dry-run: estimate the wall time on N GPUs (default: the GPUs here)")
    bench.add_argument("--allow-cpu", action="store_true",
                       help="run a GPU-sized protocol (paper, fast) on a machine without a GPU anyway")
    bench.add_argument("--device", default=None,
                       help="serial: e.g. cpu or cuda:0 (default: first GPU, else CPU); ray: cpu only")
    bench.set_defaults(handler=benchmark_command)

    from .slurm.submit import add_slurm_command

    add_slurm_command(commands, bench)  # `lhdbench slurm`: every benchmark option, and the job's own

    status = commands.add_parser("status", help="counts of a store's trials and the failures")
    status.add_argument("--storage", required=True, help="results store folder")
    status.add_argument("--json", action="store_true",
                        help="one JSON object: planned, done, failed, running, pending, failed_trials, "
                        "invalid_records, storage")
    status.set_defaults(handler=status_command)

    export = commands.add_parser("export", help="write a store's results as one bundle file that travels")
    export.add_argument("--storage", required=True, help="results store folder")
    export.add_argument("--out", required=True, help="the bundle file to write (a zip, e.g. NAME.zip)")
    export.add_argument("--checkpoints", action="store_true",
                        help="also the trials' checkpoints (large; needed to select by perturbation on "
                        "imported searches)")
    export.set_defaults(handler=export_command)

    importing = commands.add_parser("import", help="add a bundle's results to a store, after checking it")
    importing.add_argument("bundle", metavar="BUNDLE", help="a bundle file written by lhdbench export")
    importing.add_argument("--storage", required=True, help="results store folder (created if needed)")
    importing.set_defaults(handler=import_command)

    from .report.options import FORMATS, METRICS

    report = commands.add_parser("report", help="leaderboard tables, statistics and plots from a store")
    report.add_argument("--storage", required=True, help="results store folder, or a bundle file")
    report.add_argument("--out", default=None,
                        help="output folder (leaderboard.md, tables/, plots/); default: beside the store, "
                        "STORAGE-report (runs/demo -> runs/demo-report)")
    report.add_argument("--formats", default=",".join(FORMATS),
                        help=f"comma-separated subset of {','.join(FORMATS)} (default: all)")
    report.add_argument("--metric", choices=list(METRICS), default="final",
                        help="final: final-epoch test accuracy (default); best: best test accuracy after "
                        "evaluate.best_after_epoch, the paper's metric")
    report.add_argument("--protocol", default=None,
                        help="protocol name to report on (needed when the store holds several)")
    report.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    report.add_argument("--reference", action="append", metavar="BUNDLE_OR_STORE",
                        help="another store or a bundle whose trials join the tables (repeatable); the "
                        "store's own trials win where both hold one experiment")
    report.add_argument("--mix-protocols", action="store_true",
                        help="report trials of other protocols (or of one protocol name with other "
                        "settings) in the same tables; their cells say 'other protocol'")
    report.set_defaults(handler=report_command)

    compare = commands.add_parser(
        "compare", help="how two stores rank the methods alike, per condition (Kendall's tau, Spearman's "
        "rho, bootstrap intervals over seeds)")
    compare.add_argument("a", metavar="A", help="results store, e.g. of the fast protocol")
    compare.add_argument("b", metavar="B", help="results store, e.g. of the paper protocol")
    compare.add_argument("--out", default="comparison",
                         help="output folder: compare.md, compare.csv, compare_ranks.csv, compare.png "
                         "(default: comparison)")
    compare.add_argument("--metric", choices=list(METRICS), default="final",
                         help="final: final-epoch test accuracy (default); best: the paper's metric")
    compare.add_argument("--protocol-a", default=None, help="protocol of A (needed when it holds several)")
    compare.add_argument("--protocol-b", default=None, help="protocol of B (needed when it holds several)")
    compare.add_argument("--resamples", type=_count, default=1000,
                         help="bootstrap resamples per condition (default 1000)")
    compare.set_defaults(handler=compare_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except Exception as error:
        return _report(error)
    except KeyboardInterrupt:
        print("lhdbench: interrupted", file=sys.stderr)
        return 130


def _loaded(module: str, name: str) -> type:
    """An exception class from a module, if that module has been imported (an error of it can only
    come from code that imported it); a class nothing raises otherwise."""
    return getattr(sys.modules.get(module), name, _Never)


class _Never(Exception):
    pass


def _report(error: Exception) -> int:
    """One line on stderr and the exit status: 2 for bad input, 1 for a failed trial or a storage
    error, 141 for a reader that went away."""
    unavailable = _loaded("lhdbench.data.sources", "DatasetUnavailable")
    trial_failed = _loaded("lhdbench.engine", "TrialFailed")
    if isinstance(error, (UsageError, ValueError, unavailable)):
        print(f"lhdbench: error: {_one_line(error)}", file=sys.stderr)
        return 2
    if isinstance(error, BrokenPipeError):
        # The reader (e.g. `| head`) went away; stop quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    if isinstance(error, OSError):
        # A full disk, a folder without permission: the environment, not the input. Finished trials
        # are intact (every write is atomic); say what and where in one line.
        where = f" ({error.filename})" if error.filename else ""
        print(f"lhdbench: error: {error.strerror or error}{where}", file=sys.stderr)
        return 1
    if isinstance(error, trial_failed):
        print(f"lhdbench: trial failed: {error}", file=sys.stderr)
        return 1
    raise error


if __name__ == "__main__":
    sys.exit(main())
