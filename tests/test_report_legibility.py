"""What a reader sees at the demo's and the paper's scales: the rank plot's labels with 16 methods,
parameter counts at a precision that tells small networks apart, and `arch draw` of a store's search
files named and titled by the search they come from."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from conftest import random_arch_weights
from test_report import make_store
from test_report_figures import METHODS, drawn_texts, synthetic_store, text_problems

from lhdbench.cli import main
from lhdbench.errors import UsageError
from lhdbench.report import build_report, plots, write_report
from lhdbench.report.arch_draw import arch_draw, drawing_names, drawing_title

SIXTEEN = (*METHODS, "dropnas", "ss-darts", "pcd-darts", "edd-darts")


@pytest.fixture(scope="module")
def sixteen(tmp_path_factory):
    root = tmp_path_factory.mktemp("sixteen")
    synthetic_store(root / "store", methods=SIXTEEN, datasets=("cifar10", "svhn"), policies=("base", "4out"),
                    seeds=(0,), epochs=2)
    return build_report(root / "store")


def test_the_rank_plot_of_16_methods_keeps_its_labels_apart_and_inside(sixteen):
    assert len(sixteen.board) == 16 and sixteen.friedman.ok
    with plots.style():
        figure = plots.rank_plot(sixteen.board, sixteen.ranks, sixteen.friedman, sixteen.metric_short)
        assert text_problems(figure) == []
        ax = figure.axes[0]
        placed = dict(drawn_texts(figure))
    labels = [t for t in ax.get_xticklabels() if t in placed]
    values = [int(t.get_text()) for t in labels]
    assert values[0] == 1 and values == sorted(values) and values[-1] >= 15
    boxes = [placed[t] for t in labels]
    gaps = [b.x0 - a.x1 for a, b in zip(boxes, boxes[1:], strict=False)]
    assert min(gaps) > 2  # pixels at the figure's 100 dpi: readable, not touching
    ticks = {*ax.get_xticks(), *ax.get_xticks(minor=True)}
    assert sorted(ticks) == list(range(1, 17))  # still a tick (and a grid line) at every rank
    # The critical-difference label sits inside the plot's frame, however long the bar.
    (cd,) = [box for text, box in placed.items() if text.get_text().startswith("CD =")]
    frame = ax.get_window_extent()
    assert frame.x0 <= cd.x0 and cd.x1 <= frame.x1 and frame.y0 <= cd.y0 and cd.y1 <= frame.y1


def test_a_rank_plot_of_few_methods_labels_every_rank():
    board_methods = ("a", "b", "c", "d", "e")
    cells = {(m, "cifar10", p): [0.9 - 0.01 * i + 0.001 * j]
             for i, m in enumerate(board_methods) for j, p in enumerate(("base", "1m", "3ops"))}
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        make_store(Path(folder), cells)
        report = build_report(Path(folder))
    with plots.style():
        figure = plots.rank_plot(report.board, report.ranks, report.friedman, report.metric_short)
        assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["1", "2", "3", "4", "5"]
        assert text_problems(figure) == []


# -- parameter counts ---------------------------------------------------------------------------------

def parameters_section(text: str) -> tuple[str, list[list[str]]]:
    lines = text.splitlines()
    start = lines.index("## Parameters")
    body = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        body.append(line)
    caption = next(line for line in body if line.startswith("Parameters of"))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in body if line.startswith("| ")]
    return caption, rows


@pytest.mark.parametrize("params,unit,shown", [(8_666, "thousands", "8.7"), (12_946, "thousands", "12.9"),
                                               (3_412_345, "millions", "3.41")])
def test_parameter_counts_are_shown_at_a_precision_that_fits_their_scale(tmp_path, params, unit, shown):
    """The demo's networks have 7,000 to 20,000 parameters: in millions every one read 0.01. Below a
    million they are given in thousands (8,666 -> 8.7); the paper's are in millions to two places."""
    make_store(tmp_path / "store", {("a", "cifar10", "base"): [0.9], ("b", "cifar10", "base"): [0.8]},
               params=params)
    write_report(build_report(tmp_path / "store"), tmp_path / "out", command="test", formats=("md", "tex"))
    caption, rows = parameters_section((tmp_path / "out" / "leaderboard.md").read_text())
    assert f"({unit})" in caption
    assert [row[1] for row in rows[1:]] == [shown, shown]
    tex = (tmp_path / "out" / "tables" / "params.tex").read_text()
    assert f"({unit})" in tex and f" & {shown} \\\\" in tex
    best = (tmp_path / "out" / "tables" / "best_archs.tex").read_text()
    assert f"Params ({'k' if unit == 'thousands' else 'M'})" in best and f" & {shown} \\\\" in best


# -- arch draw ----------------------------------------------------------------------------------------

def search_file(store, folder: str, method: str, seed: int, rng_seed: int):
    path = store / "trials" / folder / "arch.npz"
    path.parent.mkdir(parents=True)
    random_arch_weights(np.random.default_rng(rng_seed), metadata={
        "method": method, "dataset": "cifar10", "seed": seed, "export_temperature": 1.0}).save(path)
    return path


def test_two_search_files_of_one_store_are_drawn_under_their_search(tmp_path, capsys):
    store = tmp_path / "store"
    a = search_file(store, "search-darts-cifar10-s0-0123456789abcdef", "darts", 0, 1)
    b = search_file(store, "search-darts-cifar10-s1-fedcba9876543210", "darts", 1, 2)
    out = tmp_path / "out"
    assert main(["arch", "draw", str(a), str(b), "--policy", "base", "--out", str(out),
                 "--formats", "png"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["darts-cifar10-s0-base.png", "darts-cifar10-s1-base.png"]
    assert drawing_title(a) == "darts searched on cifar10, seed 0"


def test_one_search_twice_in_a_store_is_told_apart_by_its_trial_folder(tmp_path):
    store = tmp_path / "store"
    old = search_file(store, "search-darts-cifar10-s0-0123456789abcdef", "darts", 0, 1)
    new = search_file(store, "search-darts-cifar10-s0-fedcba9876543210", "darts", 0, 2)
    other = search_file(store, "search-gdas-cifar10-s0-0000000000000000", "gdas", 0, 3)
    names = dict((path, name) for path, name in drawing_names([str(store)]))
    assert names == {old: "search-darts-cifar10-s0-0123456789abcdef",
                     new: "search-darts-cifar10-s0-fedcba9876543210", other: "gdas-cifar10-s0"}
    assert arch_draw(argparse.Namespace(paths=[str(store)], policy="4out", dataset="cifar10",
                                        out=str(tmp_path / "out"), formats="svg")) == 0
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_files_without_search_metadata_keep_their_names_and_collisions_stay_refused(tmp_path):
    for sub in ("cifar10/darts", "svhn/darts"):
        (tmp_path / sub).mkdir(parents=True)
        random_arch_weights(np.random.default_rng(0)).save(tmp_path / sub / "arch.npz")
    plain = tmp_path / "cifar10/darts/arch.npz"
    assert drawing_title(plain) == "arch.npz"
    assert drawing_names([str(plain)]) == [(plain, "arch")]
    with pytest.raises(UsageError, match="both be drawn as arch"):
        drawing_names([str(plain), str(tmp_path / "svhn/darts/arch.npz")])
