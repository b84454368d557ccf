"""The PNG of a divergence report: error against graph depth, drawn with PIL (as the parity histograms,
runtime/parity/histograms.py; matplotlib is not a dependency).

x: the depth of the node computing the tensor (longest path from the inputs, in nodes); y: log10 of the
relative L2 error (blue dots) and of 1 - cosine similarity (orange dots), clipped to [1e-8, 10]. A dashed
line marks the threshold, a red ring the first divergent tensor; tensors without metrics (shape mismatch,
inf/nan) are grey marks on the top edge.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from maskrcnn_deploy.common.files import atomic_write
from maskrcnn_deploy.runtime.diverge.report import DivergenceReport

__all__ = ["save_divergence_plot", "LOG_RANGE"]

LOG_RANGE = (-8.0, 1.0)  # log10 of the errors drawn
REL_COLOR, COSINE_COLOR, FIRST_COLOR = (31, 119, 180), (255, 127, 14), (214, 39, 40)


def _y(value: float, top: int, bottom: int) -> float:
    lo, hi = LOG_RANGE
    v = min(max(math.log10(max(value, 10 ** lo)), lo), hi)
    return bottom - (v - lo) / (hi - lo) * (bottom - top)


def _axes(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], max_depth: int, font) -> None:
    """Frame, y ticks every decade, x ticks at 0, half and max depth, axis labels."""
    x0, y0, x1, y1 = box
    draw.line([(x0, y0), (x0, y1), (x1, y1)], fill="black")
    for decade in range(int(LOG_RANGE[0]), int(LOG_RANGE[1]) + 1):
        y = _y(10.0 ** decade, y0, y1)
        draw.line([(x0 - 4, y), (x0, y)], fill="black")
        draw.line([(x0 + 1, y), (x1, y)], fill=(235, 235, 235))
        draw.text((x0 - 40, y - 6), f"1e{decade}", fill="black", font=font)
    for frac in (0.0, 0.5, 1.0):
        x = x0 + frac * (x1 - x0)
        draw.line([(x, y1), (x, y1 + 4)], fill="black")
        label = str(round(frac * max_depth))
        draw.text((x - 3 * len(label), y1 + 7), label, fill="black", font=font)
    draw.text(((x0 + x1) // 2 - 90, y1 + 24), "graph depth (nodes from the input)", fill="black", font=font)


def save_divergence_plot(report: DivergenceReport, path_png: str | Path, size: tuple[int, int] = (900, 360)) -> Path:
    """PNG (width x height pixels) of the report's errors along graph depth."""
    w, h = size
    image = Image.new("RGB", (w, h), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    box = (60, 40, w - 20, h - 50)
    x0, y0, x1, y1 = box
    max_depth = max((r.pair.depth for r in report.rows), default=1) or 1
    draw.text((10, 8), f"error along graph depth: {Path(report.artifact).name} vs {Path(report.reference).name} "
                       f"({len(report.rows)} tensors, {len(report.images)} images)", fill="black", font=font)
    _axes(draw, box, max_depth, font)
    ty = _y(report.threshold, y0, y1)
    for x in range(x0, x1, 12):
        draw.line([(x, ty), (x + 6, ty)], fill=FIRST_COLOR)
    draw.text((x1 - 150, ty - 14), f"threshold {report.threshold:g}", fill=FIRST_COLOR, font=font)
    for row in report.rows:
        x = x0 + row.pair.depth / max_depth * (x1 - x0)
        e = row.error
        if e.rel_l2 is None:
            draw.line([(x, y0), (x, y0 + 8)], fill="gray")
            continue
        for value, color in ((1.0 - e.cosine, COSINE_COLOR), (e.rel_l2, REL_COLOR)):
            y = _y(value, y0, y1)
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=color)
    first = report.first_divergent
    if first is not None:
        x = x0 + first.pair.depth / max_depth * (x1 - x0)
        y = y0 if first.error.rel_l2 is None else _y(first.error.rel_l2, y0, y1)
        draw.ellipse([x - 7, y - 7, x + 7, y + 7], outline=FIRST_COLOR, width=2)
        draw.text((min(x + 10, x1 - 200), y - 18), f"first: {first.pair.name[:40]}", fill=FIRST_COLOR, font=font)
    legend_x = x0 + 10
    for label, color in (("relative L2 error", REL_COLOR), ("1 - cosine similarity", COSINE_COLOR)):
        draw.ellipse([legend_x, y0 + 6, legend_x + 6, y0 + 12], fill=color)
        draw.text((legend_x + 10, y0 + 3), label, fill="black", font=font)
        legend_x += 150
    return atomic_write(path_png, lambda tmp: image.save(tmp, format="PNG"))
