"""Draw detections on an image: translucent instance masks, box outlines, "name score" labels."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from maskrcnn_deploy.common.files import atomic_write

MASK_ALPHA = 0.5


def instance_color(index: int) -> tuple[int, int, int]:
    """Deterministic, well-spread RGB colour (0-255) of the `index`-th instance (golden-ratio hues)."""
    h = (index * 0.618033988749895) % 1.0
    i, f = int(h * 6), (h * 6) % 1.0
    v, s = 1.0, 0.85
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]
    return int(r * 255), int(g * 255), int(b * 255)


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def to_uint8_rgb(image) -> np.ndarray:
    """PIL image, tensor [3,H,W] (float 0-1) or numpy [H,W,3]/[H,W]/[3,H,W] (uint8, or float 0-1) -> uint8 [H,W,3]."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    is_tensor = hasattr(image, "detach")
    array = _numpy(image)
    if array.dtype != np.uint8:  # before the transpose, on contiguous memory: 4x faster on a 24 MP image
        array = np.clip(np.rint(array.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if array.ndim == 3 and (is_tensor or array.shape[2] not in (1, 3, 4)):
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def draw_detections(image, detections: Mapping, class_names: Sequence[str], score_thresh: float = 0.5,
                    mask_threshold: float = 0.5) -> Image.Image:
    """RGB PIL image of `image` with detections (boxes [D,4] xyxy, scores [D], labels [D], optional masks
    [D,H,W] or [D,1,H,W]) at score >= score_thresh drawn on it; instance i gets `instance_color(i)`."""
    canvas = to_uint8_rgb(image).copy()  # never the caller's array
    height, width = canvas.shape[:2]
    scores = _numpy(detections["scores"]).reshape(-1)
    boxes = _numpy(detections["boxes"]).reshape(-1, 4)
    labels = _numpy(detections["labels"]).reshape(-1).astype(np.int64)
    masks = detections.get("masks")
    if masks is not None:
        masks = _numpy(masks)
        masks = masks[:, 0] if masks.ndim == 4 else masks
        masks = masks if masks.dtype == bool else masks >= mask_threshold
    keep = [i for i in range(len(scores)) if scores[i] >= score_thresh]
    tinted = [i for i in keep if masks is not None and masks[i].shape == (height, width)]
    if tinted:  # blend in float on the masked pixels only: a 24 MP photo stays cheap
        ys, xs = np.nonzero(np.logical_or.reduce([masks[i] for i in tinted]))
        pixels = canvas[ys, xs].astype(np.float32)
        for i in tinted:
            m = masks[i][ys, xs]
            pixels[m] = (1 - MASK_ALPHA) * pixels[m] + MASK_ALPHA * np.array(instance_color(i), np.float32)
        canvas[ys, xs] = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    out = Image.fromarray(canvas)
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    for i in keep:
        color = instance_color(i)
        x0, y0, x1, y1 = [float(v) for v in boxes[i]]
        draw.rectangle([x0, y0, x1, y1], outline=color, width=2)
        label = int(labels[i])
        name = class_names[label] if 0 <= label < len(class_names) else f"class{label}"
        text = f"{name} {float(scores[i]):.2f}"
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), text, font=font)
        tw, th = tx1 - tx0, ty1 - ty0
        ty = y0 - th - 4 if y0 - th - 4 >= 0 else y0 + 2
        tx = min(max(0.0, x0), max(0.0, width - tw - 4))
        draw.rectangle([tx, ty, tx + tw + 4, ty + th + 4], fill=color)
        draw.text((tx + 2, ty + 2 - ty0), text, fill=(0, 0, 0), font=font)
    return out


def save_png(image, path: str | Path) -> Path:
    """Write `image` (PIL, numpy or tensor as in `to_uint8_rgb`) as PNG atomically (`files.atomic_write`)."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(to_uint8_rgb(image))
    return atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))
