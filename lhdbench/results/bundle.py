"""A results bundle: a store's records, searched architectures and plan in one file that travels.

A bundle is a zip file of data only (JSON and numpy `.npz` arrays read without pickle; checkpoints,
which torch reads with its weights-only loader, only when asked for):

    manifest.json                  format and version, what the bundle holds, a checksum per member
    plan.json                      the store's plan (its runs and planned trials)
    records/<trial id>.json        every valid record, byte for byte as the store holds it
    trials/<search id>/arch.npz    each done search's architecture weights
    trials/<select id>/genotype.json  each done selection's genotype
    trials/<trial id>/checkpoint.pt   only with `export --checkpoints`

The same store gives the same bytes: members in sorted order, fixed times and permissions, a fixed
compression level, and a manifest without timestamps, so a published bundle has a stable checksum.

Reading one (`read_bundle`) checks everything before anything is used: member names (no absolute
paths, no `..`, no links or devices, only the names above), sizes (bounded per kind, read with a cap,
so a zip bomb stops at the cap), the manifest and every member's checksum, every record through the
one validating reader, every architecture through its safe loader. Anything wrong is a BundleError,
one line.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import atomic_write_bytes
from ..record import InvalidRecord, TrialRecord, parse_record
from ..store import Store, StoreError, plan_problem

FORMAT = "lhdbench-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PLAN = "plan.json"
SUFFIX = ".zip"
_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest time zip can say: no clock in the bytes
_LEVEL = 9

_ID = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}"
MEMBER_NAMES = re.compile(rf"(?:{MANIFEST}|{PLAN}|records/(?P<record>{_ID})\.json"
                          rf"|trials/(?P<trial>{_ID})/(?P<file>arch\.npz|genotype\.json|checkpoint\.pt))")
# Caps per member (bytes once unpacked) and per bundle. A paper evaluation's record (600 epochs of
# history) is about 60 kB and a search's (50 epochs of weights) about 120 kB.
MAX_SIZES = {"manifest": 64 << 20, "plan": 64 << 20, "record": 16 << 20, "arch.npz": 1 << 20,
             "genotype.json": 1 << 20, "checkpoint.pt": 4 << 30}
MAX_MEMBERS = 200_000
MAX_TOTAL = 8 << 30  # without checkpoints' own cap: checkpoints are streamed, never held in memory


class BundleError(ValueError):
    """A bundle that cannot be used (hostile, truncated, of another format); the message is one line."""


@dataclass
class Bundle:
    """A bundle read and checked: the manifest, the records (parsed and as bytes), the plan, and the
    trial files by member name (bytes; checkpoints as their member names, read when imported)."""

    path: Path
    manifest: dict[str, Any]
    plan: dict[str, Any]
    records: dict[str, TrialRecord]
    record_bytes: dict[str, bytes]
    files: dict[str, bytes] = field(default_factory=dict)  # "trials/<id>/<file>" -> bytes
    checkpoints: list[str] = field(default_factory=list)  # member names


# -- writing -----------------------------------------------------------------------------------------

def export_bundle(storage: str | Path, out: str | Path, checkpoints: bool = False) -> dict[str, Any]:
    """Write the store at `storage` as one bundle file at `out` (atomically). Returns the manifest."""
    store = Store(storage)
    if not store.root.is_dir() or not store.is_store():
        raise BundleError(f"{storage}: not a results store (no plan.json and no records/ folder)")
    try:
        plan = store.read_plan()
    except StoreError as error:
        raise BundleError(str(error)) from None
    members: dict[str, bytes] = {PLAN: _canonical(plan)}
    records = store.records()
    if store.invalid:
        first = sorted(store.invalid.values(), key=lambda f: str(f.path))[0]
        raise BundleError(f"{first.message}; fix or remove it before exporting "
                          "(`lhdbench benchmark` moves such files aside)")
    big: dict[str, Path] = {}
    for trial_id, record in sorted(records.items()):
        members[f"records/{trial_id}.json"] = store.record_path(trial_id).read_bytes()
        folder = store.trial_dir(trial_id)
        wanted = {"search": "arch.npz", "select": "genotype.json"}.get(record.phase)
        if record.status == "done" and wanted and (folder / wanted).is_file():
            members[f"trials/{trial_id}/{wanted}"] = (folder / wanted).read_bytes()
        if checkpoints and (folder / "checkpoint.pt").is_file():
            big[f"trials/{trial_id}/checkpoint.pt"] = folder / "checkpoint.pt"
    manifest = _manifest(records, plan, members, big, checkpoints)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        _add(archive, MANIFEST, _canonical(manifest))
        for name in sorted(set(members) | set(big)):
            data = members[name] if name in members else big[name].read_bytes()
            _add(archive, name, data)
    atomic_write_bytes(out, buffer.getvalue())
    return manifest


def _canonical(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode()


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # unix, so the permissions below read the same everywhere
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=_LEVEL)


def _manifest(records: dict[str, TrialRecord], plan: dict[str, Any], members: dict[str, bytes],
              big: dict[str, Path], checkpoints: bool) -> dict[str, Any]:
    from .. import __version__
    from ..protocol import protocol_id

    protocols: dict[str, set[str]] = {}
    methods: dict[str, set[str]] = {}
    devices, versions, counts = set(), set(), {"search": 0, "select": 0, "evaluate": 0, "done": 0,
                                               "failed": 0}
    for record in records.values():
        protocols.setdefault(record.protocol_name, set()).add(protocol_id(record.protocol))
        if record.baseline and record.code is not None and record.code.method:
            methods.setdefault(record.baseline, set()).add(record.code.method)
        if record.environment is not None:
            devices.add(record.environment.device_name)
            versions.add(record.environment.lhdbench)
        counts[record.phase] += 1
        counts[record.status] += 1
    sums = {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in members.items()}
    for name, path in big.items():
        sums[name] = {"sha256": _file_sha256(path), "size": path.stat().st_size}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "lhdbench": __version__,
            "runs": plan["runs"], "protocols": {k: sorted(v) for k, v in sorted(protocols.items())},
            "methods": {k: sorted(v) for k, v in sorted(methods.items())},
            "devices": sorted(devices), "lhdbench_versions": sorted(versions), "counts": counts,
            "checkpoints": checkpoints, "members": dict(sorted(sums.items()))}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- reading -----------------------------------------------------------------------------------------

def is_bundle(path: str | Path) -> bool:
    path = Path(path)
    return path.is_file() and zipfile.is_zipfile(path)


def read_bundle(path: str | Path) -> Bundle:
    """The bundle at `path`, checked member by member (the module docstring); BundleError otherwise."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise BundleError(f"{where}: no such bundle file")
    try:
        with zipfile.ZipFile(path) as archive:
            return _read(path, archive)
    except zipfile.BadZipFile as error:
        raise BundleError(f"{where}: not a readable bundle (truncated or not a zip file: {error})") from None
    except (OSError, EOFError) as error:
        raise BundleError(f"{where}: not a readable bundle ({type(error).__name__}: {error})") from None


