"""Region proposal network: head, proposal filtering and losses (torchvision or Detectron2 semantics)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .anchors import detectron2_grid_anchors, grid_anchors
from .box_ops import BoxCoder, Matcher, batched_nms, box_iou, clip_boxes, remove_small_boxes, sample_pos_neg
from .config import MaskRCNNConfig

__all__ = ["RPNHead", "RPN"]


class RPNHead(nn.Module):
    """Shared 3x3 conv(s) + ReLU, then per-anchor objectness [B,A,H,W] and deltas [B,4A,H,W]."""

    def __init__(self, channels: int, num_anchors: int, conv_depth: int = 1):
        super().__init__()
        self.conv = nn.Sequential(*[nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
                                    for _ in range(conv_depth)])
        self.cls_logits = nn.Conv2d(channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(channels, num_anchors * 4, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = [], []
        for f in feats:
            t = self.conv(f)
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def _flatten(x: Tensor, c: int) -> Tensor:
    """[B, A*c, H, W] -> [B, H*W*A, c] (order: y, x, anchor)."""
    b, _, h, w = x.shape
    return x.view(b, -1, c, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, c)


class RPN(nn.Module):
    """Proposals [N_i, 4] per image from FPN features; losses in training."""

    def __init__(self, cfg: MaskRCNNConfig, channels: int):
        super().__init__()
        self.cfg = cfg
        num_anchors = len(cfg.anchor_sizes[0]) * len(cfg.anchor_ratios)
        self.head = RPNHead(channels, num_anchors, cfg.rpn_conv_depth)
        self.coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(cfg.rpn_fg_iou_thresh, cfg.rpn_bg_iou_thresh, allow_low_quality_matches=True)

    def forward(self, feats: list[Tensor], padded_size: tuple[int, int], image_sizes: list[tuple[int, int]],
                targets: list[dict] | None = None) -> tuple[list[Tensor], dict[str, Tensor]]:
        cfg = self.cfg
        logits, deltas = self.head(feats)
        num_images = feats[0].shape[0]
        per_level = [l.shape[1] * l.shape[2] * l.shape[3] for l in logits]
        anchors = self.anchors([tuple(f.shape[-2:]) for f in feats], padded_size, feats[0].dtype)  # [A_total, 4]
        objectness = torch.cat([_flatten(l, 1) for l in logits], dim=1).reshape(num_images, -1)  # [B, A_total]
        box_deltas = torch.cat([_flatten(d, 4) for d in deltas], dim=1).reshape(-1, 4)  # [B*A_total, 4]
        all_anchors = anchors.repeat(num_images, 1)
        proposals = self.coder.decode(box_deltas.detach(), all_anchors).view(num_images, -1, 4)
        pre_n, post_n = ((cfg.rpn_pre_nms_top_n_train, cfg.rpn_post_nms_top_n_train) if self.training
                         else (cfg.rpn_pre_nms_top_n_test, cfg.rpn_post_nms_top_n_test))
        boxes = self.filter_proposals(proposals, objectness.detach(), image_sizes, per_level, pre_n, post_n)
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            losses = self.losses(anchors, objectness.reshape(-1), box_deltas, targets)
        return boxes, losses

    def anchors(self, feature_sizes: list[tuple[int, int]], padded_size: tuple[int, int],
                dtype: torch.dtype = torch.float32) -> Tensor:
        """All anchors [A_total, 4] of a padded batch by the config's anchor_rule (P2.. have strides 4, 8, ..)."""
        cfg = self.cfg
        device = self.head.cls_logits.weight.device
        if cfg.anchor_rule == "detectron2":
            strides = [4 * 2 ** i for i in range(len(feature_sizes))]
            return detectron2_grid_anchors(feature_sizes, strides, cfg.anchor_sizes, cfg.anchor_ratios,
                                           cfg.anchor_offset, device).to(dtype)
        return grid_anchors(feature_sizes, padded_size, cfg.anchor_sizes, cfg.anchor_ratios, dtype, device)

    def filter_proposals(self, proposals: Tensor, objectness: Tensor, image_sizes: list[tuple[int, int]],
                         per_level: list[int], pre_n: int, post_n: int, with_scores: bool = False):
        """proposals [B, A, 4], objectness [B, A] -> kept boxes [N_i, 4] per image (scores dropped).

        Top pre_n per level, then per image: clip, drop small boxes, NMS per level, top post_n. The
        "detectron2" proposal_rule (proposal_generator/proposal_utils.py::find_top_rpn_proposals) drops
        non-finite boxes, keeps sides > rpn_min_size (strictly) and ranks by logits, not sigmoid scores.
        with_scores: return (boxes, scores) lists, scores [N_i] as ranked (probabilities or logits).
        """
        cfg = self.cfg
        device = objectness.device
        levels = torch.cat([torch.full((n,), i, dtype=torch.int64, device=device) for i, n in enumerate(per_level)])
        top_idx, offset = [], 0
        for ob in objectness.split(per_level, dim=1):
            k = min(pre_n, ob.shape[1])
            top_idx.append(ob.topk(k, dim=1)[1] + offset)
            offset += ob.shape[1]
        top_idx = torch.cat(top_idx, dim=1)  # [B, K]
        batch = torch.arange(objectness.shape[0], device=device)[:, None]
        detectron2 = cfg.proposal_rule == "detectron2"
        scores_all = objectness[batch, top_idx]
        if not detectron2:
            scores_all = torch.sigmoid(scores_all)
        levels_all = levels[None].expand_as(objectness)[batch, top_idx]
        boxes_all = proposals[batch, top_idx]
        out, out_scores = [], []
        for boxes, scores, lvl, size in zip(boxes_all, scores_all, levels_all, image_sizes):
            if detectron2:
                keep = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
                boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            boxes = clip_boxes(boxes, size)
            if detectron2:
                keep = torch.where((boxes[:, 2] - boxes[:, 0] > cfg.rpn_min_size)
                                   & (boxes[:, 3] - boxes[:, 1] > cfg.rpn_min_size))[0]
            else:
                keep = remove_small_boxes(boxes, cfg.rpn_min_size)
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            if not detectron2:
                keep = torch.where(scores >= cfg.rpn_score_thresh)[0]
                boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = batched_nms(boxes, scores, lvl, cfg.rpn_nms_thresh)[:post_n]
            out.append(boxes[keep])
            out_scores.append(scores[keep])
        return (out, out_scores) if with_scores else out

    def losses(self, anchors: Tensor, objectness: Tensor, deltas: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        """anchors [A,4] (same for all images), objectness [B*A], deltas [B*A, 4]."""
        cfg = self.cfg
        labels, reg_targets = [], []
        for t in targets:
            gt = t["boxes"]
            if gt.numel() == 0:
                lab = torch.zeros(anchors.shape[0], dtype=torch.float32, device=anchors.device)
                matched = torch.zeros_like(anchors)
            else:
                m = self.matcher(box_iou(gt, anchors))
                matched = gt[m.clamp(min=0)]
                lab = (m >= 0).to(torch.float32)
                lab[m == -1] = 0.0
                lab[m == -2] = -1.0
            labels.append(lab)
            reg_targets.append(self.coder.encode(matched, anchors))
        pos, neg = sample_pos_neg(labels, cfg.rpn_batch_size_per_image, cfg.rpn_positive_fraction)
        pos = torch.where(torch.cat(pos))[0]
        neg = torch.where(torch.cat(neg))[0]
        sampled = torch.cat([pos, neg])
        labels = torch.cat(labels)
        reg_targets = torch.cat(reg_targets)
        box_loss = F.smooth_l1_loss(deltas[pos], reg_targets[pos], beta=1 / 9, reduction="sum") / sampled.numel()
        obj_loss = F.binary_cross_entropy_with_logits(objectness[sampled], labels[sampled])
        return {"loss_objectness": obj_loss, "loss_rpn_box_reg": box_loss}
