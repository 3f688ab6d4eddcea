"""What a plan costs before it runs: steps per trial from the protocol and the datasets' sizes, times
from the step times measured in `benchmarks/` (conditions/measurements.yaml), per method where
measured and marked where estimated from another measurement.

Used by `lhdbench benchmark --dry-run` and by the pre-flight check that refuses a GPU-sized preset on
a machine without a GPU.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .data.specs import test_images, train_images
from .plan import Plan, Trial
from .yamlfile import parse_yaml

MEASURE_BATCH = 256  # the selection's accuracy passes (lhdbench/select.py)
FORWARD_SHARE = 1 / 3  # a forward pass against a forward and backward


@dataclass(frozen=True)
class TrialCost:
    trial: Trial
    steps: int  # training steps (search and selection steps count one architecture and one weight batch)
    seconds: float | None  # None: nothing measured to estimate it from
    basis: str  # what the time rests on: "measured", or how it was estimated
    scale: float | None = None  # an evaluation timed as base's: its network's size over base's


@dataclass
class Estimate:
    device: str | None  # the measured device the times are for; None when there is no measurement
    kind: str  # "gpu" or "cpu"
    costs: list[TrialCost] = field(default_factory=list)

    @property
    def seconds(self) -> float | None:
        values = [c.seconds for c in self.costs]
        return None if any(v is None for v in values) else math.fsum(values)

    def wall_seconds(self, devices: int) -> float | None:
        """On `devices` devices, one trial per device at a time: the work spread evenly, but never less
        than the longest chain of trials that must run one after another."""
        total = self.seconds
        if total is None or not self.costs:
            return total
        return max(total / max(devices, 1), self.critical_path())

    def critical_path(self) -> float:
        by_id = {c.trial.trial_id: c for c in self.costs}
        memo: dict[str, float] = {}

        def finish(cost: TrialCost) -> float:
            key = cost.trial.trial_id
            if key not in memo:
                before = by_id.get(cost.trial.depends_on or "")
                memo[key] = (cost.seconds or 0.0) + (finish(before) if before else 0.0)
            return memo[key]

        return max(finish(c) for c in self.costs)


def measurements() -> dict[str, Any]:
    text = (resources.files("lhdbench.conditions") / "measurements.yaml").read_text(encoding="utf-8")
    return parse_yaml(text, "lhdbench.conditions/measurements.yaml") or {}


def scale_of(protocol_name: str) -> str:
    """Which measured network scale a protocol runs at: the shipped small presets have their own."""
    return protocol_name if protocol_name in ("demo", "smoke") else "paper"


def estimate(plan: Plan, trials: list[Trial] | None = None, kind: str = "gpu") -> Estimate:
    """The cost of `trials` (default: all of the plan's) on the measured device of `kind`."""
    entry = measurements().get(scale_of(plan.protocol.name), {}).get(kind)
    result = Estimate(device=entry.get("device") if entry else None, kind=kind)
    for trial in plan.trials if trials is None else trials:
        work = _work(trial, plan)
        seconds, basis, scale = _time(trial, work, entry, plan)
        result.costs.append(TrialCost(trial, work[0], seconds, basis, scale))
    return result


def _search_sizes(trial: Trial, plan: Plan) -> tuple[Any, int, int, int]:
    """(settings, weight images, arch images, batch) of the search a trial builds on."""
    from .methods import get_method, resolve_settings

    cls = get_method(trial.baseline)
    settings, _ = resolve_settings(cls, plan.protocol)
    dataset = trial.search_dataset or trial.dataset
    images = min(train_images(dataset), settings.max_train_images or math.inf)
    if cls.bilevel or trial.phase == "select":  # a selection always splits (lhdbench/select.py)
        weight = math.floor(settings.train_portion * images)
        arch = images - weight
    else:
        weight, arch = int(images), int(images)
    return settings, weight, arch, max(1, min(settings.batch_size, weight, arch))


def _work(trial: Trial, plan: Plan) -> tuple[int, int, int]:
    """(training steps, images per step, forward-only images) of one trial."""
    protocol = plan.protocol
    if trial.phase == "search":
        from .methods import get_method

        if not get_method(trial.baseline).trains:
            return 0, 0, 0
        settings, weight, _, batch = _search_sizes(trial, plan)
        per_epoch = min(math.ceil(weight / batch), settings.steps_per_epoch or math.inf)
        return settings.epochs * int(per_epoch), batch, 0
    if trial.phase == "select":
        from .select import tuning_epochs
        from .space.layout import NUM_NODES, NUM_OPS, node_rows

        settings, weight, arch, batch = _search_sizes(trial, plan)
        select = protocol.select
        per_epoch = min(math.ceil(weight / batch), select.steps_per_epoch or math.inf)
        pairs = sum((node_rows(n).stop - node_rows(n).start) * NUM_OPS for n in range(NUM_NODES))
        masks = 2 * (pairs + 2 * NUM_NODES)
        measured = min(arch, select.measure_images or math.inf)
        return tuning_epochs(select.interval) * int(per_epoch), batch, int(masks * measured)
    settings = protocol.evaluate
    train = min(train_images(trial.dataset), settings.max_train_images or math.inf)
    test = min(test_images(trial.dataset), settings.max_test_images or math.inf)
    per_epoch = min(math.ceil(train / settings.batch_size), settings.steps_per_epoch or math.inf)
    from .evaluate import curve_epochs  # the learning-curve points are test passes too

    metric = {e for e in range(settings.epochs) if e > settings.best_after_epoch or e == settings.epochs - 1}
    tested = len(metric | set(curve_epochs(settings.epochs).values()))
    return settings.epochs * int(per_epoch), settings.batch_size, int(tested * test)


def _time(trial: Trial, work: tuple[int, int, int], entry: dict | None,
          plan: Plan) -> tuple[float | None, str, float | None]:
    """(seconds, basis, scale) of one trial; `scale` where an evaluation's time is base's scaled."""
    steps, batch, forwards = work
    if steps == 0 and forwards == 0:
        return 0.0, "measured", None
    if not entry:
        return None, "unmeasured: no step time for this scale and device", None
    if trial.phase in ("search", "select"):
        per_image, basis = _per_image(entry.get("search", {}), trial.baseline, "darts")
        if per_image is None:
            return None, "unmeasured: no search step time", None
        # A search step trains on an architecture batch and a weight batch: two forwards and backwards.
        seconds = steps * per_image * batch + forwards * per_image / 2 * FORWARD_SHARE
        return seconds, basis, None
    per_image, basis = _per_image(entry.get("train", {}), trial.policy, "base")
    if per_image is None:
        return None, "unmeasured: no training step time", None
    scale = None
    if basis == "as base's per image" and trial.policy != "base":
        # Another policy's network is bigger (1m has >= 1.5M parameters, base about 0.65M): its step
        # takes longer in about the ratio of the parameter counts, which follows the ratio of the
        # networks' FLOPs within a few percent for the four policies.
        scale = params_ratio(trial.policy, trial.dataset, plan.protocol.evaluate)
        per_image *= scale
        basis = "as base's per image, scaled by parameters"
    return steps * per_image * batch + forwards * per_image * FORWARD_SHARE, basis, scale


def params_ratio(policy: str, dataset: str, settings: Any) -> float:
    """The parameters of `policy`'s evaluated network over base's, at the protocol's shapes (the
    policy's own, or the sizes the protocol sets)."""
    from .data import get_dataset

    classes = get_dataset(dataset).num_classes
    return (network_params(policy, classes, settings.layers, settings.init_channels)
            / network_params("base", classes, settings.layers, settings.init_channels))


@functools.lru_cache(maxsize=64)
def network_params(policy: str, num_classes: int, layers: int | None, init_channels: int | None) -> float:
    """The parameter count (without the auxiliary head) of the network `policy` evaluates, for the
    first of the fixed random architectures lhdbench/memory.py sizes (the others differ by a few
    percent, and each 1m network takes a second to size)."""
    import torch

    from .evaluate import build_network
    from .memory import sizing_weights
    from .protocol import EvalSettings
    from .space import discretize, get_policy

    rule = get_policy(policy)
    settings = EvalSettings(layers=layers, init_channels=init_channels, auxiliary_weight=0.0)
    with torch.device("meta"):  # shapes only: nothing allocated
        model = build_network(discretize(sizing_weights(0), rule), rule, num_classes, settings)
    return float(sum(p.numel() for p in model.parameters()))


def _per_image(table: dict, key: str | None, fallback: str) -> tuple[float | None, str]:
    """Seconds per image of `key`'s step (at the measured batch), or of the fallback's, saying which."""
    batch = table.get("batch")
    if not batch:
        return None, "unmeasured"
    if key in table:
        return table[key]["seconds"] / batch, "measured"
    if fallback in table:
        return table[fallback]["seconds"] / batch, f"as {fallback}'s per image"
    return None, "unmeasured"


def hours_text(seconds: float | None) -> str:
    """Hours to a sensible precision: 8,213 h, 37 h, 2.4 h, 0.15 h."""
    if seconds is None:
        return "unknown"
    hours = seconds / 3600
    if hours >= 100:
        return f"{hours:,.0f} h"
    if hours >= 10:
        return f"{hours:.0f} h"
    return f"{hours:.2g} h" if hours >= 0.01 else "<0.01 h"


def wall_text(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return f"{seconds / 86400:.1f} days" if seconds >= 2 * 86400 else hours_text(seconds)


def dry_run(plan: Plan, done: set[str], failed: set[str], devices: int, kind: str) -> list[str]:
    """What `benchmark --dry-run` prints: the plan per method and phase, what the store holds, and
    the estimated cost of what is left on `devices` devices of `kind`."""
    planned = {t.trial_id for t in plan.trials}
    to_run = [t for t in plan.trials if t.trial_id not in done]
    result = estimate(plan, to_run, kind)
    unit = "GPU" if kind == "gpu" else "CPU"
    phases = {"search": "searches", "select": "selections", "evaluate": "evaluations"}
    counts = {p: len(plan.of_phase(p)) for p in phases}
    lines = [f"dry run: suite {plan.suite.name}, protocol {plan.protocol.name}; nothing is written",
             f"plan: {counts['search']} searches, {counts['select']} selections and {counts['evaluate']} "
             f"evaluations; the store holds {len(done & planned)} of them done and "
             f"{len(failed & planned)} failed; {len(to_run)} to run"]
    conditions = list(dict.fromkeys((t.search_dataset or t.dataset, t.dataset, t.policy, t.selection)
                                    for t in plan.trials if t.phase == "evaluate"))
    lines.append(f"conditions: {len(conditions)} (" + ", ".join(
        (d if s == d else f"{s}>{d}") + f"/{p}" + ("/pt" if sel == "perturbation" else "")
        for s, d, p, sel in conditions) + ")")
    lines.append(f"{unit}-hours of what is to run, on {result.device or 'no measured ' + unit}, one trial "
                 f"per {unit} at a time:")
    lines.append(f"  {'method':<14}" + "".join(f"{name:>20}" for name in phases.values())
                 + f"{'total':>12}  step times not measured for the method or policy")
    for baseline in plan.suite.baselines:
        mine = [c for c in result.costs if c.trial.baseline == baseline]
        cells = []
        for phase in phases:
            here = [c for c in mine if c.trial.phase == phase]
            cells.append(f"{len(here)}: {hours_text(_sum(here))}" if here else "-")
        bases = {phase: sorted({c.basis for c in mine if c.trial.phase == phase}) for phase in phases}
        basis = "; ".join(f"{phase}: {', '.join(b)}" for phase, b in bases.items()
                          if b and b != ["measured"])
        lines.append(f"  {baseline:<14}" + "".join(f"{c:>20}" for c in cells)
                     + f"{hours_text(_sum(mine)):>12}  {basis or 'measured'}")
    scaled = sorted({(c.trial.policy, c.trial.dataset, c.scale) for c in result.costs if c.scale})
    if scaled:
        by_policy: dict[str, list[float]] = {}
        for policy, _, scale in scaled:
            by_policy.setdefault(policy, []).append(scale)
        lines.append("  evaluations of policies without a measured step time are timed as base's per image "
                     "times their network's parameters over base's (lhdbench/space/network.py): " + ", ".join(
                         f"{p} x{min(v):.2f}" + (f"-{max(v):.2f}" if max(v) - min(v) >= 0.005 else "")
                         for p, v in by_policy.items()))
    chain = wall_text(result.critical_path()) if result.costs and result.seconds is not None else "unknown"
    lines.append(f"total: {hours_text(result.seconds)} of {unit} time; on {devices} {unit}"
                 f"{'s' if devices != 1 else ''} about {wall_text(result.wall_seconds(devices))} (its "
                 f"longest chain of dependent trials: {chain})")
    return lines


def _sum(costs: list[TrialCost]) -> float | None:
    return None if any(c.seconds is None for c in costs) else math.fsum(c.seconds for c in costs)
