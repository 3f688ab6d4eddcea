"""What the accuracy plot draws, read from the figure's artists: per baseline row, one dot per done seed
at its accuracy in percent, the mean bar at the mean of those seeds, and a mark per failed or missing
seed."""

from __future__ import annotations

import numpy as np
import pytest
from test_report import FAILED, MISSING, make_store

from lhdbench.report import build_report, plots
from lhdbench.report.tables import evaluations

# Distinct means everywhere, seeds not in accuracy order, and gaps, so a bar or a dot taken from another
# row, another seed or another scale lands somewhere else.
CELLS = {("alpha", "cifar10", "base"): [0.912, 0.874, FAILED, 0.893],
         ("alpha", "cifar10", "1m"): [0.801, 0.855, 0.832, 0.818],
         ("beta", "cifar10", "base"): [0.861, 0.902, 0.848, MISSING],
         ("beta", "cifar10", "1m"): [MISSING, MISSING, MISSING, MISSING],
         ("gamma", "cifar10", "base"): [0.781, 0.927, 0.795, 0.806],
         ("gamma", "cifar10", "1m"): [0.871, FAILED, 0.899, 0.884]}
POLICIES = ["base", "1m"]


@pytest.fixture(scope="module")
def panels(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    make_store(root, CELLS)
    report = build_report(root)
    with plots.style():
        figure = plots.accuracy_plot(evaluations(report.trials), report.cells, report.order, "cifar10",
                                     POLICIES, report.metric_short)
    axes = figure.axes[: len(POLICIES)]
    rows = {tick.get_text(): tick.get_position()[1] for tick in axes[0].get_yticklabels()}
    return {ax.get_title(): ax for ax in axes}, rows


def row_lines(ax, y: float):
    """The line artists drawn in the row at height y: points at y, or a vertical bar across it."""
    out = []
    for line in ax.get_lines():
        if line.get_transform() != ax.transData:  # the gap strip's separator spans the axes, no row
            continue
        ys = np.asarray(line.get_ydata(), dtype=float)
        if len(ys) and (np.all(ys == y) or (len(ys) == 2 and ys.min() < y < ys.max())):
            out.append(line)
    return out


def test_panels_and_rows_cover_every_baseline_and_policy(panels):
    axes, rows = panels
    assert sorted(axes) == sorted(POLICIES)
    assert sorted(rows) == sorted({b for b, _, _ in CELLS})
    assert sorted(rows.values()) == list(range(len(rows)))


@pytest.mark.parametrize("policy", POLICIES)
def test_seed_dots_mean_bar_and_gap_marks_per_row(panels, policy):
    axes, rows = panels
    ax = axes[policy]
    for baseline, y in rows.items():
        entries = CELLS[(baseline, "cifar10", policy)]
        done = [100 * e for e in entries if e not in (FAILED, MISSING)]
        lines = row_lines(ax, y)
        dots = [ln for ln in lines if ln.get_marker() == "o" and ln.get_color() == plots.SEED_COLOR]
        bars = [ln for ln in lines if ln.get_color() == plots.MEAN_COLOR]
        failed = [ln for ln in lines if ln.get_marker() == "x"]
        missing = [ln for ln in lines if ln.get_marker() == "o" and ln.get_color() == plots.MISSING_COLOR]
        seeds = np.concatenate([np.asarray(d.get_xdata(), dtype=float) for d in dots]) if dots else []
        np.testing.assert_allclose(np.sort(seeds), np.sort(done), rtol=1e-12)  # order draws the same
        if done:
            assert len(bars) == 1
            np.testing.assert_allclose(bars[0].get_xdata(), [np.mean(done)] * 2, rtol=1e-12)
        else:
            assert bars == []
        assert len(failed) == entries.count(FAILED)
        assert len(missing) == sum(e is MISSING for e in entries)
        assert len(lines) == len(dots) + len(bars) + len(failed) + len(missing)
        lowest = min(100 * e for (_, _, p), es in CELLS.items() if p == policy for e in es
                     if e not in (FAILED, MISSING))
        assert all(x < lowest for mark in failed + missing for x in mark.get_xdata())  # the left strip
