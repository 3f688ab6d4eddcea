"""Text outputs: Markdown, CSV and LaTeX. Every number goes through a fixed format, every list is sorted
or in leaderboard/condition order, and nothing time- or host-dependent is written, so the same records
always give byte-identical files."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..files import atomic_write_bytes
from .load import DATASET_SHORT, TRANSFER, condition_name, dataset_order, file_label, short_condition
from .tables import COMPARE_DECIMALS, cost_unit

if TYPE_CHECKING:
    from .summary import Report

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


@dataclass(frozen=True)
class ParamsUnit:
    """How a table writes parameter counts: divided by `divisor`, to `decimals` places."""

    divisor: float
    word: str  # for captions: "millions"
    symbol: str  # for headers: "M"
    decimals: int


MILLIONS = ParamsUnit(1e6, "millions", "M", 2)  # as the paper writes them: 3.41
THOUSANDS = ParamsUnit(1e3, "thousands", "k", 1)


def params_unit(values: Sequence[float]) -> ParamsUnit:
    """Millions, unless every count is below a million: then thousands, where millions would read
    0.01 for every small network (the demo's have 8,000 to 13,000 parameters)."""
    known = [v for v in values if not math.isnan(v)]
    return THOUSANDS if known and max(known) < 1e6 else MILLIONS


def params_text(value: float, unit: ParamsUnit = MILLIONS) -> str:
    return NONE if math.isnan(value) else f"{value / unit.divisor:.{unit.decimals}f}"


def p_text(value: float) -> str:
    if math.isnan(value):
        return NONE
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def tex_hours(value: float) -> str:
    """Hours for a paper: two significant digits (whole hours from 10 on), `$<$0.001` below 0.001."""
    if value == 0 or math.isnan(value):
        return "0"
    if value < 0.001:
        return "$<$0.001"
    rounded = float(f"{value:.2g}")  # first, so that 0.0999 reads 0.10, not 0.100
    if rounded >= 10:
        return f"{value:.0f}"
    return f"{rounded:.{max(0, 1 - math.floor(math.log10(rounded)))}f}"


def tex_p(value: float) -> str:
    if math.isnan(value):
        return "--"
    return f"{value:.3f}" if value >= 0.001 else "$<$0.001"


def tex_number(value: float, decimals: int = 2) -> str:
    """A signed number with a typographic minus."""
    if math.isnan(value):
        return "--"
    text = f"{value:.{decimals}f}"
    return f"$-${text[1:]}" if text.startswith("-") else text


# -- table values ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    value: str
    note: str = ""
    bold: bool = False


@dataclass(frozen=True)
class Table:
    """A table for one output: Markdown (plain text, escaped when written) or LaTeX (`latex`: caption,
    note, header and cells are LaTeX already; the caption one sentence, the details in `note`, set
    below the table)."""

    name: str
    caption: str
    header: list[str]
    rows: list[list[Cell]]
    align: str = ""  # one of l/r per column; default: first left, the rest right
    note: str = ""
    latex: bool = False

    @property
    def alignment(self) -> str:
        return self.align or "l" + "r" * (len(self.header) - 1)


# -- names for a paper --------------------------------------------------------------------------------

# How the methods are written in papers; a name not listed is written as it is (escaped).
METHOD_NAMES_TEX = {
    "darts": "DARTS", "darts-minus": "DARTS-", "beta-darts": r"$\beta$-DARTS", "pcdarts": "PC-DARTS",
    "gaea-erm": "GAEA (ERM)", "gaea-bilevel": "GAEA (bilevel)", "spdarts": "SP-DARTS",
    "ss-darts": "SS-DARTS", "pcd-darts": "PCD-DARTS", "edd-darts": "EDD-DARTS", "dropnas": "DropNAS",
    "drnas": "DrNAS", "milenas": "MiLeNAS", "surgenas": "SurgeNAS", "gdas": "GDAS", "random": "Random",
}
DATASET_NAMES_TEX = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN"}


def tex_method(name: str) -> str:
    return METHOD_NAMES_TEX.get(name) or tex_escape(name)


def tex_dataset(dataset: str) -> str:
    """`CIFAR-10`; a transfer label `cifar10>svhn` as `CIFAR-10$\\to$SVHN`."""
    return r"$\to$".join(DATASET_NAMES_TEX.get(d) or tex_escape(d) for d in dataset.split(TRANSFER))


def tex_condition(condition: str) -> str:
    """`C10 base`, `C10 base pt`, `C10$\\to$SVHN base`."""
    dataset, policy = condition.split("/", 1)
    short = r"$\to$".join(tex_escape(DATASET_SHORT.get(d, d)) for d in dataset.split(TRANSFER))
    return f"{short} {tex_escape(policy.replace('/', ' '))}"


@dataclass(frozen=True)
class Style:
    """How names and numbers are written in one output: Markdown (plain) or LaTeX."""

    tex: bool = False

    @property
    def none(self) -> str:
        return "--" if self.tex else NONE

    def text(self, value: str) -> str:
        return tex_escape(value) if self.tex else value

    def method(self, name: str) -> str:
        return tex_method(name) if self.tex else name

    def condition(self, condition: str) -> str:
        return tex_condition(condition) if self.tex else short_condition(condition)

    def hours(self, value: float) -> str:
        return tex_hours(value) if self.tex else hours_text(value)

    def p(self, value: float) -> str:
        return tex_p(value) if self.tex else p_text(value)

    def number(self, value: float, decimals: int = 2) -> str:
        if not self.tex:
            return NONE if math.isnan(value) else f"{value:.{decimals}f}"
        return tex_number(value, decimals)


MD, TEX = Style(False), Style(True)


def _metric_tex(report: Report) -> str:
    return tex_escape(report.metric_label)


def _protocol_tex(report: Report) -> str:
    return tex_escape(report.trials.protocol)


# -- tables ------------------------------------------------------------------------------------------

def _problems(row: dict) -> list[str]:
    of = row["trials"]
    return [f"{label} {row[key]}/{of}" for key, label in
            (("failed", "failed"), ("missing", "missing"), ("no_value", "no value"),
             ("other_protocol", "other protocol")) if row.get(key)]


def accuracy_cell(row: dict | None, style: Style = MD, common_n: int | None = None) -> Cell:
    """A condition cell: mean ± std, and a note with n and any failed, missing or value-less trials.
    In LaTeX the note leaves out n where it is the table's common n (stated once below the table)."""
    if row is None:
        return Cell(style.none)
    problems = _problems(row)
    if row["done"] == 0:
        if row["missing"] == row["trials"]:
            return Cell("missing")
        return Cell(", ".join(problems))
    value = pct(row["mean"]) + ("" if math.isnan(row["std"]) else
                                (r" $\pm$ " if style.tex else " \u00b1 ") + pct(row["std"]))
    if not style.tex:
        note = f"(n={row['done']}" + (f"; {', '.join(problems)})" if problems else ")")
        return Cell(value, note, bool(row["best"]))
    parts = ([] if row["done"] == common_n else [f"$n$={row['done']}"]) + problems
    return Cell(value, f"({'; '.join(parts)})" if parts else "", bool(row["best"]))


def _cell_lookup(report: Report) -> dict[tuple[str, str], dict]:
    return {(r["baseline"], r["condition"]): r for r in report.cells.to_dict("records")}


def common_n(rows: Sequence[dict]) -> int | None:
    """The number of done seeds most cells with a result have (the larger one on a tie)."""
    counts = Counter(r["done"] for r in rows if r["done"] > 0)
    return max(counts, key=lambda n: (counts[n], n)) if counts else None


def accuracy_tables(report: Report, style: Style = MD) -> list[Table]:
    lookup = _cell_lookup(report)
    tables = []
    for dataset, policies in report.datasets.items():
        columns = [condition_name(dataset, p) for p in policies]
        n = common_n([lookup[(b, c)] for b in report.order for c in columns if (b, c) in lookup])
        rows = [[Cell(style.method(b))] + [accuracy_cell(lookup.get((b, c)), style, n) for c in columns]
                for b in report.order]
        no_value = report.cells.loc[report.cells["dataset"] == dataset, "no_value"].sum() > 0
        name = f"accuracy_{file_label(dataset)}"
        if not style.tex:
            tables.append(Table(
                name,
                f"{dataset}, protocol {report.trials.protocol}: {report.metric_label} (%), mean \u00b1 "
                "sample std over the done seeds; n = seeds with a result. Bold: best mean in the column. "
                "'failed k/m' and 'missing k/m' count the cell's trials that failed or have not run: they "
                "are not in the mean" + ("; 'no value k/m': done, but without this metric in the record"
                                         if no_value else "") + f". {NONE}: not part of the suite. Rows in "
                "leaderboard order.",
                ["baseline"] + policies, rows))
            continue
        seeds = (f"$n = {n}$ seeds per cell unless a cell states its own $n$. " if n is not None else "")
        tables.append(Table(
            name, f"{tex_dataset(dataset)}: {_metric_tex(report)} (\\%) of each method under each policy.",
            ["Method"] + [tex_escape(p.replace("/", " ")) for p in policies], rows,
            note=f"Mean $\\pm$ sample standard deviation over the seeds with a result; {seeds}Bold: best "
            "mean in the column. ``failed $k$/$m$'' and ``missing $k$/$m$'' count a cell's trials that "
            "failed or have not run; they are not in the mean"
            + ("; ``no value $k$/$m$'': done, but without this metric in the record" if no_value else "")
            + f". --: not part of the suite. Protocol {_protocol_tex(report)}; rows in leaderboard order.",
            latex=True))
    return tables


def leaderboard_table(report: Report, style: Style = MD) -> Table:
    rows = []
    for baseline in report.order:
        entry = report.board.loc[baseline]
        rows.append([Cell(str(int(entry["position"]))), Cell(style.method(baseline)),
                     Cell(style.none if math.isnan(entry["average_rank"])
                          else f"{entry['average_rank']:.2f}"),
                     Cell(f"{int(entry['ranked'])}/{int(entry['conditions'])}")]
                    + [Cell(style.none if math.isnan(v) else rank_text(v))
                       for v in (report.ranks.loc[baseline, c] for c in report.conditions)])
    align = "rl" + "r" * (2 + len(report.conditions))
    if not style.tex:
        return Table(
            "leaderboard",
            f"Leaderboard, protocol {report.trials.protocol}: rank in each condition by mean "
            f"{report.metric_label} (1 = best; ties share the average of their ranks) and the average rank "
            "over the conditions where the baseline has a result ('ranked' counts them; a baseline ranked "
            "in fewer conditions is compared on fewer).",
            ["#", "baseline", "avg rank", "ranked"] + [short_condition(c) for c in report.conditions], rows,
            align)
    return Table(
        "leaderboard", "Methods ranked by their average rank over the conditions.",
        [r"\#", "Method", "Avg.\\ rank", "Ranked"] + [tex_condition(c) for c in report.conditions], rows,
        align, note=f"Rank in each condition by mean {_metric_tex(report)} (1 = best; ties share the "
        "average of their ranks); the average is over the conditions where the method has a result "
        f"(``Ranked'' counts them). Protocol {_protocol_tex(report)}.", latex=True)


def params_table(report: Report, style: Style = MD) -> Table:
    lookup = _cell_lookup(report)
    unit = params_unit([cell["params"] for cell in lookup.values()])
    rows = [[Cell(style.method(b))] + [Cell(params_text(lookup[(b, c)]["params"], unit)
                                            .replace(NONE, style.none) if (b, c) in lookup else style.none)
                                       for c in report.conditions] for b in report.order]
    if not style.tex:
        return Table("params", f"Parameters of the evaluated networks ({unit.word}), mean over the done "
                     f"seeds; protocol {report.trials.protocol}.",
                     ["baseline"] + [short_condition(c) for c in report.conditions], rows)
    return Table("params", f"Parameters of the evaluated networks ({unit.word}).",
                 ["Method"] + [tex_condition(c) for c in report.conditions], rows,
                 note=f"Mean over the seeds with a result; without the auxiliary head. Protocol "
                 f"{_protocol_tex(report)}.", latex=True)


def _cost_cell(gpu: float, cpu: float, both: bool, style: Style = MD) -> Cell:
    if not both:
        return Cell(style.hours(gpu + cpu))
    parts = [f"{style.hours(v)} {u}-h" for v, u in ((gpu, "GPU"), (cpu, "CPU")) if v]
    return Cell(" + ".join(parts) or "0")


def cost_table(report: Report, style: Style = MD) -> Table:
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
        row = [Cell(style.method(baseline))]
        for dataset in datasets:
            here = mine[mine["dataset"] == dataset]
            for phase in phases:
                row.append(_cost_cell(float(here[f"{phase}_gpu_hours"].sum()),
                                      float(here[f"{phase}_cpu_hours"].sum()), both, style) if len(here)
                           else Cell(style.none))
        row.append(_cost_cell(float(mine[[f"{p}_gpu_hours" for p in phases]].to_numpy().sum()),
                              float(mine[[f"{p}_cpu_hours" for p in phases]].to_numpy().sum()), both, style))
        rows.append(row)
    if not style.tex:
        header = ["baseline"] + [f"{DATASET_SHORT.get(d, d)} {p}" for d in datasets
                                 for p in phases] + ["total"]
        return Table("cost", f"Cost in {unit} (GPU-hours: wall time x the trial's GPU fraction; CPU-hours: "
                     "wall time x its CPUs), every recorded trial counted, failed ones included; per "
                     "searched dataset: the searches over the seeds" + (", the perturbation selections"
                                                                        if selections else "")
                     + ", and the evaluations over the policies and seeds (transfer ones included).",
                     header, rows)
    names = {"search": "search", "select": "selection", "eval": "evaluation"}
    header = ["Method"] + [f"{tex_escape(DATASET_SHORT.get(d, d))} {names[p]}" for d in datasets
                           for p in phases] + ["Total"]
    return Table("cost", f"Cost of each method in {unit}, per searched dataset.", header, rows,
                 note=r"GPU-hours: wall time $\times$ the trial's GPU fraction; CPU-hours: wall time "
                 r"$\times$ its CPUs. Every recorded trial counts, failed ones included: per searched "
                 "dataset, the searches over the seeds" + (", the perturbation selections" if selections
                                                           else "")
                 + " and the evaluations over the policies and seeds (transfer ones included). Protocol "
                 f"{_protocol_tex(report)}.", latex=True)


def friedman_table(report: Report, style: Style = MD) -> Table:
    f = report.friedman
    if not style.tex:
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
    rows = [["Methods in the test ($k$)", str(len(f.baselines))],
            ["Conditions ($N$)", str(len(f.conditions))],
            ["Left out (no result in some condition)",
             ", ".join(tex_method(b) for b in f.left_out) or "none"]]
    if f.ok:
        rows += [[r"Friedman $\chi^2$", f"{f.statistic:.2f}"], ["$p$-value", tex_p(f.pvalue)],
                 ["Iman--Davenport $F$", f"{f.iman_davenport:.2f}"],
                 ["$p$-value ($F$)", tex_p(f.iman_davenport_pvalue)],
                 [rf"Nemenyi critical difference ($\alpha = {f.alpha:g}$)", f"{f.critical_difference:.2f}"]]
    else:
        rows.append(["Result", tex_escape(f.reason or "")])
    return Table("friedman", "Friedman test over the conditions (blocks) and methods (groups).",
                 ["Quantity", "Value"], [[Cell(a), Cell(b)] for a, b in rows], "ll",
                 note=f"On mean {_metric_tex(report)}; only methods with a result in every condition take "
                 "part.", latex=True)


def kendall_table(report: Report, style: Style = MD) -> Table:
    labels = [style.condition(c) for c in report.conditions]
    rows = []
    for condition, label in zip(report.conditions, labels, strict=True):
        rows.append([Cell(label)] + [Cell(style.none if math.isnan(v) else style.number(v))
                                     for v in report.kendall_matrix.loc[condition].to_numpy()])
    if not style.tex:
        return Table("kendall", "Kendall's tau-b between the baseline rankings of two conditions, over the "
                     f"baselines with a result in both (1: same order; {NONE}: fewer than 2 in common or "
                     "all tied).", ["condition"] + labels, rows)
    return Table("kendall", r"Kendall's $\tau_b$ between the method rankings of every two conditions.",
                 ["Condition"] + labels, rows,
                 note="Over the methods with a result in both conditions (1: the same order; --: fewer "
                 "than two in common, or one ranking all tied).", latex=True)


def transfer_table(report: Report, style: Style = MD) -> Table:
    def tau(value: float) -> Cell:
        return Cell(style.none if math.isnan(value) else style.number(value))

    rows = [[Cell(style.condition(r["condition"])),
             Cell(style.condition(r["target"]) if r["target"] else style.none), tau(r["tau_target"]),
             Cell(style.condition(r["source"]) if r["source"] else style.none), tau(r["tau_source"])]
            for r in report.transfer.to_dict("records")]
    if not style.tex:
        return Table("transfer", "Each transfer condition (searched on one dataset, evaluated on another) "
                     "against two transductive ones: Kendall's tau-b of its baseline ranking against the "
                     "ranking of the architectures searched on the dataset it was evaluated on, and against "
                     "the same architectures' ranking on the dataset they were searched on "
                     f"({NONE}: not in the report, or fewer than 2 baselines in common).",
                     ["transfer condition", "searched where evaluated", "tau", "evaluated where searched",
                      "tau"], rows, "llrlr")
    return Table("transfer", r"Transfer against transductive rankings (Kendall's $\tau_b$).",
                 ["Transfer", "Searched on target", r"$\tau_b$", "Evaluated on source", r"$\tau_b$"], rows,
                 "llrlr", note="Each transfer condition's method ranking against the ranking of the "
                 "architectures searched on the dataset it was evaluated on, and against the same "
                 "architectures' ranking on the dataset they were searched on.", latex=True)


def discernibility_table(report: Report, style: Style = MD) -> Table:
    rows = []
    for r in report.discernibility.to_dict("records"):
        empty = r["baselines"] == 0
        rows.append([Cell(style.condition(r["condition"])), Cell(str(r["baselines"])),
                     Cell(style.none if empty else style.method(r["best_baseline"])),
                     Cell(style.none if empty else pct(r["best"])),
                     Cell(style.none if empty else pct(r["worst"])),
                     Cell(style.none if empty else pct(r["range"])),
                     Cell(style.none if math.isnan(r["median_std"]) else pct(r["median_std"]))])
    if not style.tex:
        return Table("discernibility", f"How discernible each condition is: best and worst mean "
                     f"{report.metric_label} (%) over the baselines with a result, their range (percentage "
                     "points) and the median seed standard deviation; a range that is small next to the "
                     "seed spread cannot separate the baselines.",
                     ["condition", "baselines", "best baseline", "best", "worst", "range", "median seed std"],
                     rows, "lrlrrrr")
    return Table("discernibility", "How far apart the methods are in each condition.",
                 ["Condition", "Methods", "Best method", "Best", "Worst", "Range", "Median seed std."],
                 rows, "lrlrrrr",
                 note=f"Best and worst mean {_metric_tex(report)} (\\%) over the methods with a result, "
                 "their range (percentage points) and the median standard deviation over seeds; a range "
                 "that is small next to the seed spread cannot separate the methods.", latex=True)


def incomplete_trials(report: Report) -> pd.DataFrame:
    frame = report.trials.frame
    frame = frame[frame["status"] != "done"].sort_values(
        ["phase", "baseline", "dataset", "policy", "seed", "trial_id"], na_position="first")
    return frame[["trial_id", "phase", "baseline", "dataset", "policy", "seed", "status", "reason"]]


def failed_table(report: Report, style: Style = MD) -> Table:
    frame = incomplete_trials(report)
    frame = frame[frame["status"] == "failed"]
    rows = []
    # A search has no policy, and a trial may have no reason: NaN in the frame, not None.
    for r in frame.fillna({"policy": NONE, "reason": ""}).to_dict("records"):
        reason = " ".join(str(r["reason"]).split())
        reason = reason[:120] + ("..." if len(reason) > 120 else "")
        rows.append([Cell(r["phase"]), Cell(style.method(r["baseline"])),
                     Cell(tex_dataset(r["dataset"]) if style.tex else r["dataset"]),
                     Cell(style.text(r["policy"])), Cell(str(r["seed"])), Cell(style.text(reason))])
    if not style.tex:
        return Table("failed", "Failed trials (an evaluation whose search failed counts as failed).",
                     ["phase", "baseline", "dataset", "policy", "seed", "reason"], rows, "llllrl")
    return Table("failed", "Failed trials.", ["Phase", "Method", "Dataset", "Policy", "Seed", "Reason"],
                 rows, "llllrl", note="An evaluation whose search or selection failed counts as failed.",
                 latex=True)


def best_table(report: Report, style: Style = MD) -> Table:
    """The best evaluation of each condition: the architecture drawn in plots/best_arch_*."""
    unit = params_unit(list(report.best["params"]))
    rows = [[Cell(style.condition(b["condition"])), Cell(style.method(b["baseline"])), Cell(str(b["seed"])),
             Cell(pct(b["value"])), Cell(params_text(b["params"], unit).replace(NONE, style.none))]
            + ([] if style.tex else [Cell(b["trial_id"])]) for b in report.best.to_dict("records")]
    if not style.tex:
        return Table("best_archs", f"The best evaluation of each condition by {report.metric_label} (%), "
                     "ties to the lowest trial id; its cells are drawn below.",
                     ["condition", "baseline", "seed", "accuracy", f"params ({unit.symbol})", "trial"], rows,
                     "llrrrl")
    return Table("best_archs", "The best architecture found in each condition.",
                 ["Condition", "Method", "Seed", "Accuracy", f"Params ({unit.symbol})"], rows, "llrrr",
                 note=f"The evaluation with the highest {_metric_tex(report)} (\\%) of each condition (on a "
                 "tie, the lowest trial id). Protocol " + _protocol_tex(report) + ".", latex=True)


def all_tables(report: Report, style: Style = MD) -> list[Table]:
    return [leaderboard_table(report, style), *accuracy_tables(report, style), params_table(report, style),
            cost_table(report, style), friedman_table(report, style), kendall_table(report, style),
            *([transfer_table(report, style)] if len(report.transfer) else []),
            discernibility_table(report, style)]


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
    "demo": ("A demonstration at a tiny scale, not the paper's numbers: the `demo` protocol searches for "
             "2 epochs on 800 handwritten digits at 16x16 and trains networks of 3 cells at width 8 for "
             "3 epochs, so its ranking is the demo's, not the benchmark's."),
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
    if len(report.result_costs):
        selected = report.result_costs["policy"].str.contains("/").any()
        out += _figure(images, "accuracy_cost", f"Accuracy against cost: per dataset, each cell's mean "
                       f"{report.metric_label} against the parameters of its networks (left) and against "
                       f"the {cost_unit(report.result_costs)}-hours one of its results took, its search"
                       + (", selection" if selected else "") + " and evaluation (right), means over the "
                       "seeds. Colour: baseline; marker: policy"
                       + (" (hollow: a perturbation selection)." if selected else "."))
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
    from .curves import curve_section

    out += curve_section(report.curve, report.metric_label)
    if len(report.transfer):
        section("Statistics: transfer against transductive rankings", transfer_table(report))
    section("Statistics: discernibility per condition", discernibility_table(report))
    out += best_section(report, images)
    out += evolution_section(report, images)
    failed = failed_table(report)
    if failed.rows:
        section("Failed trials", failed)
    return "\n".join(out).rstrip("\n") + "\n"


def best_section(report: Report, images: dict[str, str]) -> list[str]:
    """The best architecture of each condition: a table, then each one's cells where they were drawn."""
    if report.best.empty:
        return []
    from .build import best_architecture_name

    table = best_table(report)
    out = ["## Best architectures", "", table.caption, "", md_table(table), ""]
    if images:
        out += ["Each drawing shows the normal and the reduction cell: the cell's two inputs (the previous "
                "cell's sum and concat outputs), its nodes (pruned ones left out) and its sum and concat "
                "outputs; arcs on the right are the kept (input, op) edges, labelled with their op, arcs on "
                "the left join each node to the outputs it feeds (solid: sum, dashed: concat).", ""]
    for best in report.best.to_dict("records"):
        name = best_architecture_name(best["condition"])
        caption = (f"{short_condition(best['condition'])}: {best['baseline']}, seed {best['seed']}, "
                   f"{pct(best['value'])}%.")
        if name in images:
            out += _figure(images, name, caption)
        elif images:
            out += [f"*{caption} Not drawn: the record's genotype is not a valid genotype.*", ""]
    return out


def evolution_section(report: Report, images: dict[str, str]) -> list[str]:
    """How the architecture weights moved during the search; nothing where no search recorded them."""
    if not report.evolution:
        return []
    shown = ", ".join(f"{s['baseline']} ({s['dataset']}, seed {s['seed']})" for s in report.evolution)
    out = ["## Architecture weights during the search", "",
           "Each op's share of the normal cell's node weights (the column sums of its 20 x 7 matrix over "
           "their total) after every search epoch, from the exported weights each search recorded, for "
           f"one search per baseline (the first dataset, the lowest seed): {shown}.", ""]
    return out + _figure(images, "arch_evolution", "Share of each op in the normal cell's node weights "
                         "per search epoch, one panel per baseline; dotted: the uniform share, 1/7.")


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
             *([_write_frame(report.transfer, folder / "transfer.csv")] if len(report.transfer) else []),
             _write_frame(report.discernibility, folder / "discernibility.csv"),
             _write_frame(incomplete_trials(report), folder / "incomplete.csv"),
             _write_frame(report.best.assign(metric=report.trials.metric), folder / "best_archs.csv"),
             _write_frame(report.result_costs.assign(metric=report.trials.metric),
                          folder / "accuracy_cost.csv")]
    if len(report.curve):
        paths.append(_write_frame(report.curve.assign(metric=report.trials.metric),
                                  folder / "curve_agreement.csv"))
    if f.ok:
        nemenyi = f.nemenyi.copy()
        nemenyi.insert(0, "average_rank", f.average_ranks)
        nemenyi.index.name = "baseline"
        paths.append(_write_frame(nemenyi.reset_index(), folder / "nemenyi.csv"))
    return sorted(paths)


