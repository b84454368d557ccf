"""The predictors' resize and mask pasting in numpy, equal to the PyTorch path without importing torch.

    resize_bilinear : torch's interpolate(scale_factor=s, mode="bilinear", align_corners=False,
                      recompute_scale_factor=True), which model/transform.py uses: output size
                      floor(side * s), then sampling at the recomputed scale in / out
    paste_masks     : torchvision's paste_masks_in_image: each M x M mask padded by 1, its box expanded by
                      (M + 2) / M and truncated to int, the mask resized bilinearly to the box's
                      (y2 - y1 + 1, x2 - x1 + 1) pixels and cropped to the image

Both are separable, so a resize is two small matrix products (one weight matrix per axis, two taps per
row); there is no loop over pixels. Shapes are in the comments.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bilinear_weights", "resize_bilinear", "paste_masks"]


def bilinear_weights(in_size: int, out_size: int, rows: np.ndarray | None = None, float32_source: bool = False
                     ) -> np.ndarray:
    """[len(rows), in_size] float32 matrix W with W @ x = 1-D bilinear resize of x (align_corners=False)
    at output positions `rows` (default: all out_size of them).

    As torch: source = (dst + 0.5) * (in / out) - 0.5, clamped below at 0; taps floor(source) and the next
    one (clamped to the last input); weights 1 - frac and frac. The scale is a float32 quotient and the
    source position that product rounded once to float32, as torch 2.14's CPU kernel gives it. torch 2.15
    computes the product in float32 arithmetic (`float32_source=True` reproduces it): one ulp apart at some
    positions, 3e-5 of a weight near 512 px; tests/test_resize_paste_numpy.py accepts either.
    """
    rows = np.arange(out_size) if rows is None else rows
    scale = np.float32(in_size) / np.float32(out_size)
    if float32_source:
        src = np.maximum((rows.astype(np.float32) + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0))
    else:
        src = np.maximum((rows + 0.5) * np.float64(scale) - 0.5, 0).astype(np.float32)
    lo = np.minimum(src.astype(np.int64), in_size - 1)          # floor (src >= 0)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = (src - lo).astype(np.float32)
    weights = np.zeros((len(rows), in_size), dtype=np.float32)
    weights[np.arange(len(rows)), lo] += np.float32(1) - frac
    weights[np.arange(len(rows)), hi] += frac
    return weights


def resize_bilinear(image: np.ndarray, scale: float, float32_source: bool = False) -> np.ndarray:
    """[C,H,W] float32 -> [C,floor(H*scale),floor(W*scale)] float32, as model/transform.py's resize
    (float32_source: see bilinear_weights)."""
    channels, height, width = image.shape
    out_h, out_w = int(np.floor(height * scale)), int(np.floor(width * scale))
    wy = bilinear_weights(height, out_h, float32_source=float32_source)   # [h',H]
    wx = bilinear_weights(width, out_w, float32_source=float32_source)    # [w',W]
    return np.einsum("yh,chw,xw->cyx", wy, image.astype(np.float32, copy=False), wx, optimize=True)


def _expanded_int_boxes(boxes: np.ndarray, scale: float) -> np.ndarray:
    """[N,4] float boxes -> [N,4] int64: half-sizes scaled about the centres, truncated toward zero (as
    torch's .to(int64))."""
    boxes = boxes.astype(np.float32)
    w_half = (boxes[:, 2] - boxes[:, 0]) * np.float32(0.5) * np.float32(scale)
    h_half = (boxes[:, 3] - boxes[:, 1]) * np.float32(0.5) * np.float32(scale)
    x_c = (boxes[:, 2] + boxes[:, 0]) * np.float32(0.5)
    y_c = (boxes[:, 3] + boxes[:, 1]) * np.float32(0.5)
    return np.trunc(np.stack((x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half), axis=1)).astype(np.int64)


def paste_masks(masks: np.ndarray, boxes: np.ndarray, size: tuple[int, int], threshold: float | None = None
                ) -> np.ndarray:
    """masks [N,M,M] probabilities, boxes [N,4] xyxy in image pixels -> [N,H,W] float32 probabilities, or
    bool (probability >= threshold) when a threshold is given. Only each box's part inside the image is
    computed: two products of [h,M+2] and [M+2,w] weight matrices per mask."""
    im_h, im_w = size
    n, m = masks.shape[0], masks.shape[-1]
    out = np.zeros((n, im_h, im_w), dtype=np.float32 if threshold is None else bool)
    if n == 0:
        return out
    padded = np.pad(masks.astype(np.float32), ((0, 0), (1, 1), (1, 1)))                  # [N,M+2,M+2]
    for i, (x1, y1, x2, y2) in enumerate(_expanded_int_boxes(boxes, (m + 2) / m)):
        w, h = max(int(x2 - x1 + 1), 1), max(int(y2 - y1 + 1), 1)
        xa, xb = max(int(x1), 0), min(int(x2) + 1, im_w)
        ya, yb = max(int(y1), 0), min(int(y2) + 1, im_h)
        if xb <= xa or yb <= ya:
            continue
        wy = bilinear_weights(m + 2, h, np.arange(ya - y1, yb - y1))                      # [yb-ya,M+2]
        wx = bilinear_weights(m + 2, w, np.arange(xa - x1, xb - x1))                      # [xb-xa,M+2]
        probs = wy @ padded[i] @ wx.T                                                       # [yb-ya,xb-xa]
        out[i, ya:yb, xa:xb] = probs if threshold is None else probs >= threshold
    return out
