"""COCO-format instance-segmentation data through pycocotools: images, targets, plain image folders.

A target dict (one image, torch tensors, N non-crowd instances):
    boxes  [N,4] float32 xyxy pixels   labels [N] int64 contiguous 1..K   masks [N,H,W] uint8 0/1
    image_id int64 scalar              area   [N] float32 (COCO area)      iscrowd [N] int64 (zeros)
Labels are contiguous indices into `class_names` (0 = background); `category_ids[label]` is the COCO id.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence, TextIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pycocotools.coco import COCO

from maskrcnn_deploy.common.errors import BadInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class ImageLoadError(BadInputError, ValueError):
    """An image file that cannot be read; the message is one line naming the file."""


class AnnotationError(BadInputError, ValueError):
    """A COCO json that is missing, unreadable or has no images; the message is one line."""


def load_image(path: str | Path) -> torch.Tensor:
    """RGB float32 tensor [3,H,W] in 0-1 of an image file; ImageLoadError (one line: file and reason) if unreadable.

    The EXIF orientation is applied (a phone photo held upright is stored sideways with a "rotate 90
    degrees" tag), so the tensor is the image as viewers show it. Every mode PIL opens becomes RGB:
    grayscale (8- and 16-bit, the latter scaled by 1/65535) is repeated over the channels, palette
    images take their colours, and an alpha channel (RGBA, LA, palette transparency) is dropped, keeping
    the stored colours as torchvision's `read_image(..., ImageReadMode.RGB)` does. Any size PIL's decompression-bomb guard admits is read: 24 MP photos
    (6000x4000) load in about 2 s and 300 MB; images over twice `PIL.Image.MAX_IMAGE_PIXELS` (179 MP)
    are refused.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageLoadError(f"cannot read image {path}: file is empty (0 bytes)")
        with Image.open(path) as img:
            img.load()
            if img.width == 0 or img.height == 0:
                raise ImageLoadError(f"cannot read image {path}: image has no pixels ({img.width}x{img.height})")
            array = _rgb_array(ImageOps.exif_transpose(img))
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(f"cannot read image {path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"cannot read image {path}: not an image PIL can decode (corrupt, or not "
                             f"{'/'.join(s[1:].upper() for s in IMAGE_SUFFIXES)} data)") from None
    except Image.DecompressionBombError as err:
        raise ImageLoadError(f"cannot read image {path}: {str(err).splitlines()[0]}") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated data, bad headers, permissions
        detail = getattr(err, "strerror", None) or (str(err).splitlines() or [type(err).__name__])[0]
        raise ImageLoadError(f"cannot read image {path}: {detail}") from None
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def _rgb_array(img: Image.Image) -> np.ndarray:
    """uint8 [H,W,3] of an opened PIL image (see `load_image` for the conversions)."""
    if img.mode.startswith("I;16") or img.mode == "I":  # 16-bit grayscale: PIL's convert("RGB") would clip at 255
        gray = np.asarray(img, dtype=np.float64) * (255.0 / 65535.0)
        gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy, owned by the tensor


def list_images(directory: str | Path) -> list[Path]:
    """Image files (png, jpg, jpeg, bmp; any case) directly inside `directory`, sorted by name.

    Files are listed by name only: empty or corrupt ones are listed too, and reported by name when
    `load_image` reads them. Hidden files (`.name`, e.g. temporaries and macOS `._` forks) are skipped.
    """
    return sorted(p for p in Path(directory).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def unreadable_images(paths: Iterable[str | Path]) -> dict[Path, str]:
    """{path: ImageLoadError message} of the images `load_image` cannot read (each file is decoded)."""
    failures = {}
    for path in paths:
        try:
            load_image(path)
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
    root = _default_image_dir(ann)
    images = [root / coco.imgs[i]["file_name"] for i in ids]
    return images, coco, ids


def _default_image_dir(ann_file: Path) -> Path:
    """`DIR/train.json` -> `DIR/train/` when that folder exists, else `DIR/`."""
    beside = ann_file.with_suffix("")
    return beside if beside.is_dir() else ann_file.parent


class CocoDetectionDataset(torch.utils.data.Dataset):
    """COCO images and instance targets; `dataset[i] -> (image [3,H,W] float 0-1, target dict)`.

    Attributes: `coco` (pycocotools COCO), `image_ids` (sorted COCO image ids), `category_ids`
    (contiguous label -> COCO category id; index 0 = 0 for background), `class_names` (index 0 =
    "__background__"), `num_classes` (K + 1, background included).
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path | None = None, min_box_size: float = 1.0):
        self.ann_file = Path(ann_file)
        self.coco = load_coco(self.ann_file)
        self.image_dir = Path(image_dir) if image_dir is not None else _default_image_dir(self.ann_file)
        self.min_box_size = min_box_size
        self.image_ids = sorted(self.coco.imgs)
        cats = sorted(self.coco.cats)
        self.category_ids = [0] + cats
        self.class_names = ["__background__"] + [str(self.coco.cats[c].get("name", c)) for c in cats]
        self.num_classes = len(self.category_ids)
        self.label_of = {cat: label for label, cat in enumerate(self.category_ids) if label > 0}

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, index: int) -> Path:
        """Path of the `index`-th image file."""
        return self.image_dir / self.coco.imgs[self.image_ids[index]]["file_name"]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image_id = self.image_ids[index]
        image = load_image(self.image_path(index))
        return image, self.target(image_id, image.shape[1], image.shape[2])

    def target(self, image_id: int, height: int, width: int) -> dict[str, torch.Tensor]:
        """Target dict of `image_id` at image size (height, width): crowd and degenerate boxes dropped."""
        info = self.coco.imgs[image_id]
        # annToMask needs the json's size; use the real image's if the json omits it.
        info.setdefault("height", height)
        info.setdefault("width", width)
        boxes, labels, masks, areas = [], [], [], []
        for ann in self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id])):
            if ann.get("iscrowd", 0) or ann.get("category_id") not in self.label_of:
                continue
            x, y, w, h = ann["bbox"]
            x0, y0 = max(0.0, x), max(0.0, y)
            x1, y1 = min(float(width), x + w), min(float(height), y + h)
            if x1 - x0 < self.min_box_size or y1 - y0 < self.min_box_size:
                continue
            mask = self.coco.annToMask(ann)
            if mask.shape != (height, width):
                raise AnnotationError(f"{self.ann_file}: image {image_id} is {width}x{height} but annotation "
                                      f"{ann.get('id')} has a {mask.shape[1]}x{mask.shape[0]} mask")
            boxes.append([x0, y0, x1, y1])
            labels.append(self.label_of[ann["category_id"]])
            masks.append(mask)
            areas.append(float(ann.get("area", mask.sum())))
        n = len(boxes)
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(n, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks)) if n else torch.zeros((0, height, width), dtype=torch.uint8),
            "image_id": torch.tensor(image_id, dtype=torch.int64),
            "area": torch.tensor(areas, dtype=torch.float32),
            "iscrowd": torch.zeros(n, dtype=torch.int64),
        }


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """DataLoader collate_fn: `[(image, target), ...] -> ([images], [targets])` (sizes may differ)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)
