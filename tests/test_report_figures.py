"""The report's newer figures on a synthetic store at the full LHD scale (12 methods x 12 conditions,
with genotypes and arch histories): the best architecture of each condition, accuracy against cost, the
evolution of the architecture weights, the shared x range of the accuracy panels, and every figure's text
inside its frame without overlaps. Also what an old store without arch histories gets."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from test_report import FAILED, make_store, record

from lhdbench.report import build_report, plots, write_report
from lhdbench.report.build import best_architecture_figure
from lhdbench.report.content import best_architecture_name
from lhdbench.report.tables import evaluations
from lhdbench.space import POLICIES, ArchWeights, discretize
from lhdbench.space.layout import PRIMITIVES
from lhdbench.store import Store

METHODS = ("darts", "darts-minus", "beta-darts", "pcdarts", "gaea-erm", "gaea-bilevel", "spdarts", "drnas",
           "milenas", "surgenas", "gdas", "random")
DATASETS = ("cifar10", "cifar100", "svhn")
ACCURACY = {"cifar10": 0.97, "cifar100": 0.82, "svhn": 0.975}
PARAMS = {"base": 3.3e6, "1m": 1.6e6, "3ops": 4.4e6, "4out": 3.9e6}
PROTOCOL = {"name": "paper", "evaluate": {"epochs": 600, "best_after_epoch": 400}}


def _history(rng: np.random.Generator, method_index: int, epochs: int) -> tuple[list[dict], ArchWeights]:
    """Per epoch exported weights drifting toward a method's favourite ops, rounded as a search records
    them; and the last epoch's weights."""
    start = [0.1 * rng.standard_normal(shape) for shape in ((20, 7), (20, 7), (2, 5), (2, 5))]
    drift = np.zeros((20, 7))
    drift[:, method_index % 7] = 2.5
    drift[:, 2] += 1.0 if method_index % 3 == 0 else 0.0  # some methods drift toward skip_connect
    history, weights = [], None
    for epoch in range(epochs):
        t = (epoch + 1) / epochs
        weights = ArchWeights.from_logits(start[0] + t * drift + 0.3 * rng.standard_normal((20, 7)),
                                          start[1] + t * drift[::-1], start[2] + t, start[3] - t)
        history.append({"epoch": epoch, **{name: [[float(f"{v:.5g}") for v in row] for row in matrix.tolist()]
                                           for name, matrix in zip(("normal", "reduce", "normal_output",
                                                                    "reduce_output"), weights.matrices(),
                                                                   strict=True)}})
    return history, weights


