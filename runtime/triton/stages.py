"""The ensemble's preprocessing and postprocessing, on numpy with the predictors' own code (no torch, no Triton).

    preprocess : IMAGE bytes [n,1] (encoded PNG/JPEG/BMP) -> decode (model/data/images.py `decode_rgb`), resize
                 by the graph's fit and pad to its canvas (Predictor.prepare: the code `predict` runs), top up a
                 fixed batch, pad up to an engine profile's minimum H, W (as TensorRTPredictor does)
                 -> images float32 [B,3,Hp,Wp], image_sizes float32 [B,2] (resized h, w),
                    original_sizes int64 [n,2] (h, w of the decoded images)
    the model  : images, image_sizes -> boxes, scores, labels, masks, num_detections (the deploy graph's outputs)
    postprocess: those + image_sizes + original_sizes -> detections_from_raw (what `predict` returns), as arrays
                 padded to the request's most detections D:
                 BOXES float32 [n,D,4] (original pixels, xyxy), SCORES float32 [n,D], LABELS int64 [n,D]
                 (1..K-1; 0 in padding), MASKS object [n,D] (each a COCO RLE as JSON bytes,
                 {"size": [h, w], "counts": "..."}; b"" in padding), NUM_DETECTIONS int64 [n,1]

The settings (graph.json beside each Python step's model.py) are written by artifact.py `_settings`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskrcnn_deploy.common.errors import BadInputError
from maskrcnn_deploy.model.config import MaskRCNNConfig
from maskrcnn_deploy.model.data.images import decode_rgb, to_float_chw
from maskrcnn_deploy.model.fit import Fit
from maskrcnn_deploy.runtime.predictor import Predictor, detections_from_raw

__all__ = ["SETTINGS_FILE", "Stages", "load_stages", "preprocess", "postprocess", "decode_rles", "PRE_OUTPUTS",
           "POST_INPUTS", "POST_OUTPUTS"]

SETTINGS_FILE = "graph.json"
# the deploy graph's outputs (export/deploy_model.py OUTPUT_NAMES, which imports torch: not imported here)
OUTPUT_NAMES = ("boxes", "scores", "labels", "masks", "num_detections")
PRE_OUTPUTS = ("images", "image_sizes", "original_sizes")
POST_INPUTS = (*OUTPUT_NAMES, "image_sizes", "original_sizes")
POST_OUTPUTS = ("BOXES", "SCORES", "LABELS", "MASKS", "NUM_DETECTIONS")


@dataclass
class Stages:
    """A graph's preprocessing (a bare `Predictor`: its `prepare` is `predict`'s) and what postprocessing needs."""

    predictor: Predictor
    min_canvas: tuple[int, int] | None   # an engine profile's minimum (H, W), for dynamic engines
    mask_threshold: float


def load_stages(settings: dict | str | Path) -> Stages:
    """Stages from the settings dict, or the graph.json file holding it."""
    if not isinstance(settings, dict):
        settings = json.loads(Path(settings).read_text())
    config = MaskRCNNConfig.from_dict(settings["config"])
    canvas = tuple(settings["input_size"]) if settings.get("input_size") else None
    predictor = Predictor(config, canvas, settings.get("batch_size"), settings.get("class_names"),
                          settings.get("category_ids"), Fit.from_dict(settings["fit"]))
    min_canvas = tuple(settings["min_canvas"]) if settings.get("min_canvas") else None
    return Stages(predictor, min_canvas, float(settings.get("mask_threshold", 0.5)))


def _pad_to(batch: np.ndarray, min_canvas: tuple[int, int] | None, mean) -> np.ndarray:
    """batch [B,3,H,W] padded bottom/right with the image mean up to min_canvas (an engine profile's minimum)."""
    if min_canvas is None or (batch.shape[2] >= min_canvas[0] and batch.shape[3] >= min_canvas[1]):
        return batch
    height, width = max(batch.shape[2], min_canvas[0]), max(batch.shape[3], min_canvas[1])
    padded = np.empty((batch.shape[0], 3, height, width), dtype=batch.dtype)
    padded[:] = np.asarray(mean, dtype=batch.dtype).reshape(1, 3, 1, 1)
    padded[:, :, :batch.shape[2], :batch.shape[3]] = batch
    return padded


def preprocess(stages: Stages, encoded: np.ndarray) -> dict[str, np.ndarray]:
    """IMAGE bytes [n,1] (or [n]) -> {images [B,3,Hp,Wp], image_sizes [B,2], original_sizes int64 [n,2]}."""
    blobs = list(np.asarray(encoded, dtype=object).reshape(-1))
    predictor = stages.predictor
    if not blobs:
        raise BadInputError("the request holds no image")
    if predictor.fixed_batch and len(blobs) > predictor.fixed_batch:
        raise BadInputError(f"the request holds {len(blobs)} images and this graph's fixed batch is "
                            f"{predictor.fixed_batch}: send at most {predictor.fixed_batch} per request")
    images = [to_float_chw(decode_rgb(blob, f"{i} of the request")) for i, blob in enumerate(blobs)]  # [3,H,W] each
    batch, sizes = predictor.prepare(images)
    batch = _pad_to(batch, stages.min_canvas, predictor.config.image_mean)
    originals = np.array([image.shape[-2:] for image in images], dtype=np.int64).reshape(-1, 2)
    return {"images": np.ascontiguousarray(batch), "image_sizes": sizes, "original_sizes": originals}


def _rle_bytes(rle: dict) -> bytes:
    counts = rle["counts"]
    return json.dumps({"size": [int(v) for v in rle["size"]],
                       "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}).encode()


def postprocess(stages: Stages, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's outputs with image_sizes and original_sizes (POST_INPUTS) -> POST_OUTPUTS (module docstring)."""
    raw = {name: np.asarray(arrays[name]) for name in OUTPUT_NAMES}
    raw["num_detections"] = raw["num_detections"].reshape(-1)  # [B] (Triton's batched dims are [1])
    originals = [(int(h), int(w)) for h, w in np.asarray(arrays["original_sizes"]).reshape(-1, 2)]
    detections = detections_from_raw(raw, np.asarray(arrays["image_sizes"]).reshape(-1, 2), originals,
                                     stages.mask_threshold, rule=stages.predictor.config.transform_rule)
    n, most = len(detections), max((len(d["scores"]) for d in detections), default=0)
    out = {"BOXES": np.zeros((n, most, 4), np.float32), "SCORES": np.zeros((n, most), np.float32),
           "LABELS": np.zeros((n, most), np.int64), "MASKS": np.full((n, most), b"", dtype=object),
           "NUM_DETECTIONS": np.zeros((n, 1), np.int64)}
    for i, det in enumerate(detections):
        d = len(det["scores"])
        out["BOXES"][i, :d], out["SCORES"][i, :d], out["LABELS"][i, :d] = det["boxes"], det["scores"], det["labels"]
        out["MASKS"][i, :d] = [_rle_bytes(rle) for rle in det["rles"]]
        out["NUM_DETECTIONS"][i, 0] = d
    return out


def decode_rles(masks: np.ndarray, count: int) -> list[dict]:
    """One image's MASKS row and its NUM_DETECTIONS -> COCO RLE dicts (counts as bytes, as pycocotools gives)."""
    rles = []
    for item in list(np.asarray(masks, dtype=object).reshape(-1))[:count]:
        rle = json.loads(item.decode() if isinstance(item, bytes) else item)
        rles.append({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    return rles
