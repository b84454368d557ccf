"""COCO bbox and segm evaluation through pycocotools.

A detection dict (one image, original image coordinates; torch tensors or numpy arrays):
    boxes [D,4] xyxy pixels   scores [D]   labels [D] contiguous 1..K
    masks [D,H,W] or [D,1,H,W], binary or probabilities (thresholded at 0.5)
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["STAT_NAMES", "detections_to_coco_results", "evaluate_coco", "coco_ap"]

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _numpy(x) -> np.ndarray:
    """Tensor or array-like -> numpy array (detached, on CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def detections_to_coco_results(image_id: int, detections: Mapping, category_ids: Sequence[int] | Mapping[int, int],
                               mask_threshold: float = 0.5) -> list[dict]:
    """COCO result dicts of one image: a bbox result ([x,y,w,h]) and, with masks, a segm result (RLE) per detection.

    category_ids maps a contiguous label to its COCO category id (`category_ids[label]`, as
    `CocoDetectionDataset.category_ids`, index 0 = background). Each dict carries both "bbox" and
    "segmentation"; pycocotools uses the one matching the evaluated iou type.
    """
    boxes = _numpy(detections["boxes"]).astype(np.float64).reshape(-1, 4)
    scores = _numpy(detections["scores"]).astype(np.float64).reshape(-1)
    labels = _numpy(detections["labels"]).astype(np.int64).reshape(-1)
    masks = detections.get("masks")
    if masks is not None:
        masks = _numpy(masks)
        if masks.ndim == 4:
            masks = masks[:, 0]
        if masks.dtype != bool:
            masks = masks >= mask_threshold
    results = []
    for i in range(len(scores)):
        x0, y0, x1, y1 = boxes[i].tolist()
        result = {"image_id": int(image_id), "category_id": int(category_ids[int(labels[i])]),
                  "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(scores[i])}
        if masks is not None:
            rle = mask_utils.encode(np.asfortranarray(masks[i].astype(np.uint8)))
            result["segmentation"] = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
        results.append(result)
    return results


def _quiet(verbose: bool):
    """Context that swallows pycocotools' printing unless `verbose`."""
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def _load_gt(coco_gt: COCO | str | Path) -> COCO:
    """A COCO index as is, or loaded from a json path."""
    if isinstance(coco_gt, COCO):
        return coco_gt
    from maskrcnn_deploy.model.data.coco import load_coco

    return load_coco(coco_gt)


def _load_results(coco_gt: COCO, results: list[dict], iou_type: str) -> COCO | None:
    """loadRes on copies of the results (pycocotools mutates them); None when there are none.

    segm results go without "bbox": loadRes would otherwise treat them as box results (box areas).
    """
    if iou_type == "segm":
        items = [{k: v for k, v in r.items() if k != "bbox"} for r in results if "segmentation" in r]
    else:
        items = [{k: v for k, v in r.items() if k != "segmentation"} for r in results if "bbox" in r]
    if not items:
        return None
    return coco_gt.loadRes(items)


def evaluate_coco(coco_gt: COCO | str | Path, results: list[dict], iou_types: Iterable[str] = ("bbox", "segm"),
                  image_ids: Sequence[int] | None = None, verbose: bool = False) -> dict[str, dict[str, float]]:
    """COCO metrics per iou type: `{"bbox": {"AP": .., "AP50": .., ..., "ARl": ..}, "segm": {...}}` (0-1).

    image_ids restricts evaluation to those images (default: all ground-truth images). Empty
    results give all zeros; -1 (pycocotools) marks a stat without ground truth, e.g. APs with no
    small objects. pycocotools' printing is swallowed unless `verbose`.
    """
    with _quiet(verbose):
        gt = _load_gt(coco_gt)
        ids = sorted(gt.getImgIds()) if image_ids is None else sorted({int(i) for i in image_ids})
        metrics = {}
        for iou_type in iou_types:
            dt = _load_results(gt, results, iou_type) if results else None
            if dt is None or not ids:
                metrics[iou_type] = {name: 0.0 for name in STAT_NAMES}
                continue
            evaluator = COCOeval(gt, dt, iouType=iou_type)
            evaluator.params.imgIds = ids
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            metrics[iou_type] = {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats)}
    return metrics


def coco_ap(coco_gt: COCO | str | Path, image_ids: Sequence[int], detections: Sequence[Mapping],
            category_ids: Sequence[int] | Mapping[int, int]) -> dict[str, dict[str, float]]:
    """The one "detections -> COCO AP" step: one detection dict per image of `image_ids` (same order) ->
    `evaluate_coco`'s metrics ({"bbox": {"AP": .., ...}, "segm": {...}}, 0-1) over exactly those images."""
    if len(detections) != len(image_ids):
        raise ValueError(f"{len(detections)} detection dicts for {len(image_ids)} images")
    results = [r for image_id, d in zip(image_ids, detections)
               for r in detections_to_coco_results(image_id, d, category_ids)]
    return evaluate_coco(coco_gt, results, image_ids=image_ids)
