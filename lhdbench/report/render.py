"""Text outputs: Markdown, CSV and LaTeX. Every number goes through a fixed format, every list is sorted
or in leaderboard/condition order, and nothing time- or host-dependent is written, so the same records
always give byte-identical files."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..files import atomic_write_bytes
from .load import DATASET_SHORT, condition_name, dataset_order, file_label, short_condition
from .tables import COMPARE_DECIMALS

if TYPE_CHECKING:
    from .build import Report

NONE = "\u2013"  # shown where a baseline has no cell at all (not part of the suite)
FLOAT_FORMAT = "%.10g"


# -- numbers -----------------------------------------------------------------------------------------

def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def rank_text(value: float) -> str:
    return NONE if math.isnan(value) else f"{value:.2f}".rstrip("0").rstrip(".")


def hours_text(value: float) -> str:
    """Three significant figures without an exponent: smoke runs take seconds, paper runs days."""
    if value == 0 or math.isnan(value):
        return "0"
    if value < 0.001:
        return "<0.001"
    decimals = max(0, 2 - math.floor(math.log10(value)))
    return f"{value:.{decimals}f}"


def params_text(value: float) -> str:
    return NONE if math.isnan(value) else f"{value / 1e6:.2f}"


def p_text(value: float) -> str:
    if math.isnan(value):
        return NONE
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


# -- tables ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    value: str
    note: str = ""
    bold: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    caption: str
    header: list[str]
    rows: list[list[Cell]]
    align: str = ""  # one of l/r per column; default: first left, the rest right

    @property
    def alignment(self) -> str:
        return self.align or "l" + "r" * (len(self.header) - 1)


def accuracy_cell(row: dict | None) -> Cell:
    if row is None:
        return Cell(NONE)
    of = row["trials"]
    problems = [f"{label} {row[key]}/{of}" for key, label in
                (("failed", "failed"), ("missing", "missing"), ("no_value", "no value")) if row[key]]
    if row["done"] == 0:
        if row["missing"] == of:
            return Cell("missing")
        return Cell(", ".join(problems))
    value = pct(row["mean"]) + ("" if math.isnan(row["std"]) else f" \u00b1 {pct(row['std'])}")
    note = f"(n={row['done']}" + (f"; {', '.join(problems)})" if problems else ")")
    return Cell(value, note, bool(row["best"]))


def _cell_lookup(report: Report) -> dict[tuple[str, str], dict]:
    return {(r["baseline"], r["condition"]): r for r in report.cells.to_dict("records")}


def accuracy_tables(report: Report) -> list[Table]:
    lookup = _cell_lookup(report)
    tables = []
    for dataset, policies in report.datasets.items():
        columns = [condition_name(dataset, p) for p in policies]
        rows = [[Cell(b)] + [accuracy_cell(lookup.get((b, c))) for c in columns] for b in report.order]
        no_value = report.cells.loc[report.cells["dataset"] == dataset, "no_value"].sum() > 0
        tables.append(Table(
            f"accuracy_{file_label(dataset)}",
            f"{dataset}, protocol {report.trials.protocol}: {report.metric_label} (%), mean \u00b1 sample "
            "std over the done seeds; n = seeds with a result. Bold: best mean in the column. "
            "'failed k/m' and 'missing k/m' count the cell's trials that failed or have not run: they are "
            "not in the mean" + ("; 'no value k/m': done, but without this metric in the record"
                                 if no_value else "") + f". {NONE}: not part of the suite. Rows in "
            "leaderboard order.",
            ["baseline"] + policies, rows))
    return tables


def leaderboard_table(report: Report) -> Table:
    rows = []
    for baseline in report.order:
        entry = report.board.loc[baseline]
        rows.append([Cell(str(int(entry["position"]))), Cell(baseline),
                     Cell(NONE if math.isnan(entry["average_rank"]) else f"{entry['average_rank']:.2f}"),
                     Cell(f"{int(entry['ranked'])}/{int(entry['conditions'])}")]
                    + [Cell(rank_text(report.ranks.loc[baseline, c])) for c in report.conditions])
    return Table(
        "leaderboard",
        f"Leaderboard, protocol {report.trials.protocol}: rank in each condition by mean "
        f"{report.metric_label} (1 = best; ties share the average of their ranks) and the average rank "
        "over the conditions where the baseline has a result ('ranked' counts them; a baseline ranked "
        "in fewer conditions is compared on fewer).",
        ["#", "baseline", "avg rank", "ranked"] + [short_condition(c) for c in report.conditions], rows,
        "rl" + "r" * (2 + len(report.conditions)))


def params_table(report: Report) -> Table:
    lookup = _cell_lookup(report)
    rows = [[Cell(b)] + [Cell(params_text(lookup[(b, c)]["params"]) if (b, c) in lookup else NONE)
                         for c in report.conditions] for b in report.order]
    return Table("params", f"Parameters of the evaluated networks (millions), mean over the done seeds; "
                 f"protocol {report.trials.protocol}.",
                 ["baseline"] + [short_condition(c) for c in report.conditions], rows)


def _cost_cell(gpu: float, cpu: float, both: bool) -> Cell:
    if not both:
        return Cell(hours_text(gpu + cpu))
    parts = [f"{hours_text(v)} {u}-h" for v, u in ((gpu, "GPU"), (cpu, "CPU")) if v]
    return Cell(" + ".join(parts) or "0")


def cost_table(report: Report) -> Table:
    cost = report.cost
    units = set(report.trials.frame["unit"].dropna())
    both = len(units) > 1
    unit = "hours" if both else f"{next(iter(units), 'GPU')}-hours"
    datasets = dataset_order(set(cost["dataset"]))
    selections = (report.trials.frame["phase"] == "select").any()
    phases = ("search", "select", "eval") if selections else ("search", "eval")
    rows = []
    for baseline in report.order:
        mine = cost[cost["baseline"] == baseline]
        row = [Cell(baseline)]
        for dataset in datasets:
            here = mine[mine["dataset"] == dataset]
            for phase in phases:
                row.append(_cost_cell(float(here[f"{phase}_gpu_hours"].sum()),
                                      float(here[f"{phase}_cpu_hours"].sum()), both) if len(here)
                           else Cell(NONE))
        row.append(_cost_cell(float(mine[[f"{p}_gpu_hours" for p in phases]].to_numpy().sum()),
                              float(mine[[f"{p}_cpu_hours" for p in phases]].to_numpy().sum()), both))
        rows.append(row)
    header = ["baseline"] + [f"{DATASET_SHORT.get(d, d)} {p}" for d in datasets
                             for p in phases] + ["total"]
    return Table("cost", f"Cost in {unit} (GPU-hours: wall time x the trial's GPU fraction; CPU-hours: "
                 "wall time x its CPUs), every recorded trial counted, failed ones included; per searched "
                 "dataset: the searches over the seeds" + (", the perturbation selections" if selections
                                                            else "")
                 + ", and the evaluations over the policies and seeds (transfer ones included).",
                 header, rows)


def friedman_table(report: Report) -> Table:
    f = report.friedman
    rows = [["baselines in the test (k)", str(len(f.baselines))],
            ["conditions (N)", str(len(f.conditions))],
            ["left out (no result in some condition)", ", ".join(f.left_out) or "none"]]
    if f.ok:
        rows += [["Friedman chi-square", f"{f.statistic:.3f}"], ["p-value", p_text(f.pvalue)],
                 ["Iman-Davenport F", f"{f.iman_davenport:.3f}"],
                 ["p-value (F)", p_text(f.iman_davenport_pvalue)],
                 [f"Nemenyi critical difference (alpha = {f.alpha:g})", f"{f.critical_difference:.3f}"]]
    else:
        rows.append(["result", f.reason or ""])
    return Table("friedman", f"Friedman test over conditions (blocks) and baselines (groups) on mean "
                 f"{report.metric_label}; only baselines with a result in every condition take part.",
                 ["quantity", "value"], [[Cell(a), Cell(b)] for a, b in rows], "ll")


def kendall_table(report: Report) -> Table:
    labels = [short_condition(c) for c in report.conditions]
    rows = []
    for condition, label in zip(report.conditions, labels, strict=True):
        rows.append([Cell(label)] + [Cell(NONE if math.isnan(v) else f"{v:.2f}")
                                     for v in report.kendall_matrix.loc[condition].to_numpy()])
    return Table("kendall", "Kendall's tau-b between the baseline rankings of two conditions, over the "
                 f"baselines with a result in both (1: same order; {NONE}: fewer than 2 in common or "
                 "all tied).", ["condition"] + labels, rows)


def discernibility_table(report: Report) -> Table:
    rows = []
    for r in report.discernibility.to_dict("records"):
        empty = r["baselines"] == 0
        rows.append([Cell(short_condition(r["condition"])), Cell(str(r["baselines"])),
                     Cell(NONE if empty else r["best_baseline"]),
                     Cell(NONE if empty else pct(r["best"])), Cell(NONE if empty else pct(r["worst"])),
                     Cell(NONE if empty else pct(r["range"])),
                     Cell(NONE if math.isnan(r["median_std"]) else pct(r["median_std"]))])
    return Table("discernibility", f"How discernible each condition is: best and worst mean "
                 f"{report.metric_label} (%) over the baselines with a result, their range (percentage "
                 "points) and the median seed standard deviation; a range that is small next to the seed "
                 "spread cannot separate the baselines.",
                 ["condition", "baselines", "best baseline", "best", "worst", "range", "median seed std"],
                 rows, "lrlrrrr")


def incomplete_trials(report: Report) -> pd.DataFrame:
    frame = report.trials.frame
    frame = frame[frame["status"] != "done"].sort_values(
        ["phase", "baseline", "dataset", "policy", "seed", "trial_id"], na_position="first")
    return frame[["trial_id", "phase", "baseline", "dataset", "policy", "seed", "status", "reason"]]


def failed_table(report: Report) -> Table:
    frame = incomplete_trials(report)
    frame = frame[frame["status"] == "failed"]
    rows = []
    # A search has no policy, and a trial may have no reason: NaN in the frame, not None.
    for r in frame.fillna({"policy": NONE, "reason": ""}).to_dict("records"):
        reason = " ".join(str(r["reason"]).split())
        rows.append([Cell(r["phase"]), Cell(r["baseline"]), Cell(r["dataset"]), Cell(r["policy"]),
                     Cell(str(r["seed"])), Cell(reason[:120] + ("..." if len(reason) > 120 else ""))])
    return Table("failed", "Failed trials (an evaluation whose search failed counts as failed).",
                 ["phase", "baseline", "dataset", "policy", "seed", "reason"], rows, "llllrl")


def all_tables(report: Report) -> list[Table]:
    return [leaderboard_table(report), *accuracy_tables(report), params_table(report), cost_table(report),
            friedman_table(report), kendall_table(report), discernibility_table(report)]


# -- Markdown ----------------------------------------------------------------------------------------

def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def md_cell(cell: Cell) -> str:
    value = f"**{cell.value}**" if cell.bold else cell.value
    return _md_escape(value + (f" {cell.note}" if cell.note else ""))


def md_table(table: Table) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in table.header) + " |",
             "|" + "|".join("--:" if a == "r" else "---" for a in table.alignment) + "|"]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _counts(values: Sequence) -> str:
    counts = Counter(v for v in values if not pd.isna(v))
    return ", ".join(f"{k} ({n} trials)" for k, n in sorted(counts.items())) or "none recorded"


def header_lines(report: Report, command: str | None) -> list[str]:
    trials = report.trials
    frame = trials.frame
    # Only the runs of the reported protocol; every run when the records name none.
    mine = [r for r in trials.runs if r.get("protocol") == trials.protocol]
    runs = sorted({(str(r.get("suite") or r.get("name") or "?"), str(r.get("preset") or "?"))
                   for r in (mine or trials.runs)})
    seeds = sorted({int(s) for s in frame["seed"].dropna()})
    status = frame["status"].value_counts()
    evals = frame[frame["phase"] == "evaluate"]
    command = command or (f"lhdbench report --storage STORE --out OUT --metric {trials.metric}"
                          + ("" if trials.protocol == "unknown" else f" --protocol {trials.protocol}"))
    lines = [
        f"# LHD leaderboard: protocol `{trials.protocol}`, {report.metric_label}", "",
        "Generated by `lhdbench report` from the trial records of a results store; regenerate with", "",
        f"    {command}", "",
        "| | |", "|---|---|",
        "| suites | " + (", ".join(f"{s} (preset {p})" for s, p in runs) or "none in the plan") + " |",
        f"| protocol | {trials.protocol} |",
        f"| metric | {report.metric_label} |",
        f"| seeds | {', '.join(str(s) for s in seeds)} |",
        f"| baselines | {len(report.baselines)} |",
        f"| conditions | {len(report.conditions)} ({', '.join(report.conditions)}) |",
        f"| trials | {len(frame)} ({len(evals)} evaluations): {int(status.get('done', 0))} done, "
        f"{int(status.get('failed', 0))} failed, {int(status.get('missing', 0))} missing |",
        f"| lhdbench versions | {_counts(list(frame['lhdbench']))} |",
        f"| devices | {_counts(list(frame['device_name']))} |",
    ]
    lines += [f"| note | {_md_escape(n)} |" for n in trials.notes]
    if trials.protocol in SCALE_WARNINGS:
        lines += ["", f"**{SCALE_WARNINGS[trials.protocol]}**"]
    return lines


# Protocols whose numbers must never be mistaken for benchmark results.
SCALE_WARNINGS = {
    "smoke": ("A smoke-scale demonstration, not the paper's numbers: the `smoke` protocol trains for "
              "2 epochs of 2 steps on 64 images with tiny networks, so these accuracies mean nothing; "
              "the leaderboard only shows the pipeline working end to end."),
}


def _figure(images: dict[str, str], name: str, caption: str) -> list[str]:
    return [f"![{caption}]({images[name]})", "", f"*{caption}*", ""] if name in images else []


def markdown(report: Report, images: dict[str, str], command: str | None = None) -> str:
    out = header_lines(report, command) + [""]

    def section(title: str, table: Table) -> None:
        out.extend([f"## {title}", "", table.caption, "", md_table(table), ""])

    section("Leaderboard", leaderboard_table(report))
    out += _figure(images, "ranks", f"Ranks by {report.metric_label}: per condition (dots) and average "
                   "(diamond), with the Nemenyi critical difference when the Friedman test applies.")
    for table in accuracy_tables(report):
        section(f"Accuracy: {table.name.split('_', 1)[1]}", table)
        out += _figure(images, table.name, f"{table.name.split('_', 1)[1]}: {report.metric_label} per "
                       "seed and mean, per policy; failed and missing seeds marked at the left edge.")
    section("Parameters", params_table(report))
    section("Cost", cost_table(report))
    section("Statistics: Friedman test", friedman_table(report))
    f = report.friedman
    if f.ok:
        pairs = [(a, b, f.nemenyi.loc[a, b]) for i, a in enumerate(f.baselines)
                 for b in f.baselines[i + 1:] if f.nemenyi.loc[a, b] < f.alpha]
        by_rank = sorted(f.baselines, key=lambda b: (round(f.average_ranks[b], COMPARE_DECIMALS), b))
        out += [f"Nemenyi post-hoc test (scikit-posthocs): {len(pairs)} of "
                f"{len(f.baselines) * (len(f.baselines) - 1) // 2} pairs differ at alpha = {f.alpha:g}"
                + (": " + "; ".join(f"{a} vs {b} (p = {p_text(p)})" for a, b, p in pairs) if pairs else "")
                + ". Average ranks over the complete block: "
                + ", ".join(f"{b} {f.average_ranks[b]:.2f}" for b in by_rank) + ".", ""]
        out += _figure(images, "cd", "Critical-difference diagram: baselines joined by a bar are not "
                       f"significantly different (Nemenyi, alpha = {f.alpha:g}).")
    section("Statistics: ranking stability (Kendall's tau)", kendall_table(report))
    taus = report.kendall["tau"].dropna()
    if len(taus):
        out += [f"Mean tau over {len(taus)} pairs of conditions: {taus.mean():.3f} "
                f"(min {taus.min():.3f}, max {taus.max():.3f}).", ""]
    out += _figure(images, "kendall", "Kendall's tau between the rankings of every two conditions.")
    section("Statistics: discernibility per condition", discernibility_table(report))
    failed = failed_table(report)
    if failed.rows:
        section("Failed trials", failed)
    return "\n".join(out).rstrip("\n") + "\n"


# -- CSV ---------------------------------------------------------------------------------------------

def _write_frame(frame: pd.DataFrame, path: Path, index: bool = False) -> Path:
    text = frame.to_csv(index=index, float_format=FLOAT_FORMAT, lineterminator="\n")
    atomic_write_bytes(path, text.encode())
    return path


def write_csv(report: Report, folder: Path) -> list[Path]:
    """Numeric tables (accuracies as fractions, as recorded), one file per table of the report."""
    folder.mkdir(parents=True, exist_ok=True)
    board = report.board.join(report.ranks.add_prefix("rank "), how="left")
    board.index.name = "baseline"
    cells = report.cells.assign(metric=report.trials.metric, protocol=report.trials.protocol)
    f = report.friedman
    friedman = pd.DataFrame([{
        "baselines": len(f.baselines), "conditions": len(f.conditions), "statistic": f.statistic,
        "pvalue": f.pvalue, "iman_davenport": f.iman_davenport,
        "iman_davenport_pvalue": f.iman_davenport_pvalue, "critical_difference": f.critical_difference,
        "alpha": f.alpha, "left_out": ";".join(f.left_out), "reason": f.reason or "",
        "metric": report.trials.metric}])
    paths = [_write_frame(board.reset_index(), folder / "leaderboard.csv"),
             _write_frame(cells, folder / "accuracy.csv"),
             _write_frame(report.cost, folder / "cost.csv"),
             _write_frame(friedman, folder / "friedman.csv"),
             _write_frame(report.kendall, folder / "kendall.csv"),
             _write_frame(report.discernibility, folder / "discernibility.csv"),
             _write_frame(incomplete_trials(report), folder / "incomplete.csv")]
    if f.ok:
        nemenyi = f.nemenyi.copy()
        nemenyi.insert(0, "average_rank", f.average_ranks)
        nemenyi.index.name = "baseline"
        paths.append(_write_frame(nemenyi.reset_index(), folder / "nemenyi.csv"))
    return sorted(paths)


# -- LaTeX -------------------------------------------------------------------------------------------

TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               "\u00b1": r"$\pm$", "\u2013": "--", "\u03c4": r"$\tau$", "\u00d7": r"$\times$"}


def tex_escape(text: str) -> str:
    return "".join(TEX_SPECIAL.get(ch, ch) for ch in text)


def tex_cell(cell: Cell) -> str:
    value = tex_escape(cell.value)
    if cell.bold:
        value = rf"\textbf{{{value}}}"
    return value + (r" {\scriptsize " + tex_escape(cell.note) + "}" if cell.note else "")


def tex_table(table: Table) -> str:
    """A complete table environment (booktabs); wide tables span both columns and shrink to fit."""
    wide = len(table.header) > 6
    env = "table*" if wide else "table"
    tabular = [rf"\begin{{tabular}}{{{table.alignment}}}", r"\toprule",
               " & ".join(tex_escape(h) for h in table.header) + r" \\", r"\midrule"]
    tabular += [" & ".join(tex_cell(c) for c in row) + r" \\" for row in table.rows]
    tabular += [r"\bottomrule", r"\end{tabular}"]
    body = ([r"\resizebox{\textwidth}{!}{%"] + tabular + ["}"]) if wide else tabular
    lines = [rf"\begin{{{env}}}[t]", r"\centering", r"\footnotesize",
             rf"\caption{{{tex_escape(table.caption)}}}", rf"\label{{tab:lhdbench-{table.name}}}",
             *body, rf"\end{{{env}}}"]
    return "\n".join(lines) + "\n"


def write_tex(report: Report, folder: Path) -> list[Path]:
    """One .tex file per table (needs booktabs and graphicx)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    tables = all_tables(report)
    failed = failed_table(report)
    if failed.rows:
        tables.append(failed)
    for table in tables:
        path = folder / f"{table.name}.tex"
        atomic_write_bytes(path, tex_table(table).encode())
        paths.append(path)
    return sorted(paths)

