"""A small progress display for long work (training, evaluation, data generation).

Prints one line at most every `interval` seconds (and always the last one), with
rate and estimated time left. On a terminal the line is redrawn in place; in logs
(CI, pipes) each update is its own line.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    """`75.2` -> `'1:15'`; `3725` -> `'1:02:05'`."""
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """`Progress(total, "train")`, then `update(n, "loss 0.53")` as work advances."""

    def __init__(self, total: int, desc: str, interval: float = 2.0, stream: TextIO | None = None,
                 start: int = 0):
        self.total = max(int(total), 1)
        self.desc = desc
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self.start_count = start
        self.count = start
        self.t0 = time.monotonic()
        self.last_print = 0.0
        self.in_place = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, count: int | None = None, info: str = "") -> None:
        """Set the count (or advance by one) and print when due."""
        self.count = self.count + 1 if count is None else count
        now = time.monotonic()
        if now - self.last_print < self.interval and self.count < self.total:
            return
        self.last_print = now
        done = self.count - self.start_count
        elapsed = now - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.count) / rate if rate > 0 else 0.0
        line = (f"{self.desc}: {self.count}/{self.total} [{format_seconds(elapsed)}<{format_seconds(eta)},"
                f" {rate:.2f} it/s] {info}")
        if self.in_place:
            end = "\n" if self.count >= self.total else ""
            self.stream.write("\r" + line.ljust(120) + end)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0
