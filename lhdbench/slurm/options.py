"""The user's sbatch options (`--sbatch "..."`): split, checked where lhdbench relies on them, and
turned into `#SBATCH` lines of the job script (so a chained job asks for the same allocation).

Everything else (partition, account, time, nodes, GPUs, constraint, memory, QOS) passes through as
given; sbatch itself judges it (`sbatch --test-only` before anything is submitted).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

# Slurm sends this signal to the batch shell this long before the time limit; the script forwards it to
# the driver, whose running trials then stop at their next checkpoint. It must cover one epoch of the
# slowest trial on a shared GPU (a paper-scale SVHN evaluation with four trials per GPU: minutes).
DEFAULT_WARNING_S = 900
DEFAULT_SIGNAL = f"B:USR1@{DEFAULT_WARNING_S}"

# Options lhdbench sets itself, or that would make the job something else.
REFUSED = {
    "--array": "one allocation runs the whole suite: Ray spreads the trials over its nodes",
    "--wrap": "lhdbench writes the job script",
    "--output": "each job's output goes to STORE/slurm/JOBID.out, where `lhdbench status` points",
    "--error": "each job's output goes to STORE/slurm/JOBID.out, where `lhdbench status` points",
    "--dependency": "`--until-done` chains the jobs itself",
    "--ntasks-per-node": "the job runs one Ray node per Slurm node (give CPUs with --cpus-per-task)",
}
SHORT = {"-a": "--array", "-o": "--output", "-e": "--error", "-d": "--dependency", "-t": "--time"}
SIGNAL_FORM = re.compile(r"R?B:(?:SIG)?(USR1|TERM)@(\d+)", re.IGNORECASE)


class SbatchOptionError(ValueError):
    """A usage error in `--sbatch`; one line."""


@dataclass(frozen=True)
class SbatchOptions:
    lines: list[str]  # one option (with its value) per #SBATCH line, quoted as sbatch reads them
    signal: str  # what --signal asks for (the user's, else DEFAULT_SIGNAL)
    warning_s: int
    time_limit_s: int | None  # from --time, when given


def parse_sbatch(text: str | None) -> SbatchOptions:
    try:
        tokens = shlex.split(text or "")
    except ValueError as error:
        raise SbatchOptionError(f"--sbatch {text!r}: {error}") from None
    groups: list[list[str]] = []
    for token in tokens:
        if token.startswith("-") or not groups:
            groups.append([token])
        else:
            groups[-1].append(token)
    signal, time_limit = None, None
    for group in groups:
        name, value = _name_and_value(group)
        if not name.startswith("-"):
            raise SbatchOptionError(f"--sbatch: {name!r} is not an option (sbatch options start with -)")
        if name in REFUSED:
            raise SbatchOptionError(f"--sbatch: {name} is not allowed here: {REFUSED[name]}")
        if name == "--signal":
            signal = value
        elif name == "--time" and value is not None:
            time_limit = time_limit_seconds(value)
        for token in group:
            if '"' in token:
                raise SbatchOptionError(f"--sbatch: {token!r}: a double quote cannot be passed to sbatch")
    signal = signal or DEFAULT_SIGNAL
    match = SIGNAL_FORM.fullmatch(signal)
    if match is None:
        raise SbatchOptionError(
            f"--sbatch: --signal={signal}: the warning before the time limit must go to the batch shell "
            "as USR1 or TERM, e.g. --signal=B:USR1@600 (the script forwards it to the driver)")
    warning = int(match.group(2))
    if time_limit is not None and warning >= time_limit:
        raise SbatchOptionError(
            f"--sbatch: the warning {warning} s before the time limit (--signal={signal}) is not shorter "
            f"than the time limit ({time_limit} s): pass a smaller one, e.g. --signal=B:USR1@"
            f"{max(time_limit // 10, 1)}")
    lines = [" ".join(_quoted(t) for t in group) for group in groups]
    if not any(_name_and_value(g)[0] == "--signal" for g in groups):
        lines.insert(0, f"--signal={DEFAULT_SIGNAL}")
    return SbatchOptions(lines=lines, signal=signal, warning_s=warning, time_limit_s=time_limit)


def _name_and_value(group: list[str]) -> tuple[str, str | None]:
    first = group[0]
    if first.startswith("--"):
        name, eq, value = first.partition("=")
        return name, value if eq else (group[1] if len(group) > 1 else None)
    if first.startswith("-") and len(first) >= 2:
        name = SHORT.get(first[:2], first[:2])
        value = first[2:] or (group[1] if len(group) > 1 else None)
        return name, value
    return first, None


def _quoted(token: str) -> str:
    return f'"{token}"' if any(c.isspace() for c in token) or not token else token


def time_limit_seconds(text: str) -> int | None:
    """Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S; None for unlimited."""
    given = text.strip()
    if given.upper() in ("UNLIMITED", "INFINITE", "-1"):
        return None
    bad = SbatchOptionError(f"--sbatch: --time {given!r}: not a Slurm time (M, M:S, H:M:S, D-H, D-H:M or "
                            "D-H:M:S)")
    days_text, dash, rest = given.rpartition("-") if "-" in given else ("0", "", given)
    parts = rest.split(":")
    if not days_text.isdigit() or not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        raise bad
    numbers = list(map(int, parts))
    if dash:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = (numbers + [0, 0])[:3]
    else:  # M, M:S, H:M:S
        hours, minutes, seconds = {1: [0, numbers[0], 0], 2: [0, *numbers], 3: numbers}[len(numbers)]
    return ((int(days_text) * 24 + hours) * 60 + minutes) * 60 + seconds
