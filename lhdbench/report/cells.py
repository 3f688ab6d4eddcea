"""Drawings of a genotype's normal and reduction cells, with matplotlib only (no graphviz).

Each cell is an arc diagram. Its vertices stand in one column, top to bottom in data-flow order: the
cell's two inputs (the previous cell's sum and concat outputs), the live nodes (a pruned node is not
drawn), then the cell's own sum and concat outputs. Every kept (input, op) edge is an arc on the right
of the column, from its input down to its node, coloured by op, with the op name in a box on the arc's
apex: the further apart two vertices are, the further right the arc reaches, so the labels of
different arcs fall in different places, and labels that would still touch are moved apart (up or down)
before anything is drawn, the arc following its label. Two edges between the same two vertices are two
arcs with a label each. The arcs on the left join each node to the outputs it feeds (solid: the sum
output, dashed: the concat output).

Lengths are in inches and the figure is exactly as large as its content, so labels print at their
nominal size (6 pt) when the figure is placed at its own size (at most about 7 in wide for the two
cells side by side). Every artist that stands for a part of the genotype carries a gid (`normal.edge3`,
`reduce.sum.2`, ...), which tests read back and which SVG output keeps as element ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PRIMITIVE_COLORS = {  # the Okabe-Ito palette, distinguishable with the common colour-vision deficiencies
    "max_pool_3x3": "#CC79A7", "avg_pool_3x3": "#E69F00", "skip_connect": "#333333",
    "sep_conv_3x3": "#0072B2", "sep_conv_5x5": "#56B4E9", "dil_conv_3x3": "#009E73",
    "dil_conv_5x5": "#D55E00",
}
OTHER_COLOR = "#888888"
CELL_TITLES = {"normal": "normal cell", "reduce": "reduction cell"}
OUTPUTS = ("sum", "concat")
OUTPUT_STYLE = {"sum": {"color": "#222222", "linestyle": "-"},
                "concat": {"color": "#666666", "linestyle": (0, (3.0, 1.6))}}

FONT_SIZE = 6.0       # points: op labels and vertex names
TITLE_SIZE = 7.0
# Inches. Label apexes stand in lanes ARC_STEP apart, one per number of vertices an arc spans. Arcs whose
# spans differ by one have midpoints half a ROW apart, more than a label is high; arcs whose spans differ
# by two can share a midpoint, and two lanes are wider than the widest op name. So labels collide only
# where two edges join the same two vertices (stacked) or in rare leftovers (moved by place_labels).
ROW = 0.36            # between two vertices of the column
NODE_RADIUS = 0.085
BOX_WIDTH, BOX_HEIGHT = 0.56, 0.16   # the input and output vertices
ARC_BASE, ARC_STEP = 0.30, 0.33      # op arc apex: ARC_BASE + ARC_STEP x (vertices spanned), right
OUT_BASE, OUT_STEP = 0.33, 0.07      # output arc apex, left
LABEL_PAD = 0.025     # inches of white around a label's text
LABEL_GAP = 0.012     # inches kept free between two labels
PANEL_GAP = 0.18      # inches between the two cells
MARGIN = 0.03
TITLE_SPACE = 0.2     # above the cells, for their names
TITLE_LINE = 0.14     # per line of the figure's title


def op_color(op: str) -> str:
    return PRIMITIVE_COLORS.get(op, OTHER_COLOR)


def as_genotype(value: Any):
    """A Genotype from a Genotype or its `to_dict()` form (a record's `genotype`); GenotypeError when
    the dictionary is not a valid genotype."""
    from ..space.genotype import Genotype

    return value if isinstance(value, Genotype) else Genotype.from_dict(value)


# -- layout -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Vertex:
    gid: str
    text: str
    y: float
    kind: str  # "input", "node" or "output"

    def port(self, side: int, offset: float) -> tuple[float, float]:
        """The point on the shape's right (side +1) or left (side -1) edge, `offset` above the centre."""
        if self.kind == "node":
            return (side * float(np.sqrt(NODE_RADIUS**2 - offset**2)), self.y + offset)
        return (side * BOX_WIDTH / 2, self.y + offset)


@dataclass(frozen=True)
class Arc:
    """A curve that leaves `start` and reaches `end` horizontally, on the side of its apex, and passes
    through the apex halfway (where its label sits)."""

    gid: str
    start: tuple[float, float]
    apex: tuple[float, float]
    end: tuple[float, float]
    color: str
    linestyle: Any = "-"

    def path_vertices(self) -> np.ndarray:
        """A cubic Bezier with both control points at one x: B(1/2) = (P0 + 3 C1 + 3 C2 + P3) / 8 is the
        apex when that x is (8 apex - x0 - x3) / 6 and both controls are raised by 4/3 of how far the
        apex lies above the ends' midpoint."""
        (x0, y0), (xa, ya), (x3, y3) = self.start, self.apex, self.end
        xc = (8 * xa - x0 - x3) / 6
        lift = 4 / 3 * (ya - (y0 + y3) / 2)
        return np.array([(x0, y0), (xc, y0 + lift), (xc, y3 + lift), (x3, y3)], dtype=float)


@dataclass(frozen=True)
class Label:
    gid: str
    text: str
    x: float
    y: float
    width: float
    height: float
    color: str


@dataclass
class CellLayout:
    """A cell's drawing in inches, the column of vertices at x = 0 and the first vertex at y = 0."""

    name: str
    vertices: list[Vertex] = field(default_factory=list)
    arcs: list[Arc] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)

    def extent(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) of everything drawn."""
        xs = [-BOX_WIDTH / 2, BOX_WIDTH / 2]
        ys = [v.y + s * BOX_HEIGHT / 2 for v in self.vertices for s in (-1, 1)]
        for arc in self.arcs:
            xs.append(arc.apex[0] + (0.02 if arc.apex[0] > 0 else -0.02))
        for label in self.labels:
            xs += [label.x - label.width / 2, label.x + label.width / 2]
            ys += [label.y - label.height / 2, label.y + label.height / 2]
        return min(xs), max(xs), min(ys), max(ys)


def _text_size(text: str, size: float = FONT_SIZE) -> tuple[float, float]:
    """(width, height) of a single-line text in inches, from the font's outlines (no renderer needed, so
    the layout is the same on every backend)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    prop = FontProperties(family="DejaVu Sans", size=size)
    width, _, _ = TextToPath().get_text_width_height_descent(text, prop, ismath=False)
    _, height, descent = TextToPath().get_text_width_height_descent("Xg", prop, ismath=False)
    return width / 72.0, (height + descent) / 72.0


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return (abs(a[0] - b[0]) < (a[2] + b[2]) / 2 + LABEL_GAP
            and abs(a[1] - b[1]) < (a[3] + b[3]) / 2 + LABEL_GAP)


