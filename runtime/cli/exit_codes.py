"""Exit codes of `maskrcnn-deploy`, one per kind of outcome, so a CI job can act on each (docs/ci.md).

    code  name                      meaning                                               typical CI action
    ----  ------------------------  ----------------------------------------------------  -----------------
       0  EXIT_OK                   done; for `check`: parity PASS                        pass
       1  EXIT_PARITY_FAILURE       `check` (or `demo`) ran and parity FAILED: the        fail (regression)
                                    artifact's detections or AP are outside tolerance;
                                    `calibrate --target cpu --eval-data`: the INT8
                                    graph's segm AP drop is over --max-ap-drop
       2  EXIT_BAD_INPUT            the inputs are wrong: a missing, unreadable or        fail (fix the job)
                                    corrupt file, files that do not fit each other or
                                    this machine (an engine built for another GPU or
                                    TensorRT version, a different plugin), bad options
                                    (argparse also exits 2 on unknown options)
       3  EXIT_BACKEND_UNAVAILABLE  the inputs look fine but this machine cannot run      fail on a GPU
                                    the backend they need: TensorRT not installed (or     runner; skip on
                                    older than 10), no CUDA GPU, the TensorRT plugin      a CPU-only one
                                    library the engine needs not built here
       4  EXIT_INTERNAL_ERROR       an unexpected exception (a bug): the traceback is     fail, report it
                                    printed; kept apart from 1 so a crash never reads
                                    as a parity regression
     130  EXIT_INTERRUPTED          Ctrl-C / SIGINT (128 + signal 2, the shell convention) -

Why a missing plugin library is 3, not 2: the plugin is part of the TensorRT backend installed on a
machine (it is compiled against that machine's TensorRT), not one of the files a user hands to
`check`; the engine and its metadata are intact, and the fix is a setup step on the runner, exactly
as for TensorRT itself. A plugin that is there but differs from the one the engine was built with
is 2: a file that does not fit (rebuild the engine).

The error types behind 2 and 3 (`BadInputError`, `UsageError`, `BackendUnavailableError`) live in
common/errors.py, the lowest layer, so that every layer raises them; the CLI's main() maps exactly those
types to these codes, and any other exception to 4.
"""

from __future__ import annotations

__all__ = ["EXIT_OK", "EXIT_PARITY_FAILURE", "EXIT_BAD_INPUT", "EXIT_BACKEND_UNAVAILABLE", "EXIT_INTERNAL_ERROR",
           "EXIT_INTERRUPTED"]

EXIT_OK = 0
EXIT_PARITY_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_BACKEND_UNAVAILABLE = 3
EXIT_INTERNAL_ERROR = 4
EXIT_INTERRUPTED = 130

