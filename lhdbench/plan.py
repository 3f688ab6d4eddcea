"""The trials a suite plans (`suite.py`), with stable ids.

A suite plans one search trial per (baseline, dataset, seed); for each, one evaluation trial per
policy, target dataset and selection that trains the searched architecture with the same seed, and one
perturbation selection per policy rule where the suite asks for it. A trial id is a readable prefix plus
a hash of everything that determines the trial's result, so the store can skip what is done and a
changed setting never reuses an old result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from .methods import check_protocol_methods
from .protocol import Protocol, load_protocol
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

    @property
    def searches(self) -> list[Trial]:
        return self.of_phase("search")

    def of_phase(self, phase: str) -> list[Trial]:
        return [t for t in self.trials if t.phase == phase]

    def run_entry(self) -> dict[str, Any]:
        """How this plan was asked for; plan.json keeps one entry per distinct run."""
        return {**self.suite.to_dict(), "suite": self.suite.name, "protocol": self.protocol.name}


def make_plan(suite: Suite, protocol: Protocol | None = None) -> Plan:
    """One search per (baseline, dataset, seed); per search, one evaluation per policy, target dataset
    and selection; per search and policy rule, one perturbation selection where the suite asks for it."""
    from .select import selection_identity, selection_policy

    protocol = protocol or load_protocol(suite.preset)
    check_protocol_methods(protocol)
    evaluation = {k: v for k, v in protocol.to_dict().items() if k in ("evaluate", "speed")}
    trials: list[Trial] = []
    for baseline in suite.baselines:
        for dataset in suite.datasets:
            for seed in suite.seeds:
                name = f"{baseline}-{dataset}-s{seed}"
                search_id = trial_id(f"search-{name}", search_identity(baseline, dataset, seed, protocol))
                trials.append(Trial(search_id, "search", baseline, dataset, seed))
                selections: dict[str, str] = {}
                if "perturbation" in suite.selections:
                    for policy in suite.policies:
                        rule = selection_policy(policy)
                        if rule not in selections:
                            selections[rule] = trial_id(f"select-{name}-{rule}",
                                                        selection_identity(search_id, rule, protocol))
                            trials.append(Trial(selections[rule], "select", baseline, dataset, seed, rule,
                                                search_id))
                for target in suite.targets(dataset):
                    to = "" if target == dataset else f"-to-{target}"
                    for policy in suite.policies:
                        # The identity of a transductive magnitude evaluation is what it always was, so
                        # stores planned before selections and transfer existed keep their ids.
                        common = {"phase": "evaluate", "policy": policy, "dataset": target, "seed": seed,
                                  **evaluation}
                        if "magnitude" in suite.selections:
                            eval_id = trial_id(f"eval-{baseline}-{dataset}{to}-s{seed}-{policy}",
                                               {**common, "search_trial_id": search_id})
                            trials.append(Trial(eval_id, "evaluate", baseline, target, seed, policy,
                                                search_id, "magnitude", None, dataset))
                        if "perturbation" in suite.selections:
                            select_id = selections[selection_policy(policy)]
                            eval_id = trial_id(f"eval-{baseline}-{dataset}{to}-s{seed}-{policy}-pt",
                                               {**common, "selection_trial_id": select_id})
                            trials.append(Trial(eval_id, "evaluate", baseline, target, seed, policy,
                                                search_id, "perturbation", select_id, dataset))
    order = {"search": 0, "select": 1, "evaluate": 2}
    trials.sort(key=lambda t: order[t.phase])
    return Plan(suite, protocol, tuple(trials))


def trial_id(label: str, identity: dict[str, Any]) -> str:
    """`label` made filename-safe plus 16 hex digits of the identity's hash (64 bits: a collision
    among a million trials has odds of about 1 in 30 million)."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=list)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}-{digest}"
