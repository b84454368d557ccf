"""Seeded random Mask R-CNN models and pseudo ground truth for tests that need a model but not a trained one.

A seeded random model gives mask probabilities near 0.5 everywhere, where 1e-4 of float noise flips pixels;
a trained model's masks are confident. Scaling the mask logits layer x20 makes them so, which every parity
and export test relies on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils

from maskrcnn_deploy.model.config import MaskRCNNConfig
from maskrcnn_deploy.model.mask_rcnn import MaskRCNN
from maskrcnn_deploy.runtime import load

# resnet18_fpn overrides of the small test models (tests/conftest.py builds each once per session).
# BatchNorm (folded into the convs at export, as in the trained synthetic model), narrow heads and 20
# detections at 128 / 160: the deploy graph runs the mask head on every padded detection.
SMALL_HEADS = dict(norm="bn", min_size=128, max_size=160, box_score_thresh=0.05, fpn_channels=64,
                   mask_head_channels=64, box_fc_dim=256, detections_per_img=20, rpn_post_nms_top_n_test=200)
# The same heads at 128 / 192 with fewer RoIs (300 / 100 proposals, 30 detections): a faster graph for the CPU
# runtimes (OpenVINO, CPU INT8).
CPU_HEADS = dict(norm="bn", min_size=128, max_size=192, box_score_thresh=0.05, fpn_channels=64, mask_head_channels=64,
                 box_fc_dim=256, rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100, detections_per_img=30)


def two_images() -> list[torch.Tensor]:
    """Two seeded random float [3,H,W] images of different sizes (120x150, 100x90)."""
    g = torch.Generator().manual_seed(3)
    return [torch.rand(3, 120, 150, generator=g), torch.rand(3, 100, 90, generator=g)]


def two_object_targets(images: Sequence[torch.Tensor]) -> list[dict]:
    """Training targets with the same two boxes (labels 1 and 2) and filled masks for each image."""
    targets = []
    for img in images:
        h, w = img.shape[-2:]
        masks = torch.zeros(2, h, w, dtype=torch.uint8)
        masks[0, 10:60, 20:80] = 1
        masks[1, 40:90, 5:50] = 1
        targets.append({"boxes": torch.tensor([[20, 10, 80, 60.0], [5, 40, 50, 90]]), "labels": torch.tensor([1, 2]),
                        "masks": masks})
    return targets


def make_masks_confident(model: MaskRCNN) -> MaskRCNN:
    """Scale the mask logits layer x20 in place (see the module docstring); returns the model."""
    with torch.no_grad():
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(20)
    return model


def seeded_model(config: MaskRCNNConfig, seed: int = 0) -> MaskRCNN:
    """MaskRCNN(config) initialised after torch.manual_seed(seed), with confident masks."""
    torch.manual_seed(seed)
    return make_masks_confident(MaskRCNN(config))


def pseudo_ground_truth(model_path: str | Path, images: Sequence[Path], out_path: Path, num_classes: int,
                        per_image: int = 5) -> Path:
    """COCO json whose annotations are the model's top `per_image` detections on `images` (ids 1..N):
    AP against it is well above 0 and moves when the model's results move."""
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": f"c{i}"} for i in range(1, num_classes)]}
    for image_id, (path, det) in enumerate(zip(images, load(model_path).predict(list(images))), start=1):
        h, w = det["masks"].shape[1:] if len(det["masks"]) else (150, 190)
        coco["images"].append({"id": image_id, "file_name": f"{path.parent.name}/{path.name}", "height": int(h),
                               "width": int(w)})
        for k in np.argsort(-det["scores"])[:per_image]:
            rle = mask_utils.encode(np.asfortranarray(det["masks"][k].astype(np.uint8)))
            x0, y0, x1, y1 = (float(v) for v in det["boxes"][k])
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": int(det["labels"][k]), "iscrowd": 0,
                                        "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(mask_utils.area(rle)),
                                        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    out_path.write_text(json.dumps(coco))
    return out_path
