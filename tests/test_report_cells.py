"""Cell drawings (lhdbench.report.cells) and `lhdbench arch draw`: every kept edge drawn as an arc from
its input to its node with its op name, every output membership drawn, pruned nodes left out, labels
readable (inside the figure, no two overlapping), byte-identical files, and the command's files and
errors. Read from the figure's artists, which carry gids naming what they stand for."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import SKIP_MESSAGE, reference_archs_dir
from matplotlib.colors import to_rgb
from test_report_figures import text_problems

from lhdbench.cli import UsageError
from lhdbench.report import cells, plots
from lhdbench.report.arch_draw import DRAW_FORMATS, arch_draw, drawing_names, parse_draw_formats
from lhdbench.space import POLICIES, ArchWeights, Genotype, discretize, load_any

PUBLISHED = ("cifar10/darts_bilevel/20211010-140512-concate-sum-darts-bilevel.pl",
             "cifar100/pcdarts/20211022-033330-concate-sum-pcdarts-cifar100.pl")


def random_weights(seed: int = 3) -> ArchWeights:
    """Published-style weights: the LHD transforms applied to random logits."""
    rng = np.random.default_rng(seed)
    shapes = ((20, 7), (20, 7), (2, 5), (2, 5))
    return ArchWeights.from_logits(*(2.0 * rng.standard_normal(shape) for shape in shapes))


def published_file() -> Path:
    folder = reference_archs_dir()
    if not folder.is_dir():
        pytest.skip(SKIP_MESSAGE)
    found = [folder / name for name in PUBLISHED if (folder / name).is_file()]
    return found[0] if found else sorted(folder.rglob("*.pl"))[0]


def artists(figure) -> dict[str, object]:
    out = {}
    for artist in figure.axes[0].get_children():
        if artist.get_gid():
            assert artist.get_gid() not in out, artist.get_gid()
            out[artist.get_gid()] = artist
    return out


def vertex_centres(figure, cell: str) -> dict[str, tuple[float, float]]:
    """Vertex name (`input.0`, `node.3`, `output.sum`) -> centre, from the vertex shapes."""
    from matplotlib.patches import Circle

    out = {}
    for gid, artist in artists(figure).items():
        parts = gid.split(".")
        if parts[0] == cell and parts[1] in ("input", "node", "output") and len(parts) == 3:
            if isinstance(artist, Circle):
                out[f"{parts[1]}.{parts[2]}"] = tuple(artist.center)
            else:
                box = artist.get_bbox()
                out[f"{parts[1]}.{parts[2]}"] = ((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)
    return out


def touches(arc, centre: tuple[float, float]) -> bool:
    """Whether the drawn arrow (curve and head, in data inches) begins or ends on the vertex at `centre`:
    a point of its path on the vertex's shape (the curves' control points lie far to the side)."""
    points = arc.get_path().vertices
    return bool(np.any((np.abs(points[:, 0] - centre[0]) <= cells.BOX_WIDTH / 2 + 0.01)
                       & (np.abs(points[:, 1] - centre[1]) <= cells.BOX_HEIGHT / 2 + 0.01)))


def source_name(index: int) -> str:
    return f"input.{index}" if index < 2 else f"node.{index - 2}"


def check_drawing(figure, genotype: Genotype) -> None:
    """Everything the genotype says is drawn, connected where it should be, and nothing more."""
    drawn = artists(figure)
    for cell_name in ("normal", "reduce"):
        cell = getattr(genotype, cell_name)
        centres = vertex_centres(figure, cell_name)
        live = sorted(cell.live_nodes())
        assert sorted(centres) == sorted(["input.0", "input.1", "output.sum", "output.concat"]
                                         + [f"node.{n}" for n in live])  # pruned nodes not drawn
        labels = {gid: a for gid, a in drawn.items() if gid.startswith(f"{cell_name}.edge") and
                  not gid.endswith(".arc")}
        assert len(labels) == len(cell.edges)
        for k, edge in enumerate(cell.edges):
            label = labels[f"{cell_name}.edge{k}"]
            assert label.get_text() == edge.op
            arc = drawn[f"{cell_name}.edge{k}.arc"]
            assert touches(arc, centres[source_name(edge.input)])
            assert touches(arc, centres[f"node.{edge.node}"])
            assert arc.get_edgecolor()[:3] == to_rgb(cells.op_color(edge.op))
        for output in cells.OUTPUTS:
            members = sorted(int(gid.rsplit(".", 1)[1]) for gid in drawn
                             if gid.startswith(f"{cell_name}.{output}."))
            assert members == list(getattr(cell, output))
            for node in members:
                arc = drawn[f"{cell_name}.{output}.{node}"]
                assert touches(arc, centres[f"node.{node}"]) and touches(arc, centres[f"output.{output}"])
    assert text_problems(figure) == []
    width, _ = figure.get_size_inches()
    assert width <= plots.PAGE_WIDTH + 0.05  # prints at its own size on a two-column page


def genotypes() -> list[tuple[str, Genotype]]:
    weights = {"random": random_weights()}
    folder = reference_archs_dir()
    if folder.is_dir():
        weights["published"] = load_any(published_file())
    return [(f"{name}-{policy}", discretize(w, POLICIES[policy])) for name, w in weights.items()
            for policy in POLICIES]


@pytest.mark.parametrize("name,genotype", genotypes(), ids=[n for n, _ in genotypes()])
def test_every_kept_edge_and_output_membership_is_drawn(name, genotype):
    with plots.style():
        figure = cells.draw_genotype(genotype, title=name)
        check_drawing(figure, genotype)


def test_a_published_architecture_under_every_policy(tmp_path):
    path = published_file()  # skips with a message when the reference files are not beside the checkout
    with plots.style():
        for policy in POLICIES:
            genotype = discretize(load_any(path), POLICIES[policy])
            check_drawing(cells.draw_genotype(genotype, title=path.name), genotype)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_each_arc_passes_through_its_label_and_joins_its_vertices(policy):
    genotype = discretize(random_weights(7), POLICIES[policy])
    for name in ("normal", "reduce"):
        layout = cells.layout_cell(getattr(genotype, name), name)
        arcs = {arc.gid: arc for arc in layout.arcs}
        ys = {v.gid.split(".", 1)[1]: v.y for v in layout.vertices}
        for k, edge in enumerate(getattr(genotype, name).edges):
            label = next(lb for lb in layout.labels if lb.gid == f"{name}.edge{k}")
            arc = arcs[f"{name}.edge{k}.arc"]
            p = arc.path_vertices()
            halfway = (p[0] + 3 * p[1] + 3 * p[2] + p[3]) / 8
            np.testing.assert_allclose(halfway, (label.x, label.y), atol=1e-12)
            assert abs(p[0][1] - ys[source_name(edge.input)]) <= cells.PORT_SPREAD + 1e-12
            assert abs(p[-1][1] - ys[f"node.{edge.node}"]) <= cells.PORT_SPREAD + 1e-12
            assert p[0][0] > 0 and p[-1][0] > 0  # op arcs on the right, output arcs on the left
        assert all(arc.apex[0] < 0 for gid, arc in arcs.items() if ".edge" not in gid)


def test_two_and_three_edges_between_the_same_vertices_are_all_readable():
    genotype = Genotype.from_dict({
        "normal": [["sep_conv_3x3", 0, 0], ["skip_connect", 0, 0], ["dil_conv_5x5", 0, 0],
                   ["max_pool_3x3", 1, 1], ["avg_pool_3x3", 1, 1], ["sep_conv_5x5", 2, 1]],
        "normal_output": {"sum": [0, 1], "concat": [1]},
        "reduce": [["skip_connect", 1, 0], ["skip_connect", 0, 0], ["dil_conv_3x3", 2, 3],
                   ["dil_conv_3x3", 1, 3]],
        "reduce_output": {"sum": [3], "concat": [0, 3]}})
    with plots.style():
        figure = cells.draw_genotype(genotype)
        check_drawing(figure, genotype)  # includes: no two labels overlap
    # Node 2 and node 1 of the reduction cell have no incoming edge: pruned, not drawn.
    assert "reduce.node.1" not in artists(figure) and "reduce.node.3" in artists(figure)


def test_labels_are_placed_apart():
    wanted = [(1.0, 0.0, 0.6, 0.12)] * 4 + [(1.2, 0.05, 0.6, 0.12)]
    placed = cells.place_labels(wanted)
    for (a, wa), (b, wb) in itertools.combinations(zip(placed, wanted, strict=True), 2):
        assert abs(a[1] - b[1]) >= (wa[3] + wb[3]) / 2 or abs(a[0] - b[0]) >= (wa[2] + wb[2]) / 2
    assert placed[0] == (1.0, 0.0) and all(x == w[0] for (x, _), w in zip(placed, wanted, strict=True))


def args(paths, out, policy="base", formats="png,pdf,svg", dataset="cifar10") -> argparse.Namespace:
    return argparse.Namespace(paths=[str(p) for p in paths], policy=policy, dataset=dataset, out=str(out),
                              formats=formats)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_arch_draw_writes_each_format_byte_identically(tmp_path, capsys, policy):
    arch = random_weights(policy.__len__()).save(tmp_path / "searched.npz")
    inputs = [arch]
    folder = reference_archs_dir()
    if folder.is_dir():
        inputs.append(published_file())
    for out in ("a", "b"):
        assert arch_draw(args(inputs, tmp_path / out, policy)) == 0
    printed = capsys.readouterr().out.split()
    for path in inputs:
        for fmt in DRAW_FORMATS:
            name = f"{path.stem}-{policy}.{fmt}"
            first, second = (tmp_path / "a" / name).read_bytes(), (tmp_path / "b" / name).read_bytes()
            assert first and first == second, name
            assert str(tmp_path / "a" / name) in printed
    svg = (tmp_path / "a" / f"searched-{policy}.svg").read_text()
    assert "<dc:date>" not in svg and "Matplotlib v" not in svg
    assert 'id="normal.edge0"' in svg and 'id="reduce.sum.' in svg


def test_arch_draw_names_files_under_a_folder_by_their_path(tmp_path):
    for sub in ("cifar10/darts", "svhn/darts"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        random_weights().save(tmp_path / "in" / sub / "run.npz")
    names = [name for _, name in drawing_names([str(tmp_path / "in")])]
    assert names == ["cifar10-darts-run", "svhn-darts-run"]
    assert arch_draw(args([tmp_path / "in"], tmp_path / "out", "4out", "png")) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cifar10-darts-run-4out.png",
                                                                    "svhn-darts-run-4out.png"]
    # Two files that would be drawn under one name: refused before anything is drawn.
    with pytest.raises(UsageError, match="both be drawn as run"):
        drawing_names([str(tmp_path / "in" / "cifar10/darts/run.npz"), str(tmp_path / "in" / "svhn/darts")
                       + "/run.npz"])


def test_arch_draw_bad_input(tmp_path, capsys):
    good = random_weights().save(tmp_path / "good.npz")
    (tmp_path / "broken.pl").write_bytes(b"not a pickle")
    assert arch_draw(args([good, tmp_path / "broken.pl"], tmp_path / "out", formats="svg")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lhdbench: ") and "broken.pl" in err[0]
    assert (tmp_path / "out" / "good-base.svg").is_file()  # the others are still drawn
    with pytest.raises(ValueError, match="unknown format"):
        parse_draw_formats("png,jpg")
    assert parse_draw_formats("svg, png") == ("png", "svg")
    with pytest.raises(UsageError, match="no such file"):
        arch_draw(args([tmp_path / "nope.pl"], tmp_path / "out"))


def test_arch_draw_through_the_command_line(tmp_path, capsys):
    from lhdbench.cli import build_parser, main

    arch = build_parser()._subparsers._group_actions[0].choices["arch"]
    if "draw" not in arch._subparsers._group_actions[0].choices:
        pytest.skip("lhdbench/cli.py has no `arch draw` subcommand yet (the parser lines are in "
                    "lhdbench/report/arch_draw.py's docstring)")
    weights = random_weights().save(tmp_path / "w.npz")
    assert main(["arch", "draw", str(weights), "--policy", "3ops", "--out", str(tmp_path / "o"),
                 "--formats", "png"]) == 0
    assert (tmp_path / "o" / "w-3ops.png").is_file()
    assert main(["arch", "draw", str(weights), "--policy", "3ops", "--out", str(tmp_path / "o"),
                 "--formats", "gif"]) == 2
    assert "unknown format(s) gif" in capsys.readouterr().err
