"""An exported graph's file and metadata, read and written in one place (no torch here).

The exporter stores what every runtime needs to feed the graph and read its outputs under one
`metadata_props` entry, METADATA_KEY, as JSON:

    {"config": MaskRCNNConfig.to_dict(), "fit": Fit.to_dict(), "class_names": [...], "category_ids": [...],
     "export": {...options...}, "bn_eps"..., "graph_format": GRAPH_FORMAT}

ONNX Runtime sessions, calibration and the TensorRT engine builder all read graphs through
`read_onnx` and `read_graph_info`; a TensorRT engine carries the same entry in its metadata file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import onnx

from maskrcnn_deploy.common.errors import BadInputError
from maskrcnn_deploy.model.config import MaskRCNNConfig
from maskrcnn_deploy.model.fit import Fit

__all__ = ["METADATA_KEY", "GRAPH_FORMAT", "GraphFileError", "read_onnx", "metadata_of", "read_graph_info",
           "write_graph_info", "graph_fit", "static_input_size"]

METADATA_KEY = "maskrcnn_deploy"  # metadata_props entry: config, fit, class names, export options
# What the graph computes, for runtimes to refuse what they would answer differently. 2: RoIAlign takes each image's
# extent (docs/ops.md `extents`); graphs without the entry are format 1 (they pool the canvas's repeated edge where
# the eager model reads zeros: torchvision's magnified short images, slivers at an image's edge).
GRAPH_FORMAT = 2


class GraphFileError(BadInputError, ValueError):
    """An ONNX file that is missing, unreadable, or was not written by `maskrcnn-deploy export`."""


def read_onnx(path: str | Path) -> onnx.ModelProto:
    """The ONNX model in `path`; GraphFileError (one line, with the fix) when it is missing or not ONNX."""
    path = Path(path)
    if not path.is_file():
        raise GraphFileError(f"ONNX file not found: {path} (export one with `maskrcnn-deploy export CHECKPOINT -o "
                             f"{path.name}`)")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others for a corrupt file
        raise GraphFileError(f"cannot read {path} as ONNX ({type(exc).__name__}): re-export it") from None


def metadata_of(model: onnx.ModelProto) -> dict[str, str]:
    """The model's metadata_props as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def read_graph_info(metadata: onnx.ModelProto | Mapping[str, str], name: str | Path) -> dict:
    """The METADATA_KEY JSON of a graph (or of the metadata dict an engine carries); `name` is for messages.
    GraphFileError for a graph of an earlier GRAPH_FORMAT, which would answer some images differently."""
    props = metadata_of(metadata) if isinstance(metadata, onnx.ModelProto) else metadata
    text = props.get(METADATA_KEY)
    if text is None:
        raise GraphFileError(f"{name} has no '{METADATA_KEY}' metadata (model config): export it with "
                             "`maskrcnn-deploy export`")
    info = json.loads(text)
    _check_graph_format(info, name)
    return info


def write_graph_info(model: onnx.ModelProto, info: dict) -> None:
    """Store `info` as the graph's METADATA_KEY entry (other metadata entries are kept)."""
    onnx.helper.set_model_props(model, {**metadata_of(model), METADATA_KEY: json.dumps(info)})


def _check_graph_format(info: dict, name: str | Path) -> None:
    """GraphFileError (one line, with the fix) for a graph exported before GRAPH_FORMAT."""
    found = info.get("graph_format", 1)
    if found < GRAPH_FORMAT:
        raise GraphFileError(f"{name}: exported by an earlier maskrcnn-deploy (graph format {found}, this one runs "
                             f"{GRAPH_FORMAT}: RoIAlign now takes each image's extent, without which short images and "
                             "slivers at an image's edge differ from the checkpoint): re-export it with "
                             "`maskrcnn-deploy export`")


def graph_fit(info: dict, config: MaskRCNNConfig, canvas: tuple[int, int] | None) -> Fit:
    """The fit an exported graph records in its metadata (`info`); files written before it was recorded
    get the same rule from their config and static input size."""
    return Fit.from_dict(info["fit"]) if info.get("fit") else Fit.of(config, canvas)


def static_input_size(model: onnx.ModelProto) -> tuple[int | None, tuple[int, int] | None]:
    """(static batch or None, static (H, W) or None) of the graph's `images` input [B,3,H,W]."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    values = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return values[0], ((values[2], values[3]) if values[2] and values[3] else None)
