"""Anchor boxes per FPN level: torchvision's AnchorGenerator and Detectron2's DefaultAnchorGenerator."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["cell_anchors", "grid_anchors", "detectron2_grid_anchors"]


def cell_anchors(sizes: tuple, ratios: tuple, dtype=torch.float32, device=None) -> Tensor:
    """Zero-centred anchors [len(ratios)*len(sizes), 4], rounded to integers (ratio = h / w)."""
    scales = torch.as_tensor(sizes, dtype=dtype, device=device)
    ratios = torch.as_tensor(ratios, dtype=dtype, device=device)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


def grid_anchors(feature_sizes: list[tuple[int, int]], image_size: tuple[int, int], sizes: tuple,
                 ratios: tuple, dtype=torch.float32, device=None) -> Tensor:
    """All anchors of one (padded) image: [sum_l H_l*W_l*A, 4], level-major then (y, x, anchor).

    The stride of level l is image_size // feature_size (integer division), like torchvision.
    """
    out = []
    for (gh, gw), level_sizes in zip(feature_sizes, sizes):
        base = cell_anchors(level_sizes, ratios, dtype, device)
        sy, sx = image_size[0] // gh, image_size[1] // gw
        shift_x = torch.arange(0, gw, dtype=torch.int32, device=device) * sx
        shift_y = torch.arange(0, gh, dtype=torch.int32, device=device) * sy
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
        xx, yy = xx.reshape(-1), yy.reshape(-1)
        shifts = torch.stack((xx, yy, xx, yy), dim=1)
        out.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
    return torch.cat(out, dim=0)


def detectron2_grid_anchors(feature_sizes: list[tuple[int, int]], strides: list[int], sizes: tuple, ratios: tuple,
                            offset: float = 0.0, device=None) -> Tensor:
    """Detectron2's DefaultAnchorGenerator (modeling/anchor_generator.py): [sum_l H_l*W_l*A, 4] float32.

    Cell anchors are not rounded: w = sqrt(size**2 / ratio), h = ratio * w (ratio = h / w), sizes outer and
    ratios inner, computed in float64 then stored as float32. Centres sit at (offset + i) * stride with the
    level's fixed stride (4..64 for P2..P6), not padded size // grid size.
    """
    out = []
    for (gh, gw), stride, level_sizes in zip(feature_sizes, strides, sizes):
        cell = []
        for size in level_sizes:
            for ratio in ratios:
                w = math.sqrt(size ** 2.0 / ratio)
                h = ratio * w
                cell.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        base = torch.tensor(cell, dtype=torch.float32, device=device)
        shift_x = torch.arange(offset * stride, gw * stride, step=stride, dtype=torch.float32, device=device)
        shift_y = torch.arange(offset * stride, gh * stride, step=stride, dtype=torch.float32, device=device)
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
        xx, yy = xx.reshape(-1), yy.reshape(-1)
        shifts = torch.stack((xx, yy, xx, yy), dim=1)
        out.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
    return torch.cat(out, dim=0)
