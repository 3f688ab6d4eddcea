"""The report's figures, sized for a paper: 3.5 in for one column, 7 in across two. Every figure is
drawn under fixed rc settings, so a user's matplotlibrc cannot change the output, and saved without
timestamps or version strings, so the same records give the same files."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..files import atomic_write_bytes
from .load import condition_name, short_condition
from .stats import Friedman
from .tables import cost_unit

COLUMN_WIDTH = 3.5
PAGE_WIDTH = 7.0
DPI = 300
PLOT_FORMATS = ("png", "pdf")  # what the report writes
SAVE_FORMATS = ("png", "pdf", "svg")  # what save() can write (`lhdbench arch draw` adds SVG)

STYLE = {
    "font.family": "DejaVu Sans", "font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7,
    "xtick.labelsize": 6.5, "ytick.labelsize": 6.5, "legend.fontsize": 6.5, "axes.linewidth": 0.6,
    "xtick.major.width": 0.6, "ytick.major.width": 0.6, "xtick.major.size": 2.5, "ytick.major.size": 2.5,
    "lines.linewidth": 0.8, "pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "lhdbench",
    "path.simplify": False, "figure.dpi": 100, "savefig.dpi": DPI,
}
METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
            "svg": {"Creator": None, "Date": None}}
SEED_COLOR, MEAN_COLOR, FAILED_COLOR, MISSING_COLOR = "#4c72b0", "#111111", "#c44e52", "#8c8c8c"


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Draw and save inside this. Figures are made without pyplot, so no global figure list and no GUI
    backend is touched: PNG goes through Agg, PDF through matplotlib's PDF backend."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        yield


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save(figure, stem: Path, formats: Sequence[str]) -> list[Path]:
    """Write the figure as stem.<format> for each plot format asked for; return the files. SVG ids are
    fixed by the style's `svg.hashsalt`, so SVG files are byte-identical too."""
    written = []
    for fmt in SAVE_FORMATS:
        if fmt in formats:
            path = stem.with_name(f"{stem.name}.{fmt}")  # a dot in the stem is not a suffix
            buffer = io.BytesIO()  # rendered whole first: a failed write leaves no torn file
            figure.savefig(buffer, format=fmt, metadata=METADATA[fmt], bbox_inches="tight",
                           pad_inches=0.02)
            atomic_write_bytes(path, buffer.getvalue())
            written.append(path)
    return written


def rank_plot(board: pd.DataFrame, ranks: pd.DataFrame, friedman: Friedman, metric_short: str):
    """Average rank per baseline (diamond) over its per-condition ranks (dots), best at the top, with
    the Nemenyi critical difference drawn as a bar when the Friedman test could be run."""
    names = [b for b in board.index if not math.isnan(board.loc[b, "average_rank"])]
    k = max(len(board), 2)
    figure = new_figure(COLUMN_WIDTH, 0.75 + 0.17 * len(names) + 0.35 + (0.15 if friedman.ok else 0.0))
    ax = figure.subplots()
    offsets = np.linspace(-0.28, 0.28, max(len(ranks.columns), 1))
    for y, name in enumerate(names):
        row = ranks.loc[name]
        for offset, value in zip(offsets, row.to_numpy(), strict=True):
            if not math.isnan(value):
                ax.plot(value, y + offset, "o", ms=1.8, color=SEED_COLOR, alpha=0.55, mec="none")
        ax.plot(board.loc[name, "average_rank"], y, "D", ms=3.6, color=MEAN_COLOR)
    labels = [f"{n} ({board.loc[n, 'ranked']}/{board.loc[n, 'conditions']})"
              if board.loc[n, "ranked"] < board.loc[n, "conditions"] else n for n in names]
    ax.set_yticks(range(len(names)), labels)
    ax.set_ylim(len(names) - 0.4, -0.6 - (1.5 if friedman.ok else 0.0))
    ax.set_xlim(0.5, k + 0.5)
    # A tick and a grid line at every rank; past ten ranks a label at every `step`-th only, since
    # two-digit labels at every rank run together at a column's width.
    ax.set_xticks(range(1, k + 1, math.ceil(k / 10)))
    ax.set_xticks(range(1, k + 1), minor=True)
    ax.set_xlabel(f"rank by {metric_short} (1 = best)\ndots: one per condition; diamonds: average")
    ax.grid(axis="x", which="both", lw=0.3, color="#dddddd")
    ax.set_axisbelow(True)
    if friedman.ok:
        cd = friedman.critical_difference
        ax.plot([1, 1 + cd], [-1.0, -1.0], color=MEAN_COLOR, lw=1.4, solid_capstyle="butt")
        # Above the bar, from its left end: to its right it would leave the frame when CD is large.
        ax.text(1, -1.25, f"CD = {cd:.2f} (Nemenyi, \u03b1 = {friedman.alpha:g})", va="bottom",
                ha="left", fontsize=6.5)
    return figure


