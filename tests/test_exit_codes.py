"""Exit codes by the project's own error types (runtime/cli/__init__.py main, common/errors.py): a
BadInputError raised inside a command exits 2 with one line, a BackendUnavailableError 3, and any other
exception, a ValueError from numpy included, 4 with the traceback."""

from __future__ import annotations

import numpy as np
import pytest

from maskrcnn_deploy.common.errors import BackendUnavailableError, BadInputError, UsageError
from maskrcnn_deploy.export import onnx_export
from maskrcnn_deploy.model import train_coco
from maskrcnn_deploy.model.checkpoint import CheckpointError
from maskrcnn_deploy.runtime.cli import main
from maskrcnn_deploy.runtime.cli.exit_codes import (
    EXIT_BACKEND_UNAVAILABLE,
    EXIT_BAD_INPUT,
    EXIT_INTERNAL_ERROR,
)

EXPORT = ["export", "model.pt", "-o", "model.onnx"]


def _export_raising(monkeypatch, error: BaseException | None = None, make_error=None) -> None:
    """Make `export`'s library call (export_checkpoint, imported when the command runs) raise."""
    def broken(*args, **kwargs):
        if make_error is not None:
            make_error()
        raise error
    monkeypatch.setattr(onnx_export, "export_checkpoint", broken)


@pytest.mark.parametrize("error", [BadInputError("model.pt is not what you think: give another one"),
                                   UsageError("--flag must be positive"),
                                   CheckpointError("model.pt is truncated: export it again")])
def test_a_bad_input_error_inside_a_command_is_exit_2_with_one_line(monkeypatch, capsys, error):
    _export_raising(monkeypatch, error)
    assert main(EXPORT) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"maskrcnn-deploy: error: {error}"]


def test_a_backend_unavailable_error_is_exit_3(monkeypatch, capsys):
    _export_raising(monkeypatch, BackendUnavailableError("TensorRT is not installed: pip install tensorrt"))
    assert main(EXPORT) == EXIT_BACKEND_UNAVAILABLE
    assert capsys.readouterr().err.strip().splitlines() == [
        "maskrcnn-deploy: error: TensorRT is not installed: pip install tensorrt"]


def test_a_value_error_from_numpy_is_a_bug_exit_4(monkeypatch, capsys):
    _export_raising(monkeypatch, make_error=lambda: np.zeros(3).reshape(2, 2))  # numpy's own ValueError
    assert main(EXPORT) == EXIT_INTERNAL_ERROR
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError" in err and "cannot reshape" in err and "internal error" in err


@pytest.mark.parametrize("error", [ValueError("x"), RuntimeError("CUDA error"), TypeError("bad operand")])
def test_builtin_errors_in_a_library_call_of_train_are_exit_4(monkeypatch, capsys, tmp_path, error):
    def broken(run):
        raise error
    monkeypatch.setattr(train_coco, "train_on_coco", broken)
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == EXIT_INTERNAL_ERROR
    assert "internal error" in capsys.readouterr().err


def test_user_triggered_library_errors_are_project_errors(tmp_path):
    """The raise sites a user reaches with a bad file or option raise project types (still ValueErrors)."""
    from maskrcnn_deploy.model.checkpoint_sources import read_checkpoint_file
    from maskrcnn_deploy.runtime.bench import BenchSettings, run_bench

    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    for path in (tmp_path / "missing.pt", tmp_path, tmp_path / "bad.pt"):
        with pytest.raises(CheckpointError):
            read_checkpoint_file(path)
    assert issubclass(CheckpointError, BadInputError) and issubclass(CheckpointError, ValueError)
    with pytest.raises(BadInputError, match="no images to benchmark on"):
        run_bench([], [], [], BenchSettings())


def test_bad_tolerance_options_of_check_are_exit_2(capsys):
    for option in (["--tolerance", "fp8"], ["--set", "no_such_tolerance=1"], ["--set", "max_box_error_px=tiny"]):
        assert main(["check", "a.pt", "b.onnx", "--data", "val.json", *option]) == EXIT_BAD_INPUT
        assert len(capsys.readouterr().err.strip().splitlines()) == 1, option
