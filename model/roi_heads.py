"""Box and mask heads on pooled RoI features: layers, training targets/losses, inference."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import make_norm
from .box_ops import BoxCoder, Matcher, batched_nms, box_iou, clip_boxes, remove_small_boxes, sample_pos_neg
from .config import MaskRCNNConfig
from .roi_align import FPN_SCALES, boxes_to_rois, infer_scales, multilevel_roi_align, roi_align

__all__ = ["TwoMLPHead", "ConvFCHead", "BoxPredictor", "MaskHead", "MaskPredictor", "RoIHeads"]


def _conv3x3(cin: int, cout: int, norm: str | None) -> nn.Sequential:
    """conv3x3 [+ norm] + ReLU, keys `.0` (conv) / `.1` (norm)."""
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=norm is None)]
    if norm is not None:
        layers.append(make_norm(norm, cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class TwoMLPHead(nn.Module):
    """v1 box head: [K, C, 7, 7] -> flatten -> fc6 -> fc7 -> [K, fc_dim]."""

    def __init__(self, in_features: int, fc_dim: int = 1024):
        super().__init__()
        self.fc6 = nn.Linear(in_features, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


def _init_convs(module: nn.Module) -> None:
    """He (fan-out) init of every conv in `module`, zero biases (as torchvision's heads)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ConvFCHead(nn.Sequential):
    """v2 box head: 4x (conv3x3 + norm + ReLU) -> Flatten -> Linear -> ReLU (keys 0..3, 5)."""

    def __init__(self, channels: int, pool: int, norm: str | None, fc_dim: int = 1024):
        convs = [_conv3x3(channels, channels, norm) for _ in range(4)]
        super().__init__(*convs, nn.Flatten(), nn.Linear(channels * pool * pool, fc_dim), nn.ReLU(inplace=True))
        _init_convs(self)


class BoxPredictor(nn.Module):
    """[K, D] -> class logits [K, num_classes], class-specific deltas [K, 4*num_box_classes].

    num_box_classes is num_classes (torchvision: a box for background too) or num_classes - 1 (Detectron2).
    """

    def __init__(self, in_features: int, num_classes: int, num_box_classes: int | None = None):
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_pred = nn.Linear(in_features, (num_box_classes or num_classes) * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


class MaskHead(nn.Sequential):
    """4x (conv3x3 [+ norm] + ReLU) on [K, C, 14, 14] (keys `{i}.0`, `{i}.1`)."""

    def __init__(self, channels: int, width: int = 256, norm: str | None = None):
        super().__init__(*[_conv3x3(channels if i == 0 else width, width, norm) for i in range(4)])
        _init_convs(self)


class MaskPredictor(nn.Sequential):
    """[K, C, 14, 14] -> 2x2 deconv stride 2 + ReLU -> 1x1 conv -> mask logits [K, num_classes, 28, 28]."""

    def __init__(self, channels: int, width: int, num_classes: int):
        super().__init__(OrderedDict([
            ("conv5_mask", nn.ConvTranspose2d(channels, width, 2, 2, 0)),
            ("relu", nn.ReLU(inplace=True)),
            ("mask_fcn_logits", nn.Conv2d(width, num_classes, 1)),
        ]))
        for name, p in self.named_parameters():
            if "weight" in name:
                nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.zeros_(p)


class RoIHeads(nn.Module):
    """Box branch and mask branch over proposals (torchvision's RoIHeads with a mask head)."""

    def __init__(self, cfg: MaskRCNNConfig, channels: int):
        super().__init__()
        self.cfg = cfg
        pool = cfg.box_roi_output_size
        if cfg.box_head == "two_mlp":
            self.box_head = TwoMLPHead(channels * pool * pool, cfg.box_fc_dim)
        elif cfg.box_head == "conv4_fc":
            self.box_head = ConvFCHead(channels, pool, cfg.head_norm, cfg.box_fc_dim)
        else:
            raise ValueError(f"unknown box_head {cfg.box_head!r}; use 'two_mlp' or 'conv4_fc'")
        # Detectron2 keeps background as the last logit and has boxes and masks for foreground classes only
        fg_only = cfg.num_classes - 1 if cfg.background_class == "last" else cfg.num_classes
        self.box_predictor = BoxPredictor(cfg.box_fc_dim, cfg.num_classes, fg_only)
        self.mask_head = MaskHead(channels, cfg.mask_head_channels, cfg.head_norm)
        self.mask_predictor = MaskPredictor(cfg.mask_head_channels, cfg.mask_head_channels, fg_only)
        self.coder = BoxCoder(tuple(cfg.box_reg_weights))
        self.matcher = Matcher(cfg.box_fg_iou_thresh, cfg.box_bg_iou_thresh, allow_low_quality_matches=False)

    def column(self, labels: Tensor) -> Tensor:
        """Labels (0 = background, 1..K foreground) -> columns of the box/mask outputs (class logits for
        background excepted): the label itself, or label - 1 with background last."""
        return labels - 1 if self.cfg.background_class == "last" else labels

    def _pool(self, feats: list[Tensor], boxes: list[Tensor], image_sizes, output_size: int) -> Tensor:
        """Multi-level RoIAlign of per-image boxes on P2..P5 -> [K, C, out, out]."""
        levels = feats[:4]
        cfg = self.cfg
        scales = infer_scales(levels, image_sizes) if cfg.infers_roi_scales else FPN_SCALES
        return multilevel_roi_align(levels, boxes_to_rois(boxes), output_size, scales,
                                    cfg.roi_sampling_ratio, cfg.roi_aligned, cfg.canonical_scale,
                                    cfg.canonical_level, cfg.level_mapper_eps)

    def forward(self, feats: list[Tensor], proposals: list[Tensor], image_sizes: list[tuple[int, int]],
                targets: list[dict] | None = None) -> tuple[list[dict], dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            proposals, matched, labels, reg_targets = self.select_training_samples(proposals, targets)
        x = self.box_head(self._pool(feats, proposals, image_sizes, self.cfg.box_roi_output_size))
        class_logits, box_deltas = self.box_predictor(x)
        if self.training:
            losses = box_losses(class_logits, box_deltas, labels, reg_targets, self.cfg.background_class == "last")
            pos = [torch.where(l > 0)[0] for l in labels]
            mask_boxes = [p[i] for p, i in zip(proposals, pos)]
            mask_logits = self._mask_logits(feats, mask_boxes, image_sizes)
            losses["loss_mask"] = mask_loss(mask_logits, mask_boxes, [t["masks"] for t in targets],
                                            [self.column(t["labels"]) for t in targets],
                                            [m[i] for m, i in zip(matched, pos)])
            return [], losses
        results = self.postprocess_detections(class_logits, box_deltas, proposals, image_sizes)
        mask_logits = self._mask_logits(feats, [r["boxes"] for r in results], image_sizes)
        labels = torch.cat([r["labels"] for r in results])
        probs = mask_logits[torch.arange(labels.shape[0], device=labels.device), self.column(labels)][:, None].sigmoid()
        for r, m in zip(results, probs.split([len(r["labels"]) for r in results])):
            r["masks"] = m  # [D, 1, 28, 28]
        return results, {}

    def _mask_logits(self, feats, boxes, image_sizes) -> Tensor:
        x = self._pool(feats, boxes, image_sizes, self.cfg.mask_roi_output_size)
        return self.mask_predictor(self.mask_head(x))

    def select_training_samples(self, proposals: list[Tensor], targets: list[dict]):
        """Add GT to proposals, match (IoU 0.5), sample per image.

        Returns sampled proposals [S_i, 4], matched gt index [S_i], labels [S_i] (0 = bg),
        regression targets [S_i, 4] per image.
        """
        cfg = self.cfg
        dtype, device = proposals[0].dtype, proposals[0].device
        gt_boxes = [t["boxes"].to(dtype) for t in targets]
        proposals = [torch.cat((p, g)) for p, g in zip(proposals, gt_boxes)]
        matched, labels = [], []
        for p, g, t in zip(proposals, gt_boxes, targets):
            if g.numel() == 0:
                m = torch.zeros((p.shape[0],), dtype=torch.int64, device=device)
                lab = torch.zeros((p.shape[0],), dtype=torch.int64, device=device)
            else:
                raw = self.matcher(box_iou(g, p))
                m = raw.clamp(min=0)
                lab = t["labels"][m].to(torch.int64)
                lab[raw == -1] = 0
                lab[raw == -2] = -1
            matched.append(m)
            labels.append(lab)
        pos, neg = sample_pos_neg(labels, cfg.box_batch_size_per_image, cfg.box_positive_fraction)
        matched_boxes = []
        for i in range(len(proposals)):
            keep = torch.where(pos[i] | neg[i])[0]
            proposals[i], labels[i], matched[i] = proposals[i][keep], labels[i][keep], matched[i][keep]
            g = gt_boxes[i] if gt_boxes[i].numel() else torch.zeros((1, 4), dtype=dtype, device=device)
            matched_boxes.append(g[matched[i]])
        reg = self.coder.encode(torch.cat(matched_boxes), torch.cat(proposals))
        reg_targets = list(reg.split([len(p) for p in proposals]))
        return proposals, matched, labels, reg_targets

    def postprocess_detections(self, class_logits: Tensor, box_deltas: Tensor, proposals: list[Tensor],
                               image_sizes: list[tuple[int, int]]) -> list[dict]:
        """Softmax scores, drop background, threshold, remove tiny boxes, class-wise NMS, top-n.

        Same steps in torchvision (roi_heads.py::postprocess_detections) and Detectron2
        (roi_heads/fast_rcnn.py::fast_rcnn_inference_single_image, which removes no small boxes: box_min_size 0).
        """
        cfg = self.cfg
        num_classes = class_logits.shape[-1]
        boxes_all = self.coder.decode(box_deltas, torch.cat(proposals)).split([len(p) for p in proposals])
        scores_all = F.softmax(class_logits, -1).split([len(p) for p in proposals])
        results = []
        for boxes, scores, size in zip(boxes_all, scores_all, image_sizes):
            boxes = clip_boxes(boxes, size)  # [N, K or K+1, 4]
            scores = scores[:, :-1] if cfg.background_class == "last" else scores[:, 1:]  # [N, K]
            if cfg.background_class == "first":
                boxes = boxes[:, 1:]
            labels = torch.arange(1, num_classes, device=boxes.device).view(1, -1).expand_as(scores)
            boxes = boxes.reshape(-1, 4)
            scores = scores.reshape(-1)
            labels = labels.reshape(-1)
            keep = torch.where(scores > cfg.box_score_thresh)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            if cfg.box_min_size > 0:
                keep = remove_small_boxes(boxes, cfg.box_min_size)
                boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, cfg.box_nms_thresh)[:cfg.detections_per_img]
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results


def box_losses(class_logits: Tensor, box_deltas: Tensor, labels: list[Tensor], reg_targets: list[Tensor],
               background_last: bool = False) -> dict[str, Tensor]:
    """Cross-entropy over sampled RoIs; smooth-L1 (beta 1/9) on the GT class's deltas / #sampled.

    labels: 0 = background, 1..K; with background_last the logit of background is K and label l's
    logit and deltas are column l - 1.
    """
    labels = torch.cat(labels)
    reg_targets = torch.cat(reg_targets)
    shift = 1 if background_last else 0
    ce_target = torch.where(labels == 0, class_logits.shape[-1] - 1, labels - 1) if background_last else labels
    loss_cls = F.cross_entropy(class_logits, ce_target)
    pos = torch.where(labels > 0)[0]
    deltas = box_deltas.reshape(box_deltas.shape[0], -1, 4)
    loss_box = F.smooth_l1_loss(deltas[pos, labels[pos] - shift], reg_targets[pos], beta=1 / 9, reduction="sum")
    return {"loss_classifier": loss_cls, "loss_box_reg": loss_box / labels.numel()}


def mask_loss(mask_logits: Tensor, boxes: list[Tensor], gt_masks: list[Tensor], gt_labels: list[Tensor],
              matched: list[Tensor]) -> Tensor:
    """Mean per-pixel BCE on the GT class's M x M logits.

    Targets: each GT mask [H, W] RoIAligned (sampling adaptive, not aligned) into its
    positive proposal box at M x M, kept soft as torchvision does.
    """
    M = mask_logits.shape[-1]
    labels = torch.cat([l[m] for l, m in zip(gt_labels, matched)])
    targets = []
    for masks, b, m in zip(gt_masks, boxes, matched):
        rois = torch.cat([m.to(b)[:, None], b], dim=1)
        targets.append(roi_align(masks[:, None].to(rois), rois, M, 1.0, 0, False)[:, 0])
    targets = torch.cat(targets)
    if targets.numel() == 0:
        return mask_logits.sum() * 0
    idx = torch.arange(labels.shape[0], device=labels.device)
    return F.binary_cross_entropy_with_logits(mask_logits[idx, labels], targets)