def cd_diagram(friedman: Friedman):
    """Critical-difference diagram (scikit-posthocs): average ranks on the axis, baselines not
    significantly different under the Nemenyi test joined by a bar."""
    import scikit_posthocs

    k = len(friedman.baselines)
    names = list(friedman.baselines)
    # The library collects its crossbars in sets of labels; with string labels their order, and so the
    # drawing order, changes with Python's hash seed. Integer labels hash to themselves.
    ranks = pd.Series(friedman.average_ranks.loc[names].to_numpy(), index=range(k))
    nemenyi = pd.DataFrame(friedman.nemenyi.loc[names, names].to_numpy(), index=range(k), columns=range(k))
    figure = new_figure(COLUMN_WIDTH, 0.6 + 0.1 * k)
    ax = figure.subplots()
    drawn = scikit_posthocs.critical_difference_diagram(
        ranks, nemenyi, alpha=friedman.alpha, ax=ax, label_fmt_left="{label}", label_fmt_right="{label}",
        label_props={"fontsize": 6.5}, marker_props={"s": 8, "color": MEAN_COLOR},
        elbow_props={"color": "#333333", "linewidth": 0.6},
        crossbar_props={"color": SEED_COLOR, "linewidth": 1.6}, text_h_margin=0.02)
    # The library's own CD bar sits on the tick labels at this size; the title carries the value.
    for text in drawn["labels"]:
        index = int(text.get_text())
        name, rank = names[index], ranks[index]
        text.set_text(f"{name} ({rank:.2f})" if text.get_ha() == "right" else f"({rank:.2f}) {name}")
    # Two short lines: one line of all of it is wider than a column and would stick out of the frame.
    ax.set_title(f"critical difference {friedman.critical_difference:.2f} (Nemenyi, \u03b1 = "
                 f"{friedman.alpha:g})\n{k} baselines, {len(friedman.conditions)} conditions",
                 fontsize=6.5, pad=14, linespacing=1.25)
    ax.tick_params(labelsize=6)
    return figure


