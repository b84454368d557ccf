"""Mask R-CNN hyper-parameters as one JSON-able dataclass, plus presets.

Every field is a JSON primitive, tuple or list, so a config can be embedded in a
checkpoint (`to_dict`) and rebuilt exactly (`from_dict`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class MaskRCNNConfig:
    """All settings of `MaskRCNN`. Defaults reproduce torchvision's `maskrcnn_resnet50_fpn`."""

    num_classes: int = 91  # background included
    # backbone
    backbone_depth: int = 50  # 18 or 50
    norm: str = "frozen_bn"  # "frozen_bn" | "bn" | "gn"
    norm_eps: float = 1e-5  # BN eps (torchvision's COCO_V1 weights use 0.0 on FrozenBN)
    trainable_backbone_layers: int = 3  # 0..5, counted from layer4 down to conv1
    # FPN
    fpn_channels: int = 256
    fpn_norm: str | None = None  # None (v1) | "bn" (v2)
    # RPN
    rpn_conv_depth: int = 1  # 1 (v1) | 2 (v2)
    anchor_sizes: tuple = ((32,), (64,), (128,), (256,), (512,))  # one tuple per level P2..P6
    anchor_ratios: tuple = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 2000  # per level
    rpn_post_nms_top_n_train: int = 2000  # per image
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_score_thresh: float = 0.0
    rpn_min_size: float = 1e-3
    # RoI heads
    box_head: str = "two_mlp"  # "two_mlp" (v1) | "conv4_fc" (v2)
    head_norm: str | None = None  # norm of the conv box head and mask head: None (v1) | "bn" (v2)
    box_fc_dim: int = 1024
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_reg_weights: tuple = (10.0, 10.0, 5.0, 5.0)
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_img: int = 100
    box_roi_output_size: int = 7
    mask_roi_output_size: int = 14
    mask_head_channels: int = 256
    roi_sampling_ratio: int = 2  # 0 = adaptive ceil(roi / bin)
    roi_aligned: bool = False  # True = detectron2's half-pixel shift
    canonical_scale: int = 224
    canonical_level: int = 4
    level_mapper_eps: float = 1e-6
    # transform
    min_size: int | tuple = 800  # a tuple = scale jitter in training (the last one at test time)
    max_size: int = 1333
    image_mean: tuple = (0.485, 0.456, 0.406)
    image_std: tuple = (0.229, 0.224, 0.225)
    size_divisible: int = 32
    mask_threshold: float = 0.5

    def to_dict(self) -> dict:
        """Plain dict of JSON types (tuples become lists)."""
        return {k: _to_json(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "MaskRCNNConfig":
        """Inverse of `to_dict`; unknown keys are refused with a one-line ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown MaskRCNNConfig fields: {', '.join(unknown)}")
        return cls(**{k: _to_tuple(v) for k, v in d.items()})

    @property
    def test_min_size(self) -> int:
        return self.min_size[-1] if isinstance(self.min_size, (tuple, list)) else self.min_size


def _to_json(v):
    if isinstance(v, (tuple, list)):
        return [_to_json(x) for x in v]
    return v


def _to_tuple(v):
    if isinstance(v, (tuple, list)):
        return tuple(_to_tuple(x) for x in v)
    return v


def torchvision_v1(num_classes: int = 91, **overrides) -> MaskRCNNConfig:
    """`maskrcnn_resnet50_fpn` as built for its COCO_V1 weights: FrozenBN with eps 0, 3 trainable layers."""
    return MaskRCNNConfig(num_classes=num_classes, **{"norm_eps": 0.0, **overrides})


def torchvision_v2(num_classes: int = 91, **overrides) -> MaskRCNNConfig:
    """`maskrcnn_resnet50_fpn_v2`: BN backbone and FPN, 2-conv RPN, conv4+fc box head, BN mask head."""
    base = dict(norm="bn", fpn_norm="bn", rpn_conv_depth=2, box_head="conv4_fc", head_norm="bn")
    return MaskRCNNConfig(num_classes=num_classes, **{**base, **overrides})


def resnet18_fpn(num_classes: int, **overrides) -> MaskRCNNConfig:
    """ResNet-18 FPN for training from scratch: GroupNorm backbone, all layers trainable."""
    base = dict(backbone_depth=18, norm="gn", trainable_backbone_layers=5)
    return MaskRCNNConfig(num_classes=num_classes, **{**base, **overrides})


def resnet50_fpn(num_classes: int, **overrides) -> MaskRCNNConfig:
    """ResNet-50 FPN for training from scratch: GroupNorm backbone, all layers trainable."""
    base = dict(backbone_depth=50, norm="gn", trainable_backbone_layers=5)
    return MaskRCNNConfig(num_classes=num_classes, **{**base, **overrides})


def detectron2_style(num_classes: int = 81, **overrides) -> MaskRCNNConfig:
    """v1 layout with detectron2's RoIAlign: aligned (half-pixel) and adaptive sampling."""
    base = dict(roi_aligned=True, roi_sampling_ratio=0)
    return MaskRCNNConfig(num_classes=num_classes, **{**base, **overrides})
