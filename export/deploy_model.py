"""The deploy graph: Mask R-CNN inference with fixed-size tensors end to end, so torch.export
(and so ONNX and TensorRT) sees no data-dependent shapes.

    images      [B,3,H,W] float 0-1 RGB, already resized and padded by the runtime (padding =
                MaskRCNNConfig.input_pad_value, which normalises to 0, as the eager model's zero padding)
    image_sizes [B,2] float (height, width) of each resized image inside the padding
 -> boxes [B,N,4] (resized-image pixels), scores [B,N], labels [B,N] int64, masks [B,N,28,28]
    (probability of the predicted class), num_detections [B] int64; N = max detections, zero-padded.

It reuses the trained modules of `MaskRCNN` and reproduces its inference exactly, except that
variable-length lists become padded tensors with a validity mask: candidates that torchvision
would have dropped (small, below the score threshold, suppressed, past top-k) score -1 and never
reach the output. NMS is `nms_keep` (export/nms.py) and RoIAlign the native fused op. Each image
sees only its own padded extent (export/canvas.py: features and anchors; RoIAlign takes the extents and
samples each image's part of the maps as the eager model's smaller maps), as the eager model sees it at
batch 1, so the detections do not depend on the canvas it is padded to.

Both rule sets of model/config.py are implemented: torchvision's, and Detectron2's (a model read from a
Detectron2 checkpoint: BGR 0-255 input, unrounded anchors at fixed strides, proposals ranked by logits with
sides > min size, background as the last class, no small-box filter, RoIAlign at 1 / stride).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskrcnn_deploy.model.mask_rcnn import MaskRCNN
from maskrcnn_deploy.model.roi_align import FPN_SCALES, multilevel_roi_align

from .canvas import FEATURE_STRIDES, extent_masking, image_anchors, padded_extent
from .nms import nms_keep, offset_by_class

__all__ = ["DeployMaskRCNN", "OUTPUT_NAMES"]

OUTPUT_NAMES = ("boxes", "scores", "labels", "masks", "num_detections")
_INVALID = -1.0  # score of a dropped candidate; every threshold below is >= 0
# Detectron2 ranks proposals by logits, any real number: a dropped one scores -inf and NMS takes those above
# the lowest float32 (ONNX's NonMaxSuppression keeps scores > score_threshold).
_INVALID_LOGIT, _ANY_LOGIT = float("-inf"), -3.4028234663852886e38
# TensorRT's INMSLayer (what an ONNX NonMaxSuppression becomes) considers only the K highest-scoring boxes
# per image, "K is 2000 for SM 5.3 and 6.2 devices, and 5000 otherwise" (NvInfer.h, INMSLayer, TensorRT
# 10.14 and 11.1); the box-head NMS takes at most this many candidates, so every backend sees the same ones.
NMS_MAX_CANDIDATES = 5000


def _clip(boxes: Tensor, image_sizes: Tensor) -> Tensor:
    """boxes [B,...,4] clamped into each image's (height, width) [B,2] (torchvision's clip_boxes_to_image)."""
    shape = (boxes.shape[0],) + (1,) * (boxes.dim() - 1)
    h, w = image_sizes[:, 0].reshape(shape), image_sizes[:, 1].reshape(shape)
    x = torch.minimum(boxes[..., 0::2].clamp(min=0), w)
    y = torch.minimum(boxes[..., 1::2].clamp(min=0), h)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def _big_enough(boxes: Tensor, min_size: float, strictly: bool = False) -> Tensor:
    """[..., 4] -> [...] bool: width and height both >= min_size (> min_size when strictly)."""
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return ((w > min_size) & (h > min_size)) if strictly else ((w >= min_size) & (h >= min_size))


def torchvision_roi_scale(extent: Tensor, image_sizes: Tensor) -> Tensor:
    """[B] the factor torchvision's RoIAlign magnifies each image's boxes by: 2**round(log2(padded h / h)).

    torchvision's MultiScaleRoIAlign (and model/roi_align.py's `infer_scales`, which copies it) infers
    each level's scale as 2**round(log2(feature height / image height)) from the image height, not the
    padded one. Padding to a multiple of 32 makes the feature map taller than height / stride; once
    the padded height is over sqrt(2) times the image's (resized heights 1-22, 33-45, 65-67 px) every
    scale doubles (or more), and with it the FPN level every box is pooled from (the level rule
    starts at -log2 of the first scale). That equals pooling the boxes magnified by this factor with
    the nominal scales, which is what the graph does, so it keeps the eager model's detections.
    """
    ratio = extent[:, 0] / image_sizes[:, 0]
    return torch.pow(2.0, torch.round(torch.log2(ratio)))


def _rois(boxes: Tensor) -> Tensor:
    """[B,M,4] -> [B*M,5] with the image index first."""
    b, m = boxes.shape[:2]
    index = torch.arange(b, dtype=boxes.dtype, device=boxes.device).reshape(b, 1, 1).expand(b, m, 1)
    return torch.cat([index, boxes], dim=2).reshape(b * m, 5)


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """x [B,M,...], index [B,K] -> [B,K,...]."""
    shape = index.shape + (1,) * (x.dim() - 2)
    return torch.gather(x, 1, index.reshape(shape).expand(index.shape + x.shape[2:]))


class DeployMaskRCNN(nn.Module):
    """Inference-only, fixed-shape view of a trained `MaskRCNN` (shares its weights)."""

    def __init__(self, model: MaskRCNN, max_detections: int | None = None):
        super().__init__()
        cfg = model.config
        self.cfg = cfg
        self.backbone, self.rpn, self.roi_heads = model.backbone, model.rpn, model.roi_heads
        self.max_detections = int(max_detections or cfg.detections_per_img)
        self.register_buffer("mean", torch.tensor(cfg.image_mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.image_std).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor, image_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        cfg = self.cfg
        x = images * cfg.input_scale if cfg.input_scale != 1.0 else images  # Detectron2: 0-255
        if cfg.input_format == "BGR":
            x = x.flip(1)
        x = (x - self.mean) / self.std
        extent = padded_extent(image_sizes, cfg.size_divisible)  # [B,2] what the eager model pads to
        with extent_masking(self.backbone, extent, tuple(x.shape[-2:])):  # export/canvas.py
            feats = self.backbone(x)  # P2..P6
        proposals, proposal_ok = self.propose(feats, extent, image_sizes)
        if cfg.infers_roi_scales:
            roi_scale = torchvision_roi_scale(extent, image_sizes)  # [B] 1 but for short images, see below
        else:
            roi_scale = torch.ones_like(image_sizes[:, 0])  # Detectron2 pools at 1 / stride
        return self.detect(feats[:4], proposals, proposal_ok, image_sizes, roi_scale, extent)

    # ---- RPN --------------------------------------------------------------------------------------------------------
    def propose(self, feats: list[Tensor], extent: Tensor, image_sizes: Tensor) -> tuple[Tensor, Tensor]:
        """Proposals [B,P,4] and their validity [B,P] (P = post-NMS top-n). Only anchors on each image's
        padded extent [B,2] compete, with the eager model's positions (export/canvas.py)."""
        cfg = self.cfg
        logits, deltas = [], []
        for f, stride in zip(feats, FEATURE_STRIDES):
            with extent_masking(self.rpn.head, extent, tuple(f.shape[-2:]), stride):
                (logit,), (delta,) = self.rpn.head([f])
            logits.append(logit)
            deltas.append(delta)
        B = feats[0].shape[0]
        anchors, inside = image_anchors([f.shape[-2:] for f in feats], extent, cfg.anchor_sizes,
                                        cfg.anchor_ratios, cfg.anchor_rule, cfg.anchor_offset)  # [B,A,4], [B,A]
        detectron2 = cfg.proposal_rule == "detectron2"  # rank by logits, sides > min size, no score threshold
        invalid = _INVALID_LOGIT if detectron2 else _INVALID
        scores, boxes, levels, ok = [], [], [], []
        offset = 0
        for lvl, (logit, delta) in enumerate(zip(logits, deltas)):
            n = logit.shape[1] * logit.shape[2] * logit.shape[3]
            obj = logit.permute(0, 2, 3, 1).reshape(B, n)          # [B, n] (y, x, anchor)
            obj = torch.where(inside[:, offset:offset + n], obj, torch.full_like(obj, float("-inf")))
            reg = delta.reshape(B, -1, 4, delta.shape[2], delta.shape[3]).permute(0, 3, 4, 1, 2).reshape(B, n, 4)
            # pad so top-k always has pre_n entries; padding is marked invalid
            k = cfg.rpn_pre_nms_top_n_test
            obj = torch.cat([obj, obj.new_full((B, k), float("-inf"))], dim=1)
            top, idx = obj.topk(k, dim=1)                          # [B,k]
            valid = top > float("-inf")                             # off the image's extent, or padding
            idx = torch.where(idx < n, idx, torch.zeros_like(idx))
            decoded = self.rpn.coder.decode(_gather(reg, idx).reshape(-1, 4),
                                            _gather(anchors[:, offset:offset + n], idx).reshape(-1, 4)).reshape(B, k, 4)
            score = top if detectron2 else torch.sigmoid(top)
            scores.append(torch.where(valid, score, torch.full_like(top, invalid)))
            boxes.append(decoded)
            levels.append(torch.full((B, k), float(lvl), device=top.device))
            ok.append(valid)
            offset += n
        scores, boxes, levels = torch.cat(scores, 1), _clip(torch.cat(boxes, 1), image_sizes), torch.cat(levels, 1)
        ok = torch.cat(ok, 1) & _big_enough(boxes, cfg.rpn_min_size, strictly=detectron2)
        if not detectron2:
            ok = ok & (scores >= cfg.rpn_score_thresh)
        scores = torch.where(ok, scores, torch.full_like(scores, invalid))
        keep = nms_keep(offset_by_class(boxes, levels), scores, cfg.rpn_nms_thresh, _ANY_LOGIT if detectron2 else invalid)
        scores = torch.where(keep, scores, torch.full_like(scores, invalid))
        post_n = min(cfg.rpn_post_nms_top_n_test, scores.shape[1])
        top, idx = scores.topk(post_n, dim=1)                      # sorted by score, like torchvision
        return _gather(boxes, idx), top > invalid

    # ---- box and mask heads -------------------------------------------------------------------------------------------
    def _pool(self, feats: list[Tensor], boxes: Tensor, output_size: int, roi_scale: Tensor, extent: Tensor) -> Tensor:
        """Fused RoIAlign of boxes [B,M,4], magnified by roi_scale [B], on P2..P5 (strides 4..32), each image
        sampling only the part of the maps its padded extent [B,2] covers (taps past it read 0, as past the eager
        model's maps) -> [B*M, C, out, out]."""
        cfg = self.cfg
        return multilevel_roi_align(feats, _rois(boxes * roi_scale[:, None, None]), output_size, FPN_SCALES,
                                    cfg.roi_sampling_ratio, cfg.roi_aligned,
                                    cfg.canonical_scale, cfg.canonical_level, cfg.level_mapper_eps, extents=extent)

    def detect(self, feats: list[Tensor], proposals: Tensor, proposal_ok: Tensor, image_sizes: Tensor,
               roi_scale: Tensor, extent: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        cfg, heads = self.cfg, self.roi_heads
        B, P = proposals.shape[:2]
        x = heads.box_head(self._pool(feats, proposals, cfg.box_roi_output_size, roi_scale, extent))
        class_logits, box_deltas = heads.box_predictor(x)           # [B*P,K], [B*P,4K] (4(K-1): Detectron2)
        K = class_logits.shape[1]                                   # classes with background
        boxes = heads.coder.decode(box_deltas, proposals.reshape(-1, 4)).reshape(B, P, -1, 4)
        probs = F.softmax(class_logits, -1).reshape(B, P, K)
        if cfg.background_class == "last":                         # Detectron2: boxes for foreground only
            boxes, probs = _clip(boxes, image_sizes), probs[:, :, :-1]
        else:
            boxes, probs = _clip(boxes, image_sizes)[:, :, 1:], probs[:, :, 1:]
        boxes, scores = boxes.reshape(B, P * (K - 1), 4), probs.reshape(B, P * (K - 1))
        labels = torch.arange(1, K, device=scores.device).repeat(B, P, 1).reshape(B, P * (K - 1))
        ok = proposal_ok[:, :, None].expand(B, P, K - 1).reshape(B, -1) & (scores > cfg.box_score_thresh)
        if cfg.box_min_size > 0:                                    # Detectron2 keeps every size (0)
            ok = ok & _big_enough(boxes, cfg.box_min_size)
        scores = torch.where(ok, scores, torch.full_like(scores, _INVALID))
        if scores.shape[1] > NMS_MAX_CANDIDATES:  # P*(K-1) candidates, e.g. 1000*80 for COCO
            scores, best = scores.topk(NMS_MAX_CANDIDATES, dim=1)     # [B,5000], sorted by score
            boxes, labels = _gather(boxes, best), torch.gather(labels, 1, best)
        keep = nms_keep(offset_by_class(boxes, labels), scores, cfg.box_nms_thresh, cfg.box_score_thresh)
        scores = torch.where(keep, scores, torch.full_like(scores, _INVALID))
        n = min(self.max_detections, scores.shape[1])
        top, idx = scores.topk(n, dim=1)                            # [B,N]
        valid = top > _INVALID
        det_boxes = _gather(boxes, idx) * valid[..., None]
        det_labels = torch.gather(labels, 1, idx) * valid
        det_scores = top * valid
        mask_x = heads.mask_head(self._pool(feats, det_boxes, cfg.mask_roi_output_size, roi_scale, extent))
        mask_logits = heads.mask_predictor(mask_x)                  # [B*N,K,28,28]
        M = mask_logits.shape[-1]
        column = heads.column(det_labels).clamp(min=0)              # Detectron2: label - 1; padding rows: 0
        picked = torch.gather(mask_logits, 1, column.reshape(B * n, 1, 1, 1).expand(B * n, 1, M, M))
        masks = torch.sigmoid(picked).reshape(B, n, M, M) * valid[..., None, None]
        return det_boxes, det_scores, det_labels, masks, valid.sum(dim=1)
