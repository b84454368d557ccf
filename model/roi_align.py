"""RoIAlign for the model: the native op from plugins/, plus the FPN helpers around it.

Every module of the model pools features only through `roi_align` / `multilevel_roi_align`
imported here (the C++/CUDA kernels behind `torch.ops.maskrcnn_deploy`).
`assign_fpn_levels` is the same level rule in plain PyTorch (a readable reference, checked against the kernels).
"""

from __future__ import annotations

import torch
from torch import Tensor

from maskrcnn_deploy.plugins.torch_ops import multilevel_roi_align, roi_align

__all__ = ["FPN_SCALES", "roi_align", "assign_fpn_levels", "multilevel_roi_align", "infer_scales", "boxes_to_rois"]

FPN_SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]  # P2..P5 (the backbone's strides): Detectron2's pooler scales


def assign_fpn_levels(boxes: Tensor, canonical_scale: int = 224, canonical_level: int = 4,
                      min_level: int = 2, max_level: int = 5, eps: float = 1e-6) -> Tensor:
    """FPN level index (0 = min_level) per box [N,4]: floor(lvl0 + log2(sqrt(area)/s0) + eps).

    Identical to torchvision's LevelMapper (eps added outside the log). Returns [N] int64.
    """
    s = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    lvl = torch.floor(canonical_level + torch.log2(s / canonical_scale) + torch.tensor(eps, dtype=s.dtype))
    lvl = torch.clamp(lvl, min=min_level, max=max_level)
    return lvl.to(torch.int64) - min_level


def infer_scales(features: list[Tensor], image_sizes: list[tuple[int, int]]) -> list[float]:
    """Per level 2**round(log2(feat_h / max_image_h)), as torchvision's MultiScaleRoIAlign."""
    max_h = max(s[0] for s in image_sizes)
    return [2.0 ** float(torch.tensor(f.shape[-2] / max_h).log2().round()) for f in features]


def boxes_to_rois(boxes: list[Tensor]) -> Tensor:
    """Per-image boxes [N_i, 4] -> rois [sum N_i, 5] with the image index first."""
    idx = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(idx, 0), torch.cat(boxes, 0)], dim=1)
