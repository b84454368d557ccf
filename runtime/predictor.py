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
                 (probability >= 0.5) and their COCO RLE; a Detectron2 model's graph gets Detectron2's
                 rules (boxes scaled per axis, clipped, empty ones dropped; grid-sample paste)

All three stages are numpy (model/resize_paste_numpy.py, equal to torchvision's resize_boxes and
paste_masks_in_image: tests/test_resize_paste_numpy.py), so predictors of .onnx graphs and engines never
import torch; backends that run torch (runtime/backend/pytorch.py) convert inside their own `run_raw`.

A detection dict per image: boxes [D,4] float32, scores [D], labels [D] int64 (1..K-1),
masks [D,H,W] bool (each mask column-major in memory, as RLE reads it), rles (list of COCO RLE dicts),
raw (that image's rows of the raw outputs).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from maskrcnn_deploy.common.errors import BadInputError
from maskrcnn_deploy.export.preprocess import preprocess_images
from maskrcnn_deploy.model.config import MaskRCNNConfig
from maskrcnn_deploy.model.data.images import load_rgb, to_float_chw
from maskrcnn_deploy.model.fit import Fit
from maskrcnn_deploy.model.resize_paste_numpy import masks_array, paste_masks, paste_masks_grid_sample, rle_encode

__all__ = ["Predictor", "PredictorError", "detections_from_raw", "as_image_array", "resize_boxes",
           "detectron2_boxes", "add_stage_times", "STAGES"]

# the parts of one predict call that `predict(..., timings=)` times (runtime/bench.py reports them)
STAGES = ("preprocess", "inference", "postprocess")


# Masks are pasted in chunks of at most this many bytes of full-size float32 masks (the torch path's unit:
# 100 detections on a 24-MP image would need 10 GB at once). The numpy paste holds one box's floats at a
# time and writes bool masks, so a chunk bounds the work between two progress points, not the memory.
PASTE_BUDGET_BYTES = 256 * 2**20


class PredictorError(BadInputError, ValueError):
    """A model file or an input the predictor cannot use; the message is one line."""


def as_image_array(image) -> np.ndarray:
    """Path, numpy HxWx3 (uint8 0-255, or float 0-1) or a [3,H,W] float 0-1 tensor -> float32 [3,H,W] in 0-1.

    A tensor (anything with `.detach()`, e.g. torch's, as model/data/coco.py `load_image` gives) is read
    through numpy without importing torch."""
    if isinstance(image, (str, Path)):
        return to_float_chw(load_rgb(image))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise PredictorError(f"numpy images must be HxWx3, got shape {image.shape}")
        if image.dtype == np.uint8:
            return to_float_chw(image)
        return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] == 0 or image.shape[2] == 0:
        raise PredictorError(f"images must be [3,H,W] with H,W > 0, got shape {tuple(image.shape)}")
    return image.astype(np.float32, copy=False)


def resize_boxes(boxes: np.ndarray, old_size: tuple[int, int], new_size: tuple[int, int]) -> np.ndarray:
    """[N,4] xyxy boxes of an image of old_size (h, w) -> float32 [N,4] in an image of new_size (h, w):
    torchvision's rule (float32 ratios new / old, float32 products), as model/transform.py's."""
    rh = np.float32(new_size[0]) / np.float32(old_size[0])
    rw = np.float32(new_size[1]) / np.float32(old_size[1])
    return boxes.astype(np.float32) * np.array([rw, rh, rw, rh], dtype=np.float32)