def accuracy_plot(trials: pd.DataFrame, cells: pd.DataFrame, order: list[str], dataset: str,
                  policies: list[str], metric_label: str):
    """One panel per policy of `dataset`: every done seed (dots) and the mean (bar) per baseline, with
    failed seeds (x) and missing seeds (o) at the panel's left edge so that gaps are never silent."""
    from matplotlib.lines import Line2D

    n = len(order)
    figure = new_figure(PAGE_WIDTH, 0.75 + 0.16 * n)
    axes = figure.subplots(1, len(policies), sharex=True, sharey=True, squeeze=False)
    axes = axes[0]
    here = trials[(trials["dataset"] == dataset) & trials["policy"].isin(policies)]
    # One x range for every policy panel of the dataset, so that the panels compare at a glance.
    done = here[(here["status"] == "done") & here["value"].notna()]
    values = done["value"].to_numpy(dtype=float) * 100
    low, high = (values.min(), values.max()) if len(values) else (0.0, 100.0)
    pad = max(0.08 * (high - low), 0.2)
    gaps = len(done) < len(here)
    # A strip left of the data holds the failed and missing marks, where the dataset has any.
    edge = low - 2.5 * pad
    axes[0].set_xlim(edge - pad if gaps else low - pad, high + pad)
    for ax, policy in zip(axes, policies, strict=True):
        condition = condition_name(dataset, policy)
        mine_policy = here[here["policy"] == policy]
        for y, baseline in enumerate(order):
            mine = mine_policy[mine_policy["baseline"] == baseline].sort_values(["seed", "trial_id"])
            seeds = mine[(mine["status"] == "done") & mine["value"].notna()]["value"].to_numpy() * 100
            ax.plot(seeds, np.full(len(seeds), y), "o", ms=2.2, color=SEED_COLOR, alpha=0.6, mec="none")
            cell = cells[(cells["baseline"] == baseline) & (cells["condition"] == condition)]
            if len(cell) and not math.isnan(cell["mean"].iloc[0]):
                ax.plot([cell["mean"].iloc[0] * 100] * 2, [y - 0.32, y + 0.32], color=MEAN_COLOR, lw=1.1)
            failed = int((mine["status"] == "failed").sum())
            missing = int((mine["status"] == "missing").sum()) + int(
                ((mine["status"] == "done") & mine["value"].isna()).sum())
            marks = ["x"] * failed + ["o"] * missing
            for i, mark in enumerate(marks):
                ax.plot(edge + (i - (len(marks) - 1) / 2) * pad * 0.3, y, mark, ms=2.6, mew=0.6,
                        color=FAILED_COLOR if mark == "x" else MISSING_COLOR,
                        mfc="none" if mark == "o" else FAILED_COLOR)
        if gaps:
            ax.axvline(edge + 1.25 * pad, color="#cccccc", lw=0.4)
        ax.set_title(policy)
        ax.grid(axis="x", lw=0.3, color="#e5e5e5")
        ax.set_axisbelow(True)
        ax.tick_params(axis="x", labelsize=6)
    if gaps:
        # Ticks in the strip would read as accuracies (the panels share their ticks).
        axes[0].set_xticks([t for t in axes[0].get_xticks() if edge + 1.25 * pad < t <= high + pad])
    axes[0].set_yticks(range(n), order)
    axes[0].set_ylim(n - 0.5, -0.5)
    figure.supxlabel(f"{dataset}: {metric_label} (%)", fontsize=7)
    handles = [Line2D([], [], ls="", marker="o", ms=2.6, color=SEED_COLOR, label="seed"),
               Line2D([], [], ls="", marker="|", ms=6, mew=1.1, color=MEAN_COLOR, label="mean"),
               Line2D([], [], ls="", marker="x", ms=3, mew=0.6, color=FAILED_COLOR, label="failed seed"),
               Line2D([], [], ls="", marker="o", ms=3, mfc="none", mew=0.6, color=MISSING_COLOR,
                      label="missing seed")]
    figure.legend(handles=handles, loc="outside upper center", ncol=4, frameon=False)
    return figure


def kendall_heatmap(matrix: pd.DataFrame):
    """Kendall's tau between the baseline rankings of every two conditions (lower triangle labelled)."""
    names = [short_condition(c) for c in matrix.columns]
    m = len(names)
    side = min(COLUMN_WIDTH, max(2.2, 0.9 + 0.22 * m))
    figure = new_figure(side, side - 0.2)
    ax = figure.subplots()
    values = matrix.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu", vmin=-1, vmax=1)
    for i in range(m):
        for j in range(i):
            if not math.isnan(values[i, j]):
                text = f"{values[i, j]:.2f}".replace("0.", ".")
                ax.text(j, i, text, ha="center", va="center", fontsize=5,
                        color="white" if abs(values[i, j]) > 0.6 else "black")
    ax.set_xticks(range(m), names, rotation=90)
    ax.set_yticks(range(m), names)
    ax.tick_params(length=0, labelsize=6)
    colorbar = figure.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    colorbar.ax.tick_params(labelsize=6)
    colorbar.set_label("Kendall's \u03c4", fontsize=6.5)
    return figure