def _read(path: Path, archive: zipfile.ZipFile) -> Bundle:
    where = str(path)
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise BundleError(f"{where}: {len(infos)} members, more than a bundle may hold ({MAX_MEMBERS})")
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})[0]
        raise BundleError(f"{where}: member {twice!r} appears twice")
    total = 0
    for info in infos:
        _check_name(where, info)
        if _kind(info.filename) != "checkpoint.pt":
            total += info.file_size
    if total > MAX_TOTAL:
        raise BundleError(f"{where}: unpacks to {total} bytes, more than a bundle may ({MAX_TOTAL})")
    if MANIFEST not in names:
        raise BundleError(f"{where}: no {MANIFEST} (not an lhdbench bundle)")
    manifest = _json(where, MANIFEST, _member(archive, where, archive.getinfo(MANIFEST)))
    _check_manifest(where, manifest, set(names) - {MANIFEST})
    sums = manifest["members"]
    data: dict[str, bytes] = {}
    checkpoints = []
    for info in infos:
        name = info.filename
        if name == MANIFEST:
            continue
        if _kind(name) == "checkpoint.pt":
            digest, size = _stream_digest(archive, where, info)
            checkpoints.append(name)
        else:
            blob = _member(archive, where, info)
            digest, size = hashlib.sha256(blob).hexdigest(), len(blob)
            data[name] = blob
        if digest != sums[name]["sha256"] or size != sums[name]["size"]:
            raise BundleError(f"{where}: member {name} does not match its checksum in {MANIFEST}")
    if PLAN not in data:
        raise BundleError(f"{where}: no {PLAN}")
    plan = _json(where, PLAN, data.pop(PLAN))
    problem = plan_problem(plan)
    if problem:
        raise BundleError(f"{where}: {PLAN} is not a valid plan ({problem})")
    records, record_bytes, files = {}, {}, {}
    for name, blob in sorted(data.items()):
        match = MEMBER_NAMES.fullmatch(name)
        if match.group("record"):
            trial_id = match.group("record")
            try:
                record = parse_record(blob, f"{where}:{name}")
            except InvalidRecord as error:
                raise BundleError(str(error)) from None
            if record.trial_id != trial_id:
                raise BundleError(f"{where}:{name}: its trial_id {record.trial_id!r} is not its name")
            records[trial_id], record_bytes[trial_id] = record, blob
        else:
            _check_trial_file(where, name, match.group("file"), blob)
            files[name] = blob
    for name in list(files) + checkpoints:
        owner = MEMBER_NAMES.fullmatch(name).group("trial")
        if owner not in records:
            raise BundleError(f"{where}: {name} belongs to no record in the bundle")
    return Bundle(path, manifest, plan, records, record_bytes, files, sorted(checkpoints))


