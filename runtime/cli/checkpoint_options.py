"""`--source` and `--bn-eps`: how a command reads a checkpoint, for every command that takes one.

The file kind is recognised without them (model/checkpoint_sources.py `detect_source`); `--source` overrides
the guess, `--bn-eps` sets the backbone's BatchNorm eps of a torchvision file (FrozenBN with eps 0 for the
COCO weights, 1e-5 for an ImageNet-only backbone: the file cannot tell).
"""

from __future__ import annotations

import argparse

from maskrcnn_deploy.model.checkpoint_sources import SOURCES

__all__ = ["add_checkpoint_options", "checkpoint_options"]


def add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=SOURCES, default=None,
                        help="where the checkpoint comes from (default: recognised from the file)")
    parser.add_argument("--bn-eps", type=float, default=None,
                        help="BatchNorm eps of a torchvision file's backbone (default: 1e-5 when the file has "
                             "BatchNorm2d statistics, else 0.0 as torchvision's COCO weights)")


def checkpoint_options(args: argparse.Namespace) -> dict:
    """{"source": ..., "bn_eps": ...} for `load(...)`, `export_checkpoint(...)` and `run_check(...)`."""
    return {"source": args.source, "bn_eps": args.bn_eps}
