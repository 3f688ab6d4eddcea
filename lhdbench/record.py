"""The trial record: one typed value for every trial that ended, done or failed.

One class, one constructor per outcome (`done`, `failed`, `died`), one writer (`write_record`) and one
validating reader (`read_record`) that the loops, the store, `status`, the runner and the report all
use. A file that does not validate (not UTF-8, not JSON, a wrong or missing field, `done` without its
results) raises InvalidRecord naming the file and the field, so it can never count as done.

The same record is written twice for a trial in a store: by the loop into the trial's folder
(`trials/<id>/record.json`, without the store fields) and by the runner into `records/<id>.json` with
them (`trial_id`, `attempts`, `resources`, `worker`). `lhdbench search` and `evaluate` write only the
first. Every field is always present in the file (null where it does not apply).

Standard library and pydantic only (no torch), so `status` and `report` stay quick to start.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .files import atomic_write_bytes

MAX_SEED = 2**32 - 1  # torch and numpy seeds are unsigned 32-bit on every platform
DIED_REASON = ("the trial's process ended without writing a record (killed, out of host memory, or "
               "its node was lost)")

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Count = Annotated[int, Field(ge=0)]


def check_seed(seed: Any) -> int:
    """A trial seed: an integer in 0..2^32-1 (ValueError otherwise, before anything is written)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed {seed!r}: expected an integer from 0 to {MAX_SEED}")
    return seed


class InvalidRecord(ValueError):
    """A record file that is not a valid trial record; the message is one line naming file and field."""


class _Strict(BaseModel):
    # strict: a string is never a number, a float never an int; frozen: a record is a value.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class Environment(_Strict):
    """Where a result was produced: device, library versions, host."""

    device: str
    device_name: str
    lhdbench: str
    torch: str
    cuda: str | None
    python: str
    host: str


class Resources(_Strict):
    """What one trial was given by its executor: CPUs, and a fraction of a GPU (0 on a CPU)."""

    cpu: Annotated[float, Field(gt=0.0)] = 1.0
    gpu: NonNegative = 0.0


class Worker(_Strict):
    """Which process ran the trial's last attempt, and when."""

    host: str
    pid: int
    cuda_visible_devices: str | None
    started_at: float
    finished_at: float


class CodeVersion(_Strict):
    """Which code produced a result: the search method's fingerprint (`methods/fingerprint.py`) and
    where the method was defined (a module, or a plugin file's path), lhdbench's version and its git
    commit when it runs from a checkout (`+dirty` when its tracked files were edited)."""

    method: str | None = None
    method_source: str | None = None
    lhdbench: str
    commit: str | None = None


class CurvePoint(_Strict):
    """An evaluation's test accuracy after a fraction of its schedule (`evaluate.curve_epochs`)."""

    fraction: Annotated[str, Field(pattern=r"^[1-9][0-9]*/[1-9][0-9]*$")]  # "1/12"
    epoch: Count  # 0-based, as in `history`
    test_acc: Fraction


def search_inputs(baseline: str, dataset: str, seed: int, settings: dict[str, Any], hparams: dict[str, Any],
                  speed: dict[str, Any], code: str | None = None) -> dict[str, Any]:
    """Everything that determines a search's result (and so its folder and its trial id): the method,
    its resolved settings and hyperparameters, the speed switches and the fingerprint of the method's
    code. Without a fingerprint (None) it is the identity of lhdbench 0.1, which did not record code."""
    inputs = {"phase": "search", "baseline": baseline, "dataset": dataset, "seed": seed,
              "settings": settings, "hparams": hparams, "speed": speed}
    return inputs if code is None else {**inputs, "code": code}


def without_code(identity: dict[str, Any]) -> dict[str, Any]:
    """An identity with the method's code left out: what a trial's `settings_id` hashes."""
    return {k: v for k, v in identity.items() if k != "code"}


def evaluation_inputs(arch_sha256: str, policy: str, dataset: str, seed: int,
                      protocol: dict[str, Any]) -> dict[str, Any]:
    """Everything that determines an evaluation's result in its folder: the architecture (weights or a
    genotype, by hash), the policy, the data and the evaluation and speed settings."""
    return {"phase": "evaluate", "arch_sha256": arch_sha256, "policy": policy, "dataset": dataset,
            "seed": seed, "evaluate": protocol.get("evaluate"), "speed": protocol.get("speed")}


