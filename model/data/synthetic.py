"""Seeded synthetic instance-segmentation scenes written as COCO json + PNG images.

Each image holds 1..N filled shapes (6 classes) on a solid, gradient or noisy background.
Shapes are painted in order, so later ones occlude earlier ones; an instance's mask is its
VISIBLE part. Instances left with too little visible area are removed from the scene (not
painted), so every painted pixel belongs to an annotation or to the background.

Segmentation format: fully visible polygon shapes (rectangle, triangle, star) are written
as polygons, everything else (round shapes, occluded instances) as compressed RLE.
Same seed -> byte-identical json and PNGs. Coordinates are pixels, (x, y) = (column, row).
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from maskrcnn_deploy.common.files import write_text

CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "rectangle", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
    {"id": 4, "name": "ellipse", "supercategory": "shape"},
    {"id": 5, "name": "star", "supercategory": "shape"},
    {"id": 6, "name": "ring", "supercategory": "shape"},
]
POLYGON_SHAPES = {"rectangle", "triangle", "star"}  # written as polygons when fully visible
SIZE_FRACTION = (0.12, 0.45)  # object diameter as a fraction of the shorter image side
MIN_VISIBLE_FRACTION = 0.25  # of the full (unoccluded) area
MIN_VISIBLE_PIXELS = 20
MIN_COLOR_DISTANCE = 120.0  # L1 distance (0-765) between object colour and local background


@dataclass
class Shape:
    """One drawn instance: class name, full mask [H,W] bool, colour (r,g,b) 0-255, polygon or None."""

    name: str
    full: np.ndarray
    color: np.ndarray
    polygon: list[float] | None


Cell = tuple[tuple[int, int], list[Shape], list[np.ndarray]]  # one scene of a mosaic: (top, left), shapes, visible


# ----------------------------------------------------------------------------- drawing
def _rotate(points: np.ndarray, cx: float, cy: float, angle: float) -> np.ndarray:
    """Rotate [P,2] offsets by `angle` radians and move them to (cx, cy)."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return points @ rot.T + np.array([cx, cy])


def _outline(name: str, r: float, rng: np.random.Generator) -> np.ndarray | None:
    """Vertex offsets [P,2] (unrotated, centred at 0) of polygonal shapes; None for circle/ring."""
    if name == "rectangle":
        w, h = r, r * rng.uniform(0.45, 1.0)
        return np.array([[-w, -h], [w, -h], [w, h], [-w, h]])
    if name == "triangle":
        angles = np.array([90.0, 210.0, 330.0]) + rng.uniform(-20, 20, 3)
        a = np.deg2rad(angles)
        return np.stack([np.cos(a), -np.sin(a)], 1) * r
    if name == "star":
        a = np.deg2rad(90 + np.arange(10) * 36.0)
        radii = np.where(np.arange(10) % 2 == 0, r, r * rng.uniform(0.4, 0.55))
        return np.stack([np.cos(a) * radii, -np.sin(a) * radii], 1)
    if name == "ellipse":
        a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(a) * r, np.sin(a) * r * rng.uniform(0.4, 0.7)], 1)
    return None


def _draw_shape(name: str, size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, list[float] | None]:
    """Full binary mask [H,W] bool of one random shape of class `name` and its polygon (flat xy) if any."""
    h, w = size
    side = min(h, w)
    r = rng.uniform(*SIZE_FRACTION) * side / 2
    cx, cy = rng.uniform(r + 1, w - r - 1), rng.uniform(r + 1, h - r - 1)
    offsets = _outline(name, r, rng)
    if offsets is not None:
        # Rasterized by pycocotools itself, so the polygon annotation decodes to exactly this mask.
        polygon = np.round(_rotate(offsets, cx, cy, rng.uniform(0, 2 * np.pi)), 2).reshape(-1).tolist()
        full = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon], h, w)))
        return full.astype(bool), polygon
    canvas = Image.new("L", (w, h), 0)  # mode L: no antialiasing
    draw = ImageDraw.Draw(canvas)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    if name == "ring":
        ri = r * rng.uniform(0.45, 0.65)
        draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
    return np.asarray(canvas, dtype=bool), None


