"""Median wall time of a callable, shared by the benchmarks (imported as a sibling module)."""

from __future__ import annotations

import statistics
import time


def median_time(fn, repeat: int, warmup: int = 1) -> float:
    """Seconds: median of `repeat` timed calls of fn() after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
