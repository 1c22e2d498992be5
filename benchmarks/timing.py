"""Timing helper shared by the benchmarks (run as ``python -m benchmarks.<name>``)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(
    repeat: int, fn: Callable[[], object], *, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Smallest time (s, by ``clock``: wall time by default) of ``repeat`` calls of ``fn``.

    The minimum is the run least disturbed by the rest of the machine, which is
    what a ratio of two measurements taken in the same process should compare.
    """
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best
