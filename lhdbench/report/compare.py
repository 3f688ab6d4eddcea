"""`lhdbench compare A B`: does one protocol rank the methods as another does?

Per condition (dataset label/policy label, as the report names them), the methods in both sources are
ranked in each by their mean metric value over seeds, and the two rankings are compared with Kendall's
tau-b and Spearman's rho, each with a percentile bootstrap interval over seeds. The usual pair is a
store of the `fast` protocol against one of the `paper` protocol (docs/report.md, "Comparing two
sources").

Every source is read through `load_records`, so a new kind of source (a bundle file) needs only that.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..files import atomic_write_bytes
from ..record import TrialRecord
from ..results.sources import SourceError, open_source
from ..store import current_trials
from .load import (
    ReportError,
    _current_records,
    condition_labels,
    condition_name,
    dataset_order,
    policy_order,
    short_condition,
)
from .options import METRICS
from .tables import COMPARE_DECIMALS

RESAMPLES = 1000  # bootstrap resamples per condition (the default of --resamples)
BOOTSTRAP_SEED = 0  # with the condition's name, seeds each condition's generator
LEVEL = 0.95  # the interval's coverage: the 2.5th and 97.5th percentiles of the resampled values
FLOAT_FORMAT = "%.10g"
SIDES = ("a", "b")

AGREEMENT_COLUMNS = ("condition", "dataset", "policy", "methods", "tau", "tau_low", "tau_high", "rho",
                     "rho_low", "rho_high", "resamples", "defined_tau", "defined_rho")
RANK_COLUMNS = ("condition", "baseline", "seeds_a", "mean_a", "rank_a", "seeds_b", "mean_b", "rank_b")


# -- reading a source ------------------------------------------------------------------------------------

def load_records(path: str | os.PathLike, notes: list[str] | None = None) -> dict[str, TrialRecord]:
    """The records of one source (a results store folder or a bundle file) that a comparison or a
    report may use, by trial id: every valid record that no later plan superseded, and of two versions
    of one experiment (method, condition, seed, protocol) the latest. ReportError (one line) when
    `path` is neither. Where `notes` is a list, what was left out is appended to it (invalid files,
    superseded trials)."""
    try:
        source = open_source(path)
    except SourceError as error:
        raise ReportError(str(error)) from None
    plan = source.plan
    records, left_out = _current_records(source.records, set(plan["trials"]) - set(current_trials(plan)))
    if notes is not None:
        notes.extend(f"left out, not a valid trial record: {message}" for message in source.invalid)
        notes.extend(left_out)
    return records


@dataclass(frozen=True)
class Source:
    """One side of a comparison: its evaluations' metric values by condition, method and seed."""

    label: str                    # the path as given on the command line
    protocol: str
    settings: dict[str, Any]      # the protocol's settings, as its records hold them
    values: dict[str, dict[str, dict[int, float]]]  # condition -> method -> seed -> value
    evaluations: int
    devices: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        return sorted({m for by_method in self.values.values() for m in by_method})

    @property
    def seeds(self) -> list[int]:
        return sorted({s for by_method in self.values.values() for v in by_method.values() for s in v})


