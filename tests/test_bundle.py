"""Results that travel: a store exported to one bundle and imported elsewhere gives the same store and
the same leaderboard; hostile or broken bundles are refused in one line with nothing written; the
report over a store and a reference bundle equals the report of one store holding everything."""

import hashlib
import io
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest

from lhdbench.cli import main
from lhdbench.plan import load_suite, make_plan
from lhdbench.results.bundle import MANIFEST, read_bundle
from lhdbench.runner import RunOptions, run_plan
from lhdbench.store import Store


def run_smoke(storage: Path, baselines, seeds=(0,), policies=("base", "4out")):
    plan = make_plan(load_suite("smoke").narrow(baselines=list(baselines), seeds=list(seeds),
                                               policies=list(policies)))
    dispatch = run_plan(plan, storage, RunOptions(executor="serial"), progress_stream=io.StringIO())
    assert dispatch.counts["failed"] == 0
    return plan


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    run_smoke(root / "store", ["random", "darts"])
    return root / "store"


@pytest.fixture(scope="module")
def bundle(smoke_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "smoke.zip"
    assert main(["export", "--storage", str(smoke_store), "--out", str(out)]) == 0
    return out


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def report_in(folder: Path, *extra: str) -> dict[str, bytes]:
    """The report of `folder/store`, run from `folder` with relative paths, so that the command in the
    leaderboard's header is the same wherever the store lies."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert main(["report", "--storage", "store", "--out", "report", "--formats", "md,csv,tex",
                     *extra]) == 0
    finally:
        os.chdir(cwd)
    return files_of(folder / "report")


def test_export_is_deterministic_and_holds_records_archs_and_a_manifest(smoke_store, bundle, tmp_path):
    again = tmp_path / "again.zip"
    main(["export", "--storage", str(smoke_store), "--out", str(again)])
    assert again.read_bytes() == bundle.read_bytes()
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read(MANIFEST))
        assert names[0] == MANIFEST and names[1:] == sorted(names[1:])
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        for name, entry in manifest["members"].items():
            assert hashlib.sha256(archive.read(name)).hexdigest() == entry["sha256"]
    store = Store(smoke_store)
    records = store.records()
    assert {n for n in names if n.startswith("records/")} == {f"records/{t}.json" for t in records}
    searches = [t for t, r in records.items() if r.phase == "search"]
    assert {n for n in names if n.endswith("arch.npz")} == {f"trials/{t}/arch.npz" for t in searches}
    assert not any(n.endswith("checkpoint.pt") for n in names)
    assert manifest["counts"] == {"search": 2, "select": 0, "evaluate": 4, "done": 6, "failed": 0}
    assert manifest["methods"].keys() == {"darts", "random"}
    assert list(manifest["protocols"]) == ["smoke"]


def test_a_round_trip_gives_the_same_store_and_the_same_leaderboard_byte_for_byte(
        smoke_store, bundle, tmp_path, capsys):
    original = tmp_path / "original"
    original.mkdir()
    os.symlink(smoke_store, original / "store")
    copy = tmp_path / "copy"
    assert main(["import", str(bundle), "--storage", str(copy / "store")]) == 0
    assert "imported 6 trial record(s)" in capsys.readouterr().err
    for name in Store(smoke_store).records():
        assert (copy / "store" / "records" / f"{name}.json").read_bytes() == (
            smoke_store / "records" / f"{name}.json").read_bytes()
    for path in smoke_store.glob("trials/*/arch.npz"):
        assert (copy / "store" / path.relative_to(smoke_store)).read_bytes() == path.read_bytes()
    assert report_in(copy) == report_in(original)

    # A second import changes nothing and says so.
    before = files_of(copy / "store" / "records")
    assert main(["import", str(bundle), "--storage", str(copy / "store")]) == 0
    err = capsys.readouterr().err
    assert "imported 0 trial record(s)" in err and "kept 6 trial(s)" in err
    assert files_of(copy / "store" / "records") == before


def test_a_local_result_is_kept_and_a_different_one_in_the_bundle_is_reported(smoke_store, bundle,
                                                                               tmp_path, capsys):
    store = tmp_path / "store"
    main(["import", str(bundle), "--storage", str(store)])
    target = sorted((store / "records").glob("eval-*.json"))[0]
    record = json.loads(target.read_text())
    record["final_test_acc"] = 0.123  # this store's own (different) result of the same trial
    target.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    mine = target.read_bytes()
    capsys.readouterr()
    assert main(["import", str(bundle), "--storage", str(store)]) == 0
    err = capsys.readouterr().err
    assert f"whose result in the bundle differs (not merged): {target.stem}" in err
    assert target.read_bytes() == mine


# -- hostile and broken bundles ----------------------------------------------------------------------

def rezip(source: Path, target: Path, edit, fix_manifest: bool = True) -> Path:
    """A copy of bundle `source` with `edit(members)` applied to {name: bytes}; the manifest's
    checksums recomputed unless `fix_manifest` is False. `edit` may return ZipInfo-bytes pairs."""
    with zipfile.ZipFile(source) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    manifest = json.loads(members.pop(MANIFEST))
    members = edit(members)
    if fix_manifest:
        manifest["members"] = {(n.filename if isinstance(n, zipfile.ZipInfo) else n):
                               {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
                               for n, b in members.items()}
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest))
        for name, blob in members.items():
            archive.writestr(name, blob)
    return target


def with_member(name, blob=b"{}"):
    return lambda members: {**members, name: blob}


def first_record(members):
    return next(n for n in members if n.startswith("records/"))


def symlink(members):
    info = zipfile.ZipInfo(first_record(members))
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return {**{n: b for n, b in members.items() if n != info.filename}, info: b"/etc/passwd"}


def bad_record(members):
    name = first_record(members)
    record = json.loads(members[name])
    record["final_test_acc"] = "high"
    return {**members, name: json.dumps(record).encode()}


def orphan(members):
    return {**members, "trials/search-nobody-1234/arch.npz": next(
        b for n, b in members.items() if n.endswith("arch.npz"))}


HOSTILE = {
    "path traversal": (with_member("../evil.json"), True, "not a name a bundle holds"),
    "absolute path": (with_member("/tmp/evil.json"), True, "not a name a bundle holds"),
    "dot-dot inside": (with_member("records/../../evil.json"), True, "not a name a bundle holds"),
    "unknown member": (with_member("run.sh", b"rm -rf ~"), True, "not a name a bundle holds"),
    "a link": (symlink, True, "not a plain file"),
    "bad checksum": (lambda m: {**m, first_record(m): m[first_record(m)].replace(b"done", b"DONE", 1)},
                     False, "does not match its checksum"),
    "invalid record": (bad_record, True, "not a valid trial record"),
    "unlisted member": (with_member("records/extra-1.json"), False, "is not listed in manifest.json"),
    "listed but missing": (lambda m: {n: b for n, b in m.items() if n != first_record(m)}, False,
                           "which the bundle lacks"),
    "orphan file": (orphan, True, "belongs to no record"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_bundle_is_refused_in_one_line_with_nothing_written(bundle, tmp_path, capsys, case):
    edit, fix, message = HOSTILE[case]
    bad = rezip(bundle, tmp_path / "bad.zip", edit, fix_manifest=fix)
    store = tmp_path / "store"
    assert main(["import", str(bad), "--storage", str(store)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not store.exists()


def test_an_oversized_member_is_refused_by_its_header_and_by_the_capped_read(bundle, monkeypatch):
    from lhdbench.results import bundle as bundle_module

    monkeypatch.setitem(bundle_module.MAX_SIZES, "record", 1000)  # smoke records are larger
    with pytest.raises(bundle_module.BundleError, match="unpacks to .* more than its kind may"):
        read_bundle(bundle)
    # Were the size in the header not checked (or wrong), the read itself stops at the cap.
    monkeypatch.setattr(bundle_module, "_check_name", lambda where, info: None)
    with pytest.raises(bundle_module.BundleError, match="unpacks to more than its kind may"):
        read_bundle(bundle)


@pytest.mark.parametrize("damage", ["truncated", "not a zip", "empty", "duplicate", "format version",
                                    "folder entry"])
def test_a_broken_bundle_is_refused_in_one_line_with_nothing_written(bundle, tmp_path, capsys, damage):
    bad = tmp_path / "bad.zip"
    blob = bundle.read_bytes()
    if damage == "truncated":
        bad.write_bytes(blob[: len(blob) // 2])
    elif damage == "not a zip":
        bad.write_text("hello")
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "duplicate":
        with zipfile.ZipFile(bundle) as archive, zipfile.ZipFile(bad, "w") as out:
            for name in archive.namelist():
                out.writestr(name, archive.read(name))
            with pytest.warns(UserWarning):
                out.writestr(first_record(archive.namelist()), b"{}")
    elif damage == "format version":
        with zipfile.ZipFile(bundle) as archive, zipfile.ZipFile(bad, "w") as out:
            for name in archive.namelist():
                data = archive.read(name)
                if name == MANIFEST:
                    data = json.dumps({**json.loads(data), "format_version": 99}).encode()
                out.writestr(name, data)
    else:
        rezip(bundle, bad, lambda m: {**m, zipfile.ZipInfo("records/"): b""})
    store = tmp_path / "store"
    assert main(["import", str(bad), "--storage", str(store)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert not store.exists()


# -- a report over a store and references -------------------------------------------------------------

def pin_times(storage: Path) -> None:
    for path in (storage / "records").glob("*.json"):
        record = json.loads(path.read_text())
        record.update(wall_time_s=60.0, epochs_per_s=1.0)
        path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def test_a_method_run_alone_against_a_reference_bundle_gives_the_one_store_tables(tmp_path):
    everything, others, mine = (tmp_path / name for name in ("everything", "others", "mine"))
    run_smoke(everything / "store", ["random", "darts", "milenas"], policies=["base"])
    run_smoke(others / "store", ["random", "darts"], policies=["base"])
    run_smoke(mine / "store", ["milenas"], policies=["base"])
    for folder in (everything, others, mine):  # the one thing two runs do not repeat: their timing
        pin_times(folder / "store")
    assert main(["export", "--storage", str(others / "store"), "--out", str(mine / "others.zip")]) == 0
    whole = report_in(everything)
    joined = report_in(mine, "--reference", "others.zip")
    tables = sorted(name for name in whole if name.startswith("tables/"))
    assert tables and tables == sorted(name for name in joined if name.startswith("tables/"))
    for name in tables:
        assert joined[name] == whole[name], name
    header = joined["leaderboard.md"].decode()
    assert "from this store: milenas" in header
    assert "from reference others.zip (bundle): darts, random" in header


def test_a_reference_of_other_settings_under_one_protocol_name_is_refused_unless_mixed(
        smoke_store, tmp_path, capsys):
    other = tmp_path / "other"
    protocol = tmp_path / "smoke.yaml"
    text = (Path(__file__).resolve().parents[1] / "conditions" / "protocols" / "smoke.yaml").read_text()
    protocol.write_text(text.replace("  epochs: 2\n  batch_size: 16\n  max_train_images: 64\n  max_test",
                                     "  epochs: 3\n  batch_size: 16\n  max_train_images: 64\n  max_test")
                        + "\nname: smoke\n")
    plan = make_plan(load_suite("smoke").narrow(baselines=["milenas"], seeds=[0], policies=["base", "4out"],
                                               preset=str(protocol)))
    run_plan(plan, other / "store", RunOptions(executor="serial"), progress_stream=io.StringIO())
    assert main(["report", "--storage", str(smoke_store), "--reference", str(other / "store"),
                 "--out", str(tmp_path / "r1"), "--formats", "md"]) == 2
    err = capsys.readouterr().err
    assert "do not all share its settings (evaluate.epochs 2 vs 3" in err and "--mix-protocols" in err
    assert main(["report", "--storage", str(smoke_store), "--reference", str(other / "store"),
                 "--out", str(tmp_path / "r2"), "--formats", "md", "--mix-protocols"]) == 0
    board = (tmp_path / "r2" / "leaderboard.md").read_text()
    assert "other protocol 1/1" in board and "--mix-protocols: 2 evaluation(s)" in board


def test_compare_reads_a_bundle_as_it_reads_its_store(smoke_store, bundle, tmp_path):
    import csv

    assert main(["compare", str(smoke_store), str(bundle), "--out", str(tmp_path / "cmp"),
                 "--resamples", "20"]) == 0
    rows = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    # The same results on both sides: every defined tau is 1 (a condition where both methods tie has
    # no ranking to agree with).
    assert len(rows) == 2 and all(float(r["tau"]) == 1.0 for r in rows if r["tau"]), rows
    assert any(r["tau"] for r in rows)
