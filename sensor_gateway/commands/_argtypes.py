"""Argument types shared by the commands: numbers with a range, refused with a clear message."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

__all__ = ["count", "non_negative_float", "port", "positive_float", "positive_int"]

N = TypeVar("N", int, float)


def _ranged(kind: Callable[[str], N], noun: str, minimum: N, strict: bool,
            maximum: N | None = None) -> Callable[[str], N]:  # fmt: skip
    """A parser of ``kind`` values ``> minimum`` (``strict``) or ``>= minimum``, finite."""
    bound = f"{'>' if strict else '>='} {minimum}" + (f" and <= {maximum}" if maximum else "")

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        ok = value > minimum if strict else value >= minimum
        if not (ok and math.isfinite(value) and (maximum is None or value <= maximum)):
            raise argparse.ArgumentTypeError(f"must be {bound}: {text!r}")
        return value

    return parse


#: A number of seconds, a speed, a rate: ``> 0``.
positive_float = _ranged(float, "a number", 0.0, strict=True)
#: A fraction, an offset: ``>= 0``.
non_negative_float = _ranged(float, "a number", 0.0, strict=False)
#: How many of something there must be at least one of.
positive_int = _ranged(int, "an integer", 0, strict=True)
#: How many of something, possibly none.
count = _ranged(int, "an integer", 0, strict=False)
#: A TCP port to listen on.
port = _ranged(int, "a port number", 0, strict=True, maximum=65535)
