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
    backbone_depth: int = 50  # 18, 50 or 101
    block_groups: int = 1  # groups of the bottleneck 3x3 conv (ResNeXt-101 32x8d: 32)
    block_width_per_group: int = 64  # bottleneck width of layer1 per group (ResNeXt-101 32x8d: 8)
    stride_in_1x1: bool = False  # stride in the bottleneck's first 1x1 (MSRA / Detectron2 R50, R101) or its 3x3
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
    anchor_rule: str = "torchvision"  # "torchvision": rounded anchors, stride = padded size // grid size;
    #   "detectron2": unrounded anchors, stride 2**level (P2..P6), first centre at anchor_offset * stride
    anchor_offset: float = 0.0  # detectron2 rule only
    proposal_rule: str = "torchvision"  # "torchvision": NMS on sigmoid scores, drop sides < rpn_min_size;
    #   "detectron2": NMS on logits, drop sides <= rpn_min_size, no score threshold
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
    background_class: str = "first"  # "first" (torchvision: logit 0) | "last" (detectron2: logit K, boxes
    #   and masks for the K foreground classes only). Output labels are 1..K either way.
    box_min_size: float = 1e-2  # detections with a side below this are dropped (detectron2: 0 = keep all)
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
    input_format: str = "RGB"  # channel order the network sees: "RGB" | "BGR" (images are always given RGB)
    input_scale: float = 1.0  # pixels are multiplied by this before mean/std (detectron2: 255)
    transform_rule: str = "torchvision"  # "torchvision" (transform.py): normalise, float bilinear resize to
    #   floor(side*s), paste masks by box-sized interpolate; "detectron2" (detectron2_transform.py): ResizeShortestEdge
    #   (PIL bilinear on uint8, size int(side*s + 0.5)) then normalise, grid_sample mask pasting
    min_size: int | tuple = 800  # a tuple = scale jitter in training (the last one at test time)
    max_size: int = 1333
    image_mean: tuple = (0.485, 0.456, 0.406)
    image_std: tuple = (0.229, 0.224, 0.225)
    size_divisible: int = 32
    mask_threshold: float = 0.5

    def __post_init__(self):
        """Refuse unknown rule names and combinations the model does not implement (one-line ValueError)."""
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"MaskRCNNConfig.{name} must be one of {', '.join(map(repr, allowed))}, "
                                 f"got {getattr(self, name)!r}")
        if self.transform_rule == "torchvision" and (self.input_format != "RGB" or self.input_scale != 1.0):
            raise ValueError("input_format / input_scale are applied by transform_rule='detectron2' only; "
                             "with 'torchvision' keep RGB and 1.0")

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

    @property
    def infers_roi_scales(self) -> bool:
        """Whether RoIAlign infers each FPN level's scale from the image height as torchvision's
        MultiScaleRoIAlign does (model/roi_align.py `infer_scales`: 2x on short images), or pools at
        1 / stride as Detectron2's ROIPooler does (its models are the transform_rule="detectron2" ones)."""
        return self.transform_rule != "detectron2"

    def input_pad_value(self) -> tuple[float, float, float]:
        """The RGB 0-1 pixel that the model's normalisation maps to exactly 0 (its mean in input units):
        graphs' inputs are padded with it, as the eager model zero-pads normalised images."""
        mean = [m / self.input_scale for m in self.image_mean]
        return tuple(mean[::-1] if self.input_format == "BGR" else mean)


_CHOICES = {
    "anchor_rule": ("torchvision", "detectron2"),
    "proposal_rule": ("torchvision", "detectron2"),
    "background_class": ("first", "last"),
    "input_format": ("RGB", "BGR"),
    "transform_rule": ("torchvision", "detectron2"),
}


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


def resnet101_fpn(num_classes: int, **overrides) -> MaskRCNNConfig:
    """ResNet-101 FPN (torchvision's resnet101 layout) for training: GroupNorm backbone, all layers trainable."""
    base = dict(backbone_depth=101, norm="gn", trainable_backbone_layers=5)
    return MaskRCNNConfig(num_classes=num_classes, **{**base, **overrides})


