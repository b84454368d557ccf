"""COCO-format instance-segmentation data through pycocotools: images, targets, plain image folders.

A target dict (one image, torch tensors, N non-crowd instances):
    boxes  [N,4] float32 xyxy pixels   labels [N] int64 contiguous 1..K   masks [N,H,W] uint8 0/1
    image_id int64 scalar              area   [N] float32 (COCO area)      iscrowd [N] int64 (zeros)
Labels are contiguous indices into `class_names` (0 = background); `category_ids[label]` is the COCO id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from maskrcnn_deploy.model.data.images import (
    IMAGE_SUFFIXES,
    AnnotationError,
    ImageLoadError,
    default_image_dir,
    images_and_annotations,
    list_images,
    load_coco,
    load_rgb,
    report_unreadable,
    to_float_chw,
    unreadable_images,
    unreadable_summary,
)

# The image files' side (decoding, folders, COCO jsons' image lists, unreadable reports) lives in
# model/data/images.py without torch; its names stay importable from here for the training side.
__all__ = ["IMAGE_SUFFIXES", "AnnotationError", "ImageLoadError", "images_and_annotations", "list_images", "load_coco",
           "report_unreadable", "unreadable_images", "unreadable_summary", "load_image", "CocoDetectionDataset",
           "collate"]


def load_image(path: str | Path) -> torch.Tensor:
    """RGB float32 tensor [3,H,W] in 0-1 of an image file (C-contiguous); ImageLoadError (one line: file and
    reason) if unreadable. The decoding rules (EXIF orientation, 16-bit, palette, alpha, size limits) are
    model/data/images.py `load_rgb`'s; the values are `to_float_chw`'s."""
    return torch.from_numpy(to_float_chw(load_rgb(path)))


class CocoDetectionDataset(torch.utils.data.Dataset):
    """COCO images and instance targets; `dataset[i] -> (image [3,H,W] float 0-1, target dict)`.

    Attributes: `coco` (pycocotools COCO), `image_ids` (sorted COCO image ids), `category_ids`
    (contiguous label -> COCO category id; index 0 = 0 for background), `class_names` (index 0 =
    "__background__"), `num_classes` (K + 1, background included).
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path | None = None, min_box_size: float = 1.0):
        self.ann_file = Path(ann_file)
        self.coco = load_coco(self.ann_file)
        self.image_dir = Path(image_dir) if image_dir is not None else default_image_dir(self.ann_file)
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