# Baseline colours of the plots that tell baselines apart by colour: tab20's dark shades, then its light
# ones, by leaderboard position; markers tell policies apart (hollow: a selection other than magnitude).
BASELINE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                   "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
                   "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")
RULE_MARKERS = {"base": "o", "1m": "s", "3ops": "^", "4out": "D"}
OTHER_MARKERS = ("v", "P", "X", "*", "h", "<", ">")


def baseline_color(index: int) -> str:
    return BASELINE_COLORS[index % len(BASELINE_COLORS)]


def policy_marker(policy: str, known: list[str]) -> tuple[str, bool]:
    """(marker, filled) of a policy label such as `base` or `base/pt`."""
    rule, _, selection = policy.partition("/")
    others = [p for p in dict.fromkeys(p.partition("/")[0] for p in known) if p not in RULE_MARKERS]
    marker = RULE_MARKERS.get(rule) or OTHER_MARKERS[others.index(rule) % len(OTHER_MARKERS)]
    return marker, not selection


def cost_plot(costs: pd.DataFrame, order: list[str], datasets: dict[str, list[str]], metric_short: str):
    """Per dataset (a row), mean accuracy of every cell against its parameters (left) and against the
    hours one of its results took, search + selection + evaluation (right): colour = baseline, marker =
    policy. A log scale for the hours where they span more than a factor of 20."""
    from matplotlib.lines import Line2D

    rows = [d for d in datasets if (costs["dataset"] == d).any()]
    policies = [p for d in rows for p in datasets[d]]
    policies = list(dict.fromkeys(policies))
    unit = cost_unit(costs)
    hours = costs["gpu_hours"] + costs["cpu_hours"]
    names = [b for b in order if (costs["baseline"] == b).any()]
    # The legend fills column by column: baselines in their own columns, then policies in theirs, in as
    # few rows as keep it to 7 columns.
    legend_rows = next(r for r in range(1, len(names) + len(policies) + 1)
                       if math.ceil(len(names) / r) + math.ceil(len(policies) / r) <= 7)
    figure = new_figure(PAGE_WIDTH, 0.45 + 0.13 * legend_rows + 1.45 * len(rows))
    axes = figure.subplots(len(rows), 2, squeeze=False, sharex="col")
    positive = hours[hours > 0]
    log = len(positive) > 0 and positive.max() / positive.min() > 20
    for (left, right), dataset in zip(axes, rows, strict=True):
        here = costs[costs["dataset"] == dataset]
        for row in here.to_dict("records"):
            color = baseline_color(order.index(row["baseline"]))
            marker, filled = policy_marker(row["policy"], policies)
            style = {"ls": "", "marker": marker, "ms": 3.4, "mew": 0.7, "color": color,
                     "mfc": color if filled else "white", "alpha": 0.9}
            if not math.isnan(row["params"]):
                left.plot(row["params"] / 1e6, row["mean"] * 100, **style)
            total = row["gpu_hours"] + row["cpu_hours"]
            if total > 0 or not log:
                right.plot(total, row["mean"] * 100, **style)
        left.set_ylabel(f"{dataset}\n{metric_short} (%)")
        for ax in (left, right):
            ax.grid(lw=0.3, color="#e5e5e5")
            ax.set_axisbelow(True)
            ax.tick_params(labelsize=6)
        right.tick_params(labelleft=True)
    if log:
        axes[0][1].set_xscale("log")
    axes[-1][0].set_xlabel("parameters (millions)")
    phases = "search + selection + evaluation" if costs["policy"].str.contains("/").any() else (
        "search + evaluation")
    axes[-1][1].set_xlabel(f"{unit}-hours per result ({phases})")
    def padded(handles: list) -> list:
        blank = Line2D([], [], ls="", marker="", label=" ")
        return handles + [blank] * (-len(handles) % legend_rows)

    handles = padded([Line2D([], [], ls="", marker="o", ms=3.4, color=baseline_color(order.index(b)),
                             label=b) for b in names])
    markers = []
    for policy in policies:
        marker, filled = policy_marker(policy, policies)
        markers.append(Line2D([], [], ls="", marker=marker, ms=3.4, mew=0.7, color="#555555",
                              mfc="#555555" if filled else "white", label=policy))
    handles += padded(markers)
    figure.legend(handles=handles, loc="outside upper center", ncol=len(handles) // legend_rows,
                  frameon=False, columnspacing=1.2, handletextpad=0.3)
    return figure


