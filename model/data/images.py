"""Image files without torch: decoding to RGB, folders of images, COCO jsons' image lists, unreadable reports.

The runtime (predictors, `predict`, `check`, `bench`) reads images through this module only, so it runs where
PyTorch is not installed; model/data/coco.py builds the training side's torch `load_image` on `load_rgb`.

    load_rgb(path)    -> uint8 [H,W,3]: the pixels as decoded (what viewers show and drawings start from)
    decode_rgb(data)  -> the same from encoded bytes (a served request: runtime/triton/)
    to_float_chw(rgb) -> float32 [3,H,W] in 0-1, C-contiguous: what predictors resize (export/preprocess.py)

The file is kept as uint8 HxWx3 until a model needs floats: a 24 MP photo is 72 MB then, 288 MB as floats.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence, TextIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pycocotools.coco import COCO

from maskrcnn_deploy.common.errors import BadInputError

__all__ = ["IMAGE_SUFFIXES", "ImageLoadError", "AnnotationError", "load_rgb", "decode_rgb", "to_float_chw", "list_images",
           "unreadable_images", "report_unreadable", "unreadable_summary", "load_coco", "images_and_annotations",
           "default_image_dir"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class ImageLoadError(BadInputError, ValueError):
    """An image file that cannot be read; the message is one line naming the file."""


class AnnotationError(BadInputError, ValueError):
    """A COCO json that is missing, unreadable or has no images; the message is one line."""


def load_rgb(path: str | Path) -> np.ndarray:
    """RGB uint8 [H,W,3] of an image file; ImageLoadError (one line: file and reason) if unreadable.

    The EXIF orientation is applied (a phone photo held upright is stored sideways with a "rotate 90
    degrees" tag), so the array is the image as viewers show it. Every mode PIL opens becomes RGB:
    grayscale (8- and 16-bit, the latter scaled by 255/65535 and rounded) is repeated over the channels,
    palette images take their colours, and an alpha channel (RGBA, LA, palette transparency) is dropped,
    keeping the stored colours as torchvision's `read_image(..., ImageReadMode.RGB)` does. Any size PIL's
    decompression-bomb guard admits is read: 24 MP photos (6000x4000) load in about 1 s and 72 MB; images
    over twice `PIL.Image.MAX_IMAGE_PIXELS` (179 MP) are refused.
    """
    path = Path(path)
    return _read_rgb(path, path)


def decode_rgb(data: bytes, name: str = "bytes") -> np.ndarray:
    """RGB uint8 [H,W,3] of an encoded image (PNG, JPEG, BMP bytes), decoded as `load_rgb` decodes a file;
    ImageLoadError naming `name` if the bytes are not an image."""
    return _read_rgb(io.BytesIO(bytes(data)), name)


def _read_rgb(source: Path | io.BytesIO, name: str | Path) -> np.ndarray:
    """`load_rgb` of a path or of bytes in memory; errors name `name`."""
    try:
        if (source.stat().st_size if isinstance(source, Path) else source.getbuffer().nbytes) == 0:
            raise ImageLoadError(f"cannot read image {name}: file is empty (0 bytes)")
        with Image.open(source) as img:
            img.load()
            if img.width == 0 or img.height == 0:
                raise ImageLoadError(f"cannot read image {name}: image has no pixels ({img.width}x{img.height})")
            return _rgb_array(ImageOps.exif_transpose(img))
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(f"cannot read image {name}: no such file") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"cannot read image {name}: not an image PIL can decode (corrupt, or not "
                             f"{'/'.join(s[1:].upper() for s in IMAGE_SUFFIXES)} data)") from None
    except Image.DecompressionBombError as err:
        raise ImageLoadError(f"cannot read image {name}: {str(err).splitlines()[0]}") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated data, bad headers, permissions
        detail = getattr(err, "strerror", None) or (str(err).splitlines() or [type(err).__name__])[0]
        raise ImageLoadError(f"cannot read image {name}: {detail}") from None


def _rgb_array(img: Image.Image) -> np.ndarray:
    """uint8 [H,W,3] of an opened PIL image (see `load_rgb` for the conversions)."""
    if img.mode.startswith("I;16") or img.mode == "I":  # 16-bit grayscale: PIL's convert("RGB") would clip at 255
        gray = np.asarray(img, dtype=np.float64) * (255.0 / 65535.0)
        gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy, not PIL's buffer


def to_float_chw(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H,W,3] -> float32 [3,H,W] in 0-1, C-contiguous: each value / 255 in float32, the same bits as
    torch's `from_numpy(rgb).permute(2, 0, 1).float() / 255`."""
    out = np.empty((3, *rgb.shape[:2]), dtype=np.float32)
    np.divide(rgb.transpose(2, 0, 1), np.float32(255.0), out=out, dtype=np.float32)
    return out


def list_images(directory: str | Path) -> list[Path]:
    """Image files (png, jpg, jpeg, bmp; any case) directly inside `directory`, sorted by name.

    Files are listed by name only: empty or corrupt ones are listed too, and reported by name when
    `load_rgb` reads them. Hidden files (`.name`, e.g. temporaries and macOS `._` forks) are skipped.
    """
    return sorted(p for p in Path(directory).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def unreadable_images(paths: Iterable[str | Path]) -> dict[Path, str]:
    """{path: ImageLoadError message} of the images `load_rgb` cannot read (each file is decoded)."""
    failures = {}
    for path in paths:
        try:
            load_rgb(path)
        except ImageLoadError as err:
            failures[Path(path)] = str(err)
    return failures


def report_unreadable(failures: Mapping[Path, str], total: int, stream: TextIO | None = None) -> str:
    """Print one line per unreadable image (file and reason) and return the summary line,
    "2 of 9 images could not be read: a.png, b.jpg"."""
    stream = stream if stream is not None else sys.stderr
    for message in failures.values():
        print(message, file=stream)
    return unreadable_summary(list(failures), total)


def unreadable_summary(failed: Sequence[str | Path], total: int) -> str:
    """"2 of 9 images could not be read: a.png, b.jpg" (file names, in the order given)."""
    return f"{len(failed)} of {total} images could not be read: {', '.join(Path(p).name for p in failed)}"


def load_coco(ann_file: str | Path) -> COCO:
    """pycocotools COCO index of `ann_file` (quiet); AnnotationError if missing, not json, or without images."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise AnnotationError(f"no COCO annotation file at {ann_file}")
    try:
        data = json.loads(ann_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AnnotationError(f"cannot read COCO annotations {ann_file}: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict) or not data.get("images"):
        raise AnnotationError(f"COCO annotations {ann_file} list no images")
    data.setdefault("annotations", [])
    data.setdefault("categories", [])
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def images_and_annotations(data: str | Path, max_images: int | None = None):
    """(image paths, COCO index or None, image ids or None) from a COCO json or an image folder."""
    path = Path(data)
    if path.is_dir() and not (path / "val.json").exists():
        images = list_images(path)[:max_images]
        if not images:
            raise ImageLoadError(f"no images (png, jpg, jpeg, bmp) in {path}: point --data at a folder of images or a COCO json")
        return images, None, None
    ann = path / "val.json" if path.is_dir() else path
    coco = load_coco(ann)
    ids = sorted(coco.getImgIds())[:max_images]
    root = default_image_dir(ann)
    images = [root / coco.imgs[i]["file_name"] for i in ids]
    return images, coco, ids


def default_image_dir(ann_file: Path) -> Path:
    """`DIR/train.json` -> `DIR/train/` when that folder exists, else `DIR/`."""
    beside = ann_file.with_suffix("")
    return beside if beside.is_dir() else ann_file.parent