# -- LaTeX -------------------------------------------------------------------------------------------

TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               "<": r"$<$", ">": r"$>$", "|": r"$|$", '"': "''",
               "\u00b1": r"$\pm$", "\u2013": "--", "\u2014": "---", "\u03c4": r"$\tau$",
               "\u00d7": r"$\times$", "\u03b1": r"$\alpha$", "\u03b2": r"$\beta$", "\u2192": r"$\to$",
               "\u2018": "`", "\u2019": "'", "\u201c": "``", "\u201d": "''", "\u2026": r"\ldots{}"}


def tex_escape(text: str) -> str:
    """Text for LaTeX's text mode that any engine compiles: special characters escaped, other
    non-ASCII characters as their closest ASCII letters (`é` -> `e`), or `?`."""
    out = []
    for ch in text:
        if ch in TEX_SPECIAL:
            out.append(TEX_SPECIAL[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:
            out.append(unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode() or "?")
    return "".join(out)


def tex_cell(cell: Cell, latex: bool = False) -> str:
    value = cell.value if latex else tex_escape(cell.value)
    if cell.bold:
        value = rf"\textbf{{{value}}}"
    note = cell.note if latex else tex_escape(cell.note)
    return value + (r" {\scriptsize " + note + "}" if note else "")


COLUMN_INCHES = 3.3  # a two-column paper's column (ICML, NeurIPS, ACL: 3.25 in to 3.3 in)


def _visible(tex: str) -> str:
    """Roughly the characters a LaTeX cell prints: commands and math markup dropped."""
    tex = re.sub(r"\\(textbf|scriptsize|textasciitilde|textasciicircum|ldots)\b|[{}$]", "", tex)
    return re.sub(r"\\[a-zA-Z]+", "x", tex).replace("\\", "")


def tex_width(table: Table) -> float:
    """An estimate of the table's natural width in inches at \\footnotesize (average glyph 0.5 em of
    8 pt, notes at two thirds of that, 12 pt between columns)."""
    texts = [[h for h in table.header]] + [[tex_cell(c, table.latex) for c in row] for row in table.rows]
    if not table.latex:
        texts[0] = [tex_escape(h) for h in table.header]
    widths = [max(len(_visible(row[j])) for row in texts) for j in range(len(table.header))]
    return sum(widths) * 4 / 72 + len(widths) * 12 / 72


def tex_table(table: Table) -> str:
    """A complete table environment (booktabs): a one-sentence caption above, the table, and its note
    below in small type. A table wider than a column spans both (`table*`); one still wider than its
    space is shrunk to fit (only then: a narrow table keeps its type size)."""
    wide = tex_width(table) > COLUMN_INCHES
    env = "table*" if wide else "table"
    text = (lambda t: t) if table.latex else tex_escape
    tabular = [rf"\begin{{tabular}}{{{table.alignment}}}", r"\toprule",
               " & ".join(text(h) for h in table.header) + r" \\", r"\midrule"]
    tabular += [" & ".join(tex_cell(c, table.latex) for c in row) + r" \\" for row in table.rows]
    tabular += [r"\bottomrule", r"\end{tabular}"]
    # Box 0 is TeX's scratch box, local to the float's group: no preamble definition needed.
    body = ([r"\sbox0{%"] + tabular + ["}%", r"\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\usebox0}"
                                             r"\else\usebox0\fi"])
    note = ([r"\par\smallskip", r"{\scriptsize\raggedright " + text(table.note) + r"\par}"]
            if table.note else [])
    lines = [rf"\begin{{{env}}}[t]", r"\centering", r"\footnotesize",
             rf"\caption{{{text(table.caption)}}}", rf"\label{{tab:lhdbench-{table.name}}}",
             *body, *note, rf"\end{{{env}}}"]
    return "\n".join(lines) + "\n"


def write_tex(report: Report, folder: Path) -> list[Path]:
    """One .tex file per table (needs booktabs and graphicx), written for a paper: methods by their
    published names, conditions as `C10 base`, short captions with the details in a note below."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    tables = all_tables(report, TEX)
    if not report.best.empty:
        tables.append(best_table(report, TEX))
    failed = failed_table(report, TEX)
    if failed.rows:
        tables.append(failed)
    for table in tables:
        path = folder / f"{table.name}.tex"
        atomic_write_bytes(path, tex_table(table).encode())
        paths.append(path)
    return sorted(paths)
