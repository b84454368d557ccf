"""Mask R-CNN (He et al. 2017) with torchvision's calling convention and state-dict keys."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import MaskRCNNConfig
from .detectron2_transform import postprocess_detectron2, preprocess_detectron2
from .fit import Fit
from .fpn import BackboneWithFPN
from .roi_heads import RoIHeads
from .rpn import RPN
from .transform import postprocess, preprocess

__all__ = ["MaskRCNN"]


class MaskRCNN(nn.Module):
    """Mask R-CNN built from a `MaskRCNNConfig`.

    train: `model(images, targets) -> {loss_classifier, loss_box_reg, loss_mask, loss_objectness,
    loss_rpn_box_reg}`; eval: `model(images) -> [{boxes [D,4], scores [D], labels [D] int64,
    masks [D,1,H,W] probabilities}]` in original image pixels. Images: float [3,H,W] in 0-1.
    Targets: boxes [N,4] xyxy float, labels [N] int64 in 1..K-1, masks [N,H,W] uint8.
    """

    def __init__(self, config: MaskRCNNConfig):
        super().__init__()
        self.config = config
        self.backbone = BackboneWithFPN(config.backbone_depth, config.norm, config.norm_eps,
                                        config.trainable_backbone_layers, config.fpn_channels, config.fpn_norm,
                                        config.block_groups, config.block_width_per_group, config.stride_in_1x1)
        self.rpn = RPN(config, config.fpn_channels)
        self.roi_heads = RoIHeads(config, config.fpn_channels)

    def forward(self, images: list[Tensor], targets: list[dict] | None = None, fit: Fit | None = None,
                raw: bool = False):
        """fit: resize images by this rule (e.g. a static graph's canvas, see `Fit`) instead of the config's.
        raw (eval): return (detections in resized-image pixels with [D,1,28,28] masks, resized sizes (h, w))
        before they are mapped back to the original images."""
        if self.training:
            if targets is None:
                raise ValueError("in training mode the model needs targets: model(images, targets)")
            for t in targets:
                if t["boxes"].dim() != 2 or t["boxes"].shape[-1] != 4 or not t["boxes"].is_floating_point():
                    raise ValueError(f"target boxes must be float [N,4], got {t['boxes'].dtype} "
                                     f"{tuple(t['boxes'].shape)}")
                if t["labels"].dtype != torch.int64:
                    raise TypeError(f"target labels must be int64, got {t['labels'].dtype}")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        detectron2 = self.config.transform_rule == "detectron2"
        if detectron2:
            if self.training:
                raise ValueError("transform_rule='detectron2' is for inference; "
                                 "train with transform_rule='torchvision'")
            batch, sizes = preprocess_detectron2(list(images), self.config, fit)
        else:
            batch, sizes, targets = preprocess(list(images), targets, self.config, self.training, fit)
        feats = self.backbone(batch)  # [P2..P6]
        proposals, rpn_losses = self.rpn(feats, tuple(batch.shape[-2:]), sizes, targets)
        results, head_losses = self.roi_heads(feats, proposals, sizes, targets)
        if self.training:
            return {**head_losses, **rpn_losses}
        if raw:
            return results, sizes
        return (postprocess_detectron2 if detectron2 else postprocess)(results, sizes, original_sizes)