def synthetic_store(root: Path, methods=METHODS, datasets=DATASETS, policies=tuple(POLICIES),
                    seeds=(0, 1), epochs=12, transfer: dict | None = None, perturbation: bool = False,
                    seed: int = 0) -> Store:
    """A store as a full run writes it: per (method, dataset, seed) a search with an arch history
    (`random` trains nothing and has none) and per policy an evaluation of its discretized genotype;
    `transfer` {searched: [evaluated]} adds transfer evaluations, `perturbation` a selection per
    policy with its own evaluation."""
    rng = np.random.default_rng(seed)
    store = Store(root)
    planned: dict[str, dict] = {}
    for m, method in enumerate(methods):
        for dataset in datasets:
            for s in seeds:
                search_id = f"search-{method}-{dataset}-s{s}"
                history, weights = _history(rng, m, epochs) if method != "random" else ([], None)
                if weights is None:
                    weights = ArchWeights.from_logits(*(rng.standard_normal(shape) for shape in
                                                        ((20, 7), (20, 7), (2, 5), (2, 5))))
                store.write_record(record(search_id, "search", method, dataset, s, protocol=PROTOCOL,
                                          wall_time_s=600.0 + 900.0 * (m % 5) if method != "random" else 5.0,
                                          gpu=1.0).update(arch_history=history))
                planned[search_id] = {"trial_id": search_id, "phase": "search", "baseline": method,
                                      "dataset": dataset, "seed": s, "policy": None, "search_trial_id": None,
                                      "protocol": "paper"}
                targets = [dataset, *(transfer or {}).get(dataset, [])]
                for target, policy in itertools.product(targets, policies):
                    genotype = discretize(weights, POLICIES[policy]).to_dict()
                    kinds = [("magnitude", None)] + ([("perturbation", f"select-{search_id}-{policy}")]
                                                     if perturbation else [])
                    for selection, select_id in kinds:
                        if select_id and select_id not in planned:
                            selection_record = record(select_id, "search", method, dataset, s,
                                                      protocol=PROTOCOL, wall_time_s=1800.0, gpu=1.0)
                            store.write_record(selection_record.update(
                                phase="select", policy=policy, search_trial_id=search_id, genotype=genotype,
                                measurements=10, hparams=None, arch_file=None))
                            planned[select_id] = {"trial_id": select_id, "phase": "select",
                                                  "baseline": method, "dataset": dataset, "seed": s,
                                                  "policy": policy, "search_trial_id": search_id,
                                                  "protocol": "paper"}
                        to = "" if target == dataset else f"-to-{target}"
                        eval_id = f"eval-{method}-{dataset}{to}-s{s}-{policy}" + ("-pt" if select_id else "")
                        acc = ACCURACY[target] - 0.004 * m + 0.003 * rng.standard_normal() - (
                            0.002 if select_id else 0.0)
                        rec = record(eval_id, "evaluate", method, target, s, policy=policy,
                                     search_trial_id=search_id, acc=float(acc), protocol=PROTOCOL,
                                     wall_time_s=30000.0 + 2000.0 * s, gpu=1.0,
                                     params=int(PARAMS[policy] * (1 + 0.05 * rng.standard_normal())))
                        store.write_record(rec.update(genotype=genotype, selection=selection,
                                                      selection_trial_id=select_id, search_dataset=dataset))
                        planned[eval_id] = {"trial_id": eval_id, "phase": "evaluate", "baseline": method,
                                            "dataset": target, "seed": s, "policy": policy,
                                            "search_trial_id": search_id, "protocol": "paper",
                                            "selection": selection, "selection_trial_id": select_id,
                                            "search_dataset": dataset}
    store.add_to_plan({"suite": "synthetic", "preset": "paper", "protocol": "paper",
                       "baselines": list(methods), "datasets": list(datasets), "policies": list(policies),
                       "seeds": list(seeds)}, planned)
    return store


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The LHD suite's shape: 12 methods x 3 datasets x 4 policies, 2 seeds."""
    root = tmp_path_factory.mktemp("full")
    synthetic_store(root / "store")
    return build_report(root / "store"), root


def drawn_texts(figure) -> list:
    """(text, window extent) of every non-empty text the figure draws (tick labels outside an axis's view
    are not drawn and are left out)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    hidden = set()
    for ax in figure.axes:
        for axis, (low, high) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not low - 1e-9 * abs(high - low) <= tick.get_loc() <= high + 1e-9 * abs(high - low):
                    hidden.update({id(tick.label1), id(tick.label2)})
    out = []
    for text in figure.findobj(Text):
        if text.get_visible() and text.get_text().strip() and id(text) not in hidden:
            out.append((text, text.get_window_extent(renderer)))
    return out


def text_problems(figure) -> list[str]:
    """Texts that stick out of the figure's frame or overlap another text."""
    frame = figure.bbox
    placed = drawn_texts(figure)
    problems = [f"outside: {t.get_text()!r}" for t, box in placed
                if box.x0 < frame.x0 - 0.5 or box.x1 > frame.x1 + 0.5 or box.y0 < frame.y0 - 0.5
                or box.y1 > frame.y1 + 0.5]
    for (a, box_a), (b, box_b) in itertools.combinations(placed, 2):
        if (min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0) > 0.5
                and min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0) > 0.5):
            problems.append(f"overlap: {a.get_text()!r} and {b.get_text()!r}")
    return problems


def test_every_figure_keeps_its_text_inside_the_frame_without_overlaps(full):
    report, _ = full
    evals = evaluations(report.trials)
    with plots.style():
        figures = {
            "accuracy_cost": plots.cost_plot(report.result_costs, report.order, report.datasets,
                                             report.metric_short),
            "arch_evolution": plots.arch_evolution_plot(report.evolution, report.trials.arch_histories,
                                                        report.order),
            "cd": plots.cd_diagram(report.friedman), "ranks": plots.rank_plot(
                report.board, report.ranks, report.friedman, report.metric_short)}
        for dataset, policies in report.datasets.items():
            figures[f"accuracy_{dataset}"] = plots.accuracy_plot(evals, report.cells, report.order, dataset,
                                                                 policies, report.metric_short)
        for best in report.best.to_dict("records"):
            figures[best_architecture_name(best["condition"])] = best_architecture_figure(report, best)
        problems = {name: text_problems(figure) for name, figure in figures.items()}
    assert {name: p for name, p in problems.items() if p} == {}
    assert len(figures) == 4 + 3 + 12


