"""The predictors' resize and mask pasting in numpy, equal to the PyTorch path without importing torch.

Here, beside model/transform.py (the same two operations in torch), so that export/preprocess.py and the
runtime's predictors (runtime/predictor.py) share it without importing a layer above them.

    resize_bilinear : torch's interpolate(scale_factor=s, mode="bilinear", align_corners=False,
                      recompute_scale_factor=True), which model/transform.py uses: output size
                      floor(side * s), then sampling at the recomputed scale in / out
    paste_masks     : torchvision's paste_masks_in_image: each M x M mask padded by 1, its box expanded by
                      (M + 2) / M and truncated to int, the mask resized bilinearly to the box's
                      (y2 - y1 + 1, x2 - x1 + 1) pixels and cropped to the image
    rle_encode      : COCO RLE of binary masks (pycocotools), without a copy for masks laid out column-major

and Detectron2's two (model/detectron2_transform.py in torch, for `transform_rule="detectron2"` models):

    resize_uint8             : PIL's bilinear resize of the uint8 image (data/transforms/transform.py)
    paste_masks_grid_sample  : layers/mask_ops.py's paste: each output pixel centre mapped into the box and
                               sampled bilinearly from the M x M mask with zero padding (grid_sample,
                               align_corners=False), over the box's region floor(x1) - 1 .. ceil(x2) + 1

Both are separable: two passes of two taps (one gather and one weighted sum per axis), no BLAS and no
loop over pixels (a paste loops over the masks). Shapes are in the comments.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

__all__ = ["bilinear_taps", "bilinear_weights", "resize_bilinear", "paste_masks", "masks_array", "rle_encode",
           "to_uint8_hwc", "resize_uint8", "resize_uint8_chw", "paste_masks_grid_sample"]


def bilinear_taps(in_size: int, out_size: int, rows: np.ndarray | None = None, float32_source: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The two input taps and their weights of a 1-D bilinear resize (align_corners=False) from in_size to
    out_size, at output positions `rows` (default: all out_size of them): (lo, hi) int64 and (w_lo, w_hi)
    float32, each [len(rows)]; output[r] = w_lo * x[lo] + w_hi * x[hi].

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
    return lo, hi, np.float32(1) - frac, frac


def bilinear_weights(in_size: int, out_size: int, rows: np.ndarray | None = None, float32_source: bool = False
                     ) -> np.ndarray:
    """[len(rows), in_size] float32 matrix W with W @ x = the 1-D bilinear resize of x at output positions
    `rows` (see bilinear_taps)."""
    lo, hi, w_lo, w_hi = bilinear_taps(in_size, out_size, rows, float32_source)
    weights = np.zeros((len(lo), in_size), dtype=np.float32)
    weights[np.arange(len(lo)), lo] += w_lo
    weights[np.arange(len(lo)), hi] += w_hi
    return weights


def resize_bilinear(image: np.ndarray, scale: float, float32_source: bool = False) -> np.ndarray:
    """[C,H,W] float32 -> [C,floor(H*scale),floor(W*scale)] float32, as model/transform.py's resize
    (float32_source: see bilinear_taps).

    Two passes of two taps, in torch's order: along the width on the input rows that some output row
    reads, then along the height. Work and memory scale with the output, not the input (a 24 MP photo
    resized to 800x1200 reads at most 1600 of its 4000 rows)."""
    channels, height, width = image.shape
    out_h, out_w = int(np.floor(height * scale)), int(np.floor(width * scale))
    y_lo, y_hi, wy_lo, wy_hi = bilinear_taps(height, out_h, float32_source=float32_source)   # [h'] each
    x_lo, x_hi, wx_lo, wx_hi = bilinear_taps(width, out_w, float32_source=float32_source)    # [w'] each
    rows, where = np.unique(np.concatenate([y_lo, y_hi]), return_inverse=True)               # R input rows
    image = image.astype(np.float32, copy=False)
    read = image if len(rows) == height else np.take(image, rows, axis=1)                     # [C,R,W]
    across = _two_taps(read, x_lo, x_hi, wx_lo, wx_hi, axis=2)                                # [C,R,w']
    return _two_taps(across, where[:out_h], where[out_h:], wy_lo[:, None], wy_hi[:, None], axis=1)  # [C,h',w']


def _two_taps(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, w_lo: np.ndarray, w_hi: np.ndarray, axis: int
              ) -> np.ndarray:
    """x[lo] * w_lo + x[hi] * w_hi along `axis` (float32, each product rounded, then the sum, as torch)."""
    out = np.take(x, lo, axis=axis)
    out *= w_lo
    upper = np.take(x, hi, axis=axis)
    upper *= w_hi
    out += upper
    return out


def _expanded_int_boxes(boxes: np.ndarray, scale: float) -> np.ndarray:
    """[N,4] float boxes -> [N,4] int64: half-sizes scaled about the centres, truncated toward zero (as
    torch's .to(int64))."""
    boxes = boxes.astype(np.float32)
    w_half = (boxes[:, 2] - boxes[:, 0]) * np.float32(0.5) * np.float32(scale)
    h_half = (boxes[:, 3] - boxes[:, 1]) * np.float32(0.5) * np.float32(scale)
    x_c = (boxes[:, 2] + boxes[:, 0]) * np.float32(0.5)
    y_c = (boxes[:, 3] + boxes[:, 1]) * np.float32(0.5)
    return np.trunc(np.stack((x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half), axis=1)).astype(np.int64)


def masks_array(n: int, size: tuple[int, int], dtype=bool) -> np.ndarray:
    """Zeroed [n,H,W] array in which each [H,W] mask is column-major (Fortran order): the layout COCO RLE
    encodes without a copy (`rle_encode`), and the one `paste_masks` writes fastest."""
    return np.zeros((n, size[1], size[0]), dtype=dtype).transpose(0, 2, 1)


def rle_encode(masks: np.ndarray) -> list[dict]:
    """COCO RLEs (pycocotools) of bool [N,H,W] masks; no copy when each mask is column-major (`masks_array`)."""
    if len(masks) == 0:
        return []
    stack = masks.transpose(1, 2, 0)                                                        # [H,W,N]
    if not stack.flags.f_contiguous:
        stack = np.asfortranarray(stack)
    return mask_utils.encode(stack.view(np.uint8))


def paste_masks(masks: np.ndarray, boxes: np.ndarray, size: tuple[int, int], threshold: float | None = None,
                out: np.ndarray | None = None) -> np.ndarray:
    """masks [N,M,M] probabilities, boxes [N,4] xyxy in image pixels -> [N,H,W] float32 probabilities, or
    bool (probability >= threshold) when a threshold is given. out: a zeroed [N,H,W] array of that dtype
    to paste into (any strides), else a new one (`masks_array`: each mask column-major).

    Only each box's part inside the image is computed, two taps per axis in torch's order (along the
    width, then the height), as a [w,h] block: the float memory is one box's at a time."""
    im_h, im_w = size
    n, m = masks.shape[0], masks.shape[-1]
    if out is None:
        out = masks_array(n, size, np.float32 if threshold is None else bool)
    if n == 0:
        return out
    padded = np.pad(masks.astype(np.float32), ((0, 0), (1, 1), (1, 1)))                  # [N,M+2,M+2]
    for i, (x1, y1, x2, y2) in enumerate(_expanded_int_boxes(boxes, (m + 2) / m).tolist()):
        w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        xa, xb = max(x1, 0), min(x2 + 1, im_w)
        ya, yb = max(y1, 0), min(y2 + 1, im_h)
        if xb <= xa or yb <= ya:
            continue
        x_lo, x_hi, wx_lo, wx_hi = bilinear_taps(m + 2, w, np.arange(xa - x1, xb - x1))     # [xb-xa] each
        y_lo, y_hi, wy_lo, wy_hi = bilinear_taps(m + 2, h, np.arange(ya - y1, yb - y1))     # [yb-ya] each
        across = _two_taps(padded[i].T, x_lo, x_hi, wx_lo[:, None], wx_hi[:, None], axis=0)  # [xb-xa,M+2]
        probs = _two_taps(across, y_lo, y_hi, wy_lo, wy_hi, axis=1).T                       # [yb-ya,xb-xa]
        if threshold is None:
            out[i, ya:yb, xa:xb] = probs
        else:
            np.greater_equal(probs, np.float32(threshold), out=out[i, ya:yb, xa:xb])
    return out


def to_uint8_hwc(image: np.ndarray) -> np.ndarray:
    """Float [3,H,W] in 0-1 -> uint8 [H,W,3]; round(x * 255) (half to even, as torch.round) restores 8-bit
    photos exactly."""
    return np.clip(np.rint(image.transpose(1, 2, 0) * np.float32(255.0)), 0, 255).astype(np.uint8)


def resize_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H,W,C] -> [h,w,C] with PIL's bilinear filter (which antialiases when shrinking)."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def resize_uint8_chw(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float [3,H,W] in 0-1 -> float32 [3,h,w] in 0-1, resized as Detectron2 does: to uint8, PIL bilinear,
    back to floats (k / 255)."""
    resized = resize_uint8(to_uint8_hwc(image), size)                                       # [h,w,3] uint8
    return np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def _grid_sample_weights(start: int, stop: int, lo: np.float32, hi: np.float32, m: int) -> np.ndarray:
    """[stop - start, m] float32: each output pixel's bilinear weights over the m mask cells along one axis,
    zero outside the mask (grid_sample, align_corners=False, padding "zeros")."""
    centres = np.arange(start, stop, dtype=np.float32) + np.float32(0.5)
    grid = (centres - lo) / (hi - lo) * np.float32(2) - np.float32(1)                      # [-1, 1] over the box
    source = ((grid + np.float32(1)) * np.float32(m) - np.float32(1)) / np.float32(2)     # mask cell coordinates
    left = np.floor(source)
    frac = source - left
    weights = np.zeros((stop - start, m), dtype=np.float32)
    rows = np.arange(stop - start)
    for tap, weight in ((left, np.float32(1) - frac), (left + 1, frac)):
        ok = (tap >= 0) & (tap <= m - 1)
        weights[rows[ok], tap[ok].astype(np.int64)] += weight[ok]
    return weights


def paste_masks_grid_sample(masks: np.ndarray, boxes: np.ndarray, size: tuple[int, int],
                            threshold: float | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Detectron2's paste: masks [N,M,M] probabilities, boxes [N,4] xyxy image pixels -> [N,H,W] float32
    probabilities, or bool (probability >= threshold) with a threshold. out: as `paste_masks`."""
    im_h, im_w = size
    n, m = masks.shape[0], masks.shape[-1]
    if out is None:
        out = masks_array(n, size, np.float32 if threshold is None else bool)
    boxes = boxes.astype(np.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        xa, ya = max(int(np.floor(x1)) - 1, 0), max(int(np.floor(y1)) - 1, 0)
        xb, yb = min(int(np.ceil(x2)) + 1, im_w), min(int(np.ceil(y2)) + 1, im_h)
        if xb <= xa or yb <= ya:
            continue
        wy = _grid_sample_weights(ya, yb, y1, y2, m)                                      # [yb-ya, M]
        wx = _grid_sample_weights(xa, xb, x1, x2, m)                                      # [xb-xa, M]
        probs = wy @ masks[i].astype(np.float32) @ wx.T                                    # [yb-ya, xb-xa]
        if threshold is None:
            out[i, ya:yb, xa:xb] = probs
        else:
            np.greater_equal(probs, np.float32(threshold), out=out[i, ya:yb, xa:xb])
    return out
