"""'Did you mean' for names the user types: baselines, datasets, policies, presets, suites.

Light (no torch), so the command line can use it in its usage errors.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


def fold(name: str) -> str:
    """A name without case and punctuation: `PC-DARTS`, `pc_darts` and `pcdarts` fold alike."""
    return re.sub(r"[^0-9a-z]+", "", str(name).lower())


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name `name` most likely meant: one that folds to the same text, else the closest by
    difflib's ratio (on folded names, at its default cutoff), else None. Never `name` itself."""
    known = [k for k in dict.fromkeys(known) if k != name]
    folded = fold(name)
    same = [k for k in known if fold(k) == folded]
    if same:
        return same[0]
    by_fold = {fold(k): k for k in reversed(known)}
    match = difflib.get_close_matches(folded, list(by_fold), n=1)
    return by_fold[match[0]] if match else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`"; did you mean X?"` for the closest known name, or "" when none is close."""
    match = closest(name, known)
    return f"; did you mean {match}?" if match else ""