def place_labels(wanted: Sequence[tuple[float, float, float, float]]) -> list[tuple[float, float]]:
    """Centres for labels (x, y, width, height), placed in the given order: each at its wanted point,
    or moved up or down by the smallest step that frees it from the labels placed before it."""
    placed: list[tuple[float, float, float, float]] = []
    for x, y, width, height in wanted:
        step = (height + LABEL_GAP) / 2
        for k in range(1, 400):
            dy = (k // 2) * step * (1 if k % 2 else -1)  # 0, -1, +1, -2, +2, ... steps
            box = (x, y + dy, width, height)
            if not any(_overlaps(box, other) for other in placed):
                break
        placed.append(box)
    return [(x, y) for x, y, _, _ in placed]


PORT_SPREAD = 0.05  # inches: the most a port lies above or below its vertex's centre
PORT_STEP = 0.02


def _ports(ends: list[tuple[Any, int, int, float]]) -> dict[Any, float]:
    """Vertical offsets of the arc ends at one side of one vertex. `ends`: (key, direction, span, apex
    y), direction -1 for an arc arriving from above, +1 for one leaving downward. Top to bottom: the
    arriving arcs, inner (short) ones first, then the leaving ones, outer ones first, so that arcs
    that nest do not cross at the vertex."""
    def order_key(end: tuple[Any, int, int, float]) -> tuple[int, int, float]:
        _, direction, span, apex_y = end
        return (direction, span if direction < 0 else -span, -apex_y)

    order = sorted(ends, key=order_key)
    n = len(order)
    spread = min(PORT_SPREAD, PORT_STEP * (n - 1) / 2)
    return {key: spread - 2 * spread * i / (n - 1) if n > 1 else 0.0 for i, (key, *_) in enumerate(order)}


def layout_cell(cell, name: str) -> CellLayout:
    """Place one CellGenotype's vertices, arcs and labels (see the module docstring)."""
    layout = CellLayout(name)
    live = sorted(cell.live_nodes())
    texts = [("sum in", "input", f"{name}.input.0"), ("concat in", "input", f"{name}.input.1")]
    texts += [(str(node), "node", f"{name}.node.{node}") for node in live]
    texts += [(f"{out} out", "output", f"{name}.output.{out}") for out in OUTPUTS]
    vertices = layout.vertices = [Vertex(gid, text, -i * ROW, kind)
                                  for i, (text, kind, gid) in enumerate(texts)]
    row = {0: 0, 1: 1} | {node + 2: i + 2 for i, node in enumerate(live)}  # genotype index -> vertex

    edges = [(k, edge, row[edge.input], row[edge.node + 2]) for k, edge in enumerate(cell.edges)]
    # Short arcs first: they keep their natural place and the long arcs around them give way.
    edges.sort(key=lambda e: (e[3] - e[2], e[3], e[2], e[0]))
    pairs = [(source, target) for _, _, source, target in edges]
    wanted = []
    for i, (_, edge, source, target) in enumerate(edges):
        width, height = _text_size(edge.op)
        height += 2 * LABEL_PAD
        # Edges between the same two vertices: their labels stacked, centred on the arcs' midpoint.
        group, rank = pairs.count((source, target)), pairs[:i].count((source, target))
        wanted.append((ARC_BASE + ARC_STEP * (target - source),
                       (vertices[source].y + vertices[target].y) / 2
                       - (rank - (group - 1) / 2) * (height + LABEL_GAP),
                       width + 2 * LABEL_PAD, height))
    # Every arc: (gid, source, target, side, apex, colour, linestyle).
    arcs: list[tuple[str, int, int, int, tuple[float, float], str, Any]] = []
    for (k, edge, source, target), (x, y), want in zip(edges, place_labels(wanted), wanted, strict=True):
        gid = f"{name}.edge{k}"
        layout.labels.append(Label(gid, edge.op, x, y, want[2], want[3], op_color(edge.op)))
        arcs.append((f"{gid}.arc", source, target, 1, (x, y), op_color(edge.op), "-"))
    for out_index, out in enumerate(OUTPUTS):
        target = len(vertices) - len(OUTPUTS) + out_index
        for node in getattr(cell, out):
            source = row[node + 2]
            apex = (-(OUT_BASE + OUT_STEP * (target - source)), (vertices[source].y + vertices[target].y) / 2)
            arcs.append((f"{name}.{out}.{node}", source, target, -1, apex, OUTPUT_STYLE[out]["color"],
                         OUTPUT_STYLE[out]["linestyle"]))
    ends: dict[tuple[int, int], list[tuple[Any, int, int, float]]] = {}
    for gid, source, target, side, apex, _, _ in arcs:
        ends.setdefault((source, side), []).append(((gid, "start"), 1, target - source, apex[1]))
        ends.setdefault((target, side), []).append(((gid, "end"), -1, target - source, apex[1]))
    offsets = {key: dy for group in ends.values() for key, dy in _ports(group).items()}
    for gid, source, target, side, apex, color, linestyle in arcs:
        layout.arcs.append(Arc(gid, vertices[source].port(side, offsets[(gid, "start")]), apex,
                               vertices[target].port(side, offsets[(gid, "end")]), color, linestyle))
    return layout


# -- drawing ----------------------------------------------------------------------------------------

def _draw_layout(ax, layout: CellLayout, dx: float) -> None:
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path

    for arc in layout.arcs:
        points = arc.path_vertices() + np.array([dx, 0.0])
        ax.add_patch(FancyArrowPatch(
            path=Path(points, [Path.MOVETO, Path.CURVE4, Path.CURVE4, Path.CURVE4]), arrowstyle="-|>",
            mutation_scale=6, linewidth=0.7, color=arc.color, linestyle=arc.linestyle,
            joinstyle="miter", capstyle="butt", zorder=1, gid=arc.gid))
    for vertex in layout.vertices:
        if vertex.kind == "node":
            shape = Circle((dx, vertex.y), NODE_RADIUS, facecolor="white", edgecolor="#111111",
                           linewidth=0.7, zorder=3, gid=vertex.gid)
        else:
            shape = FancyBboxPatch((dx - BOX_WIDTH / 2, vertex.y - BOX_HEIGHT / 2), BOX_WIDTH, BOX_HEIGHT,
                                   boxstyle="round,pad=0,rounding_size=0.04",
                                   facecolor="#e4ecf7" if vertex.kind == "input" else "#f6ead7",
                                   edgecolor="#111111", linewidth=0.6, zorder=3, gid=vertex.gid)
        ax.add_patch(shape)
        ax.text(dx, vertex.y, vertex.text, ha="center", va="center", fontsize=FONT_SIZE, zorder=4,
                gid=f"{vertex.gid}.text")
    for label in layout.labels:
        ax.text(label.x + dx, label.y, label.text, ha="center", va="center", fontsize=FONT_SIZE,
                color="#111111", zorder=5, gid=label.gid,
                bbox={"boxstyle": f"round,pad={LABEL_PAD * 72 / FONT_SIZE:.4f},rounding_size=0.3",
                      "facecolor": "white", "edgecolor": label.color, "linewidth": 0.6})


def draw_genotype(genotype: Any, title: str | None = None):
    """A figure of both cells side by side, normal left, reduction right; `title` (one or more lines)
    goes above them.
    `genotype`: a Genotype or its dictionary form. Draw (and save) inside plots.style()."""
    from matplotlib.figure import Figure

    genotype = as_genotype(genotype)
    layouts = [layout_cell(genotype.normal, "normal"), layout_cell(genotype.reduce, "reduce")]
    extents = [layout.extent() for layout in layouts]
    offsets, x = [], MARGIN
    for left, right, _, _ in extents:
        offsets.append(x - left)
        x += right - left + PANEL_GAP
    width = x - PANEL_GAP + MARGIN
    bottom = min(e[2] for e in extents) - MARGIN
    top = max(e[3] for e in extents) + TITLE_SPACE
    lines = title.splitlines() if title else []
    if lines:
        width = max(width, max(_text_size(line, TITLE_SIZE)[0] for line in lines) + 2 * MARGIN)
        top += TITLE_LINE * len(lines) + 0.06
    figure = Figure(figsize=(width, top - bottom))
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(bottom, top)
    ax.axis("off")
    for layout, dx, (left, right, _, _) in zip(layouts, offsets, extents, strict=True):
        _draw_layout(ax, layout, dx)
        ax.text(dx + (left + right) / 2, max(e[3] for e in extents) + 0.06, CELL_TITLES[layout.name],
                ha="center", va="bottom", fontsize=TITLE_SIZE, fontweight="bold", gid=f"{layout.name}.title")
    if lines:
        ax.text(width / 2, top - 0.03, "\n".join(lines), ha="center", va="top", fontsize=TITLE_SIZE,
                linespacing=1.3, gid="title")
    return figure
