"""Error histograms of the matched pairs: the 20 bins of the JSON report and the PNG `check --histogram` draws."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from maskrcnn_deploy.common.files import atomic_write

if TYPE_CHECKING:
    from maskrcnn_deploy.runtime.parity.report import ParityReport

__all__ = ["HIST_BINS", "histogram", "save_error_histograms"]

HIST_BINS = 20


def histogram(values: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(counts [B], edges [B+1]): IoUs binned from their minimum up to 1, errors from 0 to their maximum."""
    if kind == "iou":
        lo = float(values.min()) if values.size and values.min() < 1.0 - 1e-9 else 0.999
        lo, hi = min(lo, 0.999), 1.0
    else:
        lo, hi = 0.0, max(float(values.max()) if values.size else 0.0, 1e-3)
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=HIST_BINS, range=(lo, hi))
    return counts, edges


def _draw_histogram(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], values: np.ndarray, kind: str,
                    title: str, xlabel: str, font) -> None:
    """One bar chart inside box (x0, y0, x1, y1): title on top, x ticks and label below, count at the top left."""
    x0, y0, x1, y1 = box
    ax0, ay0, ax1, ay1 = x0 + 55, y0 + 30, x1 - 15, y1 - 45  # plot area
    draw.text((x0 + 10, y0 + 8), f"{title} ({values.size} pairs)", fill="black", font=font)
    draw.line([(ax0, ay0), (ax0, ay1), (ax1, ay1)], fill="black")
    draw.text((x0 + (x1 - x0) // 2 - 6 * len(xlabel) // 2, ay1 + 24), xlabel, fill="black", font=font)
    if not values.size:
        draw.text((ax0 + 20, (ay0 + ay1) // 2), "no matched pairs", fill="gray", font=font)
        return
    counts, edges = histogram(values, kind)
    top = max(int(counts.max()), 1)
    draw.text((x0 + 5, ay0 - 4), str(top), fill="black", font=font)
    draw.text((x0 + 5, ay1 - 12), "0", fill="black", font=font)
    draw.text((x0 + 5, (ay0 + ay1) // 2), "pairs", fill="black", font=font)
    width = (ax1 - ax0) / len(counts)
    for k, c in enumerate(counts):
        if c:
            h = max((ay1 - ay0) * c / top, 2.0)  # a bar of a few pairs among thousands stays visible
            draw.rectangle([ax0 + k * width + 1, ay1 - h, ax0 + (k + 1) * width - 1, ay1 - 1], fill=(70, 130, 180))
    for frac in (0.0, 0.5, 1.0):
        x = ax0 + frac * (ax1 - ax0)
        draw.line([(x, ay1), (x, ay1 + 4)], fill="black")
        label = f"{edges[0] + frac * (edges[-1] - edges[0]):.4g}"
        draw.text((x - 3 * len(label), ay1 + 7), label, fill="black", font=font)


def save_error_histograms(report: ParityReport, path_png: str | Path, size: tuple[int, int] = (900, 320)) -> Path:
    """PNG (width x height pixels) with histograms of mask IoU and box coordinate error over matched pairs."""
    w, h = size
    image = Image.new("RGB", (w, h), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    _draw_histogram(draw, (0, 0, w // 2, h), report.mask_iou, "iou", "mask IoU", "mask IoU (full size)", font)
    _draw_histogram(draw, (w // 2, 0, w, h), report.box_error_px, "error", "box error",
                    "max |coordinate error| (px)", font)
    return atomic_write(path_png, lambda tmp: image.save(tmp, format="PNG"))