def resnext101_32x8d_fpn(num_classes: int, **overrides) -> MaskRCNNConfig:
    """ResNeXt-101 32x8d FPN (torchvision's resnext101_32x8d layout) for training: GroupNorm, all layers trainable."""
    base = dict(backbone_depth=101, block_groups=32, block_width_per_group=8, norm="gn", trainable_backbone_layers=5)
    return MaskRCNNConfig(num_classes=num_classes, **{**base, **overrides})


def detectron2_style(num_classes: int = 81, **overrides) -> MaskRCNNConfig:
    """v1 layout with detectron2's RoIAlign: aligned (half-pixel) and adaptive sampling."""
    base = dict(roi_aligned=True, roi_sampling_ratio=0)
    return MaskRCNNConfig(num_classes=num_classes, **{**base, **overrides})


DETECTRON2_BACKBONES = {  # name -> (depth, groups, width per group, stride_in_1x1, pixel std (BGR, 0-255))
    "R50-FPN": (50, 1, 64, True, (1.0, 1.0, 1.0)),
    "R101-FPN": (101, 1, 64, True, (1.0, 1.0, 1.0)),
    "X101-32x8d-FPN": (101, 32, 8, False, (57.375, 57.12, 58.395)),
}


def detectron2_mask_rcnn(num_classes: int = 81, backbone: str = "R50-FPN", **overrides) -> MaskRCNNConfig:
    """Detectron2's model-zoo Mask R-CNN FPN (COCO-InstanceSegmentation/mask_rcnn_{R_50,R_101,X_101_32x8d}_FPN_3x).

    num_classes counts background (Detectron2's NUM_CLASSES + 1). Every value below is Detectron2's default
    config (detectron2/config/defaults.py) as dumped in tests/data/detectron2/*/config.yaml.
    """
    if backbone not in DETECTRON2_BACKBONES:
        raise ValueError(f"unknown Detectron2 backbone {backbone!r}; use one of {', '.join(DETECTRON2_BACKBONES)}")
    depth, groups, width, stride_in_1x1, std = DETECTRON2_BACKBONES[backbone]
    base = dict(
        backbone_depth=depth, block_groups=groups, block_width_per_group=width, stride_in_1x1=stride_in_1x1,
        norm="frozen_bn", norm_eps=1e-5, trainable_backbone_layers=3,     # RESNETS.NORM FrozenBN, FREEZE_AT 2
        anchor_rule="detectron2", anchor_offset=0.0,                       # ANCHOR_GENERATOR.OFFSET 0.0
        proposal_rule="detectron2", rpn_min_size=0.0,                      # PROPOSAL_GENERATOR.MIN_SIZE 0
        rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=1000,       # RPN.PRE/POST_NMS_TOPK_TRAIN
        rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000, rpn_nms_thresh=0.7,
        background_class="last", box_min_size=0.0,
        box_reg_weights=(10.0, 10.0, 5.0, 5.0), box_score_thresh=0.05, box_nms_thresh=0.5, detections_per_img=100,
        roi_aligned=True, roi_sampling_ratio=0,                            # POOLER_TYPE ROIAlignV2, SAMPLING_RATIO 0
        canonical_scale=224, canonical_level=4,
        # Detectron2 adds 1e-8 inside the log2 (modeling/poolers.py): a no-op in float32, so eps 0 here
        # (tests/test_detectron2.py::test_fpn_level_rule_is_detectron2s)
        level_mapper_eps=0.0,
        input_format="BGR", input_scale=255.0, transform_rule="detectron2",
        min_size=800, max_size=1333, size_divisible=32,
        image_mean=(103.53, 116.28, 123.675), image_std=std,
    )
    return MaskRCNNConfig(num_classes=num_classes, **{**base, **overrides})