def _background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Float32 [H,W,3] background 0-255: solid, linear gradient, smooth noise or stripes."""
    h, w = size
    kind = rng.integers(4)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    if kind == 0:
        bg = np.broadcast_to(c0, (h, w, 3)).copy()
    elif kind == 1:
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        bg = c0 + t[..., None] * (c1 - c0)
    elif kind == 2:
        cells = rng.uniform(0, 255, (int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3)).astype(np.uint8)
        bg = np.asarray(Image.fromarray(cells).resize((w, h), Image.BILINEAR), dtype=np.float32)
        bg = 0.5 * bg + 0.5 * c0
    else:
        period = rng.uniform(6, 24)
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * np.pi / period) + 1) / 2
        bg = c0 + 0.35 * t[..., None] * (c1 - c0)
    return bg.astype(np.float32)


def _contrasting_color(bg_color: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour at least MIN_COLOR_DISTANCE (L1) from `bg_color` (best of 20 tries)."""
    best, best_d = None, -1.0
    for _ in range(20):
        c = rng.uniform(0, 255, 3)
        d = float(np.abs(c - bg_color).sum())
        if d >= MIN_COLOR_DISTANCE:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _visible_masks(shapes: Sequence[Shape]) -> list[np.ndarray]:
    """Visible mask of each shape given painting order (later shapes on top)."""
    visible, covered = [None] * len(shapes), np.zeros_like(shapes[0].full) if shapes else None
    for i in range(len(shapes) - 1, -1, -1):
        visible[i] = shapes[i].full & ~covered
        covered = covered | shapes[i].full
    return visible


def _keep_visible(shapes: list[Shape]) -> tuple[list[Shape], list[np.ndarray]]:
    """Drop mostly hidden shapes (repeat: removing one only reveals others); return kept shapes and visible masks."""
    while shapes:
        visible = _visible_masks(shapes)
        bad = [i for i, (s, v) in enumerate(zip(shapes, visible))
               if v.sum() < max(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * s.full.sum())]
        if not bad:
            return shapes, visible
        shapes = [s for i, s in enumerate(shapes) if i != bad[0]]  # one at a time: reveals the others
    return [], []


# ----------------------------------------------------------------------------- scenes
def render_scene(size: tuple[int, int], rng: np.random.Generator, min_objects: int = 1,
                 max_objects: int = 6) -> tuple[np.ndarray, list[Shape], list[np.ndarray]]:
    """One scene: uint8 image [H,W,3], kept shapes in painting order, and their visible masks [H,W] bool."""
    names = [c["name"] for c in CATEGORIES]
    bg = _background(size, rng)
    shapes = []
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        name = names[int(rng.integers(len(names)))]
        full, polygon = _draw_shape(name, size, rng)
        if full.sum() < MIN_VISIBLE_PIXELS:
            continue
        local_bg = bg[full].mean(0)
        shapes.append(Shape(name, full, _contrasting_color(local_bg, rng), polygon))
    shapes, visible = _keep_visible(shapes)
    image = bg
    for shape in shapes:
        shade = rng.uniform(0.85, 1.15)
        image[shape.full] = np.clip(shape.color * shade, 0, 255)
    image = image + rng.normal(0, rng.uniform(0, 6), image.shape)  # sensor-like noise
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), shapes, visible


def render_mosaic(size: tuple[int, int], grid: tuple[int, int], rng: np.random.Generator, min_objects: int = 1,
                  max_objects: int = 6) -> tuple[np.ndarray, list[Cell]]:
    """An image of `size` made of grid = (rows, cols) independent scenes (`render_scene`), cells as equal as whole
    pixels allow: uint8 image [H,W,3] and, per cell, ((top, left), shapes, visible masks in cell coordinates)."""
    rows = np.linspace(0, size[0], grid[0] + 1).round().astype(int)
    cols = np.linspace(0, size[1], grid[1] + 1).round().astype(int)
    image, cells = np.zeros((*size, 3), dtype=np.uint8), []
    for top, bottom in zip(rows[:-1], rows[1:]):
        for left, right in zip(cols[:-1], cols[1:]):
            pixels, shapes, visible = render_scene((bottom - top, right - left), rng, min_objects, max_objects)
            image[top:bottom, left:right] = pixels
            cells.append(((int(top), int(left)), shapes, visible))
    return image, cells


