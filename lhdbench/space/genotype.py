"""Genotype: the discrete architecture a policy keeps from ArchWeights (LHD code: `Genotype_op`, as
chaoji90/LHD `eval/gen_trans.py` returns it).

Per cell type, the kept edges (op, input index, node index) and the output node sets. Inputs follow
the node-row convention of `layout`: 0 = the previous cell's sum output, 1 = its concat output,
j >= 2 = node j-2. Two kept edges may share an input with different ops (upstream allows it too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from .layout import NUM_NODES, PRIMITIVES


class GenotypeError(ValueError):
    """A genotype that is malformed or inconsistent."""


class Edge(NamedTuple):
    op: str
    input: int
    node: int


@dataclass(frozen=True)
class CellGenotype:
    edges: tuple[Edge, ...]
    sum: tuple[int, ...]  # node indices, ascending; the network uses them as a set
    concat: tuple[int, ...]

    def __post_init__(self) -> None:
        # Canonical order: by node (stable, so each node keeps its selection order).
        object.__setattr__(self, "edges", tuple(sorted((Edge(*e) for e in self.edges), key=lambda e: e.node)))
        object.__setattr__(self, "sum", tuple(sorted(int(n) for n in self.sum)))
        object.__setattr__(self, "concat", tuple(sorted(int(n) for n in self.concat)))
        for edge in self.edges:
            if edge.op not in PRIMITIVES:
                raise GenotypeError(f"unknown op {edge.op!r}; known ops: {', '.join(PRIMITIVES)}")
            if not 0 <= edge.node < NUM_NODES or not 0 <= edge.input < edge.node + 2:
                raise GenotypeError(f"edge {tuple(edge)} is outside the cell "
                                    f"(node < {NUM_NODES}, input < node + 2)")
        for name in ("sum", "concat"):
            nodes = getattr(self, name)
            if not nodes:
                raise GenotypeError(f"the {name} output needs at least one node")
            if len(set(nodes)) != len(nodes):
                raise GenotypeError(f"the {name} output lists a node twice: {list(nodes)}")
        live = self.live_nodes()
        dead_outputs = (set(self.sum) | set(self.concat)) - live
        if dead_outputs:
            raise GenotypeError(f"output nodes {sorted(dead_outputs)} have no incoming edge")
        for edge in self.edges:
            if edge.input >= 2 and edge.input - 2 not in live:
                raise GenotypeError(f"edge {tuple(edge)} reads node {edge.input - 2}, "
                                    "which has no incoming edge")

    def live_nodes(self) -> set[int]:
        return {edge.node for edge in self.edges}

    def to_json(self) -> tuple[list[list[Any]], dict[str, list[int]]]:
        return [list(edge) for edge in self.edges], {"sum": list(self.sum), "concat": list(self.concat)}


@dataclass(frozen=True)
class Genotype:
    normal: CellGenotype
    reduce: CellGenotype

    def to_dict(self) -> dict[str, Any]:
        normal, normal_output = self.normal.to_json()
        reduce, reduce_output = self.reduce.to_json()
        return {"normal": normal, "normal_output": normal_output,
                "reduce": reduce, "reduce_output": reduce_output}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> Genotype:
        if not isinstance(data, dict):
            raise GenotypeError(f"a genotype is a JSON object, found {type(data).__name__}")
        cells = {}
        for cell in ("normal", "reduce"):
            edges, outputs = data.get(cell), data.get(f"{cell}_output")
            if not isinstance(edges, list) or not isinstance(outputs, dict):
                raise GenotypeError(f"genotype needs '{cell}' (a list) and '{cell}_output' (an object)")
            parsed = []
            for edge in edges:
                if (not isinstance(edge, list) or len(edge) != 3 or not isinstance(edge[0], str)
                        or not all(type(v) is int for v in edge[1:])):
                    raise GenotypeError(f"{cell} edge {edge!r} is not [op_name, input, node]")
                parsed.append(Edge(*edge))
            sets = []
            for key in ("sum", "concat"):
                nodes = outputs.get(key)
                if not isinstance(nodes, list) or not all(type(n) is int for n in nodes):
                    raise GenotypeError(f"{cell}_output['{key}'] must be a list of node indices")
                sets.append(nodes)
            cells[cell] = CellGenotype(tuple(parsed), *sets)
        return cls(**cells)

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as error:  # JSONDecodeError, oversized ints, deep nesting
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise GenotypeError(f"genotype is not valid JSON ({reason})") from None
        return cls.from_dict(data)
