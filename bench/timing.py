"""Wall-time measurement shared by the benchmarks (imported as a sibling module: `from timing import ...`)."""

from __future__ import annotations

import statistics
import time
from typing import Callable


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


def round_robin_ms(calls: dict[str, Callable[[], object]], repeat: int, warmup: int,
                   progress_every: int = 0) -> dict[str, float]:
    """name -> median ms of `repeat` timed calls of calls[name](), after `warmup` untimed rounds. Each round calls
    every function once, in turn, so a change in the machine's load reaches all of them alike. With
    `progress_every` > 0, prints "latency: round k/repeat" after every that many timed rounds."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(warmup + repeat):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
        done = r - warmup + 1
        if progress_every > 0 and done > 0 and done % progress_every == 0:
            print(f"latency: round {done}/{repeat}", flush=True)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}
