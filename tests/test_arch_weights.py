"""lhdbench.space.arch_weights: the ArchWeights value and its .npz file format."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from conftest import random_arch_weights

from lhdbench.space.arch_weights import (
    FORMAT,
    FORMAT_VERSION,
    MATRICES,
    ArchFileError,
    ArchWeights,
    load_arch_weights,
)

METADATA = {"method": "darts", "dataset": "cifar10", "seed": 3, "temperature": 0.0015,
            "notes": "unicode ✓", "nested": {"a": [1, 2.5, None, True]}}


@pytest.fixture
def weights(rng) -> ArchWeights:
    return random_arch_weights(rng, metadata=METADATA)


def write_npz(path, arrays: dict, header: dict | None = None):
    """An .npz in the lhdbench layout, with whatever arrays and header the test wants."""
    payload = dict(arrays)
    if header is not None:
        payload["metadata"] = np.array(json.dumps(header))
    with open(path, "wb") as handle:
        np.savez(handle, **payload)
    return path


def valid_arrays(weights: ArchWeights) -> dict:
    return {name: getattr(weights, name) for name in MATRICES}


VALID_HEADER = {"format": FORMAT, "version": FORMAT_VERSION}


def assert_one_line_error(info, path):
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message


def test_round_trip_is_exact(tmp_path, weights):
    path = weights.save(tmp_path / "arch.npz")
    loaded = load_arch_weights(path)
    for name in MATRICES:
        original, back = getattr(weights, name), getattr(loaded, name)
        assert back.dtype == np.float32
        assert np.array_equal(original, back)
    assert loaded.metadata == METADATA


def test_round_trip_of_reference_style_weights(tmp_path):
    # Near one-hot weights with exact zeros (SP-DARTS style) survive unchanged.
    weights = random_arch_weights(np.random.default_rng(7), scale=200.0)
    assert (weights.normal == 0).any()
    loaded = load_arch_weights(weights.save(tmp_path / "sp.npz"))
    assert all(np.array_equal(a, b) for a, b in zip(weights.matrices(), loaded.matrices(), strict=True))
    assert loaded.metadata == {}


def test_saved_file_is_plain_npz_without_pickle(tmp_path, weights):
    path = weights.save(tmp_path / "arch.npz")
    with np.load(path, allow_pickle=False) as archive:
        assert set(archive.files) == set(MATRICES) | {"metadata"}
        for name in MATRICES:
            assert archive[name].dtype == np.float32
            assert np.array_equal(archive[name], getattr(weights, name))
        header = json.loads(str(archive["metadata"][()]))
    assert header["format"] == FORMAT and header["version"] == FORMAT_VERSION
    assert header["method"] == "darts"


def test_save_leaves_no_temp_files_and_overwrites(tmp_path, rng):
    first = random_arch_weights(rng, metadata={"run": 1})
    second = random_arch_weights(rng, metadata={"run": 2})
    path = tmp_path / "out" / "arch.npz"  # parent created on demand
    first.save(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["arch.npz"]
    second.save(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["arch.npz"]
    loaded = load_arch_weights(path)
    assert loaded.metadata == {"run": 2}
    assert np.array_equal(loaded.normal, second.normal)
    assert not np.array_equal(loaded.normal, first.normal)


def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path, rng):
    good = random_arch_weights(rng, metadata={"run": 1})
    path = good.save(tmp_path / "arch.npz")
    before = path.read_bytes()
    bad = random_arch_weights(rng, metadata={"not json": object()})
    with pytest.raises(TypeError):
        bad.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.npz"]


def test_matrices_and_cell_accessors(weights):
    assert [m.shape for m in weights.matrices()] == [(20, 7), (20, 7), (2, 5), (2, 5)]
    nodes, outputs = weights.cell("normal")
    assert nodes is weights.normal and outputs is weights.normal_output
    nodes, outputs = weights.cell("reduce")
    assert nodes is weights.reduce and outputs is weights.reduce_output
    with pytest.raises(ValueError, match="normal"):
        weights.cell("both")


def test_constructor_casts_to_float32(weights):
    doubled = ArchWeights(*(m.astype(np.float64) for m in weights.matrices()))
    assert all(m.dtype == np.float32 for m in doubled.matrices())


# --- rejected files ---------------------------------------------------------------------------------

def test_load_rejects_non_npz_file(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("this is not an archive\n")
    with pytest.raises(ArchFileError) as info:
        load_arch_weights(path)
    assert_one_line_error(info, path)


def test_load_rejects_pickle_payload(tmp_path):
    # An .npy holding a pickled object must not be unpickled.
    path = tmp_path / "obj.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ArchFileError) as info:
        load_arch_weights(path)
    assert_one_line_error(info, path)


def test_load_rejects_truncated_npz(tmp_path, weights):
    path = weights.save(tmp_path / "arch.npz")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchFileError) as info:
        load_arch_weights(truncated)
    assert_one_line_error(info, truncated)


def test_load_rejects_missing_file(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(ArchFileError) as info:
        load_arch_weights(path)
    assert_one_line_error(info, path)


@pytest.mark.parametrize("missing", [*MATRICES, "metadata"])
def test_load_rejects_missing_arrays(tmp_path, weights, missing):
    arrays = {k: v for k, v in valid_arrays(weights).items() if k != missing}
    header = None if missing == "metadata" else VALID_HEADER
    path = write_npz(tmp_path / "partial.npz", arrays, header)
    with pytest.raises(ArchFileError) as info:
        load_arch_weights(path)
    assert_one_line_error(info, path)
    assert missing in str(info.value)


@pytest.mark.parametrize("header", [
    {"version": FORMAT_VERSION},
    {"format": "someone.else", "version": FORMAT_VERSION},
    {"format": FORMAT, "version": FORMAT_VERSION + 1},
    {"format": FORMAT},
    ["format", FORMAT],
])
def test_load_rejects_wrong_format_tag_or_version(tmp_path, weights, header):
    path = write_npz(tmp_path / "tagged.npz", valid_arrays(weights), header)
    with pytest.raises(ArchFileError) as info:
        load_arch_weights(path)
    assert_one_line_error(info, path)


def test_load_rejects_metadata_that_is_not_json(tmp_path, weights):
    path = tmp_path / "badmeta.npz"
    with open(path, "wb") as handle:
        np.savez(handle, metadata=np.array("{not json"), **valid_arrays(weights))
    with pytest.raises(ArchFileError) as info:
        load_arch_weights(path)
    assert_one_line_error(info, path)


def test_well_formed_header_loads(tmp_path, weights):
    # Control for the tests above: the same writer with a valid header is accepted.
    path = write_npz(tmp_path / "ok.npz", valid_arrays(weights), {**VALID_HEADER, "k": 1})
    assert load_arch_weights(path).metadata == {"k": 1}


def corrupt(weights: ArchWeights, name: str, value: np.ndarray) -> dict:
    arrays = valid_arrays(weights)
    arrays[name] = value
    return arrays


@pytest.mark.parametrize(("name", "make"), [
    ("normal", lambda a: a[:, :6]),
    ("reduce", lambda a: a.T),
    ("normal_output", lambda a: a[:1]),
    ("reduce_output", lambda a: np.zeros((2, 6), np.float32)),
    ("normal", lambda a: a.reshape(-1)),
])
def test_load_rejects_wrong_shapes(tmp_path, weights, name, make):
    arrays = corrupt(weights, name, make(getattr(weights, name)))
    path = write_npz(tmp_path / "shape.npz", arrays, VALID_HEADER)
    with pytest.raises(ArchFileError) as info:
        load_arch_weights(path)
    assert_one_line_error(info, path)
    assert name in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", MATRICES)
def test_load_rejects_non_finite(tmp_path, weights, name, bad):
    value = getattr(weights, name).copy()
    value[1, 1] = bad
    path = write_npz(tmp_path / "nan.npz", corrupt(weights, name, value), VALID_HEADER)
    with pytest.raises(ArchFileError) as info:
        load_arch_weights(path)
    assert_one_line_error(info, path)


def test_load_rejects_integer_arrays(tmp_path, weights):
    value = np.zeros((20, 7), dtype=np.int64)
    path = write_npz(tmp_path / "int.npz", corrupt(weights, "normal", value), VALID_HEADER)
    with pytest.raises(ArchFileError) as info:
        load_arch_weights(path)
    assert_one_line_error(info, path)


def test_load_rejects_unnormalized_blocks(tmp_path, weights):
    value = weights.reduce.copy()
    value[5:9] *= 2  # node 2's block now sums to 2
    path = write_npz(tmp_path / "sum.npz", corrupt(weights, "reduce", value), VALID_HEADER)
    with pytest.raises(ArchFileError) as info:
        load_arch_weights(path)
    assert_one_line_error(info, path)
    assert "node 2" in str(info.value)


def test_npz_written_by_zipfile_without_header_is_rejected(tmp_path):
    path = tmp_path / "plain.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ArchFileError) as info:
        load_arch_weights(path)
    assert_one_line_error(info, path)


# --- constructor validation ---------------------------------------------------------------------------

def test_constructor_rejects_bad_node_sums(weights):
    normal = weights.normal.copy()
    normal[0, 0] += 0.05  # node 0 block sums to 1.05
    with pytest.raises(ArchFileError, match="node 0"):
        ArchWeights(normal, weights.reduce, weights.normal_output, weights.reduce_output)


def test_constructor_rejects_bad_sum_path(weights):
    out = weights.reduce_output.copy()
    out[0] *= 0.5
    with pytest.raises(ArchFileError, match="reduce_output"):
        ArchWeights(weights.normal, weights.reduce, weights.normal_output, out)


def test_gates_need_not_sum_to_one(weights):
    out = weights.normal_output.copy()
    out[1] = 0.9  # five gates of 0.9: fine, gates are independent sigmoids
    assert ArchWeights(weights.normal, weights.reduce, out, weights.reduce_output).normal_output[1, 0] \
        == np.float32(0.9)


def test_constructor_rejects_negative_and_above_one(weights):
    normal = weights.normal.copy()
    normal[0, 0], normal[0, 1] = -0.1, normal[0, 1] + 0.1  # sum unchanged, one entry negative
    with pytest.raises(ArchFileError, match="normal"):
        ArchWeights(normal, weights.reduce, weights.normal_output, weights.reduce_output)
    out = weights.normal_output.copy()
    out[1, 0] = 1.5
    with pytest.raises(ArchFileError, match="normal_output"):
        ArchWeights(weights.normal, weights.reduce, out, weights.reduce_output)


def test_constructor_rejects_wrong_shape_and_nan(weights):
    with pytest.raises(ArchFileError):
        ArchWeights(weights.normal[:19], weights.reduce, weights.normal_output, weights.reduce_output)
    reduce = weights.reduce.copy()
    reduce[3, 3] = np.nan
    with pytest.raises(ArchFileError):
        ArchWeights(weights.normal, reduce, weights.normal_output, weights.reduce_output)


def test_constructor_accepts_float32_rounding(weights):
    normal = weights.normal.copy()
    normal[0, 0] += 1e-4  # within the float32 tolerance of the published upstream files
    ArchWeights(normal, weights.reduce, weights.normal_output, weights.reduce_output)


def test_from_logits_applies_the_supernets_transforms():
    import torch

    from lhdbench.space.supernet import lhd_cell_weights

    rng = np.random.default_rng(7)
    nodes, outputs = rng.normal(size=(20, 7)), rng.normal(size=(2, 5))
    weights = ArchWeights.from_logits(nodes, 2 * nodes, outputs, -outputs, metadata={"method": "x"})
    for got_nodes, got_out, (n, o) in ((weights.normal, weights.normal_output, (nodes, outputs)),
                                       (weights.reduce, weights.reduce_output, (2 * nodes, -outputs))):
        expected = lhd_cell_weights(torch.from_numpy(n), torch.from_numpy(o))
        np.testing.assert_allclose(got_nodes, expected.nodes.numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got_out, expected.outputs.numpy(), rtol=1e-6, atol=1e-7)
    assert weights.metadata == {"method": "x"}
