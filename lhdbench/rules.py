"""The rules every setting is checked with: protocol sections and search methods' hyperparameters.

A rule is a function `(dotted_key, value) -> normalized value` that raises ProtocolError with a one-line
message naming the key, e.g. ``methods.pcdarts.partial_channels: expected an integer >= 1, got 0 (int)``.
Ints are accepted where numbers are expected (not the reverse); bools are never numbers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any


class ProtocolError(ValueError):
    """A protocol setting or file is invalid; the message is one line and names the dotted key."""


Rule = Callable[[str, Any], Any]


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def show(value: Any) -> str:
    """A value for an error message: one line, with its type where the type is the problem."""
    text = one_line(repr(value))
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def fail(path: str, expected: str, value: Any) -> ProtocolError:
    return ProtocolError(f"{path}: expected {expected}, got {show(value)}")


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def integer(minimum: int | None = None, optional: bool = False) -> Rule:
    """An integer >= `minimum` (any integer when None); None too when `optional`."""
    if minimum is None:
        expected = "an integer"
    else:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    expected += " or null" if optional else ""

    def check(path: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if not is_int(value) or (minimum is not None and value < minimum):
            raise fail(path, expected, value)
        return int(value)

    return check


def number(low: float = -math.inf, high: float = math.inf, low_open: bool = False,
           high_open: bool = True) -> Rule:
    """A finite number in the interval from `low` to `high`; `low_open`/`high_open` exclude the ends."""
    if low == -math.inf and high == math.inf:
        expected = "a finite number"
    elif high == math.inf:
        expected = "a positive number" if low == 0 and low_open else f"a number >= {low:g}"
    else:
        expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def check(path: str, value: Any) -> Any:
        if not is_number(value) or not math.isfinite(value):
            raise fail(path, expected, value)
        result = float(value)
        if result < low or (low_open and result == low) or result > high or (high_open and result == high):
            raise fail(path, expected, value)
        return result

    return check


POSITIVE = number(0.0, low_open=True)


def boolean(path: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise fail(path, "true or false", value)
    return value


def string(path: str, value: Any) -> Any:
    if not isinstance(value, str):
        raise fail(path, "a string", value)
    return value


def choice(*options: str) -> Rule:
    def check(path: str, value: Any) -> Any:
        if not isinstance(value, str) or value not in options:
            raise fail(path, "one of " + ", ".join(options), value)
        return value

    return check


def number_pair(low: float, high: float, example: str) -> Rule:
    """Two numbers in [low, high), as a tuple (Adam's betas)."""
    expected = f"two numbers in [{low:g}, {high:g}), e.g. {example}"
    each = number(low, high)

    def check(path: str, value: Any) -> Any:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)) \
                or len(value) != 2:
            raise fail(path, expected, value)
        try:
            return tuple(each(path, v) for v in value)
        except ProtocolError:
            raise fail(path, expected, value) from None

    return check


def rule_for(default: Any) -> Rule | None:
    """The rule a setting gets from its default's type when none is declared: a bool default takes
    bools, an int default integers, a float default finite numbers, a string default strings. None for
    other defaults (lists, None), which are left as given."""
    if isinstance(default, bool):
        return boolean
    if is_int(default):
        return integer()
    if is_number(default):
        return number()
    if isinstance(default, str):
        return string
    return None
