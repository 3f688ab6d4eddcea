"""Where each node's weights live in the (20, 7) node-weight matrix, and which image sizes the final
network's auxiliary head can take (torch-free, for the pre-flight checks).

The row layout of the LHD code (chaoji90/LHD `search/concate_sum_five_sig.py`).

Node i has 2 + i inputs: 0 = the previous cell's sum output, 1 = its concat output, j >= 2 = node j-2.
Its block is rows [i(i+3)/2, i(i+3)/2 + i + 2), one row per input, one column per primitive.
"""

from __future__ import annotations

import math

# Column order of every architecture-weight matrix: upstream `PRIMITIVES` in `search/genotypes.py`.
# Here, not in ops.py, so that what needs only the names does not import torch.
PRIMITIVES: tuple[str, ...] = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

NUM_NODES = 5
NUM_OPS = len(PRIMITIVES)
NUM_EDGES = sum(2 + i for i in range(NUM_NODES))  # 20
OUTPUT_PATHS = 2  # row 0: sum path, row 1: concat gates


def node_rows(node: int) -> slice:
    """Rows of `node`'s (input, op) block."""
    if not 0 <= node < NUM_NODES:
        raise ValueError(f"node index {node} out of range 0..{NUM_NODES - 1}")
    start = node * (node + 3) // 2
    return slice(start, start + node + 2)


def auxiliary_head_fits(image_size: int) -> bool:
    """Whether the auxiliary head can read the maps after the second reduction (image / 4): its 5x5
    pooling at stride 3 must leave at least 2x2 for its 2x2 convolution, so maps of 8x8 and up
    (32x32 images, as CIFAR's)."""
    side = math.ceil(math.ceil(image_size / 2) / 2)
    return side >= 5 and (side - 5) // 3 + 1 >= 2
