"""Detectron2's golden outputs (tests/data/detectron2, see its README): weights, images and comparisons.

Weights are not shipped: `recipe_weights` regenerates them from the README's closed-form recipe.
Comparisons are set-based (Detectron2's 100-detection cut and 0.05 threshold can swap near-equal scores):
a golden detection is paired with our same-class detection nearest in box corners (max abs difference)
among those with box IoU >= 0.9 or corners within 0.5 px. (The random-weight models propose many boxes
under a thousandth of a pixel wide, whose IoU says nothing; the README's IoU rule alone would miss them.)
"""

from __future__ import annotations

import gzip
import json
import math
import pickle
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from maskrcnn_deploy.model.box_ops import box_iou
from maskrcnn_deploy.model.detectron2_transform import paste_masks_detectron2, postprocess_detectron2
from maskrcnn_deploy.model.mask_rcnn import MaskRCNN
from maskrcnn_deploy.model.rpn import _flatten

DATA = Path(__file__).parent / "data" / "detectron2"
MODELS = ("R50-FPN", "R101-FPN", "X101-32x8d-FPN")
STEMS = ("scene_0", "scene_1", "scene_2", "scene_3")


def keys(model: str) -> dict[str, list[int]]:
    return json.loads((DATA / model / "keys.json").read_text())


def recipe_weights(model: str) -> dict[str, np.ndarray]:
    """Every key of keys.json filled by the README's recipe (float64 draws, cast to float32)."""
    out = {}
    for key, shape in keys(model).items():
        rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
        shape = tuple(shape)
        if key.endswith((".norm.running_mean", ".norm.bias")):
            value = 0.05 * rng.standard_normal(shape)
        elif key.endswith(".norm.running_var"):
            base = 3600.0 if (key == "backbone.bottom_up.stem.conv1.norm.running_var"
                              and model in ("R50-FPN", "R101-FPN")) else 1.0
            value = base * (1 + 0.2 * rng.random(shape))
        elif key.endswith(".norm.weight"):
            gamma = 0.2 if ".conv3.norm." in key else 1.0
            value = gamma * (1 + 0.1 * rng.standard_normal(shape))
        elif key.endswith(".bias"):
            value = 0.01 * rng.standard_normal(shape)
            if key == "roi_heads.box_predictor.cls_score.bias":
                value[-1] += 4.0
        elif key.endswith(".weight") and len(shape) >= 2:
            std = math.sqrt(2.0 / math.prod(shape[1:]))
            std *= {"roi_heads.box_predictor.cls_score.weight": 0.25, "roi_heads.mask_head.predictor.weight": 20.0,
                    "roi_heads.box_predictor.bbox_pred.weight": 0.1}.get(key, 1.0)
            value = std * rng.standard_normal(shape)
            if key == "roi_heads.box_predictor.cls_score.weight":
                value = value - value.mean(axis=1, keepdims=True)
        else:
            raise AssertionError(f"the recipe does not cover {key} {shape}")
        out[key] = value.astype(np.float32)
    return out


def write_pkl(path: Path, weights: dict[str, np.ndarray]) -> Path:
    """A Detectron2 model-zoo .pkl of these weights."""
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "Detectron2 Model Zoo"}, f)
    return path


def write_pth(path: Path, weights: dict[str, np.ndarray]) -> Path:
    """A checkpoint as Detectron2's trainer writes it."""
    torch.save({"model": {k: torch.from_numpy(v) for k, v in weights.items()}, "iteration": 0}, path)
    return path


def image(stem: str) -> torch.Tensor:
    """RGB float [3,H,W] in 0-1 (the golden runs were given the same pixels as BGR uint8)."""
    pixels = np.asarray(Image.open(DATA / "images" / f"{stem}.png").convert("RGB"))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255.0


def predictions(model: str) -> dict:
    with gzip.open(DATA / model / "predictions.json.gz", "rt") as f:
        return json.load(f)


def proposals(model: str, stem: str) -> tuple[np.ndarray, np.ndarray]:
    z = np.load(DATA / model / "proposals.npz")
    return z[f"{stem}_boxes"], z[f"{stem}_logits"]


@torch.no_grad()
def our_outputs(model: MaskRCNN, img: torch.Tensor) -> tuple[dict, np.ndarray, np.ndarray]:
    """One forward pass: (detections with "masks28" = each one's [1,28,28] probabilities, RPN proposals [N,4]
    in resized-input pixels, their objectness logits [N]). The proposals are re-ranked from the RPN head's
    outputs, captured by a hook, with the model's own filter_proposals."""
    seen = {}
    hooks = [model.rpn.register_forward_pre_hook(lambda m, args: seen.update(rpn_args=args)),
             model.rpn.head.register_forward_hook(lambda m, args, out: seen.update(head=out))]
    try:
        results, sizes = model([img], raw=True)
    finally:
        for h in hooks:
            h.remove()
    results[0]["masks28"] = results[0]["masks"]
    detections = postprocess_detectron2(results, sizes, [tuple(img.shape[-2:])])[0]
    feats, padded_size, image_sizes = seen["rpn_args"][:3]
    logits, deltas = seen["head"]
    rpn, cfg = model.rpn, model.config
    per_level = [l.shape[1] * l.shape[2] * l.shape[3] for l in logits]
    anchors = rpn.anchors([tuple(f.shape[-2:]) for f in feats], padded_size)
    objectness = torch.cat([_flatten(l, 1) for l in logits], dim=1).reshape(1, -1)
    box_deltas = torch.cat([_flatten(d, 4) for d in deltas], dim=1).reshape(-1, 4)
    decoded = rpn.coder.decode(box_deltas, anchors).view(1, -1, 4)
    boxes, scores = rpn.filter_proposals(decoded, objectness, image_sizes, per_level, cfg.rpn_pre_nms_top_n_test,
                                         cfg.rpn_post_nms_top_n_test, with_scores=True)
    return detections, boxes[0].numpy(), scores[0].numpy()


