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

COLUMN_WIDTH = 3.5
PAGE_WIDTH = 7.0
DPI = 300
PLOT_FORMATS = ("png", "pdf")

STYLE = {
    "font.family": "DejaVu Sans", "font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7,
    "xtick.labelsize": 6.5, "ytick.labelsize": 6.5, "legend.fontsize": 6.5, "axes.linewidth": 0.6,
    "xtick.major.width": 0.6, "ytick.major.width": 0.6, "xtick.major.size": 2.5, "ytick.major.size": 2.5,
    "lines.linewidth": 0.8, "pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "lhdbench",
    "path.simplify": False, "figure.dpi": 100, "savefig.dpi": DPI,
}
METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None}}
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
    """Write the figure as stem.<format> for each plot format asked for; return the files."""
    written = []
    for fmt in PLOT_FORMATS:
        if fmt in formats:
            path = stem.with_suffix(f".{fmt}")
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
    figure = new_figure(COLUMN_WIDTH, 0.75 + 0.17 * len(names) + 0.35)
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
    ax.set_ylim(len(names) - 0.4, -0.6 - (1.0 if friedman.ok else 0.0))
    ax.set_xlim(0.5, k + 0.5)
    ax.set_xticks(range(1, k + 1))
    ax.set_xlabel(f"rank by {metric_short} (1 = best)\ndots: one per condition; diamonds: average")
    ax.grid(axis="x", lw=0.3, color="#dddddd")
    ax.set_axisbelow(True)
    if friedman.ok:
        cd = friedman.critical_difference
        ax.plot([1, 1 + cd], [-1.1, -1.1], color=MEAN_COLOR, lw=1.4, solid_capstyle="butt")
        ax.text(1 + cd + 0.15, -1.1, f"CD = {cd:.2f} (Nemenyi, \u03b1 = {friedman.alpha:g})", va="center",
                fontsize=6.5)
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
    ax.set_title(f"critical difference {friedman.critical_difference:.2f} "
                 f"(Nemenyi, \u03b1 = {friedman.alpha:g}, {k} baselines, "
                 f"{len(friedman.conditions)} conditions)", fontsize=6.5, pad=14)
    ax.tick_params(labelsize=6)
    return figure


def accuracy_plot(trials: pd.DataFrame, cells: pd.DataFrame, order: list[str], dataset: str,
                  policies: list[str], metric_label: str):
    """One panel per policy of `dataset`: every done seed (dots) and the mean (bar) per baseline, with
    failed seeds (x) and missing seeds (o) at the panel's left edge so that gaps are never silent."""
    from matplotlib.lines import Line2D

    n = len(order)
    figure = new_figure(PAGE_WIDTH, 0.75 + 0.16 * n)
    axes = figure.subplots(1, len(policies), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, policy in zip(axes, policies, strict=True):
        condition = condition_name(dataset, policy)
        here = trials[(trials["dataset"] == dataset) & (trials["policy"] == policy)]
        done = here[(here["status"] == "done") & here["value"].notna()]
        values = done["value"].to_numpy(dtype=float) * 100
        low, high = (values.min(), values.max()) if len(values) else (0.0, 100.0)
        pad = max(0.08 * (high - low), 0.2)
        gaps = len(done) < len(here)
        # A strip left of the data holds the failed and missing marks, only where a panel has any.
        edge = low - 2.5 * pad
        ax.set_xlim(edge - pad if gaps else low - pad, high + pad)
        for y, baseline in enumerate(order):
            mine = here[here["baseline"] == baseline].sort_values(["seed", "trial_id"])
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
            # Ticks in the strip would read as accuracies.
            ax.set_xticks([t for t in ax.get_xticks() if edge + 1.25 * pad < t <= high + pad])
        ax.set_title(policy)
        ax.grid(axis="x", lw=0.3, color="#e5e5e5")
        ax.set_axisbelow(True)
        ax.tick_params(axis="x", labelsize=6)
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
