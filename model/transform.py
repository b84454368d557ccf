"""Input normalisation/resizing/batching and output rescaling/mask pasting (torchvision rules)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from maskrcnn_deploy.model.fit import Fit

__all__ = ["choose_min_size", "resize_image_and_target", "batch_images", "resize_boxes",
           "paste_masks_in_image", "preprocess", "postprocess"]


def choose_min_size(min_size: int | tuple, training: bool) -> int:
    """Training: uniform random choice using torch's RNG (like torchvision's torch_choice). Test: the last."""
    sizes = tuple(min_size) if isinstance(min_size, (tuple, list)) else (min_size,)
    if not training:
        return sizes[-1]
    index = int(torch.empty(1).uniform_(0.0, float(len(sizes))).item())
    return sizes[index]


def resize_boxes(boxes: Tensor, old_size: tuple[int, int], new_size: tuple[int, int]) -> Tensor:
    """Scale [N,4] xyxy boxes from an image of old_size (h, w) to new_size (h, w)."""
    rh = torch.tensor(new_size[0], dtype=torch.float32, device=boxes.device) / torch.tensor(
        old_size[0], dtype=torch.float32, device=boxes.device)
    rw = torch.tensor(new_size[1], dtype=torch.float32, device=boxes.device) / torch.tensor(
        old_size[1], dtype=torch.float32, device=boxes.device)
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * rw, y1 * rh, x2 * rw, y2 * rh), dim=1)


def resize_image_and_target(image: Tensor, min_size: int, max_size: int, target: dict | None = None,
                            canvas: tuple[int, int] | None = None) -> tuple[Tensor, dict | None]:
    """Scale so the short side is min_size unless the long side would exceed max_size (or the image
    would not fit `canvas`): `Fit`'s rule.

    image [3,H,W] -> [3,H',W'] (bilinear); target masks nearest, boxes scaled.
    """
    h, w = image.shape[-2:]
    scale = Fit(min_size, max_size, canvas).scale(int(h), int(w))
    image = F.interpolate(image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True,
                          align_corners=False)[0]
    if target is None:
        return image, None
    target = dict(target)
    if "masks" in target:
        masks = target["masks"]
        target["masks"] = F.interpolate(masks[:, None].float(), scale_factor=scale,
                                        recompute_scale_factor=True)[:, 0].byte()
    target["boxes"] = resize_boxes(target["boxes"], (h, w), tuple(image.shape[-2:]))
    return image, target


def batch_images(images: list[Tensor], size_divisible: int = 32) -> Tensor:
    """Zero-pad (bottom/right) to a common size rounded up to size_divisible -> [B,3,Hp,Wp]."""
    h = max(img.shape[-2] for img in images)
    w = max(img.shape[-1] for img in images)
    h = int(math.ceil(float(h) / size_divisible) * size_divisible)
    w = int(math.ceil(float(w) / size_divisible) * size_divisible)
    batch = images[0].new_full((len(images), images[0].shape[0], h, w), 0)
    for img, pad in zip(images, batch):
        pad[:, :img.shape[-2], :img.shape[-1]].copy_(img)
    return batch


def preprocess(images: list[Tensor], targets: list[dict] | None, cfg, training: bool, fit: Fit | None = None
               ) -> tuple[Tensor, list[tuple[int, int]], list[dict] | None]:
    """Normalise, resize and batch. Returns [B,3,Hp,Wp], resized sizes (h, w), resized targets.

    fit: resize by this rule instead of the config's (a static graph's, see `Fit`; inference only).
    """
    out_images, out_targets = [], [] if targets is not None else None
    for i, image in enumerate(images):
        if image.dim() != 3:
            raise ValueError(f"images are expected as [C,H,W] tensors, got shape {tuple(image.shape)}")
        mean = torch.as_tensor(cfg.image_mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(cfg.image_std, dtype=image.dtype, device=image.device)
        image = (image - mean[:, None, None]) / std[:, None, None]
        fit_i = fit or Fit(choose_min_size(cfg.min_size, training), cfg.max_size)
        image, target = resize_image_and_target(image, fit_i.min_size, fit_i.max_size,
                                                targets[i] if targets else None, fit_i.canvas)
        out_images.append(image)
        if out_targets is not None:
            out_targets.append(target)
    sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in out_images]
    return batch_images(out_images, cfg.size_divisible), sizes, out_targets


def _expand_boxes(boxes: Tensor, scale: float) -> Tensor:
    """Scale half-sizes of [N,4] boxes about their centres."""
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    return torch.stack((x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half), dim=1)


def paste_masks_in_image(masks: Tensor, boxes: Tensor, size: tuple[int, int], padding: int = 1) -> Tensor:
    """Paste [N,1,M,M] mask probabilities into [N,1,H,W] images at boxes [N,4] (original pixels).

    Masks are padded by `padding`, boxes expanded by (M+2p)/M and truncated to int,
    each mask bilinearly resized to (y2-y1+1, x2-x1+1) and cropped to the image.
    """
    im_h, im_w = size
    if masks.shape[0] == 0:
        return masks.new_zeros((0, 1, im_h, im_w))
    M = masks.shape[-1]
    scale = float(M + 2 * padding) / M
    masks = F.pad(masks, (padding,) * 4)
    boxes = _expand_boxes(boxes, scale).to(torch.int64).tolist()
    out = masks.new_zeros((masks.shape[0], 1, im_h, im_w))
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        m = F.interpolate(masks[i:i + 1], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        xa, xb = max(x1, 0), min(x2 + 1, im_w)
        ya, yb = max(y1, 0), min(y2 + 1, im_h)
        if xb > xa and yb > ya:
            out[i, 0, ya:yb, xa:xb] = m[ya - y1:yb - y1, xa - x1:xb - x1]
    return out


def postprocess(results: list[dict], image_sizes: list[tuple[int, int]], original_sizes: list[tuple[int, int]]
                ) -> list[dict]:
    """Boxes back to original image coordinates; 28x28 masks pasted to [D,1,H,W]."""
    for r, size, orig in zip(results, image_sizes, original_sizes):
        r["boxes"] = resize_boxes(r["boxes"], size, orig)
        if "masks" in r:
            r["masks"] = paste_masks_in_image(r["masks"], r["boxes"], orig)
    return results
