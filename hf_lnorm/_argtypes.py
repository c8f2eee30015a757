"""``argparse`` types for numeric flags, so that bad values are usage errors before any work.

Each type raises ``argparse.ArgumentTypeError`` with the value and what is
accepted; argparse adds the flag's name and exits with status 2, e.g.
``hf-lnorm patch: error: argument --seq-len: expected an integer >= 1, got '0'``.

Examples:
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> _ = p.add_argument("--repeats", type=positive_int, default=5)
    >>> p.parse_args(["--repeats", "3"]).repeats
    3
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, List


def int_at_least(minimum: int) -> Callable[[str], int]:
    """A type accepting integers ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


positive_int = int_at_least(1)
positive_int.__name__ = "positive_int"
non_negative_int = int_at_least(0)
non_negative_int.__name__ = "non_negative_int"


def _finite_float(text: str, accepted: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite float ``>= 0``."""
    value = _finite_float(text, "a number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def unit_interval(text: str) -> float:
    """A float in ``[0, 1]``."""
    value = _finite_float(text, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def positive_int_list(text: str) -> List[int]:
    """Comma-separated positive integers, e.g. ``1,8``."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values
