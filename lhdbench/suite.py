"""Suites: which baselines, datasets, policies, seeds, selections and transfer conditions a benchmark
runs (conditions/suites/*.yaml, or a file of your own). Light: reading a suite imports no torch, so
the command line can list and check suites quickly; `plan.py` turns a suite into trials.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .data.specs import DATASETS
from .names import did_you_mean
from .record import MAX_SEED
from .space.policies import POLICIES
from .yamlfile import YamlError, parse_yaml

SUITE_KEYS = ("name", "preset", "baselines", "datasets", "policies", "seeds", "selections", "transfer")
OPTIONAL_KEYS = {"name", "selections", "transfer"}
SELECTIONS = ("magnitude", "perturbation")
SUITE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


class SuiteError(ValueError):
    """A suite file or a narrowing that cannot be planned; the message is one line."""


@dataclass(frozen=True)
class Suite:
    name: str
    preset: str
    baselines: tuple[str, ...]
    datasets: tuple[str, ...]  # searched on, and evaluated on (the transductive conditions)
    policies: tuple[str, ...]
    seeds: tuple[int, ...]
    # How searched architectures are chosen before evaluation: `magnitude` (the policies' rules on the
    # exported weights, as the paper) and/or `perturbation` (DARTS-PT on the searched supernet).
    selections: tuple[str, ...] = ("magnitude",)
    # Transfer conditions: a searched dataset -> the other datasets its architectures are also
    # evaluated on, e.g. {"cifar10": ("cifar100", "svhn")}.
    transfer: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def narrow(self, *, baselines: list[str] | None = None, datasets: list[str] | None = None,
               policies: list[str] | None = None, seeds: list[int] | None = None,
               preset: str | None = None, selections: list[str] | None = None) -> Suite:
        """The suite with some axes replaced. Any registered baseline, known dataset or policy may be
        named, not only the suite's own: running one new method on the lhd conditions is a narrowing.
        Transfer targets of datasets narrowed away go with them."""
        datasets_now = tuple(datasets) if datasets else self.datasets
        return _validated(dataclasses.replace(
            self, preset=preset or self.preset,
            baselines=tuple(baselines) if baselines else self.baselines,
            datasets=datasets_now,
            policies=tuple(policies) if policies else self.policies,
            seeds=tuple(seeds) if seeds else self.seeds,
            selections=tuple(selections) if selections else self.selections,
            transfer=tuple((src, dst) for src, dst in self.transfer if src in datasets_now)))

    def targets(self, dataset: str) -> tuple[str, ...]:
        """The datasets an architecture searched on `dataset` is evaluated on: itself first."""
        return (dataset, *dict(self.transfer).get(dataset, ()))

    def to_dict(self) -> dict[str, Any]:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        out["transfer"] = {src: list(dst) for src, dst in self.transfer}
        return out


def suite_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in _suites_dir().iterdir() if p.name.endswith(".yaml"))


def load_suite(name_or_path: str) -> Suite:
    """A suite shipped in lhdbench.conditions (conditions/suites/NAME.yaml) or a YAML file by path."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise SuiteError(f"suite file {path} does not exist")
        try:
            text, where = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as error:
            raise SuiteError(f"{path}: cannot read suite file ({error})") from None
    else:
        if name_or_path not in suite_names():
            raise SuiteError(f"unknown suite {name_or_path!r} (known: {', '.join(suite_names())}; "
                             f"or give a .yaml file){did_you_mean(name_or_path, suite_names())}")
        text = (_suites_dir() / f"{name_or_path}.yaml").read_text()
        where = f"lhdbench.conditions/suites/{name_or_path}.yaml"
    try:
        data = parse_yaml(text, where)
    except YamlError as error:
        raise SuiteError(str(error)) from None
    if not isinstance(data, dict):
        raise SuiteError(f"{where}: expected a mapping with keys {', '.join(SUITE_KEYS)}")
    unknown = sorted(set(data) - set(SUITE_KEYS))
    missing = sorted(set(SUITE_KEYS) - set(data) - OPTIONAL_KEYS)
    if unknown or missing:
        problem = f"unknown key {unknown[0]!r}" if unknown else f"missing key {missing[0]!r}"
        raise SuiteError(f"{where}: {problem} (keys: {', '.join(SUITE_KEYS)})")
    baselines = data["baselines"]
    if baselines == "all":
        baselines = _method_names()
    return _validated(Suite(
        name=str(data.get("name", Path(where).stem)), preset=str(data["preset"]),
        baselines=tuple(_strings(baselines, f"{where}: baselines")),
        datasets=tuple(_strings(data["datasets"], f"{where}: datasets")),
        policies=tuple(_strings(data["policies"], f"{where}: policies")),
        seeds=tuple(_seeds(data["seeds"], f"{where}: seeds")),
        selections=tuple(_strings(data.get("selections", ["magnitude"]), f"{where}: selections")),
        transfer=_transfer(data.get("transfer", {}), f"{where}: transfer")))


