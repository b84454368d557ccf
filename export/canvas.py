"""Each image's own extent inside a padded canvas, so the deploy graph computes what the eager model does.

The eager model (at batch 1) zero-pads an image resized to (h, w) to its *padded extent*
(h, w rounded up to size_divisible); a static graph pads it to the whole canvas. Left alone, the
extra padding changes the features inside the image: beyond the extent the first convolution's zeros
become bias and norm constants, and every later 3x3 convolution, max-pool and GroupNorm mixes them
back in (a seeded R50-FPN, 96x256 image in a 192x256 canvas: P2..P6 differ on every row, by up to
0.6 of their range). The deploy graph therefore

* `extent_masking`: zeroes everything beyond each image's extent at the input of every spatial op
  (conv with a kernel > 1, max-pool) and normalises GroupNorm over the extent only, as the eager
  model's own zero padding does;
* `image_anchors`: gives each image the eager model's anchors on the eager feature maps of its
  extent (torchvision's stride is extent // map size, which is not 64 on P6 when extent / 32 is odd)
  and marks the anchors beyond it, which never become proposals;
* RoIAlign takes the extents itself (the op's `extents` input, docs/ops.md): its taps clamp at the last
  row/column of each image's eager (extent-sized) map and read 0 past it, as torchvision's do.

Then a static graph gives the eager model's detections for any image that fits, whatever the canvas.
Tensor shapes: extent [B,2] float (height, width) in input pixels; features [B,C,h,w].
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from maskrcnn_deploy.model.anchors import cell_anchors, detectron2_grid_anchors

__all__ = ["FEATURE_STRIDES", "padded_extent", "extent_masking", "image_anchors"]

FEATURE_STRIDES = (4, 8, 16, 32, 64)  # P2..P6 in input pixels (P6 = P5 max-pooled with stride 2)


def padded_extent(image_sizes: Tensor, size_divisible: int) -> Tensor:
    """[B,2] resized (h, w) -> [B,2] what the eager model pads each image to (multiples of size_divisible)."""
    return torch.ceil(image_sizes / size_divisible) * size_divisible


def _cells(extent: Tensor, stride_y, stride_x) -> Tensor:
    """[B,2] rows and columns of the eager feature map at this stride: ceil(extent / stride)
    (convolutions with stride 2 and max-pooling round up)."""
    return torch.stack((torch.ceil(extent[:, 0] / stride_y), torch.ceil(extent[:, 1] / stride_x)), dim=1)


def _inside(cells: Tensor, h, w, device) -> Tensor:
    """[B,1,h,w] bool: the cell lies on the eager map of `cells` [B,2] rows/columns."""
    rows = torch.arange(h, device=device, dtype=cells.dtype)[None, :, None] < cells[:, 0, None, None]
    cols = torch.arange(w, device=device, dtype=cells.dtype)[None, None, :] < cells[:, 1, None, None]
    return (rows & cols)[:, None]


def _masked_group_norm(x: Tensor, inside: Tensor, norm: nn.GroupNorm) -> Tensor:
    """GroupNorm of x [B,C,h,w] with statistics over the cells `inside` [B,1,h,w] only."""
    B, C, h, w = x.shape
    G = norm.num_groups
    xg = x.reshape(B, G, C // G, h, w)
    m = inside.reshape(B, 1, 1, h, w).to(x.dtype)
    count = m.sum(dim=(3, 4), keepdim=True) * (C // G)                       # [B,1,1,1,1]
    mean = (xg * m).sum(dim=(2, 3, 4), keepdim=True) / count
    var = (((xg - mean) * m) ** 2).sum(dim=(2, 3, 4), keepdim=True) / count
    y = ((xg - mean) * torch.rsqrt(var + norm.eps)).reshape(B, C, h, w)
    if norm.affine:
        y = y * norm.weight.reshape(1, C, 1, 1) + norm.bias.reshape(1, C, 1, 1)
    return y


@contextlib.contextmanager
def extent_masking(module: nn.Module, extent: Tensor, canvas: tuple, stride: int | None = None):
    """While inside, `module`'s spatial ops see zeros beyond each image's `extent` and its GroupNorms
    normalise over the extent only (hooks, removed on exit; the module is shared with the eager model).
    Max-pool inputs follow a ReLU, so a zero there never wins over the image, as the eager pool's
    -inf padding never does.

    canvas: (H, W) of the network input; a feature map of (h, w) is at stride H // h (exact for
    P2..P5 of a canvas of multiples of 32). stride: the stride of every map the module sees, when
    that rule does not hold (the RPN head on P6, called once per level).
    """
    masks: dict[str, Tensor] = {}  # one mask per map size: the graph computes each once, not once per conv

    def mask_of(x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        key = f"{h}x{w}"  # str: the sizes are symbolic in a dynamic export, and a SymInt is not hashable
        if key not in masks:
            sy, sx = (stride, stride) if stride is not None else (canvas[0] // h, canvas[1] // w)
            masks[key] = _inside(_cells(extent, sy, sx), h, w, x.device)
        return masks[key]

    def zero_outside(mod, args):
        x = args[0]
        return (torch.where(mask_of(x), x, 0.0),) + tuple(args[1:])  # a scalar: no canvas-sized constant

    def group_norm_inside(mod, args, output):
        return _masked_group_norm(args[0], mask_of(args[0]), mod)

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) != (1, 1) or isinstance(m, nn.MaxPool2d):
            handles.append(m.register_forward_pre_hook(zero_outside))
        elif isinstance(m, nn.GroupNorm):
            handles.append(m.register_forward_hook(group_norm_inside))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def image_anchors(map_sizes: list, extent: Tensor, sizes: tuple, ratios: tuple, rule: str = "torchvision",
                  offset: float = 0.0) -> tuple[Tensor, Tensor]:
    """The eager model's anchors of each image on the canvas maps: anchors [B,A,4] (level-major, then
    (y, x, anchor) over the canvas map, as model/anchors.py) and inside [B,A] bool (on the eager map).

    Level l's eager map has ceil(extent / FEATURE_STRIDES[l]) cells and, as torchvision, stride
    extent // cells (integer division), so the anchors of a cell are those the eager model gives it.
    rule "detectron2" (model/config.py anchor_rule): Detectron2's unrounded anchors at the fixed strides,
    centres at (offset + i) * stride, the same for every image.
    """
    if rule == "detectron2":
        return _detectron2_image_anchors(map_sizes, extent, sizes, ratios, offset)
    anchors, inside = [], []
    for (h, w), level_sizes, nominal in zip(map_sizes, sizes, FEATURE_STRIDES):
        base = cell_anchors(level_sizes, ratios, extent.dtype, extent.device)               # [A_l,4]
        cells = _cells(extent, nominal, nominal)                                           # [B,2]
        stride = torch.floor(extent / cells)                                               # [B,2]
        ys = torch.arange(h, device=extent.device, dtype=extent.dtype)
        xs = torch.arange(w, device=extent.device, dtype=extent.dtype)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")                                     # [h,w]
        sy = yy[None] * stride[:, 0, None, None]                                           # [B,h,w]
        sx = xx[None] * stride[:, 1, None, None]
        shifts = torch.stack((sx, sy, sx, sy), dim=-1).reshape(extent.shape[0], -1, 1, 4)  # [B,h*w,1,4]
        anchors.append((shifts + base[None, None]).reshape(extent.shape[0], -1, 4))
        ok = _inside(cells, h, w, extent.device).reshape(extent.shape[0], -1, 1)           # [B,h*w,1]
        inside.append(ok.expand(-1, -1, base.shape[0]).reshape(extent.shape[0], -1))
    return torch.cat(anchors, dim=1), torch.cat(inside, dim=1)


def _detectron2_image_anchors(map_sizes: list, extent: Tensor, sizes: tuple, ratios: tuple, offset: float
                              ) -> tuple[Tensor, Tensor]:
    """`image_anchors` by Detectron2's rule (model/anchors.py `detectron2_grid_anchors`, with tensor sizes so
    a dynamic export keeps them symbolic): [B,A,4] (every image's the same) and inside [B,A]."""
    B = extent.shape[0]
    anchors, inside = [], []
    for (h, w), level_sizes, stride in zip(map_sizes, sizes, FEATURE_STRIDES):
        base = detectron2_grid_anchors([(1, 1)], [stride], (level_sizes,), ratios, 0.0, extent.device)  # [A_l,4]
        ys = (torch.arange(h, device=extent.device, dtype=torch.float32) + offset) * stride
        xs = (torch.arange(w, device=extent.device, dtype=torch.float32) + offset) * stride
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")                                     # [h,w]
        shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)                    # [h*w,1,4]
        anchors.append((shifts + base[None]).reshape(-1, 4).to(extent.dtype))
        ok = _inside(_cells(extent, stride, stride), h, w, extent.device).reshape(B, -1, 1)  # [B,h*w,1]
        inside.append(ok.expand(-1, -1, base.shape[0]).reshape(B, -1))
    return torch.cat(anchors, dim=0)[None].expand(B, -1, -1), torch.cat(inside, dim=1)