def op_shares(history: list[dict], cell: str = "normal") -> tuple[np.ndarray, np.ndarray]:
    """(epochs, shares): per recorded epoch (1-based), each op's share of the cell's node weights, the
    column sums of its (20, 7) matrix over their total (5, one per node)."""
    epochs = np.array([int(entry["epoch"]) + 1 for entry in history])
    sums = np.array([np.asarray(entry[cell], dtype=float).sum(axis=0) for entry in history])
    return epochs, sums / sums.sum(axis=1, keepdims=True)


def arch_evolution_plot(searches: list[dict], histories: dict[str, list[dict]], order: list[str]):
    """One panel per baseline (leaderboard order): each op's share of the normal cell's node weights
    after every search epoch, for one representative search of the baseline (tables.
    representative_searches); the dotted line is the uniform share, 1/7."""
    from matplotlib.lines import Line2D

    from .cells import PRIMITIVE_COLORS

    searches = sorted(searches, key=lambda s: order.index(s["baseline"]) if s["baseline"] in order
                      else len(order))
    n = len(searches)
    columns = min(4, n)
    rows = math.ceil(n / columns)
    width = PAGE_WIDTH if columns > 2 else COLUMN_WIDTH + 1.6 * (columns - 1)
    figure = new_figure(width, 0.55 + 0.13 * (2 if width > 5 else 4) + 1.15 * rows)
    axes = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
    ops = list(PRIMITIVE_COLORS)
    top = 0.0
    for ax, search in zip(axes.flat, searches, strict=False):
        epochs, shares = op_shares(histories[search["trial_id"]])
        for j, op in enumerate(ops):
            ax.plot(epochs, shares[:, j], color=PRIMITIVE_COLORS[op], lw=0.9, marker="o" if len(epochs) < 6
                    else None, ms=1.8)
        ax.axhline(1 / len(ops), color="#999999", lw=0.5, ls=":")
        top = max(top, float(shares.max()))
        ax.set_title(f"{search['baseline']} ({search['dataset']}, seed {search['seed']})", fontsize=6.5)
        ax.grid(lw=0.3, color="#e5e5e5")
        ax.set_axisbelow(True)
        ax.tick_params(labelsize=6)
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    for ax in list(axes.flat)[max(0, n - columns):n]:  # the lowest panel of each column: its epochs
        ax.tick_params(labelbottom=True)
    axes[0][0].set_ylim(0, max(top * 1.08, 0.3))
    figure.supxlabel("search epoch", fontsize=7)
    figure.supylabel("share of the normal cell's\nnode weights", fontsize=7)
    handles = [Line2D([], [], color=PRIMITIVE_COLORS[op], lw=1.2, label=op) for op in ops]
    handles.append(Line2D([], [], color="#999999", lw=0.6, ls=":", label="uniform (1/7)"))
    figure.legend(handles=handles, loc="outside upper center", ncol=4 if width > 5 else 2, frameon=False,
                  columnspacing=1.2)
    return figure