def _validated(suite: Suite) -> Suite:
    # The name becomes the default store folder (runs/NAME): no path characters.
    if not SUITE_NAME.fullmatch(suite.name):
        raise SuiteError(f"suite name {suite.name!r}: use letters, digits, '.', '_' and '-' only, not "
                         "starting with '.' (it names the store folder runs/NAME)")
    axes = (("baselines", "baseline", _method_names()), ("datasets", "dataset", list(DATASETS)),
            ("policies", "policy", list(POLICIES)), ("selections", "selection", list(SELECTIONS)))
    for axis, noun, known in axes:
        values = getattr(suite, axis)
        if not values:
            raise SuiteError(f"suite {suite.name}: no {axis}")
        unknown = [v for v in values if v not in known]
        if unknown:
            raise SuiteError(f"suite {suite.name}: unknown {noun} {unknown[0]!r} "
                             f"(known: {', '.join(known)}){did_you_mean(unknown[0], known)}")
        if len(set(values)) != len(values):
            raise SuiteError(f"suite {suite.name}: {axis} lists a value twice")
    _seeds(list(suite.seeds), f"suite {suite.name}: seeds")
    for source, targets in suite.transfer:
        if source not in suite.datasets:
            raise SuiteError(f"suite {suite.name}: transfer from {source!r}, which is not searched "
                             f"(datasets: {', '.join(suite.datasets)})")
        for target in targets:
            if target == source:
                raise SuiteError(f"suite {suite.name}: transfer {source} -> {target}: a search is always "
                                 "evaluated on its own dataset; list only other datasets here")
            if target not in DATASETS:
                raise SuiteError(f"suite {suite.name}: transfer {source} -> {target!r}: unknown dataset "
                                 f"(known: {', '.join(DATASETS)}){did_you_mean(target, DATASETS)}")
        # Each target once: a target listed twice would plan (and count) its evaluations twice.
        if len(set(targets)) != len(targets):
            twice = next(t for i, t in enumerate(targets) if t in targets[:i])
            raise SuiteError(f"suite {suite.name}: transfer {source} -> {twice} is listed twice")
    return suite


def _transfer(value: Any, where: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise SuiteError(f"{where}: expected a mapping of searched dataset -> list of datasets")
    return tuple((source, tuple(_strings(value[source], f"{where}: {source}"))) for source in value)


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SuiteError(f"{where}: expected a list of names, or `all` for baselines")
    return value


def _seeds(value: Any, where: str) -> list[int]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SEED for v in value)):
        raise SuiteError(f"{where}: expected a non-empty list of integers from 0 to {MAX_SEED}")
    if len(set(value)) != len(value):
        raise SuiteError(f"{where}: a seed is listed twice")
    return value


def _suites_dir():
    return resources.files("lhdbench.conditions") / "suites"




def _method_names() -> list[str]:
    from .methods import method_names  # the registry imports every baseline, and so torch

    return method_names()