def detectron2_boxes(boxes: np.ndarray, old_size: tuple[int, int], new_size: tuple[int, int]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Detectron2's detector_postprocess on boxes [N,4] of the resized image: scaled by (new w / old w,
    new h / old h) (float32 products), clipped to the new image -> (boxes [N,4] float32, kept [N] bool: both
    sides > 0; Detectron2 drops the others)."""
    scale = np.array([new_size[1] / old_size[1], new_size[0] / old_size[0]] * 2, dtype=np.float32)
    boxes = boxes.astype(np.float32) * scale
    boxes = np.clip(boxes, 0, np.array([new_size[1], new_size[0]] * 2, dtype=np.float32))
    return boxes, (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def detections_from_raw(raw: dict[str, np.ndarray], sizes: np.ndarray, original_sizes: list[tuple[int, int]],
                        mask_threshold: float = 0.5, min_score: float | None = None,
                        rule: str = "torchvision") -> list[dict]:
    """Batch raw outputs -> one detection dict per image (see the module docstring). sizes: [B,2] resized
    (h, w) of the images the graph saw.

    min_score: keep only detections scoring at least this (None: all). Only kept masks are pasted at
    full size, so a caller that draws confident detections of a large photo never pastes the rest.
    rule: the model's transform_rule ("detectron2": Detectron2's box mapping and mask paste).
    """
    sizes = np.asarray(sizes)
    results = []
    for i, orig in enumerate(original_sizes):
        n = int(raw["num_detections"][i])
        row = {"boxes": raw["boxes"][i], "scores": raw["scores"][i], "labels": raw["labels"][i].astype(np.int64),
               "masks": raw["masks"][i], "num_detections": n}
        keep = np.arange(n) if min_score is None else np.flatnonzero(row["scores"][:n] >= min_score)
        resized = (int(sizes[i, 0]), int(sizes[i, 1]))
        if rule == "detectron2":
            boxes, nonempty = detectron2_boxes(row["boxes"][keep], resized, orig)           # [D,4], [D]
            keep, boxes = keep[nonempty], boxes[nonempty]
        else:
            boxes = resize_boxes(row["boxes"][keep], resized, orig)                         # [D,4]
        masks = _binary_masks(row["masks"][keep], boxes, orig, mask_threshold, rule)        # [D,H,W]
        results.append({"boxes": boxes, "scores": row["scores"][keep].astype(np.float32),
                        "labels": row["labels"][keep], "masks": masks, "rles": rle_encode(masks), "raw": row})
    return results


def _binary_masks(small: np.ndarray, boxes: np.ndarray, size: tuple[int, int], threshold: float,
                  rule: str = "torchvision") -> np.ndarray:
    """[D,M,M] probabilities at boxes [D,4] (original pixels) -> bool [D,H,W] (pasted probability >=
    threshold; each mask column-major, as RLE encoding reads it), in chunks of PASTE_BUDGET_BYTES of float32
    masks."""
    masks = masks_array(len(small), size)
    step = max(1, PASTE_BUDGET_BYTES // (4 * size[0] * size[1]))  # float masks pasted at a time
    paste = paste_masks_grid_sample if rule == "detectron2" else paste_masks
    for start in range(0, len(small), step):
        paste(small[start:start + step], boxes[start:start + step], size, threshold, out=masks[start:start + step])
    return masks


def add_stage_times(timings: dict[str, float] | None, t0: float, t1: float, t2: float) -> None:
    """Add one predict call's STAGES seconds to `timings` (None: nothing): preprocess t0..t1, inference t1..t2,
    postprocess t2..now (time.perf_counter() instants)."""
    if timings is not None:
        for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, time.perf_counter() - t2)):
            timings[stage] = timings.get(stage, 0.0) + seconds


class Predictor:
    """Common driver: subclasses provide `run_raw(batch, sizes) -> {output name: numpy [B,...]}`."""

    backend = "base"

    def __init__(self, config: MaskRCNNConfig, input_size: tuple[int, int] | None, batch_size: int | None,
                 class_names: list[str] | None, category_ids: list[int] | None, fit: Fit | None = None):
        self.config, self.input_size, self.fixed_batch = config, input_size, batch_size
        self.class_names, self.category_ids = class_names, category_ids
        self.fit = fit or Fit.of(config, input_size)  # how images are resized (see model/transform.py)

    def prepare(self, chunk: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Decoded [3,H,W] images -> (model input float32 [B,3,Hp,Wp], resized sizes float32 [B,2] (h, w)):
        resize, pad, top up a static batch."""
        batch, sizes = preprocess_images(chunk, self.config, self.input_size, self.fit)
        if self.fixed_batch and len(chunk) < self.fixed_batch:  # a static batch: pad with copies
            extra = self.fixed_batch - len(chunk)
            batch = np.concatenate([batch, np.repeat(batch[-1:], extra, axis=0)])
            sizes = np.concatenate([sizes, np.repeat(sizes[-1:], extra, axis=0)])
        return batch, sizes

    def run_raw(self, batch: np.ndarray, sizes: np.ndarray) -> dict[str, np.ndarray]:
        """batch float32 [B,3,Hp,Wp] (resized, mean-padded, C-contiguous), sizes float32 [B,2] (resized h, w)
        -> {output name: numpy [B,...]}: boxes, scores, labels, masks, num_detections."""
        raise NotImplementedError

    def predict(self, images: Sequence, batch_size: int = 1, mask_threshold: float = 0.5,
                timings: dict[str, float] | None = None, min_score: float | None = None) -> list[dict]:
        """Detections for each image (paths, HxWx3 arrays or float [3,H,W] tensors: `as_image_array`); with
        `min_score`, only those scoring at least that (their masks alone are pasted, see detections_from_raw).

        timings: when given, the wall seconds of each of STAGES are added to it (missing keys start at 0):
        preprocess (image to array, which decodes paths, resize, padding, static-batch padding),
        inference (`run_raw`: the graph, host-device copies included; TensorRT synchronizes its
        stream there) and postprocess (boxes to original pixels, mask pasting, thresholding, RLE).
        """
        step = self.fixed_batch or batch_size
        results = []
        for start in range(0, len(images), step):
            t0 = time.perf_counter()
            chunk = [as_image_array(im) for im in images[start:start + step]]
            originals = [(int(c.shape[-2]), int(c.shape[-1])) for c in chunk]
            batch, sizes = self.prepare(chunk)
            t1 = time.perf_counter()
            raw = self.run_raw(batch, sizes)
            t2 = time.perf_counter()
            results.extend(detections_from_raw(raw, sizes, originals, mask_threshold, min_score,
                                               self.config.transform_rule))
            add_stage_times(timings, t0, t1, t2)
        return results


