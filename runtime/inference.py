"""PyTorch inference over images and datasets: detections with binary masks, COCO evaluation.

A detection dict (numpy, original image coordinates) is what every backend returns:
    boxes  [D,4] float32 xyxy pixels     scores [D] float32
    labels [D]   int64 contiguous 1..K   masks  [D,H,W] bool (probability >= mask_threshold)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from maskrcnn_deploy.runtime.progress import Progress


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


def evaluate_model(model: torch.nn.Module, dataset, batch_size: int = 2, mask_threshold: float = 0.5,
                   max_images: int | None = None, show_progress: bool = True) -> dict:
    """COCO bbox and segm AP of `model` on a `CocoDetectionDataset` (pycocotools).

    Returns `{"bbox": {"AP": ..., ...}, "segm": {...}, "num_images": n, "num_detections": d}`.
    """
    from maskrcnn_deploy.runtime.evaluate import detections_to_coco_results, evaluate_coco

    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    progress = Progress(n, "eval", interval=5.0) if show_progress else None
    results, image_ids, num_dets = [], [], 0
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, n))]
        dets = predict_images(model, [img for img, _ in items], mask_threshold, batch_size)
        for (_, target), det in zip(items, dets):
            image_id = int(target["image_id"])
            image_ids.append(image_id)
            num_dets += len(det["scores"])
            results.extend(detections_to_coco_results(image_id, det, dataset.category_ids))
        if progress:
            progress.update(min(start + batch_size, n))
    metrics = evaluate_coco(dataset.coco, results, image_ids=image_ids)
    metrics["num_images"] = n
    metrics["num_detections"] = num_dets
    return metrics
