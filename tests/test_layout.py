"""lhdbench.space.layout: where each node's weights live (chaoji90/LHD `search/concate_sum_five_sig.py`)."""

from __future__ import annotations

import pytest

from lhdbench.space.layout import NUM_EDGES, NUM_NODES, NUM_OPS, OUTPUT_PATHS, node_rows


def test_sizes():
    assert (NUM_NODES, NUM_OPS, NUM_EDGES, OUTPUT_PATHS) == (5, 7, 20, 2)


def test_node_rows_match_spec():
    # node0 = rows 0-1, node1 = 2-4, node2 = 5-8, node3 = 9-13, node4 = 14-19.
    assert [(node_rows(i).start, node_rows(i).stop) for i in range(5)] == [
        (0, 2), (2, 5), (5, 9), (9, 14), (14, 20)]


def test_node_rows_tile_the_matrix():
    rows = [r for i in range(NUM_NODES) for r in range(NUM_EDGES)[node_rows(i)]]
    assert rows == list(range(NUM_EDGES))
    assert all(len(range(NUM_EDGES)[node_rows(i)]) == i + 2 for i in range(NUM_NODES))


@pytest.mark.parametrize("node", [-1, 5, 100])
def test_out_of_range_node(node):
    with pytest.raises(ValueError, match="out of range"):
        node_rows(node)
