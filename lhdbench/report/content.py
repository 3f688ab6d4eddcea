"""The report's tables, built from a Report: what each table holds, in Markdown's words or a paper's
(`Style`). How a table is written out is text.py's and render.py's job, so a new source of records
changes what goes in here, not the formats."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from .load import DATASET_SHORT, condition_name, dataset_order, file_label, short_condition
from .text import (
    MD,
    NONE,
    Cell,
    Style,
    Table,
    p_text,
    params_text,
    params_unit,
    pct,
    rank_text,
    tex_condition,
    tex_dataset,
    tex_escape,
    tex_method,
    tex_p,
)

if TYPE_CHECKING:
    from .summary import Report


def _metric_tex(report: Report) -> str:
    return tex_escape(report.metric_label)


def _protocol_tex(report: Report) -> str:
    return tex_escape(report.trials.protocol)


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



def best_architecture_name(condition: str) -> str:
    """`best_arch_cifar10_base`, `best_arch_cifar10_base-pt`, `best_arch_cifar10-to-svhn_base`."""
    dataset, policy = condition.split("/", 1)
    return f"best_arch_{file_label(dataset)}_{policy.replace('/', '-')}"
