"""Calibration inputs: images through the inference preprocessing, batched for a deploy graph.

    graph = load_float_graph("model.onnx")                 # calibration/deploy_graph.py
    batches = CalibrationBatches.from_data("data/train.json", graph, num_images=64, batch_size=1)
    for feed in batches: ...                                # {"images": [B,3,H,W], "image_sizes": [B,2]}

Images are resized (by the graph's recorded fit) and mean-padded exactly as every predictor does for
inference (export/preprocess.py), so the observed activation ranges are those the deployed model sees.
"""

from __future__ import annotations

from pathlib import Path

from maskrcnn_deploy.calibration.deploy_graph import DeployGraph
from maskrcnn_deploy.calibration.regions import PrecisionError
from maskrcnn_deploy.export.preprocess import preprocess_images
from maskrcnn_deploy.model.data.images import (
    ImageLoadError,
    images_and_annotations,
    load_rgb,
    report_unreadable,
    to_float_chw,
    unreadable_images,
)

__all__ = ["CalibrationBatches"]


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
            chunk = [to_float_chw(load_rgb(p)) for p in self.paths[start:start + self.batch_size]]
            while len(chunk) < self.batch_size:  # the last batch is topped up with copies
                chunk.append(chunk[-1])
            images, sizes = preprocess_images(chunk, self.graph.config, self.graph.input_size, self.graph.fit)
            yield {"images": images, "image_sizes": sizes}  # float32 [B,3,H,W], [B,2]
