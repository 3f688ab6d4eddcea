import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lhdbench.cli import main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "lhd-reference-archs"
DARTS_FILE = SHARED / "cifar10" / "darts_bilevel" / "20211010-140512-concate-sum-darts-bilevel.pl"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason="../shared/lhd-reference-archs not found: the upstream architecture "
    "files are not shipped with lhdbench; tests that need them are skipped")

JSON_KEYS = {"file", "policy", "dataset", "normal", "reduce", "normal_output", "reduce_output",
             "layers", "init_channels", "params"}


def uniform_pl(path: Path) -> Path:
    node = np.full((20, 7), 0.0, np.float32)
    for start, n in [(0, 2), (2, 3), (5, 4), (9, 5), (14, 6)]:
        node[start:start + n] = 1.0 / (7 * n)
    out = np.stack([np.full(5, 0.2, np.float32), np.linspace(0.4, 0.6, 5, dtype=np.float32)])
    path.write_bytes(pickle.dumps([node, node.copy(), out, out.copy()]))
    return path


@needs_shared
def test_json_output_has_exactly_the_documented_keys_and_paper_counts(capsys):
    assert main(["arch", "show", str(DARTS_FILE), "--policy", "1m", "--dataset", "cifar10",
                 "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert set(record) == JSON_KEYS
    assert (record["layers"], record["init_channels"], record["params"]) == (25, 48, 1_505_098)
    assert record["normal_output"] == {"sum": [2, 4], "concat": [2, 3, 4]}
    assert all(len(edge) == 3 for edge in record["normal"] + record["reduce"])


@needs_shared
def test_a_directory_stands_for_every_architecture_file_under_it(capsys):
    assert main(["arch", "show", str(SHARED / "svhn"), "--dataset", "svhn", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 45
    assert all(r["dataset"] == "svhn" and r["policy"] == "base" for r in records)


def test_readable_summary_names_edges_outputs_and_size(tmp_path, capsys):
    assert main(["arch", "show", str(uniform_pl(tmp_path / "u.pl")), "--policy", "3ops"]) == 0
    out = capsys.readouterr().out
    # Uniform node weights: the top-3 pairs of every node all read input 0, so only the outputs
    # live. No sum weight exceeds 0.2, so the sum output falls back to node 0; the gates rise with
    # the node index, so nodes 3 and 4 beat the mean.
    assert "normal: 9 edges, sum [0], concat [3, 4]" in out
    assert "node3 <- max_pool_3x3(sum_in), avg_pool_3x3(sum_in), skip_connect(sum_in)" in out
    assert "20 cells, width 36" in out and "parameters" in out


def test_lhdbench_npz_files_are_accepted_too(tmp_path, capsys):
    from lhdbench.space import load_upstream_pl

    weights = load_upstream_pl(uniform_pl(tmp_path / "u.pl"))
    weights.save(tmp_path / "arch.npz")
    (tmp_path / "u.pl").unlink()
    assert main(["arch", "show", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["file"].endswith("arch.npz")


@pytest.mark.parametrize("content", [b"", b"garbage", pickle.dumps({"not": "a list"}),
                                     pickle.dumps([np.zeros((20, 6), np.float32)] * 4)])
def test_bad_files_exit_non_zero_with_one_line(tmp_path, capsys, content):
    bad = tmp_path / "bad.pl"
    bad.write_bytes(content)
    assert main(["arch", "show", str(bad)]) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and str(bad) in captured.err


def test_missing_path_and_empty_directory_are_usage_errors(tmp_path, capsys):
    assert main(["arch", "show", str(tmp_path / "nope.pl")]) == 2
    assert main(["arch", "show", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such file" in err[0] and "no architecture files" in err[1]


def test_unknown_policy_is_rejected_with_the_known_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["arch", "show", str(uniform_pl(tmp_path / "u.pl")), "--policy", "2ops"])
    assert exit_info.value.code == 2
    assert "base" in capsys.readouterr().err


def test_installed_entry_point_runs(tmp_path):
    exe = shutil.which("lhdbench", path=str(Path(sys.executable).parent))
    assert exe, "the lhdbench console script is not installed next to this Python"
    done = subprocess.run([exe, "arch", "show", str(uniform_pl(tmp_path / "u.pl")), "--json"],
                          capture_output=True, text=True, check=True)
    assert set(json.loads(done.stdout)) == JSON_KEYS


def test_search_then_evaluate_on_the_embedded_dataset(tmp_path, capsys):
    search_dir, eval_dir = tmp_path / "d1", tmp_path / "d2"
    assert main(["search", "--baseline", "darts", "--dataset", "digits", "--preset", "smoke", "--seed", "0",
                 "--out", str(search_dir)]) == 0
    assert main(["evaluate", str(search_dir / "arch.npz"), "--policy", "base", "--dataset", "digits",
                 "--preset", "smoke", "--seed", "0", "--out", str(eval_dir)]) == 0
    search = json.loads((search_dir / "record.json").read_text())
    evaluation = json.loads((eval_dir / "record.json").read_text())
    assert search["status"] == evaluation["status"] == "done"
    assert {"history", "wall_time_s", "environment"} <= set(search)
    assert {"final_test_acc", "best_test_acc", "params", "wall_time_s"} <= set(evaluation)
    assert evaluation["arch_file"] == str((search_dir / "arch.npz").resolve())
    assert "evaluation done" in capsys.readouterr().out


def test_bad_protocol_key_is_a_one_line_usage_error(tmp_path, capsys):
    preset = tmp_path / "bad.yaml"
    preset.write_text("search:\n  batch_sise: 3\n")
    assert main(["search", "--baseline", "darts", "--dataset", "digits", "--preset", str(preset),
                 "--seed", "0", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "search.batch_sise" in err[0]


def test_unknown_baseline_lists_the_known_ones(tmp_path, capsys):
    assert main(["search", "--baseline", "nope", "--dataset", "digits", "--preset", "smoke", "--seed", "0",
                 "--out", str(tmp_path)]) == 2
    assert "darts" in capsys.readouterr().err


def test_missing_dataset_files_fail_with_where_it_looked(tmp_path, capsys, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise socket.gaierror("no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    assert main(["search", "--baseline", "darts", "--dataset", "cifar10", "--preset", "smoke", "--seed", "0",
                 "--out", str(tmp_path / "out"), "--data-root", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "data") in err[0]