def _check_name(where: str, info: zipfile.ZipInfo) -> None:
    name = info.filename
    shown = name if len(name) < 120 else name[:117] + "..."
    if info.is_dir() or not MEMBER_NAMES.fullmatch(name) or "\\" in name:
        raise BundleError(f"{where}: member {shown!r} is not a name a bundle holds (absolute paths, '..', "
                          "folders and other files are refused)")
    # Zip writers that say no file type (Python's own writestr) write plain files.
    if stat.S_IFMT(info.external_attr >> 16) not in (0, stat.S_IFREG):
        raise BundleError(f"{where}: member {shown!r} is not a plain file (a link or a device)")
    cap = MAX_SIZES[_kind(name)]
    if info.file_size > cap:
        raise BundleError(f"{where}: member {shown!r} unpacks to {info.file_size} bytes, more than its "
                          f"kind may ({cap})")


def _kind(name: str) -> str:
    if name == MANIFEST:
        return "manifest"
    if name == PLAN:
        return "plan"
    return "record" if name.startswith("records/") else name.rsplit("/", 1)[1]


def _member(archive: zipfile.ZipFile, where: str, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes, read with its kind's cap: a size header that lies cannot make this read more."""
    cap = MAX_SIZES[_kind(info.filename)]
    with archive.open(info) as handle:
        blob = handle.read(cap + 1)
    if len(blob) > cap:
        raise BundleError(f"{where}: member {info.filename} unpacks to more than its kind may ({cap})")
    return blob


def _stream_digest(archive: zipfile.ZipFile, where: str, info: zipfile.ZipInfo) -> tuple[str, int]:
    cap, size, digest = MAX_SIZES["checkpoint.pt"], 0, hashlib.sha256()
    with archive.open(info) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            size += len(chunk)
            if size > cap:
                raise BundleError(f"{where}: member {info.filename} unpacks to more than its kind may")
            digest.update(chunk)
    return digest.hexdigest(), size


def _json(where: str, name: str, blob: bytes) -> Any:
    try:
        return json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise BundleError(f"{where}: {name} is not JSON ({' '.join(str(error).split())})") from None


def _check_manifest(where: str, manifest: Any, names: set[str]) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{where}: not an lhdbench bundle ({MANIFEST} does not say format {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{where}: bundle format version {manifest.get('format_version')!r}; this "
                          f"lhdbench reads version {FORMAT_VERSION}")
    sums = manifest.get("members")
    if not isinstance(sums, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("size"), int)
            for v in sums.values()):
        raise BundleError(f"{where}: {MANIFEST} has no valid list of members with checksums")
    unlisted = sorted(names - set(sums))
    if unlisted:
        raise BundleError(f"{where}: member {unlisted[0]} is not listed in {MANIFEST}")
    missing = sorted(set(sums) - names)
    if missing:
        raise BundleError(f"{where}: {MANIFEST} lists {missing[0]}, which the bundle lacks")


def _check_trial_file(where: str, name: str, kind: str, blob: bytes) -> None:
    if kind == "genotype.json":
        from ..space import Genotype
        from ..space.genotype import GenotypeError

        try:
            Genotype.from_json(blob.decode("utf-8"))
        except (GenotypeError, UnicodeDecodeError) as error:
            raise BundleError(f"{where}:{name}: {' '.join(str(error).split())}") from None
        return
    from ..space.arch_weights import ArchFileError, load_arch_weights

    with tempfile.TemporaryDirectory(prefix="lhdbench-bundle-") as folder:
        probe = Path(folder) / "arch.npz"
        probe.write_bytes(blob)
        try:
            load_arch_weights(probe)
        except ArchFileError as error:
            message = " ".join(str(error).split()).replace(str(probe), f"{where}:{name}")
            raise BundleError(message) from None