def test_cd_diagram_title_and_labels_fit_inside_the_frame(full):
    report, _ = full
    with plots.style():
        figure = plots.cd_diagram(report.friedman)
        title = figure.axes[0].title
        placed = dict((t, box) for t, box in drawn_texts(figure))
    frame = figure.bbox
    box = placed[title]
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and box.y1 <= frame.y1
    assert "critical difference" in title.get_text()
    labels = [t for t in placed if any(m in t.get_text() for m in METHODS)]
    assert len(labels) == len(METHODS)
    assert all(frame.x0 <= placed[t].x0 and placed[t].x1 <= frame.x1 for t in labels)


def test_accuracy_panels_of_a_dataset_share_one_x_range(tmp_path):
    # Panel values far apart: each panel alone would get its own range.
    make_store(tmp_path, {("a", "cifar10", "base"): [0.95, 0.96], ("a", "cifar10", "1m"): [0.50, 0.52],
                          ("b", "cifar10", "base"): [0.90, FAILED], ("b", "cifar10", "1m"): [0.60, 0.61],
                          ("a", "svhn", "base"): [0.97], ("b", "svhn", "base"): [0.96]})
    report = build_report(tmp_path)
    with plots.style():
        figure = plots.accuracy_plot(evaluations(report.trials), report.cells, report.order, "cifar10",
                                     ["base", "1m"], report.metric_short)
    base, one_m = figure.axes[:2]
    assert base.get_xlim() == one_m.get_xlim()
    low, high = base.get_xlim()
    assert low < 50 and high > 96
    assert list(base.get_xticks()) == list(one_m.get_xticks())


def test_best_architecture_of_each_condition_is_the_highest_value_ties_to_the_lowest_trial_id(tmp_path):
    make_store(tmp_path, {("b", "cifar10", "base"): [0.91, 0.93], ("a", "cifar10", "base"): [0.93, 0.80],
                          ("a", "cifar10", "1m"): [0.70, FAILED], ("b", "cifar10", "1m"): [0.69, 0.71]})
    best = build_report(tmp_path).best.set_index("condition")
    # 0.93 twice: e-a-cifar10-base-0 sorts before e-b-cifar10-base-1.
    assert best.loc["cifar10/base", "trial_id"] == "e-a-cifar10-base-0"
    assert best.loc["cifar10/1m", ["baseline", "seed", "value"]].tolist() == ["b", 1, 0.71]


def test_each_conditions_best_architecture_is_drawn_and_embedded(full):
    report, root = full
    written = write_report(report, root / "out", ("md", "png", "csv", "tex"))
    names = {p.name for p in written}
    for condition in report.conditions:
        assert f"{best_architecture_name(condition)}.png" in names
    text = (root / "out" / "leaderboard.md").read_text()
    assert "## Best architectures" in text and "(plots/best_arch_cifar100_3ops.png)" in text
    assert "(plots/accuracy_cost.png)" in text and "(plots/arch_evolution.png)" in text
    assert {"best_archs.csv", "accuracy_cost.csv", "best_archs.tex"} <= names
    # The drawn architecture is the recorded genotype of the best evaluation.
    best = report.best.set_index("condition").loc["svhn/4out"]
    with plots.style():
        figure = best_architecture_figure(report, report.best.set_index("condition").loc["svhn/4out"]
                                          .to_dict() | {"condition": "svhn/4out"})
    ops = sorted(t.get_text() for t in figure.axes[0].texts if ".edge" in (t.get_gid() or ""))
    genotype = report.trials.genotypes[best["trial_id"]]
    assert ops == sorted(e[0] for cell in ("normal", "reduce") for e in genotype[cell])


