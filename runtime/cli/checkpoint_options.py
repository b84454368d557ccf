"""`--source` and `--bn-eps`: how a command reads a checkpoint, for every command that takes one.

The file kind is recognised without them (model/checkpoint_sources.py `detect_source`); `--source` overrides
the guess, `--bn-eps` sets the backbone's BatchNorm eps of a torchvision file (FrozenBN with eps 0 for the
COCO weights, 1e-5 for an ImageNet-only backbone: the file cannot tell).

A checkpoint runs on PyTorch, the `[export]` extra: `require_torch_for_checkpoints` says so in one line (exit 3)
where it is not installed; graphs and engines need no torch.

`--ray [ADDRESS]` and `--ray-workers` (`add_ray_options`) live here too: check, eval and bench share them, and a command
module imports no other command.
`--backend` (`add_backend_option`, for predict, check, bench and calibrate --eval-data) says what runs an .onnx
graph (runtime/load.py BACKENDS): "auto" is ONNX Runtime; "openvino" runs the standard-ops graph in OpenVINO (the
`[openvino]` extra: exit 3 without it; a custom-op graph is refused, exit 2). Checkpoints and engines take "auto".
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable

from maskrcnn_deploy.common.extras import require_extra
from maskrcnn_deploy.model.checkpoint_sources import SOURCES  # imports no torch (read at parser build)
from maskrcnn_deploy.runtime.load import BACKENDS

__all__ = ["CHECKPOINT_SUFFIXES", "add_checkpoint_options", "checkpoint_options", "require_torch_for_checkpoints",
           "add_ray_options", "add_backend_option"]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".pkl")  # what runtime/load.py runs as the eager PyTorch model


def add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=SOURCES, default=None,
                        help="where the checkpoint comes from (default: recognised from the file)")
    parser.add_argument("--bn-eps", type=float, default=None,
                        help="BatchNorm eps of a torchvision file's backbone (default: 1e-5 when the file has "
                             "BatchNorm2d statistics, else 0.0 as torchvision's COCO weights)")


def checkpoint_options(args: argparse.Namespace) -> dict:
    """{"source": ..., "bn_eps": ...} for `load(...)`, `export_checkpoint(...)` and `run_check(...)`."""
    return {"source": args.source, "bn_eps": args.bn_eps}


def require_torch_for_checkpoints(command: str, paths: Iterable[str | Path]) -> None:
    """MissingExtraError (exit 3, naming `[export]`) when one of `paths` is a checkpoint and PyTorch is not
    installed; nothing for .onnx graphs and engines."""
    for path in paths:
        if Path(path).suffix.lower() in CHECKPOINT_SUFFIXES:
            require_extra("export", f"`maskrcnn-deploy {command}` on the checkpoint {Path(path).name}",
                          ("torch", "torchvision"))


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    """`--ray [ADDRESS]` and `--ray-workers N` (check, eval and bench; runtime/distributed.py)."""
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="spread the images over Ray workers (the [ray] extra): no ADDRESS starts a local Ray, "
                             "'auto' joins the cluster the environment names, or give a cluster address")
    parser.add_argument("--ray-workers", type=int, default=None, metavar="N",
                        help="Ray workers, each loading the model(s) once (default: one per GPU for an engine, "
                             "else one per CPU of the cluster)")


def add_backend_option(parser: argparse.ArgumentParser, what: str = "the .onnx graph", **kwargs) -> None:
    """Add `--backend {auto,onnxruntime,openvino}` saying what runs `what` (kwargs: e.g. action="append")."""
    parser.add_argument("--backend", choices=BACKENDS, default=kwargs.pop("default", "auto"),
                        help=f"what runs {what}: auto (ONNX Runtime), onnxruntime or openvino (standard-ops "
                             "graphs, pip install 'maskrcnn-deploy[openvino]')", **kwargs)
