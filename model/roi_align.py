"""RoIAlign in pure PyTorch (torchvision kernel semantics) and the FPN multi-level pooler.

This is the single swap point for a native RoIAlign op: every other module pools
features only through `roi_align` / `multilevel_roi_align` defined here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["roi_align", "assign_fpn_levels", "multilevel_roi_align", "infer_scales", "boxes_to_rois"]

# Upper bound on gathered elements per chunk of rois (memory guard, not a per-roi loop).
_CHUNK_ELEMENTS = 1 << 24


def _axis_weights(start: Tensor, bin_size: Tensor, grid: Tensor, pooled: int, gmax: int, size: int
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear taps along one axis for every sample of every roi.

    start, bin_size [K] float; grid [K] int (samples per bin). Returns low/high indices
    [K, pooled*gmax] int64 and their weights [K, pooled*gmax] (0 for masked samples).
    """
    dtype = start.dtype
    p = torch.arange(pooled, device=start.device, dtype=dtype)
    i = torch.arange(gmax, device=start.device, dtype=dtype)
    g = grid.clamp(min=1).to(dtype)
    # [K, pooled, gmax]: start + p * bin + (i + 0.5) * bin / grid
    pos = (start[:, None, None] + p[None, :, None] * bin_size[:, None, None]
           + (i[None, None, :] + 0.5) * bin_size[:, None, None] / g[:, None, None])
    used = i[None, None, :] < grid[:, None, None].to(dtype)
    inside = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0)
    low = pos.floor().to(torch.int64)
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    pos = torch.where(at_edge, low.to(dtype), pos)
    frac = pos - low.to(dtype)
    keep = (used & inside).to(dtype)
    w_low, w_high = (1.0 - frac) * keep, frac * keep
    k = start.shape[0]
    return (low.reshape(k, -1), high.reshape(k, -1), w_low.reshape(k, -1), w_high.reshape(k, -1))


def _roi_align_chunk(flat: Tensor, rois: Tensor, H: int, W: int, oh: int, ow: int,
                     spatial_scale: float, sampling_ratio: int, aligned: bool) -> Tensor:
    """flat [B*H*W, C] features, rois [K,5] -> [K, C, oh, ow]."""
    dtype = flat.dtype
    offset = 0.5 if aligned else 0.0
    b = rois[:, 0].to(torch.int64)
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    x2 = rois[:, 3] * spatial_scale - offset
    y2 = rois[:, 4] * spatial_scale - offset
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_w, bin_h = roi_w / ow, roi_h / oh
    if sampling_ratio > 0:
        gx = torch.full_like(b, sampling_ratio)
        gy = gx
    else:
        gx = torch.ceil(roi_w / ow).to(torch.int64)
        gy = torch.ceil(roi_h / oh).to(torch.int64)
    gx_max = max(int(gx.max()), 1)
    gy_max = max(int(gy.max()), 1)
    ylo, yhi, wylo, wyhi = _axis_weights(y1, bin_h, gy, oh, gy_max, H)  # [K, oh*gy]
    xlo, xhi, wxlo, wxhi = _axis_weights(x1, bin_w, gx, ow, gx_max, W)  # [K, ow*gx]
    base = (b * (H * W))[:, None, None]
    out = None
    for yi, wy in ((ylo, wylo), (yhi, wyhi)):
        for xi, wx in ((xlo, wxlo), (xhi, wxhi)):
            idx = base + yi[:, :, None] * W + xi[:, None, :]  # [K, oh*gy, ow*gx]
            term = flat[idx] * (wy[:, :, None] * wx[:, None, :])[..., None]  # [K, oh*gy, ow*gx, C]
            out = term if out is None else out + term
    k, c = rois.shape[0], flat.shape[1]
    out = out.reshape(k, oh, gy_max, ow, gx_max, c).sum(dim=(2, 4))  # [K, oh, ow, C]
    count = (gy * gx).clamp(min=1).to(dtype)
    return (out / count[:, None, None, None]).permute(0, 3, 1, 2).contiguous()


def roi_align(features: Tensor, rois: Tensor, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """Bilinear RoIAlign, bit-compatible in semantics with `torchvision.ops.roi_align`.

    features [B, C, H, W]; rois [K, 5] = (batch_idx, x1, y1, x2, y2) in input pixels;
    spatial_scale maps input pixels to feature cells; sampling_ratio <= 0 means an
    adaptive grid ceil(roi / bin). Returns [K, C, oh, ow]. Differentiable w.r.t. features.
    """
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    B, C, H, W = features.shape
    K = rois.shape[0]
    if K == 0:
        return features.new_zeros((0, C, oh, ow))
    rois = rois.to(features.dtype)
    flat = features.permute(0, 2, 3, 1).reshape(B * H * W, C)
    if sampling_ratio > 0:
        g = sampling_ratio
    else:  # bound the adaptive grid for chunking
        g = max(1, int(torch.ceil((rois[:, 3:5] - rois[:, 1:3]).max() * spatial_scale / min(oh, ow)).item()) + 1)
    per_roi = C * oh * ow * g * g * 2
    step = max(1, _CHUNK_ELEMENTS // per_roi)
    outs = [_roi_align_chunk(flat, rois[s:s + step], H, W, oh, ow, spatial_scale, sampling_ratio, aligned)
            for s in range(0, K, step)]
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)


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


def multilevel_roi_align(features: list[Tensor], rois: Tensor, output_size: int, spatial_scales: list[float],
                         sampling_ratio: int = 2, aligned: bool = False, canonical_scale: int = 224,
                         canonical_level: int = 4, eps: float = 1e-6) -> Tensor:
    """RoIAlign each roi [K,5] on its FPN level. features: P2..P5 [B,C,H_l,W_l] -> [K, C, out, out]."""
    k_min = int(round(-math.log2(spatial_scales[0])))
    k_max = int(round(-math.log2(spatial_scales[-1])))
    C = features[0].shape[1]
    if len(features) == 1:
        return roi_align(features[0], rois, output_size, spatial_scales[0], sampling_ratio, aligned)
    levels = assign_fpn_levels(rois[:, 1:], canonical_scale, canonical_level, k_min, k_max, eps)
    result = features[0].new_zeros((rois.shape[0], C, output_size, output_size))
    for lvl, (feat, scale) in enumerate(zip(features, spatial_scales)):
        idx = torch.where(levels == lvl)[0]
        if idx.numel():
            result[idx] = roi_align(feat, rois[idx], output_size, scale, sampling_ratio, aligned).to(result.dtype)
    return result