def test_result_cost_is_search_plus_selection_plus_evaluation_per_result(tmp_path):
    synthetic_store(tmp_path, methods=("darts", "gdas", "random"), datasets=("cifar10",),
                    policies=("base", "1m"), epochs=2, perturbation=True)
    report = build_report(tmp_path)
    costs = report.result_costs.set_index(["baseline", "condition"])
    # darts (index 0): search 600 s; evaluations 30000 s (seed 0) and 32000 s (seed 1); selection 1800 s.
    assert costs.loc[("darts", "cifar10/base"), "gpu_hours"] == pytest.approx((600 + 31000) / 3600)
    assert costs.loc[("darts", "cifar10/base/pt"), "gpu_hours"] == pytest.approx((600 + 1800 + 31000) / 3600)
    assert costs.loc[("gdas", "cifar10/1m"), "gpu_hours"] == pytest.approx((1500 + 31000) / 3600)
    assert (costs["cpu_hours"] == 0).all() and (costs["results"] == 2).all()
    mean = report.cells.set_index(["baseline", "condition"]).loc[("gdas", "cifar10/1m"), "mean"]
    assert costs.loc[("gdas", "cifar10/1m"), "mean"] == mean
    with plots.style():
        figure = plots.cost_plot(report.result_costs, report.order, report.datasets, report.metric_short)
    left, right = figure.axes[:2]
    assert len(left.get_lines()) == len(right.get_lines()) == len(report.result_costs)
    hollow = [ln for ln in right.get_lines() if ln.get_markerfacecolor() == "white"]
    assert len(hollow) == (report.result_costs["policy"].str.endswith("/pt")).sum()
    assert right.get_xlabel().startswith("GPU-hours per result")


def test_arch_evolution_shows_one_search_per_baseline_first_dataset_lowest_seed(tmp_path):
    synthetic_store(tmp_path, methods=("darts", "gdas", "random"), datasets=("svhn", "cifar100"),
                    policies=("base",), seeds=(1, 0), epochs=3)
    report = build_report(tmp_path)
    # random trains nothing, so it has no arch history and no panel.
    assert [(s["baseline"], s["dataset"], s["seed"]) for s in report.evolution] == [
        ("darts", "cifar100", 0), ("gdas", "cifar100", 0)]
    with plots.style():
        figure = plots.arch_evolution_plot(report.evolution, report.trials.arch_histories, report.order)
    panels = [ax for ax in figure.axes if ax.get_visible() and ax.axison]
    assert sorted(ax.get_title() for ax in panels) == ["darts (cifar100, seed 0)", "gdas (cifar100, seed 0)"]
    history = report.trials.arch_histories["search-darts-cifar100-s0"]
    lines = {ln.get_color(): ln for ln in panels[0].get_lines() if len(ln.get_xdata()) == 3}
    assert len(lines) == len(PRIMITIVES)
    shares = np.array([np.asarray(h["normal"]).sum(axis=0) / np.asarray(h["normal"]).sum() for h in history])
    from lhdbench.report.cells import PRIMITIVE_COLORS

    for j, op in enumerate(PRIMITIVES):
        line = lines[PRIMITIVE_COLORS[op]]
        np.testing.assert_allclose(line.get_ydata(), shares[:, j], rtol=1e-12)
        assert list(line.get_xdata()) == [1, 2, 3]


def test_old_store_without_arch_history_draws_no_evolution(tmp_path):
    make_store(tmp_path / "s", {("a", "cifar10", "base"): [0.9], ("b", "cifar10", "base"): [0.8]})
    report = build_report(tmp_path / "s")
    assert report.evolution == []
    written = write_report(report, tmp_path / "o", ("md", "png"))
    assert not any("arch_evolution" in p.name for p in written)
    text = (tmp_path / "o" / "leaderboard.md").read_text()
    assert "Architecture weights during the search" not in text
    # The hand-made records carry an empty genotype: nothing to draw, and the leaderboard says so.
    assert not any(p.name.startswith("best_arch_") for p in written)
    assert "Not drawn: the record's genotype is not a valid genotype." in text


