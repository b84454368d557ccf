"""Box encoding, matching and sampling for the RPN and the box head (torchvision semantics).

Boxes are [N, 4] float (x1, y1, x2, y2) in pixels of the resized image.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_iou  # library ops, re-exported for the model

__all__ = ["BoxCoder", "Matcher", "sample_pos_neg", "clip_boxes", "remove_small_boxes",
           "box_iou", "batched_nms"]

BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clamp [..., 4] boxes into an image of `size` = (height, width)."""
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x, y), dim=boxes.dim()).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices [M] of boxes whose width and height are both >= min_size."""
    ws = boxes[:, 2] - boxes[:, 0]
    hs = boxes[:, 3] - boxes[:, 1]
    return torch.where((ws >= min_size) & (hs >= min_size))[0]


class BoxCoder:
    """(dx, dy, dw, dh) regression targets relative to reference boxes, scaled by `weights`."""

    def __init__(self, weights: tuple[float, float, float, float], clip: float = math.log(1000.0 / 16)):
        self.weights = weights
        self.clip = clip

    def encode(self, gt: Tensor, ref: Tensor) -> Tensor:
        """gt [N,4], ref [N,4] -> deltas [N,4]."""
        wx, wy, ww, wh = self.weights
        ref_w = ref[:, 2:3] - ref[:, 0:1]
        ref_h = ref[:, 3:4] - ref[:, 1:2]
        ref_x = ref[:, 0:1] + 0.5 * ref_w
        ref_y = ref[:, 1:2] + 0.5 * ref_h
        gt_w = gt[:, 2:3] - gt[:, 0:1]
        gt_h = gt[:, 3:4] - gt[:, 1:2]
        gt_x = gt[:, 0:1] + 0.5 * gt_w
        gt_y = gt[:, 1:2] + 0.5 * gt_h
        return torch.cat((wx * (gt_x - ref_x) / ref_w, wy * (gt_y - ref_y) / ref_h,
                          ww * torch.log(gt_w / ref_w), wh * torch.log(gt_h / ref_h)), dim=1)

    def decode(self, deltas: Tensor, ref: Tensor) -> Tensor:
        """deltas [N, 4*C], ref [N,4] -> boxes [N, C, 4]."""
        ref = ref.to(deltas.dtype)
        deltas = deltas.reshape(ref.shape[0], -1)
        wx, wy, ww, wh = self.weights
        w = ref[:, 2] - ref[:, 0]
        h = ref[:, 3] - ref[:, 1]
        cx = ref[:, 0] + 0.5 * w
        cy = ref[:, 1] + 0.5 * h
        dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.clip)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.clip)
        px = dx * w[:, None] + cx[:, None]
        py = dy * h[:, None] + cy[:, None]
        half_w = 0.5 * (torch.exp(dw) * w[:, None])
        half_h = 0.5 * (torch.exp(dh) * h[:, None])
        return torch.stack((px - half_w, py - half_h, px + half_w, py + half_h), dim=2)


class Matcher:
    """Assigns each prediction (column) its best ground truth (row) of an IoU matrix [G, P].

    Returns [P] int64: gt index, -1 below `low`, -2 in [low, high). With
    `allow_low_quality_matches`, each gt's best predictions keep their match anyway.
    """

    def __init__(self, high: float, low: float, allow_low_quality_matches: bool = False):
        self.high, self.low, self.allow_low = high, low, allow_low_quality_matches

    def __call__(self, iou: Tensor) -> Tensor:
        vals, matches = iou.max(dim=0)
        all_matches = matches.clone() if self.allow_low else None
        matches[vals < self.low] = BELOW_LOW_THRESHOLD
        matches[(vals >= self.low) & (vals < self.high)] = BETWEEN_THRESHOLDS
        if all_matches is not None:
            best_per_gt, _ = iou.max(dim=1)
            preds = torch.where(iou == best_per_gt[:, None])[1]
            matches[preds] = all_matches[preds]
        return matches


def sample_pos_neg(labels: list[Tensor], batch_size: int, positive_fraction: float
                   ) -> tuple[list[Tensor], list[Tensor]]:
    """Per image, random subsets of positives (label >= 1) and negatives (label == 0).

    Returns two lists of [P] uint8 masks. Consumes torch's RNG like torchvision's
    BalancedPositiveNegativeSampler (two randperm calls per image).
    """
    pos_masks, neg_masks = [], []
    for lab in labels:
        positive = torch.where(lab >= 1)[0]
        negative = torch.where(lab == 0)[0]
        num_pos = min(positive.numel(), int(batch_size * positive_fraction))
        num_neg = min(negative.numel(), batch_size - num_pos)
        pos = positive[torch.randperm(positive.numel(), device=lab.device)[:num_pos]]
        neg = negative[torch.randperm(negative.numel(), device=lab.device)[:num_neg]]
        pm = torch.zeros_like(lab, dtype=torch.uint8)
        nm = torch.zeros_like(lab, dtype=torch.uint8)
        pm[pos] = 1
        nm[neg] = 1
        pos_masks.append(pm)
        neg_masks.append(nm)
    return pos_masks, neg_masks
