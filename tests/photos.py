"""A folder of generated "photos" of mixed aspect ratios, for tests that must not assume square inputs.

    paths = write_mixed_photos(tmp_path / "photos")   # portrait, landscape, square, panorama, tiny, gray

Each photo is a seeded scene (gradient background, a few filled shapes, mild noise), so a model sees
edges and blobs everywhere, not a flat field. Sizes are small (at most 450 px) to keep tests fast.
`write_rotated_jpeg` writes a JPEG whose EXIF orientation says "rotate 90 degrees to view it upright".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# name -> (height, width, mode): every aspect ratio a phone or scanner produces, plus a tiny one
MIXED_PHOTOS = {
    "portrait": (300, 200, "RGB"),      # 2:3, taller than wide
    "landscape": (200, 300, "RGB"),     # 3:2
    "square": (256, 256, "RGB"),
    "panorama": (150, 450, "RGB"),      # 3:1
    "tiny": (48, 64, "RGB"),
    "gray": (240, 320, "L"),            # grayscale, 4:3
    "wide_strip": (100, 450, "RGB"),    # 4.5:1: 42 px high in a 128x192 canvas, padded to 64, so torchvision's
}                                       # RoIAlign pools it at 2x scale (export/deploy_model.py torchvision_roi_scale)

EXIF_ORIENTATION = 0x0112  # the EXIF tag; value 6 = "rotate 90 degrees clockwise to display"


def scene(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 [H,W,3]: a colour gradient with 3-6 filled ellipses and rectangles, plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 215, 3)
    tilt = rng.uniform(-60, 60, (3, 2))
    image = base + tilt[:, 0] * (y / height)[..., None] + tilt[:, 1] * (x / width)[..., None]
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    side = min(height, width)
    for _ in range(int(rng.integers(3, 7))):
        w, h = rng.uniform(0.2, 0.6, 2) * side
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=color)
    noisy = np.asarray(pil, np.float32) + rng.normal(0, 6, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def write_mixed_photos(folder: str | Path, seed: int = 0) -> list[Path]:
    """Write MIXED_PHOTOS as PNGs into `folder` (created); returns their paths, sorted by name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (name, (height, width, mode)) in enumerate(sorted(MIXED_PHOTOS.items())):
        image = Image.fromarray(scene(height, width, seed * 100 + i)).convert(mode)
        path = folder / f"{name}_{width}x{height}.png"
        image.save(path)
        paths.append(path)
    return paths


def write_rotated_jpeg(path: str | Path, upright: np.ndarray) -> Path:
    """Store `upright` (uint8 [H,W,3]) as a phone does when held upright: pixels rotated to landscape
    ([W,H,3]) plus EXIF orientation 6, which says "rotate 90 degrees clockwise to display"."""
    path = Path(path)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # counter-clockwise: what the sensor saw
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    stored.save(path, quality=95, exif=exif)
    return path