def test_transfer_and_perturbation_conditions_get_their_own_rows_and_markers(tmp_path):
    synthetic_store(tmp_path, methods=("darts", "gdas", "random"), datasets=("cifar10",),
                    policies=("base", "4out"), epochs=2, transfer={"cifar10": ["svhn"]}, perturbation=True)
    report = build_report(tmp_path)
    assert list(report.datasets) == ["cifar10", "cifar10>svhn"]
    assert report.datasets["cifar10"] == ["base", "4out", "base/pt", "4out/pt"]
    assert set(report.best["condition"]) == set(report.conditions)
    assert best_architecture_name("cifar10>svhn/base/pt") == "best_arch_cifar10-to-svhn_base-pt"
    with plots.style():
        figure = plots.cost_plot(report.result_costs, report.order, report.datasets, report.metric_short)
        assert text_problems(figure) == []
    assert [ax.get_ylabel().split("\n")[0] for ax in figure.axes[::2]] == ["cifar10", "cifar10>svhn"]


def test_transfer_rankings_are_compared_with_both_transductive_ones(tmp_path):
    """Kendall's tau of cifar10>svhn/base against svhn/base and cifar10/base, recomputed here from the
    records' accuracies (means over seeds) with scipy."""
    import json

    from scipy.stats import kendalltau

    synthetic_store(tmp_path / "store", methods=("darts", "gdas", "random", "drnas"),
                    datasets=("cifar10", "svhn"), policies=("base", "4out"), epochs=2,
                    transfer={"cifar10": ["svhn"]})
    means: dict[tuple[str, str], list[float]] = {}
    for path in (tmp_path / "store" / "records").glob("eval-*.json"):
        r = json.loads(path.read_text())
        label = r["search_dataset"] + (f">{r['dataset']}" if r["dataset"] != r["search_dataset"] else "")
        means.setdefault((f"{label}/{r['policy']}", r["baseline"]), []).append(r["final_test_acc"])
    methods = ["darts", "drnas", "gdas", "random"]

    def ranking(condition):
        return [np.mean(means[(condition, m)]) for m in methods]

    report = build_report(tmp_path / "store")
    rows = {r["condition"]: r for r in report.transfer.to_dict("records")}
    assert set(rows) == {"cifar10>svhn/base", "cifar10>svhn/4out"}
    for policy in ("base", "4out"):
        row = rows[f"cifar10>svhn/{policy}"]
        assert (row["target"], row["source"]) == (f"svhn/{policy}", f"cifar10/{policy}")
        transfer = ranking(f"cifar10>svhn/{policy}")
        for key, other in (("tau_target", f"svhn/{policy}"), ("tau_source", f"cifar10/{policy}")):
            assert row[key] == pytest.approx(kendalltau(transfer, ranking(other)).statistic)
    write_report(report, tmp_path / "out", command="test", formats=("md", "csv", "tex"))
    text = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "## Statistics: transfer against transductive rankings" in text
    assert (tmp_path / "out" / "tables" / "transfer.csv").is_file()
    assert (tmp_path / "out" / "tables" / "transfer.tex").is_file()


def test_new_figures_and_tables_are_byte_identical_across_processes(tmp_path):
    """Drawn twice, once in another process under another hash seed: the same bytes."""
    import os
    import subprocess
    import sys

    synthetic_store(tmp_path / "store", methods=("darts", "gdas", "random"), datasets=("cifar10",),
                    policies=("base", "3ops"), epochs=3, transfer={"cifar10": ["svhn"]}, perturbation=True)
    write_report(build_report(tmp_path / "store"), tmp_path / "a", command="test")
    code = ("import sys; from lhdbench.report import build_report, write_report; "
            "write_report(build_report(sys.argv[1]), sys.argv[2], command='test')")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "store"), str(tmp_path / "b")], check=True,
                   env={**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}, timeout=300)
    def files(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    first, second = files(tmp_path / "a"), files(tmp_path / "b")
    assert first.keys() == second.keys()
    assert {"plots/arch_evolution.png", "plots/accuracy_cost.pdf", "tables/best_archs.tex",
            "plots/best_arch_cifar10-to-svhn_3ops-pt.png"} <= set(first)
    assert [p for p in first if first[p] != second[p]] == []


def test_an_arch_history_in_another_format_is_left_out(tmp_path):
    store = synthetic_store(tmp_path, methods=("darts", "gdas", "random"), datasets=("cifar10",),
                            policies=("base",), epochs=2)
    broken = store.records()["search-darts-cifar10-s0"]
    store.write_record(broken.update(arch_history=[{"epoch": 0, "normal": [[0.5, 0.5]]}]))
    report = build_report(tmp_path)
    assert [(s["baseline"], s["seed"]) for s in report.evolution] == [("darts", 1), ("gdas", 0)]
