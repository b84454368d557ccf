"""One predictor interface over every backend: `load(path).predict(images)` (runtime/load.py).

A checkpoint runs as the original eager `MaskRCNN` (`EagerPredictor`, the reference of `check`);
`DeployTorchPredictor` runs the fixed-shape deploy graph (export/deploy_model.py) in PyTorch; ONNX
and TensorRT run the exported deploy graph (runtime/backend/). All resize images by one rule (`Fit`, model/fit.py:
a static graph's canvas caps the scale, so any aspect ratio fits) and share the post-processing, so
results differ only by what the backend computes:

    preprocess : resize by the predictor's `fit` (short side test_min_size, long side <= max_size,
                 and inside a static graph's canvas; bilinear), pad bottom/right with the image mean
                 (0 after the in-graph normalisation) to the graph's static size, or to a multiple of
                 size_divisible for dynamic graphs
    raw        : boxes [N,4] resized pixels, scores [N], labels [N], masks [N,28,28], num_detections
    postprocess: boxes to original pixels, masks pasted full size (torchvision's paste), binary masks
                 (probability >= 0.5) and their COCO RLE

A detection dict per image: boxes [D,4] float32, scores [D], labels [D] int64 (1..K-1),
masks [D,H,W] bool, rles (list of COCO RLE dicts), raw (that image's rows of the raw outputs).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils

from maskrcnn_deploy.common.errors import BadInputError
from maskrcnn_deploy.export.preprocess import check_roi_scale, preprocess_images
from maskrcnn_deploy.model.config import MaskRCNNConfig
from maskrcnn_deploy.model.fit import Fit
from maskrcnn_deploy.model.transform import paste_masks_in_image, resize_boxes

__all__ = ["Predictor", "PredictorError", "detections_from_raw", "as_image_tensor", "STAGES"]

# the parts of one predict call that `predict(..., timings=)` times (runtime/bench.py reports them)
STAGES = ("preprocess", "inference", "postprocess")


# Full-size float masks are pasted in chunks of at most this many bytes: 100 detections on a 24-MP image
# would need 10 GB at once.
PASTE_BUDGET_BYTES = 256 * 2**20


class PredictorError(BadInputError, ValueError):
    """A model file or an input the predictor cannot use; the message is one line."""


def as_image_tensor(image) -> torch.Tensor:
    """Path, uint8 HxWx3 array or float [3,H,W] tensor in 0-1 -> float32 [3,H,W]."""
    if isinstance(image, (str, Path)):
        from maskrcnn_deploy.model.data.coco import load_image
        return load_image(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise PredictorError(f"numpy images must be HxWx3, got shape {image.shape}")
        scale = 255.0 if image.dtype == np.uint8 else 1.0
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / scale
    if image.dim() != 3 or image.shape[0] != 3 or image.shape[1] == 0 or image.shape[2] == 0:
        raise PredictorError(f"images must be [3,H,W] with H,W > 0, got shape {tuple(image.shape)}")
    return image.float()


def detections_from_raw(raw: dict[str, np.ndarray], sizes: torch.Tensor, original_sizes: list[tuple[int, int]],
                mask_threshold: float = 0.5, min_score: float | None = None) -> list[dict]:
    """Batch raw outputs -> one detection dict per image (see the module docstring).

    min_score: keep only detections scoring at least this (None: all). Only kept masks are pasted at
    full size, so a caller that draws confident detections of a large photo never pastes the rest.
    """
    results = []
    for i, orig in enumerate(original_sizes):
        n = int(raw["num_detections"][i])
        row = {"boxes": raw["boxes"][i], "scores": raw["scores"][i], "labels": raw["labels"][i].astype(np.int64),
               "masks": raw["masks"][i], "num_detections": n}
        keep = np.arange(n) if min_score is None else np.flatnonzero(row["scores"][:n] >= min_score)
        n = len(keep)
        size = (int(sizes[i, 0]), int(sizes[i, 1]))
        boxes = resize_boxes(torch.from_numpy(row["boxes"][keep].astype(np.float32)), size, orig)
        small = torch.from_numpy(row["masks"][keep].astype(np.float32))[:, None]
        masks = np.zeros((n, *orig), dtype=bool)
        step = max(1, PASTE_BUDGET_BYTES // (4 * orig[0] * orig[1]))  # float masks pasted at a time
        for start in range(0, n, step):
            probs = paste_masks_in_image(small[start:start + step], boxes[start:start + step], orig)
            masks[start:start + step] = (probs[:, 0] >= mask_threshold).numpy()
        rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
        results.append({"boxes": boxes.numpy(), "scores": row["scores"][keep].astype(np.float32),
                        "labels": row["labels"][keep], "masks": masks, "rles": rles, "raw": row})
    return results


class Predictor:
    """Common driver: subclasses provide `run_raw(batch, sizes) -> {output name: numpy [B,...]}`."""

    backend = "base"
    runs_deploy_graph = True  # the fixed-shape graph (export/deploy_model.py); False: the eager model

    def __init__(self, config: MaskRCNNConfig, input_size: tuple[int, int] | None, batch_size: int | None,
                 class_names: list[str] | None, category_ids: list[int] | None, fit: Fit | None = None):
        self.config, self.input_size, self.fixed_batch = config, input_size, batch_size
        self.class_names, self.category_ids = class_names, category_ids
        self.fit = fit or Fit.of(config, input_size)  # how images are resized (see model/transform.py)

    def prepare(self, chunk: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded images -> (model input, resized sizes [B,2] float): resize, pad, top up a static batch."""
        batch, sizes = preprocess_images(chunk, self.config, self.input_size, self.fit)
        if self.runs_deploy_graph:
            check_roi_scale(sizes, tuple(batch.shape[-2:]), self.config.size_divisible)
        if self.fixed_batch and len(chunk) < self.fixed_batch:  # a static batch: pad with copies
            extra = self.fixed_batch - len(chunk)
            batch = torch.cat([batch, batch[-1:].expand(extra, -1, -1, -1)])
            sizes = torch.cat([sizes, sizes[-1:].expand(extra, -1)])
        return batch, sizes

    def run_raw(self, batch, sizes: torch.Tensor) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def predict(self, images: Sequence, batch_size: int = 1, mask_threshold: float = 0.5,
                timings: dict[str, float] | None = None, min_score: float | None = None) -> list[dict]:
        """Detections for each image (paths, uint8 HxWx3 arrays or float [3,H,W] tensors); with
        `min_score`, only those scoring at least that (their masks alone are pasted, see detections_from_raw).

        timings: when given, the wall seconds of each of STAGES are added to it (missing keys start at 0):
        preprocess (image to tensor, which decodes paths, resize, padding, static-batch padding),
        inference (`run_raw`: the graph, host-device copies included; TensorRT synchronizes its
        stream there) and postprocess (boxes to original pixels, mask pasting, thresholding, RLE).
        """
        step = self.fixed_batch or batch_size
        results = []
        for start in range(0, len(images), step):
            t0 = time.perf_counter()
            chunk = [as_image_tensor(im) for im in images[start:start + step]]
            originals = [(int(c.shape[-2]), int(c.shape[-1])) for c in chunk]
            batch, sizes = self.prepare(chunk)
            t1 = time.perf_counter()
            raw = self.run_raw(batch, sizes)
            t2 = time.perf_counter()
            results.extend(detections_from_raw(raw, sizes, originals, mask_threshold, min_score))
            if timings is not None:
                for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, time.perf_counter() - t2)):
                    timings[stage] = timings.get(stage, 0.0) + seconds
        return results


