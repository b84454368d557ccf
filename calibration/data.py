"""Calibration inputs: images through the inference preprocessing, batched for a deploy graph.

    graph = load_float_graph("model.onnx")                 # checked: readable, ours, float32
    batches = CalibrationBatches.from_data("data/train.json", graph, num_images=64, batch_size=1)
    for feed in batches: ...                                # {"images": [B,3,H,W], "image_sizes": [B,2]}

Images are resized (by the graph's recorded fit) and mean-padded exactly as every predictor does for
inference (export/preprocess.py), so the observed activation ranges are those the deployed model sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from maskrcnn_deploy.calibration.regions import PrecisionError, check_float_graph
from maskrcnn_deploy.export.graph_io import graph_fit, read_graph_info, read_onnx, static_input_size
from maskrcnn_deploy.export.preprocess import preprocess_images
from maskrcnn_deploy.model.config import MaskRCNNConfig
from maskrcnn_deploy.model.data.coco import (
    ImageLoadError,
    images_and_annotations,
    load_image,
    report_unreadable,
    unreadable_images,
)
from maskrcnn_deploy.model.fit import Fit

__all__ = ["DeployGraph", "load_float_graph", "read_graph", "CalibrationBatches"]


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


class CalibrationBatches:
    """Preprocessed image batches for a deploy graph; iterating yields ONNX Runtime feeds."""

    def __init__(self, paths: list[Path], graph: DeployGraph, batch_size: int = 1):
        if not paths:
            raise PrecisionError("no calibration images: give --data a folder of images or a COCO json")
        if batch_size < 1:
            raise PrecisionError(f"--batch-size must be >= 1, got {batch_size}")
        if graph.batch_size is not None and batch_size != graph.batch_size:
            raise PrecisionError(f"the graph has a static batch of {graph.batch_size}, but --batch-size is "
                                 f"{batch_size}: use --batch-size {graph.batch_size} or export with --dynamic")
        self.paths, self.graph, self.batch_size = list(paths), graph, batch_size
        self._check_readable()

    @classmethod
    def from_data(cls, data: str | Path, graph: DeployGraph, num_images: int | None = None,
                  batch_size: int = 1) -> "CalibrationBatches":
        """Images of a folder or COCO json (first `num_images` in name / id order)."""
        if not Path(data).exists():
            raise PrecisionError(f"calibration data not found: {data}")
        paths, _, _ = images_and_annotations(data, num_images)
        return cls(paths, graph, batch_size)

    def _check_readable(self) -> None:
        """Fail before any work when an image cannot be read: one line per unreadable file, then the count."""
        failures = unreadable_images(self.paths)
        if failures:
            summary = report_unreadable(failures, len(self.paths))
            raise ImageLoadError(f"{summary}: remove or fix them (the calibration set decides the scales)")

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.paths), self.batch_size):
            chunk = [load_image(p) for p in self.paths[start:start + self.batch_size]]
            while len(chunk) < self.batch_size:  # the last batch is topped up with copies
                chunk.append(chunk[-1])
            images, sizes = preprocess_images(chunk, self.graph.config, self.graph.input_size, self.graph.fit)
            yield {"images": images.numpy().astype(np.float32), "image_sizes": sizes.numpy().astype(np.float32)}
