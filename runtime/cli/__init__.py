"""`maskrcnn-deploy`: one command line over the library (a thin layer: parse, call, report).

One module per command: `add_parser(sub)` declares its options, `run(args) -> int` calls the library and
reports; `build_parser` registers them in COMMANDS order, `main` maps exceptions to exit codes.

    maskrcnn-deploy data synth --out data/synth --train 1000 --val 100           (data.py)
    maskrcnn-deploy train --data data/synth --out runs/r18 --time-limit 900       (train.py)
    maskrcnn-deploy eval runs/r18/model_final.pt --data data/synth/val.json       (eval.py)
    maskrcnn-deploy predict runs/r18/model_final.pt data/synth/val --out out/pred (predict.py)
    maskrcnn-deploy demo                                                          (demo.py)
    maskrcnn-deploy export runs/r18/model_final.pt -o out/model.onnx              (export.py)
    maskrcnn-deploy check runs/r18/model_final.pt out/model.onnx --data data/synth/val.json  (check.py)
    maskrcnn-deploy diverge out/model.onnx out/model.int8.onnx --data data/synth/val.json -o out/diverge (diverge.py)
    maskrcnn-deploy build out/model.onnx -o out/model.engine                      (build.py, TensorRT)
    maskrcnn-deploy bench runs/r18/model_final.pt out/model.onnx --data data/synth/val.json  (bench.py)
    maskrcnn-deploy calibrate out/model.onnx --data data/synth/train.json -o out/model.int8.onnx  (calibrate.py)
    maskrcnn-deploy convert --fp16 out/model.onnx -o out/model.fp16.onnx --data data/synth/train.json (convert.py)
    maskrcnn-deploy package triton out/model.onnx -o model_repository/                (package.py, Triton)

Exit codes (runtime/cli/exit_codes.py): 0 success, 1 parity FAIL, 2 bad input (one line naming the problem
and the fix), 3 backend unavailable on this machine (TensorRT, CUDA GPU, plugin, or the optional extra a command
needs: `pip install 'maskrcnn-deploy[export]'` for PyTorch, common/extras.py), 4 internal error (a bug: traceback),
130 interrupted. Commands on .onnx graphs and engines import no torch: `pip install maskrcnn-deploy` runs them.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from maskrcnn_deploy.common.errors import BackendUnavailableError, BadInputError
from maskrcnn_deploy.common.extras import extra_of, missing_extra_error
from maskrcnn_deploy.runtime.cli import (
    bench,
    build,
    calibrate,
    check,
    convert,
    data,
    demo,
    diverge,
    export,
    package,
    predict,
    train,
)
from maskrcnn_deploy.runtime.cli import eval as eval_command
from maskrcnn_deploy.runtime.cli.exit_codes import (
    EXIT_BACKEND_UNAVAILABLE,
    EXIT_BAD_INPUT,
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
)

__all__ = ["main", "build_parser", "COMMANDS", "EXIT_BAD_INPUT"]

# in the order `maskrcnn-deploy --help` lists them
COMMANDS = (data, train, eval_command, predict, demo, export, check, diverge, build, bench, calibrate, convert,
            package)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; `args.func` is the chosen command's `run`."""
    parser = argparse.ArgumentParser(prog="maskrcnn-deploy", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _error(err: BaseException) -> None:
    print(f"maskrcnn-deploy: error: {err}", file=sys.stderr)


def _internal_error() -> int:
    """A bug: show the traceback, and exit 4 so that a crash never reads as a parity failure (1)."""
    traceback.print_exc()
    print("maskrcnn-deploy: internal error (a bug, not your input): please report it with the traceback above",
          file=sys.stderr)
    return EXIT_INTERNAL_ERROR


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exceptions become the exit codes of runtime/cli/exit_codes.py (argparse itself
    exits 2, EXIT_BAD_INPUT, on bad options). Commands return 0, or 1 for a failed parity check."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted; completed checkpoints and outputs are kept: run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except BackendUnavailableError as err:  # TensorRT missing or too old, no CUDA GPU, plugin not built here
        _error(err)
        return EXIT_BACKEND_UNAVAILABLE
    except ModuleNotFoundError as err:  # an extra's module imported on a path no require_extra guards yet
        extra = extra_of(err.name or "")
        if extra is None:
            return _internal_error()  # a base dependency missing is a broken install: show the traceback
        _error(missing_extra_error(extra, f"`maskrcnn-deploy {args.command}`", err.name))
        return EXIT_BACKEND_UNAVAILABLE
    except (BadInputError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as err:
        _error(err)  # ours (CheckpointError, ImageLoadError, PredictorError, ExportError, TensorRTError, ...)
        return EXIT_BAD_INPUT  # name the problem and the fix; a ValueError from numpy or torch is a bug (4)
    except Exception:
        return _internal_error()