def _annotation(shape: Shape, visible: np.ndarray, ann_id: int, image_id: int) -> dict:
    """COCO annotation dict of one instance; polygon if fully visible polygon shape, else compressed RLE."""
    ys, xs = np.nonzero(visible)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    fully_visible = bool((visible == shape.full).all())
    if shape.polygon is not None and shape.name in POLYGON_SHAPES and fully_visible:
        segmentation = [shape.polygon]
    else:
        rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
        segmentation = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    category_id = next(c["id"] for c in CATEGORIES if c["name"] == shape.name)
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "segmentation": segmentation,
            "area": int(visible.sum()), "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0}


def _shift(annotation: dict, top: int, left: int, size: tuple[int, int]) -> dict:
    """`annotation` of a scene whose top-left corner sits at (top, left) of an image of `size` (height, width),
    in that image's coordinates."""
    x, y, w, h = annotation["bbox"]
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):  # polygons: flat x, y
        segmentation = [[round(v + (left if i % 2 == 0 else top), 2) for i, v in enumerate(polygon)]
                        for polygon in segmentation]
    else:
        cell = mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")})
        full = np.zeros(size, dtype=np.uint8, order="F")
        full[top:top + cell.shape[0], left:left + cell.shape[1]] = cell
        rle = mask_utils.encode(full)
        segmentation = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return {**annotation, "segmentation": segmentation, "bbox": [x + left, y + top, w, h]}


def _image_size(image_size: int | tuple[int, int], size_range: tuple[int, int] | None,
                rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) of one image: fixed, or each side uniform in `size_range` (inclusive)."""
    if size_range is not None:
        lo, hi = size_range
        return int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    if isinstance(image_size, int):
        return image_size, image_size
    return int(image_size[0]), int(image_size[1])


def generate_synthetic_coco(out_dir: str | Path, num_images: int, seed: int = 0,
                            image_size: int | tuple[int, int] = (256, 256), min_objects: int = 1,
                            max_objects: int = 6, split_name: str = "train",
                            size_range: tuple[int, int] | None = None, grid: tuple[int, int] = (1, 1)) -> Path:
    """Write `out_dir/{split_name}/NNNNNN.png` and `out_dir/{split_name}.json`; return the json path.

    image_size: int or (height, width) in pixels; size_range=(min, max) instead draws each side per image.
    grid: (rows, cols) independent scenes per image (`render_mosaic`), e.g. a COCO test-size image whose objects
    have the sizes a model trained on small scenes saw. The split name is mixed into the seed, so splits of one
    seed never share images.
    """
    out_dir = Path(out_dir)
    image_dir = out_dir / split_name
    image_dir.mkdir(parents=True, exist_ok=True)
    split_key = zlib.crc32(split_name.encode())
    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, split_key, index])
        size = _image_size(image_size, size_range, rng)
        image_id, file_name = index + 1, f"{index:06d}.png"
        pixels, cells = render_mosaic(size, grid, rng, min_objects, max_objects)
        Image.fromarray(pixels).save(image_dir / file_name, compress_level=1)
        images.append({"id": image_id, "file_name": file_name, "height": size[0], "width": size[1]})
        for (top, left), shapes, visible in cells:
            for shape, vis in zip(shapes, visible):
                annotation = _annotation(shape, vis, len(annotations) + 1, image_id)
                annotations.append(annotation if tuple(grid) == (1, 1) else _shift(annotation, top, left, size))
    coco = {"info": {"description": f"synthetic shapes, split {split_name}, seed {seed}"},
            "images": images, "annotations": annotations, "categories": CATEGORIES}
    json_path = out_dir / f"{split_name}.json"
    return write_text(json_path, json.dumps(coco, separators=(",", ":")))


def make_synthetic_dataset(out_dir: str | Path, num_train: int = 200, num_val: int = 50, seed: int = 0,
                           image_size: int | tuple[int, int] = (256, 256), **kwargs) -> dict[str, Path]:
    """Train and val splits under `out_dir`; returns {"train": json path, "val": json path}.

    Extra keyword arguments go to `generate_synthetic_coco` (min_objects, max_objects, size_range).
    """
    return {split: generate_synthetic_coco(out_dir, n, seed=seed, image_size=image_size, split_name=split, **kwargs)
            for split, n in (("train", num_train), ("val", num_val))}
