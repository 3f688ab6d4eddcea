"""lhdbench.space.genotype: the discrete architecture and its JSON form (cf. `Genotype_op` in upstream
LHD, chaoji90/LHD `eval/gen_trans.py`)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from conftest import random_arch_weights

from lhdbench.space.discretize import discretize
from lhdbench.space.genotype import CellGenotype, Edge, Genotype, GenotypeError
from lhdbench.space.policies import POLICIES

VALID = {
    "normal": [["sep_conv_3x3", 0, 0], ["skip_connect", 1, 0], ["dil_conv_5x5", 2, 1],
               ["max_pool_3x3", 1, 1]],
    "normal_output": {"sum": [1], "concat": [0, 1]},
    "reduce": [["avg_pool_3x3", 0, 0], ["sep_conv_5x5", 1, 0]],
    "reduce_output": {"sum": [0], "concat": [0]},
}


def mutated(path, value):
    data = copy.deepcopy(VALID)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


def test_valid_document_parses():
    genotype = Genotype.from_json(json.dumps(VALID))
    assert genotype.normal.edges[2] == Edge("dil_conv_5x5", 2, 1)
    assert genotype.normal.sum == (1,) and genotype.normal.concat == (0, 1)
    assert genotype.reduce.live_nodes() == {0}
    assert json.loads(genotype.to_json()) == VALID


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("policy", list(POLICIES))
def test_json_round_trip_is_exact(seed, policy):
    weights = random_arch_weights(np.random.default_rng(seed), scale=1.0 + seed)
    genotype = discretize(weights, POLICIES[policy])
    text = genotype.to_json()
    back = Genotype.from_json(text)
    assert back == genotype
    assert back.to_json() == text
    assert Genotype.from_dict(genotype.to_dict()) == genotype


def test_output_sets_are_normalized_to_ascending():
    cell = CellGenotype((("skip_connect", 0, 0), ("skip_connect", 0, 2), ("skip_connect", 1, 1)),
                        (2, 0), [1, 2, 0])
    assert cell.sum == (0, 2) and cell.concat == (0, 1, 2)
    assert all(isinstance(edge, Edge) for edge in cell.edges)


def test_parallel_ops_on_one_input_are_allowed():
    # Two kept pairs may share an input with different ops (upstream `gen_trans.py` allows it).
    cell = CellGenotype((Edge("skip_connect", 1, 0), Edge("dil_conv_5x5", 1, 0)), (0,), (0,))
    assert len(cell.edges) == 2


@pytest.mark.parametrize("text", [
    "", "not json", "{'normal': []}", "{\"normal\": [}", "__import__('os')",
    "__import__('os').system('touch x')", "Genotype(normal=[], reduce=[])",
])
def test_rejects_non_json(text):
    with pytest.raises(GenotypeError, match="JSON"):
        Genotype.from_json(text)


def test_never_evaluates_python(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GenotypeError):
        Genotype.from_json("__import__('pathlib').Path('PWNED').touch()")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("document", [
    None, [], "text", 3,
    mutated(["normal"], KeyError),
    mutated(["reduce_output"], KeyError),
    mutated(["normal"], {"edges": []}),
    mutated(["normal_output"], [[1], [0, 1]]),
    mutated(["normal", 0], ["sep_conv_3x3", 0]),
    mutated(["normal", 0], ["sep_conv_3x3", 0, 0, 0]),
    mutated(["normal", 0], [3, 0, 0]),
    mutated(["normal", 0], ["sep_conv_3x3", "0", 0]),
    mutated(["normal", 0], ["sep_conv_3x3", 0.0, 0]),
    mutated(["normal", 0], ["sep_conv_3x3", True, 0]),
    mutated(["normal", 0], {"op": "sep_conv_3x3", "input": 0, "node": 0}),
    mutated(["normal_output", "sum"], 1),
    mutated(["normal_output", "sum"], [1.0]),
    mutated(["normal_output", "sum"], ["1"]),
    mutated(["normal_output", "concat"], KeyError),
    mutated(["reduce_output", "concat"], [False]),
], ids=lambda d: json.dumps(d)[:60])
def test_rejects_wrong_types(document):
    with pytest.raises(GenotypeError):
        Genotype.from_json(json.dumps(document))


@pytest.mark.parametrize("op", ["none", "sep_conv_7x7", "SKIP_CONNECT", "", "conv_7x1_1x7"])
def test_rejects_unknown_ops(op):
    with pytest.raises(GenotypeError, match="unknown op") as info:
        Genotype.from_json(json.dumps(mutated(["reduce", 1, 0], op)))
    assert "skip_connect" in str(info.value)  # lists the known ops


@pytest.mark.parametrize("edge", [
    ["skip_connect", 2, 0],   # node 0 reads only inputs 0 and 1
    ["skip_connect", 7, 5],   # node 5 does not exist
    ["skip_connect", 0, -1],
    ["skip_connect", -1, 0],
    ["skip_connect", 6, 4],   # node 4 reads inputs 0..5
    ["skip_connect", 0, 10**12],
])
def test_rejects_out_of_range_indices(edge):
    document = mutated(["normal", 0], edge)
    with pytest.raises(GenotypeError):
        Genotype.from_json(json.dumps(document))


@pytest.mark.parametrize("path", [["normal_output", "sum"], ["normal_output", "concat"],
                                  ["reduce_output", "sum"], ["reduce_output", "concat"]])
def test_rejects_empty_output_sets(path):
    with pytest.raises(GenotypeError, match="at least one"):
        Genotype.from_json(json.dumps(mutated(path, [])))


def test_rejects_duplicate_output_node():
    with pytest.raises(GenotypeError, match="twice"):
        Genotype.from_json(json.dumps(mutated(["normal_output", "concat"], [0, 0])))


@pytest.mark.parametrize("path", [["normal_output", "sum"], ["reduce_output", "concat"]])
def test_rejects_output_node_without_incoming_edge(path):
    with pytest.raises(GenotypeError, match="no incoming edge"):
        Genotype.from_json(json.dumps(mutated(path, [3])))


def test_rejects_edge_reading_a_dead_node():
    # Node 3 reads node 2 (input 4), which has no incoming edge.
    document = mutated(["normal"], [["skip_connect", 0, 0], ["sep_conv_3x3", 4, 3]])
    document["normal_output"] = {"sum": [3], "concat": [0, 3]}
    with pytest.raises(GenotypeError, match="reads node 2"):
        Genotype.from_json(json.dumps(document))
    # Control: once node 2 has an incoming edge the same document is valid.
    document["normal"].append(["skip_connect", 1, 2])
    assert Genotype.from_json(json.dumps(document)).normal.live_nodes() == {0, 2, 3}


def test_cell_genotype_constructor_validates_too():
    with pytest.raises(GenotypeError):
        CellGenotype((Edge("bogus", 0, 0),), (0,), (0,))
    with pytest.raises(GenotypeError):
        CellGenotype((Edge("skip_connect", 0, 0),), (0,), ())
    with pytest.raises(GenotypeError):
        CellGenotype((Edge("skip_connect", 3, 0),), (0,), (0,))


def test_deeply_nested_input_is_a_genotype_error():
    with pytest.raises(GenotypeError):
        Genotype.from_json("[" * 100_000 + "]" * 100_000)


def test_huge_integer_is_a_genotype_error():
    document = json.dumps(VALID).replace('"sum": [1]', '"sum": [1' + "0" * 5000 + "]")
    with pytest.raises(GenotypeError):
        Genotype.from_json(document)
