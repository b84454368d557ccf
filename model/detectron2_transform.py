"""Detectron2's input and output transforms (`MaskRCNNConfig.transform_rule == "detectron2"`).

Facts from facebookresearch/detectron2 @ 02b5c4e2 (the code is this project's own):
- `engine/defaults.py::DefaultPredictor`: the image (uint8 HWC, in cfg.INPUT.FORMAT channel order) is
  resized by `ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)`, then `float32` CHW.
- `data/transforms/augmentation_impl.py::ResizeShortestEdge.get_output_shape`: scale the short side to
  min_size, cap the long side at max_size, round each side with `int(x + 0.5)`.
- `data/transforms/transform.py::ResizeTransform.apply_image`: uint8 images go through PIL's
  `Image.resize(..., Image.BILINEAR)`.
- `modeling/meta_arch/rcnn.py::GeneralizedRCNN.preprocess_image`: `(x - pixel_mean) / pixel_std`, then zero
  padding to a multiple of the backbone's size divisibility (32 for FPN).
- `modeling/postprocessing.py::detector_postprocess`: boxes scaled by (out_w / in_w, out_h / in_h), clipped to
  the output image, empty boxes (side <= 0) dropped, masks pasted by `layers/mask_ops.py::paste_masks_in_image`
  (grid_sample, align_corners=False, on CPU one mask at a time over its box's bounding region +-1 px) and
  thresholded `>= 0.5`. This module returns the pasted probabilities; binarise them downstream.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .fit import Fit
from .resize_paste_numpy import resize_uint8
from .transform import batch_images

__all__ = ["to_uint8", "preprocess_detectron2", "paste_masks_detectron2",
           "postprocess_detectron2"]


def to_uint8(image: Tensor) -> np.ndarray:
    """Float [3,H,W] in 0-1 (or uint8) -> uint8 [H,W,3] numpy; round(x * 255) restores 8-bit photos exactly."""
    if image.dtype != torch.uint8:
        image = (image.detach().float() * 255.0).round().clamp(0, 255).to(torch.uint8)
    return image.permute(1, 2, 0).contiguous().cpu().numpy()


def preprocess_detectron2(images: list[Tensor], cfg, fit: Fit | None = None) -> tuple[Tensor, list[tuple[int, int]]]:
    """RGB images [3,H,W] (float 0-1 or uint8) -> padded batch [B,3,Hp,Wp] and resized sizes (h, w).

    fit: a test-time `Fit` (e.g. a static graph's canvas); its sizes replace the config's, always rounded by
    Detectron2's rule.
    """
    fit = dataclasses.replace(fit or Fit.of(cfg), resize="detectron2")
    mean = torch.tensor(cfg.image_mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(cfg.image_std, dtype=torch.float32).view(-1, 1, 1)
    out = []
    for image in images:
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"images are expected as [3,H,W] RGB tensors, got shape {tuple(image.shape)}")
        pixels = to_uint8(image)  # [H,W,3] RGB
        if cfg.input_format == "BGR":
            pixels = pixels[:, :, ::-1].copy()
        pixels = resize_uint8(pixels, fit.resized_size(pixels.shape[0], pixels.shape[1]))
        x = torch.from_numpy(pixels.astype(np.float32).transpose(2, 0, 1))  # [3,h,w] 0-255
        if cfg.input_scale != 255.0:
            x = x * (cfg.input_scale / 255.0)
        out.append(((x - mean) / std).to(image.device))
    sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in out]
    return batch_images(out, cfg.size_divisible), sizes


def paste_masks_detectron2(masks: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """[N,1,M,M] probabilities at boxes [N,4] (output pixels) -> [N,1,H,W] probabilities.

    Each output pixel centre (x + 0.5) is mapped into its box and bilinearly sampled with zero padding
    (grid_sample, align_corners=False); only the box's region floor(x1)-1 .. ceil(x2)+1 is sampled, the rest
    stays 0, as Detectron2 does on CPU.
    """
    im_h, im_w = size
    out = masks.new_zeros((masks.shape[0], 1, im_h, im_w))
    for i in range(masks.shape[0]):
        box = boxes[i:i + 1].float()  # [1,4]
        x0i, y0i = torch.clamp(box.min(dim=0).values.floor()[:2] - 1, min=0).to(torch.int32).tolist()
        x1i = int(torch.clamp(box[:, 2].max().ceil() + 1, max=im_w))
        y1i = int(torch.clamp(box[:, 3].max().ceil() + 1, max=im_h))
        x0, y0, x1, y1 = torch.split(box, 1, dim=1)  # each [1,1]
        ys = torch.arange(y0i, y1i, device=box.device, dtype=torch.float32) + 0.5
        xs = torch.arange(x0i, x1i, device=box.device, dtype=torch.float32) + 0.5
        ys = (ys - y0) / (y1 - y0) * 2 - 1  # [1,h]
        xs = (xs - x0) / (x1 - x0) * 2 - 1  # [1,w]
        grid = torch.stack([xs[:, None, :].expand(1, ys.shape[1], xs.shape[1]),
                            ys[:, :, None].expand(1, ys.shape[1], xs.shape[1])], dim=3)  # [1,h,w,2]
        pasted = F.grid_sample(masks[i:i + 1].float(), grid, align_corners=False)  # [1,1,h,w]
        out[i, :, y0i:y1i, x0i:x1i] = pasted[0].to(out.dtype)
    return out


def postprocess_detectron2(results: list[dict], image_sizes: list[tuple[int, int]],
                           original_sizes: list[tuple[int, int]]) -> list[dict]:
    """Boxes to original pixels (scale, clip, drop empty), 28x28 masks pasted to [D,1,H,W] probabilities."""
    out = []
    for r, (h, w), (oh, ow) in zip(results, image_sizes, original_sizes):
        boxes = r["boxes"].clone()
        boxes[:, 0::2] *= ow / w
        boxes[:, 1::2] *= oh / h
        boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=ow)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=oh)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        r = {k: v[keep] for k, v in r.items()}
        r["boxes"] = boxes[keep]
        if "masks" in r:
            r["masks"] = paste_masks_detectron2(r["masks"], r["boxes"], (oh, ow))
        out.append(r)
    return out