def match_proposals(golden_boxes, golden_logits, boxes, logits) -> dict:
    """Each golden proposal against our nearest (IoU) one: counts within 0.5 px and 1e-3 logit."""
    iou = box_iou(torch.from_numpy(golden_boxes), torch.from_numpy(boxes)).numpy()
    corner = np.abs(golden_boxes[:, None, :] - boxes[None, :, :]).max(axis=2)
    # the same box can be proposed from two levels (NMS runs per level): pick the closest in box and logit
    cost = corner + np.abs(golden_logits[:, None] - logits[None, :]) + 1e6 * ((iou < 0.9) & (corner > 0.5))
    best = cost.argmin(axis=1)
    box_err = np.abs(golden_boxes - boxes[best]).max(axis=1)
    logit_err = np.abs(golden_logits - logits[best])
    ok = (box_err <= 0.5) & (logit_err <= 1e-3)
    return {"golden": len(golden_boxes), "ours": len(boxes), "matched": int(ok.sum()),
            "worst_box": float(box_err[ok].max(initial=0.0)), "worst_logit": float(logit_err[ok].max(initial=0.0)),
            "unmatched": np.where(~ok)[0].tolist()}


def decode_masks(rles: list[dict]) -> np.ndarray:
    if not rles:
        return np.zeros((0, 0, 0), dtype=bool)
    return mask_utils.decode([{"size": r["size"], "counts": r["counts"].encode()} for r in rles]
                             ).transpose(2, 0, 1).astype(bool)


def match_detections(golden: dict, ours: dict) -> dict:
    """Golden detections of one image (predictions.json entry) against ours (`our_outputs`: labels 1..K =
    Detectron2 class + 1, masks [D,1,H,W] probabilities, binarised >= 0.5 as Detectron2 does).

    A golden detection counts as matched by its paired detection (see the module docstring) when the box is
    within 0.5 px, the score within 1e-3 and the mask IoU >= 0.98. Boxes a fraction of a pixel thin turn
    0.001 px of box difference into whole pixels of mask: when the IoU is below 0.98, our 28x28 mask is
    pasted again at the golden box (`repasted`), which separates the mask head from the box's float noise.
    Golden detections within 1e-3 of the image's lowest golden score may trade places at the 100 cut:
    unmatched, they count as `exempt`. Extra: our unpaired detections scoring above
    max(0.1, lowest golden score + 1e-3).
    """
    g_boxes = torch.tensor(golden["boxes"], dtype=torch.float32).reshape(-1, 4)
    g_scores = np.asarray(golden["scores"], dtype=np.float64)
    g_classes = np.asarray(golden["classes"]) + 1
    g_masks = decode_masks(golden["masks_rle"])
    boxes, scores, labels = ours["boxes"].float(), ours["scores"].double().numpy(), ours["labels"].numpy()
    masks = (ours["masks"][:, 0] >= 0.5).numpy()
    iou = box_iou(g_boxes, boxes).numpy() if len(boxes) else np.zeros((len(g_boxes), 0))
    corner = (g_boxes[:, None, :] - boxes[None, :, :]).abs().amax(dim=2).numpy() if len(boxes) else iou
    candidate = ((iou >= 0.9) | (corner <= 0.5)) & (g_classes[:, None] == labels[None, :])
    cost = np.where(candidate, corner, np.inf)
    cut = g_scores.min() + 1e-3 if len(g_scores) else 0.0
    stats = {"golden": len(g_scores), "matched": 0, "exempt": 0, "failed": [], "worst_box": 0.0,
             "worst_score": 0.0, "worst_mask_iou": 1.0}
    used = set()
    for i in range(len(g_scores)):
        j = int(cost[i].argmin()) if cost.shape[1] else -1
        if j < 0 or not candidate[i, j]:
            if g_scores[i] < cut:
                stats["exempt"] += 1
            else:
                stats["failed"].append((i, "unmatched", float(g_scores[i])))
            continue
        used.add(j)
        box_err = float((g_boxes[i] - boxes[j]).abs().max())
        score_err = float(abs(g_scores[i] - scores[j]))
        mask_iou = _iou(g_masks[i], masks[j])
        if mask_iou < 0.98 and "masks28" in ours:
            again = paste_masks_detectron2(ours["masks28"][j:j + 1], g_boxes[i:i + 1], g_masks.shape[1:])
            mask_iou = _iou(g_masks[i], (again[0, 0] >= 0.5).numpy())
            stats["repasted"] = stats.get("repasted", 0) + 1
        stats["worst_box"] = max(stats["worst_box"], box_err)
        stats["worst_score"] = max(stats["worst_score"], score_err)
        stats["worst_mask_iou"] = min(stats["worst_mask_iou"], mask_iou)
        if box_err <= 0.5 and score_err <= 1e-3 and mask_iou >= 0.98:
            stats["matched"] += 1
        else:
            stats["failed"].append((i, f"box {box_err:.3g} score {score_err:.3g} mask IoU {mask_iou:.4f}",
                                    float(g_scores[i])))
    extra = [j for j in range(len(scores)) if j not in used and scores[j] > max(0.1, cut)]
    stats["extra"] = len(extra)
    return stats


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
