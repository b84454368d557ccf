"""Inference over images and datasets: detections with binary masks, resumable COCO evaluation.

A detection dict (numpy, original image coordinates) is what every backend returns:
    boxes  [D,4] float32 xyxy pixels     scores [D] float32
    labels [D]   int64 contiguous 1..K   masks  [D,H,W] bool (probability >= mask_threshold)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from maskrcnn_deploy.common.files import Journal, file_digest, inputs_key
from maskrcnn_deploy.common.progress import Progress


@torch.inference_mode()
def predict_images(model: torch.nn.Module, images: Sequence[torch.Tensor], mask_threshold: float = 0.5,
                   batch_size: int = 2) -> list[dict[str, np.ndarray]]:
    """Run `model` (eval mode) on float [3,H,W] images in 0-1; one detection dict per image."""
    model.eval()
    results: list[dict[str, np.ndarray]] = []
    for start in range(0, len(images), batch_size):
        outputs = model(list(images[start:start + batch_size]))
        for out in outputs:
            masks = out["masks"]
            if masks.dim() == 4:  # [D,1,H,W] probabilities of the predicted class
                masks = masks[:, 0]
            results.append({
                "boxes": out["boxes"].float().numpy(),
                "scores": out["scores"].float().numpy(),
                "labels": out["labels"].numpy().astype(np.int64),
                "masks": (masks >= mask_threshold).numpy(),
            })
    return results


def evaluation_journal(path: str | Path, checkpoint: str | Path, dataset, batch_size: int, max_images: int | None,
                       mask_threshold: float = 0.5, resume: bool = True) -> Journal:
    """The journal `evaluate_model` records each image's COCO results in, keyed by the checkpoint's
    bytes, the annotations' bytes, every image file (name, size, modification time) and the settings:
    a rerun of the same evaluation resumes from it, any other starts afresh."""
    images = [dataset.image_path(i) for i in range(len(dataset))]
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else (p.name, None) for p in images]
    key = inputs_key("eval", file_digest(checkpoint), file_digest(dataset.ann_file), stats, batch_size,
                     max_images, mask_threshold)
    return Journal(path, key, "eval: COCO results per image", resume=resume)


def evaluate_model(model: torch.nn.Module, dataset, batch_size: int = 2, mask_threshold: float = 0.5,
                   max_images: int | None = None, show_progress: bool = True, journal: Journal | None = None) -> dict:
    """COCO bbox and segm AP of `model` on a `CocoDetectionDataset` (pycocotools).

    Returns `{"bbox": {"AP": ..., ...}, "segm": {...}, "num_images": n, "num_detections": d}`.
    journal: each image's COCO results are recorded there as its batch finishes, and batches whose
    images it already holds are skipped; batches are the same as an uninterrupted run's, so a
    resumed evaluation gives exactly the same metrics. The caller removes it after using the result.
    """
    from maskrcnn_deploy.model.evaluation import detections_to_coco_results, evaluate_coco

    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    image_ids = [int(dataset.image_ids[i]) for i in range(n)]
    results_of = journal.entries if journal is not None else {}  # str(image id) -> COCO results
    done = sum(str(i) in results_of for i in image_ids)
    if done:
        print(f"resuming: {done} of {n} images already evaluated ({journal.path})", file=sys.stderr)
    progress = Progress(n, "eval", interval=5.0, start=done) if show_progress else None
    for start in range(0, n, batch_size):
        batch_ids = image_ids[start:start + batch_size]
        if all(str(i) in results_of for i in batch_ids):
            continue
        items = [dataset[i] for i in range(start, start + len(batch_ids))]
        dets = predict_images(model, [img for img, _ in items], mask_threshold, batch_size)
        for image_id, det in zip(batch_ids, dets):
            results = detections_to_coco_results(image_id, det, dataset.category_ids)
            if journal is not None:
                journal.record(image_id, results)
            else:
                results_of[str(image_id)] = results
        if progress:
            progress.update(start + len(batch_ids))
    results = [r for i in image_ids for r in results_of[str(i)]]
    metrics = evaluate_coco(dataset.coco, results, image_ids=image_ids)
    metrics["num_images"] = n
    metrics["num_detections"] = len(results)
    return metrics
