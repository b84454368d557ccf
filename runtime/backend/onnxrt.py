"""ONNX Runtime backend: an exported deploy graph (custom RoIAlign node or standard ops), on numpy only:
nothing here, nor in runtime/predictor.py, imports torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskrcnn_deploy.export.graph_io import graph_fit, read_graph_info, read_onnx
from maskrcnn_deploy.model.config import MaskRCNNConfig
from maskrcnn_deploy.plugins.onnxruntime_op import load_session, run_session
from maskrcnn_deploy.runtime.predictor import Predictor

__all__ = ["OnnxPredictor", "graph_predictor_args"]


def graph_predictor_args(info: dict, shape: list) -> tuple:
    """`Predictor.__init__`'s arguments for a deploy graph: `info` its metadata (export/graph_io.py
    read_graph_info), `shape` its `images` input [B,3,H,W] as the runtime reports it (ints where static)."""
    static = all(isinstance(d, int) for d in shape)
    config, canvas = MaskRCNNConfig.from_dict(info["config"]), tuple(shape[2:]) if static else None
    return (config, canvas, shape[0] if isinstance(shape[0], int) else None, info.get("class_names"),
            info.get("category_ids"), graph_fit(info, config, canvas))


class OnnxPredictor(Predictor):
    """An exported deploy graph in ONNX Runtime (custom RoIAlign node or standard ops)."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None):
        model = read_onnx(path)
        info = read_graph_info(model, path)
        self.session = load_session(model, threads, name=path)
        super().__init__(*graph_predictor_args(info, self.session.get_inputs()[0].shape))

    def run_raw(self, batch: np.ndarray, sizes: np.ndarray) -> dict[str, np.ndarray]:
        """batch float32 [B,3,H,W], sizes float32 [B,2] (Predictor.run_raw) -> the graph's outputs."""
        return run_session(self.session, np.ascontiguousarray(batch, dtype=np.float32),
                           np.ascontiguousarray(sizes, dtype=np.float32))
