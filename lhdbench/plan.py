"""The trials a suite plans (`suite.py`), with stable ids.

A suite plans one search trial per (baseline, dataset, seed); for each, one evaluation trial per
policy, target dataset and selection that trains the searched architecture with the same seed, and one
perturbation selection per policy rule where the suite asks for it. A trial id is a readable prefix plus
a hash of everything that determines the trial's result (the method's code among it), so the store can
skip what is done and a changed setting or an edited method never reuses an old result. Each trial also
has a settings id, the same hash without the method's code, which is how a rerun tells a result of an
earlier code version of the same experiment (docs/runner.md, "Trial ids").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .methods import check_protocol_methods
from .protocol import Protocol, load_protocol
from .record import without_code
from .search import search_identity
from .suite import SELECTIONS, Suite, SuiteError, load_suite, suite_names

__all__ = ["SELECTIONS", "Plan", "Suite", "SuiteError", "Trial", "load_suite", "make_plan", "suite_names",
           "trial_id"]

# -- trials ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Trial:
    trial_id: str
    phase: str  # "search", "select" or "evaluate"
    baseline: str
    dataset: str  # what the trial trains on: the searched dataset, or the evaluation's dataset
    seed: int
    policy: str | None = None
    search_trial_id: str | None = None  # the search a selection or an evaluation builds on
    selection: str | None = None  # an evaluation's: "magnitude" or "perturbation"
    selection_trial_id: str | None = None  # the selection a perturbation evaluation trains the result of
    search_dataset: str | None = None  # an evaluation's searched dataset (another one: transfer)
    # The id the trial has with the method's code left out of its identity (record.without_code):
    # equal for two versions of a method's code, and equal to the id lhdbench 0.1 gave the trial.
    settings_id: str | None = None

    @property
    def depends_on(self) -> str | None:
        """The trial that must be done before this one can start."""
        return self.selection_trial_id or self.search_trial_id

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Plan:
    suite: Suite
    protocol: Protocol
    trials: tuple[Trial, ...]  # searches, selections, then evaluations
    # What each trial's id hashes, by trial id (to say which settings changed since a stored result).
    identities: Mapping[str, dict[str, Any]] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def searches(self) -> list[Trial]:
        return self.of_phase("search")

    def of_phase(self, phase: str) -> list[Trial]:
        return [t for t in self.trials if t.phase == phase]

    def run_entry(self) -> dict[str, Any]:
        """How this plan was asked for, and where each method came from (a rerun without a plugin
        names the file); plan.json keeps one entry per distinct run."""
        from .methods import method_source

        return {**self.suite.to_dict(), "suite": self.suite.name, "protocol": self.protocol.name,
                "sources": {name: method_source(name) for name in self.suite.baselines}}


def make_plan(suite: Suite, protocol: Protocol | None = None) -> Plan:
    """One search per (baseline, dataset, seed); per search, one evaluation per policy, target dataset
    and selection; per search and policy rule, one perturbation selection where the suite asks for it."""
    from .select import selection_identity, selection_policy

    protocol = protocol or load_protocol(suite.preset)
    check_protocol_methods(protocol)
    evaluation = {k: v for k, v in protocol.to_dict().items() if k in ("evaluate", "speed")}
    trials: list[Trial] = []
    identities: dict[str, dict[str, Any]] = {}

    def _ids(label: str, identity: dict[str, Any], settings_identity: dict[str, Any]) -> tuple[str, str]:
        """(trial id, settings id) of one trial."""
        ids = trial_id(label, identity), trial_id(label, settings_identity)
        identities[ids[0]] = identity
        return ids

    for baseline in suite.baselines:
        for dataset in suite.datasets:
            for seed in suite.seeds:
                name = f"{baseline}-{dataset}-s{seed}"
                identity = search_identity(baseline, dataset, seed, protocol)
                search = _ids(f"search-{name}", identity, without_code(identity))
                trials.append(Trial(search[0], "search", baseline, dataset, seed, settings_id=search[1]))
                selections: dict[str, tuple[str, str]] = {}
                if "perturbation" in suite.selections:
                    for policy in suite.policies:
                        rule = selection_policy(policy)
                        if rule not in selections:
                            selections[rule] = _ids(f"select-{name}-{rule}",
                                                    *(selection_identity(i, rule, protocol) for i in search))
                            trials.append(Trial(selections[rule][0], "select", baseline, dataset, seed, rule,
                                                search[0], settings_id=selections[rule][1]))
                for target in suite.targets(dataset):
                    to = "" if target == dataset else f"-to-{target}"
                    for policy in suite.policies:
                        # The identity of a transductive magnitude evaluation is what it always was, so
                        # stores planned before selections and transfer existed keep their settings ids.
                        common = {"phase": "evaluate", "policy": policy, "dataset": target, "seed": seed,
                                  **evaluation}
                        if "magnitude" in suite.selections:
                            ids = _ids(f"eval-{baseline}-{dataset}{to}-s{seed}-{policy}",
                                       *({**common, "search_trial_id": i} for i in search))
                            trials.append(Trial(ids[0], "evaluate", baseline, target, seed, policy,
                                                search[0], "magnitude", None, dataset, ids[1]))
                        if "perturbation" in suite.selections:
                            chosen = selections[selection_policy(policy)]
                            ids = _ids(f"eval-{baseline}-{dataset}{to}-s{seed}-{policy}-pt",
                                       *({**common, "selection_trial_id": i} for i in chosen))
                            trials.append(Trial(ids[0], "evaluate", baseline, target, seed, policy,
                                                search[0], "perturbation", chosen[0], dataset, ids[1]))
    order = {"search": 0, "select": 1, "evaluate": 2}
    trials.sort(key=lambda t: order[t.phase])
    return Plan(suite, protocol, tuple(trials), identities)


def trial_id(label: str, identity: dict[str, Any]) -> str:
    """`label` made filename-safe plus 16 hex digits of the identity's hash (64 bits: a collision
    among a million trials has odds of about 1 in 30 million)."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=list)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}-{digest}"
