"""Ctrl-C at a safe point: hold SIGINT while native code runs, then raise KeyboardInterrupt.

ONNX Runtime runs our custom RoIAlign op as a Python callback (onnxruntime-extensions PyOp) inside
`session.run`. A KeyboardInterrupt raised in that callback cannot cross the C++ frames around it:
the process aborts ("terminate called after throwing an instance of 'pybind11::error_already_set'")
instead of exiting with code 130 and the usual line. Inside `deferred_interrupt()` the first Ctrl-C
is only noted and raised as KeyboardInterrupt when the block ends; a second one interrupts at once,
as before (for a user who would rather not wait for the run to finish).

    with deferred_interrupt():
        outputs = session.run(names, feeds)
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

__all__ = ["deferred_interrupt"]


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold a first Ctrl-C (SIGINT) until the block ends, then raise KeyboardInterrupt (main thread only)."""
    previous = signal.getsignal(signal.SIGINT)
    # handlers can only be set from the main thread (where SIGINT arrives); an ignored or default
    # (non-Python) SIGINT is left alone
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    received = []

    def note(signum, frame):
        if received:
            previous(signum, frame)  # the second Ctrl-C: what the user would have got without us
        received.append(signum)

    signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
