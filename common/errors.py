"""The project's error types, by what the user should do about them; the CLI maps each to an exit code
(runtime/cli/exit_codes.py): a `BadInputError` exits 2, a `BackendUnavailableError` 3, anything else is a bug (4).

Every error the project raises on purpose derives from one of these, besides the builtin type callers
expect (`class CheckpointError(BadInputError, ValueError)`), so a `ValueError` from numpy or a
`RuntimeError` from torch is never mistaken for bad input. The message is one line naming the problem and
the fix.
"""

from __future__ import annotations

__all__ = ["BadInputError", "BackendUnavailableError", "MissingExtraError", "UsageError"]


class BadInputError(Exception):
    """The inputs are wrong: a missing, unreadable or corrupt file, files that do not fit each other or this
    machine (an engine built for another GPU or TensorRT version), an impossible option; exit code 2."""


class BackendUnavailableError(Exception):
    """This machine lacks a runtime a backend needs (TensorRT, a CUDA GPU, a plugin library); exit code 3.

    A base for backend-specific errors, e.g. `class TensorRTUnavailableError(TensorRTError,
    BackendUnavailableError)`, so code catching the backend's own error type still catches these.
    """


class UsageError(BadInputError):
    """A problem with what the user passed on the command line (an option, a path); exit code 2."""


class MissingExtraError(BackendUnavailableError):
    """A command needs a package of an optional extra that is not installed (PyTorch for `export`,
    onnxconverter-common for `convert --fp16`); exit code 3. The message names the extra to install, e.g.
    "`maskrcnn-deploy export` needs PyTorch (module torch): pip install 'maskrcnn-deploy[export]'".
    Raised by `common.extras.require_extra`."""