def read_source(path: str | os.PathLike, metric: str = "final", protocol: str | None = None) -> Source:
    """A source's done evaluations of one protocol with a value of the metric. A source holding
    evaluations of several protocols needs `protocol`."""
    notes: list[str] = []
    records = load_records(path, notes)
    evaluations = [r for _, r in sorted(records.items()) if r.phase == "evaluate" and r.status == "done"]
    known = sorted({r.protocol_name for r in evaluations})
    if not known:
        raise ReportError(f"{path}: no done evaluations to compare")
    if protocol is None:
        if len(known) > 1:
            raise ReportError(f"{path} holds evaluations of several protocols ({', '.join(known)}); choose "
                              "one with --protocol-a or --protocol-b")
        protocol = known[0]
    elif protocol not in known:
        raise ReportError(f"{path}: no done evaluations of protocol {protocol!r} (it holds: "
                          f"{', '.join(known)})")
    mine = [r for r in evaluations if r.protocol_name == protocol]
    settings = [json_key(r.protocol) for r in mine]
    if len(set(settings)) > 1:
        notes.append(f"its records of protocol {protocol} hold {len(set(settings))} different settings; "
                     "those of the first trial id are shown")
    values: dict[str, dict[str, dict[int, float]]] = {}
    no_value = 0
    for r in mine:
        value = getattr(r, METRICS[metric])
        if value is None:
            no_value += 1
            continue
        condition = condition_name(*condition_labels(r.dataset, r.search_dataset, r.policy, r.selection))
        values.setdefault(condition, {}).setdefault(r.baseline or "?", {})[r.seed] = float(value)
    if no_value:
        notes.append(f"{no_value} done evaluation(s) without a {metric} value are left out")
    if not values:
        raise ReportError(f"{path}: no done evaluations of protocol {protocol!r} with a {metric} value")
    devices = sorted({r.environment.device_name for r in mine if r.environment is not None})
    return Source(label=str(path), protocol=protocol, settings=mine[0].protocol, values=values,
                  evaluations=len(mine) - no_value, devices=devices, notes=notes)


def json_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# -- rank correlations, many at once ----------------------------------------------------------------------

def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair of x and y (shape (resamples, methods)): the sum over method
    pairs of sign(dx) sign(dy) over sqrt(pairs untied in x x pairs untied in y); NaN where a row is all
    tied (or has fewer than 2 methods)."""
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    i, j = np.triu_indices(x.shape[1], 1)
    dx, dy = np.sign(x[:, i] - x[:, j]), np.sign(y[:, i] - y[:, j])
    denominator = np.sqrt((dx != 0).sum(axis=1).astype(float) * (dy != 0).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (dx * dy).sum(axis=1) / denominator, np.nan)


def spearman_rho(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair: Pearson's correlation of the ranks (ties share their average
    rank); NaN where a row is all tied."""
    rx = rankdata(np.atleast_2d(x), axis=1)
    ry = rankdata(np.atleast_2d(y), axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    denominator = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (rx * ry).sum(axis=1) / denominator, np.nan)


def mean_value(values: np.ndarray) -> np.ndarray:
    """Means over the last axis, rounded as the report compares them (equal seed sets tie exactly)."""
    return np.round(np.mean(values, axis=-1), COMPARE_DECIMALS)


def bootstrap_means(condition: str, per_method: Sequence[Sequence[np.ndarray]], resamples: int
                    ) -> list[np.ndarray]:
    """Resampled means, one (resamples, methods) array per source. The condition's generator is
    numpy's default_rng([BOOTSTRAP_SEED, crc32(condition name)]), so its interval does not depend on the
    other conditions; for each source in turn (A, then B) and each method in turn (by name), one index
    array of shape (resamples, seeds) is drawn with `integers(0, seeds)`: each resample draws the
    method's seeds with replacement, as many as it has."""
    rng = np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32(condition.encode())])
    out = []
    for methods in per_method:
        columns = []
        for values in methods:
            index = rng.integers(0, len(values), size=(resamples, len(values)))
            columns.append(mean_value(values[index]))
        out.append(np.stack(columns, axis=1))
    return out


