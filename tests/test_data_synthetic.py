"""Synthetic COCO scenes: reproducible, all classes, real occlusion, polygon + RLE both decoding right."""

from __future__ import annotations

import collections
import json
import zlib

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from maskrcnn_deploy.model.data.synthetic import (
    CATEGORIES,
    generate_synthetic_coco,
    make_synthetic_dataset,
    render_scene,
)

# pycocotools calls numpy.asarray(copy=False) style APIs that numpy 2 warns about.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    path = generate_synthetic_coco(out, 60, seed=3, image_size=(96, 128))
    return out, path, json.loads(path.read_text())


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_same_seed_identical_bytes_different_seed_differs(tmp_path):
    a = generate_synthetic_coco(tmp_path / "a", 5, seed=7, image_size=64)
    b = generate_synthetic_coco(tmp_path / "b", 5, seed=7, image_size=64)
    c = generate_synthetic_coco(tmp_path / "c", 5, seed=8, image_size=64)
    fa, fb, fc = _files(a.parent), _files(b.parent), _files(c.parent)
    assert len(fa) == 6 and fa == fb
    assert fa.keys() == fc.keys()
    assert fa["train.json"] != fc["train.json"]
    assert sum(fa[k] != fc[k] for k in fa) == 6


def test_make_dataset_splits_are_distinct(tmp_path):
    paths = make_synthetic_dataset(tmp_path, num_train=4, num_val=3, seed=0, image_size=(48, 64))
    assert set(paths) == {"train", "val"}
    train, val = (json.loads(paths[s].read_text()) for s in ("train", "val"))
    assert len(train["images"]) == 4 and len(val["images"]) == 3
    assert (tmp_path / "val" / "000002.png").is_file()
    assert (tmp_path / "train" / "000000.png").read_bytes() != (tmp_path / "val" / "000000.png").read_bytes()
    assert train["images"][0] == {"id": 1, "file_name": "000000.png", "height": 48, "width": 64}


def test_json_structure_and_all_classes(split):
    _, _, data = split
    assert [c["id"] for c in data["categories"]] == list(range(1, 7))
    assert {c["name"] for c in data["categories"]} == {c["name"] for c in CATEGORIES}
    counts = collections.Counter(a["category_id"] for a in data["annotations"])
    assert set(counts) == set(range(1, 7)) and min(counts.values()) >= 5
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    per_image = collections.Counter(a["image_id"] for a in data["annotations"])
    assert len(per_image) == 60 and max(per_image.values()) <= 6
    assert all(a["iscrowd"] == 0 and a["area"] >= 20 for a in data["annotations"])


def test_masks_decode_inside_boxes_with_right_area(split):
    _, path, data = split
    coco = COCO(str(path))
    kinds = collections.Counter()
    for ann in data["annotations"]:
        m = coco.annToMask(ann)
        assert m.shape == (96, 128)
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(m)
        kinds["polygon" if isinstance(ann["segmentation"], list) else "rle"] += 1
        if isinstance(ann["segmentation"], dict):
            assert isinstance(ann["segmentation"]["counts"], str)
        assert int(m.sum()) == ann["area"]
        assert [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()] == ann["bbox"]
        assert xs.min() >= x and ys.min() >= y and xs.max() < x + w and ys.max() < y + h
    assert kinds["polygon"] >= 20 and kinds["rle"] >= 20


def test_occlusion_visible_masks_partition_the_foreground():
    occluded = 0
    for i in range(30):
        rng = np.random.default_rng([11, i])
        image, shapes, visible = render_scene((80, 80), rng, min_objects=4, max_objects=6)
        assert image.shape == (80, 80, 3) and image.dtype == np.uint8
        total = np.zeros((80, 80), int)
        for shape, vis in zip(shapes, visible):
            assert not (vis & ~shape.full).any()
            assert vis.sum() >= max(20, 0.25 * shape.full.sum())
            occluded += int(vis.sum() < shape.full.sum())
            total += vis
        assert total.max() <= 1  # visible masks never overlap
        if shapes:
            assert (total.astype(bool) == np.any([s.full for s in shapes], axis=0)).all()
    assert occluded >= 10


def test_occluded_polygon_shapes_are_written_as_rle(split):
    _, _, data = split
    poly_ids = {c["id"] for c in CATEGORIES if c["name"] in ("rectangle", "triangle", "star")}
    rle_polys = [a for a in data["annotations"] if a["category_id"] in poly_ids and isinstance(a["segmentation"], dict)]
    assert rle_polys, "occluded polygon shapes should be stored as RLE"
    m = mask_utils.decode(rle_polys[0]["segmentation"])
    assert int(m.sum()) == rle_polys[0]["area"]


def test_size_range_and_speed(tmp_path):
    import time

    t0 = time.monotonic()
    path = generate_synthetic_coco(tmp_path, 40, seed=1, size_range=(64, 160), split_name="val")
    elapsed = time.monotonic() - t0
    sizes = {(im["height"], im["width"]) for im in json.loads(path.read_text())["images"]}
    assert len(sizes) > 10 and all(64 <= s <= 160 for hw in sizes for s in hw)
    assert elapsed < 10


def test_a_grid_of_scenes_keeps_each_scenes_annotations_in_its_cell(tmp_path):
    """grid=(2, 3): six independent scenes per image (objects sized to their cell, as in a small scene), annotated
    in the whole image's coordinates: each cell holds what `render_scene` draws at the cell's size, and its
    annotations (polygons and RLE) decode to that scene's visible masks, moved to the cell."""
    path = generate_synthetic_coco(tmp_path, 2, seed=5, image_size=(100, 150), grid=(2, 3), max_objects=2)
    data = json.loads(path.read_text())
    coco = COCO(str(path))
    kinds = collections.Counter(isinstance(a["segmentation"], list) for a in data["annotations"])
    assert kinds[True] and kinds[False]
    for index in range(2):
        pixels = np.asarray(Image.open(tmp_path / "train" / f"{index:06d}.png"))
        masks = [coco.annToMask(a) for a in data["annotations"] if a["image_id"] == index + 1]
        assert all(m.shape == (100, 150) for m in masks)
        rng = np.random.default_rng([5, zlib.crc32(b"train"), index])  # generate_synthetic_coco's stream
        expected = []
        for top in (0, 50):
            for left in (0, 50, 100):
                scene, _, visible = render_scene((50, 50), rng, 1, 2)
                np.testing.assert_array_equal(pixels[top:top + 50, left:left + 50], scene)
                for vis in visible:
                    full = np.zeros((100, 150), np.uint8)
                    full[top:top + 50, left:left + 50] = vis
                    expected.append(full)
        assert len(masks) == len(expected) >= 6
        for got, want in zip(masks, expected):
            np.testing.assert_array_equal(got, want)
    # grid (1, 1) is the plain scene, byte for byte
    a = generate_synthetic_coco(tmp_path / "a", 2, seed=7, image_size=64)
    b = generate_synthetic_coco(tmp_path / "b", 2, seed=7, image_size=64, grid=(1, 1))
    assert _files(a.parent) == _files(b.parent)
