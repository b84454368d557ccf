"""The exported deploy graph calibration works on: the ONNX model with what feeding it needs.

    graph = load_float_graph("model.onnx")   # checked: readable, written by `maskrcnn-deploy export`, float32
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from maskrcnn_deploy.calibration.regions import check_float_graph
from maskrcnn_deploy.export.graph_io import graph_fit, read_graph_info, read_onnx, static_input_size
from maskrcnn_deploy.model.config import MaskRCNNConfig
from maskrcnn_deploy.model.fit import Fit

__all__ = ["DeployGraph", "read_graph", "load_float_graph"]


@dataclass
class DeployGraph:
    """An exported deploy graph with what preprocessing needs to feed it."""

    path: Path
    model: onnx.ModelProto
    config: MaskRCNNConfig
    input_size: tuple[int, int] | None  # static (H, W), None when dynamic
    batch_size: int | None  # static batch, None when dynamic
    fit: Fit | None = None  # how images are resized for it (the metadata's); None: from config and input_size


def read_graph(path: str | Path) -> DeployGraph:
    """Load an ONNX deploy graph written by `maskrcnn-deploy export` (any precision)."""
    model = read_onnx(path)
    info = read_graph_info(model, path)
    batch, size = static_input_size(model)
    config = MaskRCNNConfig.from_dict(info["config"])
    return DeployGraph(Path(path), model, config, size, batch, graph_fit(info, config, size))


def load_float_graph(path: str | Path) -> DeployGraph:
    """`read_graph`, refusing graphs that are already quantized or float16."""
    graph = read_graph(path)
    check_float_graph(graph.model, str(graph.path))
    return graph