def resampled_correlations(condition: str, per_method: Sequence[Sequence[np.ndarray]], resamples: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Kendall's tau-b and Spearman's rho of every resample (`bootstrap_means`), NaN where undefined."""
    a, b = bootstrap_means(condition, per_method, resamples)
    return kendall_tau_b(a, b), spearman_rho(a, b)


def interval(values: np.ndarray) -> tuple[float, float, int]:
    """(low, high, resamples where defined) of the central LEVEL interval (percentiles, linear)."""
    defined = values[~np.isnan(values)]
    if not len(defined):
        return math.nan, math.nan, 0
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(defined, [tail, 100 - tail])
    return float(low), float(high), len(defined)


# -- the comparison ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    a: Source
    b: Source
    metric: str
    resamples: int
    agreement: pd.DataFrame   # AGREEMENT_COLUMNS, one row per condition in both sources
    ranks: pd.DataFrame       # RANK_COLUMNS, one row per (condition, method in both)
    notes: list[str]

    @property
    def conditions(self) -> list[str]:
        return list(self.agreement["condition"])


def condition_order(conditions: Sequence[str]) -> list[str]:
    pairs = [c.split("/", 1) for c in conditions]
    return [condition_name(d, p) for d in dataset_order({d for d, _ in pairs})
            for p in policy_order({p for d2, p in pairs if d2 == d})]


def compare_sources(a: str | os.PathLike, b: str | os.PathLike, metric: str = "final",
                    protocol_a: str | None = None, protocol_b: str | None = None,
                    resamples: int = RESAMPLES) -> Comparison:
    if metric not in METRICS:
        raise ReportError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
    if resamples < 1:
        raise ReportError(f"--resamples must be at least 1, got {resamples}")
    sources = (read_source(a, metric, protocol_a), read_source(b, metric, protocol_b))
    both = set(sources[0].values) & set(sources[1].values)
    if not both:
        raise ReportError(f"{a} and {b} have no condition in common ({a}: "
                          f"{', '.join(condition_order(sources[0].values))}; {b}: "
                          f"{', '.join(condition_order(sources[1].values))})")
    notes = [f"{side.upper()}: {note}" for side, s in zip(SIDES, sources, strict=True) for note in s.notes]
    for side, s in zip(SIDES, sources, strict=True):
        alone = condition_order(set(s.values) - both)
        if alone:
            notes.append(f"left out, only in {side.upper()}: condition(s) {', '.join(alone)}")
    alone_methods: dict[tuple[str, str], list[str]] = {}
    rows, rank_rows = [], []
    for condition in condition_order(both):
        mine = [s.values[condition] for s in sources]
        common = sorted(set(mine[0]) & set(mine[1]))
        for side, by_method in zip(SIDES, mine, strict=True):
            for method in sorted(set(by_method) - set(common)):
                alone_methods.setdefault((side, method), []).append(condition)
        seeds = [[np.array([m[name][s] for s in sorted(m[name])]) for name in common] for m in mine]
        means = [np.array([float(mean_value(v)) for v in per]) for per in seeds]
        tau = rho = math.nan
        tau_range = rho_range = (math.nan, math.nan, 0)
        if len(common) >= 2:
            tau = float(kendall_tau_b(means[0], means[1])[0])
            rho = float(spearman_rho(means[0], means[1])[0])
            taus, rhos = resampled_correlations(condition, seeds, resamples)
            tau_range, rho_range = interval(taus), interval(rhos)
        dataset, policy = condition.split("/", 1)
        rows.append({"condition": condition, "dataset": dataset, "policy": policy, "methods": len(common),
                     "tau": tau, "tau_low": tau_range[0], "tau_high": tau_range[1], "rho": rho,
                     "rho_low": rho_range[0], "rho_high": rho_range[1],
                     "resamples": resamples if len(common) >= 2 else 0,
                     "defined_tau": tau_range[2], "defined_rho": rho_range[2]})
        ranks = [rankdata(-m) if len(m) else m for m in means]
        for k, name in enumerate(common):
            rank_rows.append({"condition": condition, "baseline": name,
                              "seeds_a": len(seeds[0][k]), "mean_a": means[0][k], "rank_a": ranks[0][k],
                              "seeds_b": len(seeds[1][k]), "mean_b": means[1][k], "rank_b": ranks[1][k]})
    for (side, method), where in sorted(alone_methods.items()):
        notes.append(f"left out, only in {side.upper()}: {method} in {', '.join(where)}")
    few = [r["condition"] for r in rows if r["methods"] < 2]
    if few:
        notes.append(f"fewer than 2 methods in common, so no correlation: {', '.join(few)}")
    return Comparison(a=sources[0], b=sources[1], metric=metric, resamples=resamples,
                      agreement=pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS)),
                      ranks=pd.DataFrame(rank_rows, columns=list(RANK_COLUMNS)), notes=notes)


# -- outputs ----------------------------------------------------------------------------------------------

NONE = "\u2013"


def flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as `section.key` -> value."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def protocol_differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(setting, A's value, B's value) for every setting but the name where the two differ."""
    flat_a, flat_b = flatten(a), flatten(b)

    def text(flat: dict[str, Any], key: str) -> str:
        return json_key(flat[key]) if key in flat else "not set"

    return [(key, text(flat_a, key), text(flat_b, key)) for key in sorted(set(flat_a) | set(flat_b))
            if key != "name" and (key not in flat_a or key not in flat_b or flat_a[key] != flat_b[key])]


def metric_label(comparison: Comparison) -> str:
    if comparison.metric == "final":
        return "final-epoch test accuracy"
    after = [str(flatten(s.settings).get("evaluate.best_after_epoch", "?")) for s in (comparison.a,
                                                                                      comparison.b)]
    return ("best test accuracy after evaluate.best_after_epoch (the paper's metric; "
            f"A: epoch {after[0]}, B: epoch {after[1]})")


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _number(value: float) -> str:
    return NONE if math.isnan(value) else f"{value:.2f}"


def _range(low: float, high: float) -> str:
    return NONE if math.isnan(low) else f"[{low:.2f}, {high:.2f}]"


def _seeds(seeds: list[int]) -> str:
    return ", ".join(str(s) for s in seeds)


def markdown(comparison: Comparison, image: str | None, command: str) -> str:
    a, b = comparison.a, comparison.b
    percent = f"{100 * LEVEL:g}%"
    lines = [f"# Ranking agreement: `{a.label}` (protocol {a.protocol}) against `{b.label}` "
             f"(protocol {b.protocol})", "",
             "Generated by `lhdbench compare` from the trial records of two sources; regenerate with", "",
             f"    {command}", "",
             "| | A | B |", "|---|---|---|",
             f"| source | `{a.label}` | `{b.label}` |",
             f"| protocol | {a.protocol} | {b.protocol} |",
             f"| evaluations used | {a.evaluations} | {b.evaluations} |",
             f"| methods | {len(a.methods)} | {len(b.methods)} |",
             f"| conditions | {len(a.values)} | {len(b.values)} |",
             f"| seeds | {_seeds(a.seeds)} | {_seeds(b.seeds)} |",
             f"| devices | {', '.join(a.devices) or 'none recorded'} | "
             f"{', '.join(b.devices) or 'none recorded'} |", ""]
    differences = protocol_differences(a.settings, b.settings)
    if differences:
        lines += ["Protocol settings that differ:", "", "| setting | A | B |", "|---|---|---|"]
        lines += [f"| `{key}` | {_escape(x)} | {_escape(y)} |" for key, x, y in differences] + [""]
    else:
        lines += ["The two protocols' settings are the same (names aside).", ""]
    lines += [f"Metric: {metric_label(comparison)}. In each condition, the methods present in both "
              "sources are ranked in each by their mean over seeds (1 = best; ties share the average "
              "rank), and the two rankings are compared with Kendall's tau-b and Spearman's rho (1: the "
              f"same order, 0: unrelated, -1: reversed). The {percent} intervals are percentile "
              f"bootstrap intervals over {comparison.resamples} resamples: each resample draws every "
              "method's seeds with replacement, in each source separately, with a fixed generator per "
              "condition, so the same records give the same intervals.", ""]
    lines += [f"Note: {_escape(note)}" for note in comparison.notes]
    if comparison.notes:
        lines.append("")
    lines += ["## Agreement per condition", "",
              f"| condition | methods | Kendall tau | {percent} interval | Spearman rho | "
              f"{percent} interval |",
              "|---|--:|--:|--:|--:|--:|"]
    for r in comparison.agreement.to_dict("records"):
        lines.append(f"| {short_condition(r['condition'])} | {r['methods']} | {_number(r['tau'])} | "
                     f"{_range(r['tau_low'], r['tau_high'])} | {_number(r['rho'])} | "
                     f"{_range(r['rho_low'], r['rho_high'])} |")
    taus, rhos = comparison.agreement["tau"].dropna(), comparison.agreement["rho"].dropna()
    if len(taus):
        lines += ["", f"Mean over {len(taus)} condition(s): tau {taus.mean():.2f}, rho {rhos.mean():.2f} "
                  f"(tau from {taus.min():.2f} to {taus.max():.2f})."]
    lines.append("")
    if image:
        caption = (f"Kendall's tau (circles) and Spearman's rho (squares) per condition, with their "
                   f"{percent} bootstrap intervals.")
        lines += [f"![{caption}]({image})", "", f"*{caption}*", ""]
    lines += rank_lines(comparison)
    return "\n".join(lines).rstrip("\n") + "\n"


def rank_lines(comparison: Comparison) -> list[str]:
    """Each method's rank in A and in B per condition (among the methods in both)."""
    ranks = comparison.ranks
    if ranks.empty:
        return []
    conditions = [c for c in comparison.conditions if c in set(ranks["condition"])]
    lookup = {(r["baseline"], r["condition"]): r for r in ranks.to_dict("records")}
    out = ["## Ranks per condition", "",
           "Each method's rank in A / in B, among the methods present in both sources in that condition; "
           f"{NONE}: not in both.", "",
           "| method | " + " | ".join(short_condition(c) for c in conditions) + " |",
           "|---|" + "--:|" * len(conditions)]
    for method in sorted(set(ranks["baseline"])):
        cells = []
        for condition in conditions:
            row = lookup.get((method, condition))
            cells.append(NONE if row is None else f"{_rank(row['rank_a'])} / {_rank(row['rank_b'])}")
        out.append(f"| {method} | " + " | ".join(cells) + " |")
    return out + [""]


def _rank(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def agreement_plot(comparison: Comparison):
    from . import plots

    rows = comparison.agreement.to_dict("records")
    figure = plots.new_figure(plots.COLUMN_WIDTH, 0.7 + 0.2 * len(rows))
    ax = figure.subplots()
    for y, r in enumerate(rows):
        for name, offset, marker, color in (("tau", -0.13, "o", "#4c72b0"), ("rho", 0.13, "s", "#c44e52")):
            if math.isnan(r[name]):
                continue
            if not math.isnan(r[f"{name}_low"]):
                ax.plot([r[f"{name}_low"], r[f"{name}_high"]], [y + offset] * 2, color=color, lw=0.8)
            ax.plot(r[name], y + offset, marker, ms=3, color=color,
                    label={"tau": "Kendall's \u03c4", "rho": "Spearman's \u03c1"}[name] if y == 0 else None)
    ax.axvline(0, color="#999999", lw=0.5)
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_yticks(range(len(rows)), [short_condition(r["condition"]) for r in rows])
    ax.set_xlabel(f"agreement of the method rankings: A ({comparison.a.protocol}) "
                  f"vs B ({comparison.b.protocol})")
    ax.grid(axis="x", lw=0.3, color="#dddddd")
    ax.set_axisbelow(True)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside upper center", ncol=2, frameon=False)
    return figure


def _write_frame(frame: pd.DataFrame, path: Path) -> Path:
    text = frame.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    atomic_write_bytes(path, text.encode())
    return path


def write_comparison(comparison: Comparison, out: str | os.PathLike, command: str) -> list[Path]:
    """OUT/compare.md, OUT/compare.csv (per condition), OUT/compare_ranks.csv (per condition and
    method) and OUT/compare.png; return the files. The same records give the same bytes."""
    from . import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = {"metric": comparison.metric, "protocol_a": comparison.a.protocol,
             "protocol_b": comparison.b.protocol}
    written = [_write_frame(comparison.agreement.assign(**extra), out / "compare.csv"),
               _write_frame(comparison.ranks.assign(**extra), out / "compare_ranks.csv")]
    with plots.style():
        written += plots.save(agreement_plot(comparison), out / "compare", ("png",))
    path = out / "compare.md"
    atomic_write_bytes(path, markdown(comparison, "compare.png", command).encode())
    return sorted(written + [path])