def selection_inputs(search_trial_id: str, policy: str, select: dict[str, Any],
                     speed: dict[str, Any]) -> dict[str, Any]:
    """Everything that determines a selection: its search (whose id covers the search's identity),
    the policy rule it selects for, the selection and speed settings."""
    return {"phase": "select", "search_trial_id": search_trial_id, "policy": policy, "select": select,
            "speed": speed}


class TrialRecord(_Strict):
    # What the trial is.
    trial_id: str | None = None  # set in a store; None for `lhdbench search` / `evaluate`
    phase: Literal["search", "select", "evaluate"]
    status: Literal["done", "failed"]
    reason: str | None = None  # why it failed; None when done
    baseline: str | None = None  # an evaluation outside a store has no baseline
    dataset: str
    seed: Seed
    policy: str | None = None
    search_trial_id: str | None = None
    selection: Literal["magnitude", "perturbation"] | None = None  # an evaluation's
    selection_trial_id: str | None = None  # a perturbation evaluation's selection
    search_dataset: str | None = None  # an evaluation's searched dataset (another one: transfer)
    # The trial's id without the method's code: trials of one settings_id and different ids are the
    # same experiment run with different versions of the method. None outside a store; records of
    # lhdbench 0.1 (no code recorded) read it as their trial_id, which hashed no code.
    settings_id: str | None = None
    protocol: dict[str, Any]  # the whole protocol (Protocol.to_dict()); its `name` names it
    code: CodeVersion | None = None  # None in records of lhdbench 0.1
    # Store bookkeeping.
    attempts: Count = 0
    adopted_from: str | None = None  # the trial whose result this is (`benchmark --adopt-old-code`)
    resources: Resources | None = None
    worker: Worker | None = None
    environment: Environment | None = None
    # Inputs besides the protocol: a search's resolved settings, an evaluation's architecture.
    settings: dict[str, Any] | None = None
    hparams: dict[str, Any] | None = None
    arch_file: str | None = None  # search: the file it wrote (relative); evaluation: the file it read
    arch_sha256: str | None = None
    arch_metadata: dict[str, Any] | None = None
    genotype: dict[str, Any] | None = None
    # Results.
    history: list[dict[str, Any]] = []
    # A search's exported weights after every epoch: {"epoch", "normal", "reduce", "normal_output",
    # "reduce_output"} (5 significant digits), to show how the architecture evolved.
    arch_history: list[dict[str, Any]] = []
    # An evaluation's learning-curve points, in fraction order; empty in records written before
    # lhdbench recorded them (and in searches and selections).
    curve: list[CurvePoint] = []
    decisions: list[dict[str, Any]] = []  # a selection's decisions, each with its measurements
    measurements: Count | None = None  # a selection's accuracy measurements (full arch-half passes)
    arch_half_acc: Fraction | None = None
    final_test_acc: Fraction | None = None
    best_test_acc: Fraction | None = None
    best_epoch: Count | None = None
    best_after_epoch: Count | None = None
    params: Count | None = None
    layers: Count | None = None
    init_channels: Count | None = None
    drop_path_max: NonNegative | None = None
    wall_time_s: NonNegative | None = None
    epochs: Count | None = None
    epochs_per_s: NonNegative | None = None
    peak_gpu_memory_bytes: Count | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_older_files(cls, data: Any) -> Any:
        # Records of lhdbench 0.1.0 carried a copy of the folder identity under `inputs`; the fields
        # hold all of it now, except an evaluation's architecture hash.
        if isinstance(data, dict) and isinstance(data.get("inputs"), dict):
            data = dict(data)
            inputs = data.pop("inputs")
            data.setdefault("arch_sha256", inputs.get("arch_sha256"))
        # Before code was recorded, a stored trial's id hashed its settings only.
        if isinstance(data, dict) and data.get("code") is None and data.get("settings_id") is None \
                and isinstance(data.get("trial_id"), str):
            data = {**data, "settings_id": data["trial_id"]}
        return data

    @model_validator(mode="after")
    def _outcome_is_complete(self) -> TrialRecord:
        name = self.protocol.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("protocol: needs a non-empty `name`")
        if self.phase in ("evaluate", "select") and not self.policy:
            raise ValueError(f"policy: a {self.phase} trial needs its policy")
        if self.phase == "select" and not self.search_trial_id:
            raise ValueError("search_trial_id: a selection needs its search")
        if self.status == "failed":
            if not self.reason:
                raise ValueError("reason: a failed trial needs its reason")
            return self
        if self.reason is not None:
            raise ValueError("reason: a done trial has no failure reason")
        needed = ["wall_time_s", "epochs", "settings"] + {
            "search": ["arch_file", "hparams"], "select": ["genotype", "measurements"],
            "evaluate": ["final_test_acc", "params", "best_after_epoch", "genotype", "arch_sha256"],
        }[self.phase]
        missing = [key for key in needed if getattr(self, key) is None]
        if missing:
            raise ValueError(f"{missing[0]}: a done {self.phase} trial needs it")
        return self

    # -- constructors, one per outcome -------------------------------------------------------------

    @classmethod
    def done(cls, **fields: Any) -> TrialRecord:
        return cls.model_validate({**fields, "status": "done", "reason": None})

    @classmethod
    def failed(cls, reason: str, **fields: Any) -> TrialRecord:
        return cls.model_validate({**fields, "status": "failed", "reason": reason})

    @classmethod
    def died(cls, trial: dict[str, Any], protocol: dict[str, Any], attempts: int,
             reason: str = DIED_REASON) -> TrialRecord:
        """A trial whose process ended before it could write (killed, out of memory): its inputs and
        protocol are known from the plan, so the report lists it among the failed ones."""
        return cls.failed(reason, **trial, protocol=protocol, attempts=attempts)

    def stored(self, trial: dict[str, Any], attempts: int, resources: Resources | None,
               worker: Worker | None) -> TrialRecord:
        """This record as the store keeps it: with the planned trial's fields and the bookkeeping."""
        return type(self).model_validate({**self.model_dump(), **trial, "attempts": attempts,
                                          "resources": resources, "worker": worker})

    def update(self, **fields: Any) -> TrialRecord:
        """A validated copy with some fields changed."""
        return type(self).model_validate({**self.model_dump(), **fields})

    # -- reading back ------------------------------------------------------------------------------

    @property
    def inputs(self) -> dict[str, Any]:
        """The identity of the trial's folder (what a resumed or rerun trial is checked against)."""
        if self.phase == "search":
            return search_inputs(self.baseline, self.dataset, self.seed, self.settings, self.hparams,
                                 self.protocol.get("speed"), self.code.method if self.code else None)
        if self.phase == "select":
            return selection_inputs(self.search_trial_id, self.policy, self.protocol.get("select"),
                                    self.protocol.get("speed"))
        return evaluation_inputs(self.arch_sha256, self.policy, self.dataset, self.seed, self.protocol)

    @property
    def protocol_name(self) -> str:
        return self.protocol["name"]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def write_record(path: str | os.PathLike, record: TrialRecord) -> Path:
    """Write a record atomically: readers see the old file or the whole new one."""
    return atomic_write_bytes(path, record.to_json().encode())


def read_record(path: str | os.PathLike) -> TrialRecord:
    """The record in `path`; InvalidRecord (one line: file, field, problem) when it is not one.
    OSError when it cannot be read at all."""
    path = Path(path)
    return parse_record(path.read_bytes(), str(path))


def parse_record(raw: bytes, where: str) -> TrialRecord:
    """The record in `raw` (the bytes of a record file); InvalidRecord naming `where` otherwise."""
    path = where
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise InvalidRecord(f"{path}: not UTF-8 text (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise InvalidRecord(f"{path}: not JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, dict):
        raise InvalidRecord(f"{path}: not a trial record (a JSON {type(data).__name__}, not an object)")
    try:
        return TrialRecord.model_validate(data)
    except ValidationError as error:
        raise InvalidRecord(f"{path}: not a valid trial record ({describe(error)})") from None


def describe(error: ValidationError) -> str:
    """The first problem of a validation error as `field: message`, on one line."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "record"
    message = first["msg"].removeprefix("Value error, ")
    if message.split(":", 1)[0] in TrialRecord.model_fields:  # our own checks name the field already
        return " ".join(message.split())
    extra = f" ({error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return " ".join(f"{where}: {message}{extra}".split())
