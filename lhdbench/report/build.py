"""Build a report from a store and write it out: the one entry point the CLI calls."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..files import atomic_write_bytes
from . import plots, render
from .content import best_architecture_name
from .curves import curve_agreement
from .load import ReportError, file_label, load_trials, short_condition
from .options import FORMATS
from .ranks import condition_ranks, leaderboard
from .stats import ALPHA, discernibility, friedman, kendall, kendall_matrix, transfer
from .summary import Report
from .tables import (
    accuracy_matrix,
    baselines,
    best_architectures,
    condition_cells,
    conditions,
    cost_table,
    evaluations,
    representative_searches,
    result_costs,
)


def build_report(storage: str | os.PathLike, metric: str = "final", protocol: str | None = None,
                 alpha: float = ALPHA, references: Sequence[str | os.PathLike] = (),
                 mix_protocols: bool = False) -> Report:
    """The report of a store (or bundle), with the trials of any reference stores or bundles."""
    if not 0 < alpha < 1:
        raise ReportError(f"alpha must lie in (0, 1), got {alpha}")
    trials = load_trials(storage, metric=metric, protocol=protocol, references=references,
                         mix_protocols=mix_protocols)
    names, condition_names = baselines(trials), conditions(trials)
    cells = condition_cells(trials)
    matrix = accuracy_matrix(cells, names, condition_names)
    ranks = condition_ranks(matrix)
    pairs = kendall(matrix)
    taus = kendall_matrix(pairs, condition_names)
    return Report(trials=trials, baselines=names, conditions=condition_names, cells=cells, matrix=matrix,
                  ranks=ranks, board=leaderboard(ranks), friedman=friedman(matrix, alpha), kendall=pairs,
                  kendall_matrix=taus, transfer=transfer(taus, condition_names),
                  discernibility=discernibility(cells, condition_names), cost=cost_table(trials),
                  best=best_architectures(trials, condition_names), result_costs=result_costs(trials, cells),
                  evolution=representative_searches(trials),
                  curve=curve_agreement(trials, matrix, condition_names))


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    items = [t for t in items if t]
    unknown = sorted(set(items) - set(FORMATS))
    if unknown or not items:
        raise ReportError(f"unknown format(s) {', '.join(unknown) or '(none given)'} "
                          f"(known: {', '.join(FORMATS)})")
    return tuple(f for f in FORMATS if f in items)


def write_plots(report: Report, folder: Path, formats: Sequence[str]) -> dict[str, list[Path]]:
    """Every figure, by name; empty when no plot format is asked for."""
    if not any(f in formats for f in plots.PLOT_FORMATS):
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    evals = evaluations(report.trials)
    with plots.style():
        written["ranks"] = plots.save(
            plots.rank_plot(report.board, report.ranks, report.friedman, report.metric_short),
            folder / "ranks", formats)
        if report.friedman.ok:
            written["cd"] = plots.save(plots.cd_diagram(report.friedman), folder / "cd", formats)
        for dataset, policies in report.datasets.items():
            figure = plots.accuracy_plot(evals, report.cells, report.order, dataset, policies,
                                         report.metric_short)
            name = f"accuracy_{file_label(dataset)}"
            written[name] = plots.save(figure, folder / name, formats)
        if len(report.conditions) >= 2:
            written["kendall"] = plots.save(plots.kendall_heatmap(report.kendall_matrix),
                                            folder / "kendall", formats)
        if len(report.result_costs):
            written["accuracy_cost"] = plots.save(
                plots.cost_plot(report.result_costs, report.order, report.datasets, report.metric_short),
                folder / "accuracy_cost", formats)
        for best in report.best.to_dict("records"):
            figure = best_architecture_figure(report, best)
            if figure is not None:
                name = best_architecture_name(best["condition"])
                written[name] = plots.save(figure, folder / name, formats)
        if report.evolution:  # old stores have no arch history: nothing drawn
            written["arch_evolution"] = plots.save(
                plots.arch_evolution_plot(report.evolution, report.trials.arch_histories, report.order),
                folder / "arch_evolution", formats)
    return written


def best_architecture_figure(report: Report, best: dict):
    """The cells of a condition's best evaluation, or None when its genotype cannot be drawn (a record
    whose genotype is not a valid one; the leaderboard then says so)."""
    from ..space.genotype import GenotypeError
    from . import cells

    genotype = report.trials.genotypes.get(best["trial_id"])
    try:
        genotype = cells.as_genotype(genotype)
    except GenotypeError:
        return None
    title = (f"{short_condition(best['condition'])}: best {report.metric_short} "
             f"{100 * best['value']:.2f}% ({best['baseline']}, seed {best['seed']})")
    return cells.draw_genotype(genotype, title)


def write_report(report: Report, out: str | os.PathLike, formats: Sequence[str] = FORMATS,
                 command: str | None = None) -> list[Path]:
    """Write the chosen formats under `out` (leaderboard.md, tables/, plots/); return the files."""
    formats = parse_formats(formats)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    figures = write_plots(report, out / "plots", formats)
    for paths in figures.values():
        written.extend(paths)
    if "csv" in formats:
        written.extend(render.write_csv(report, out / "tables"))
    if "tex" in formats:
        written.extend(render.write_tex(report, out / "tables"))
    if "md" in formats:
        path = out / "leaderboard.md"
        images = {name: f"plots/{name}.png" for name, paths in figures.items()
                  if any(p.suffix == ".png" for p in paths)}
        atomic_write_bytes(path, render.markdown(report, images, command).encode())
        written.append(path)
    return sorted(written)
