"""COCO dataset loading: targets, labels, crowd/degenerate filtering, image errors, collate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from maskrcnn_deploy.model.data.coco import (
    AnnotationError,
    CocoDetectionDataset,
    ImageLoadError,
    collate,
    list_images,
    load_image,
)
from maskrcnn_deploy.model.data.synthetic import generate_synthetic_coco

# pycocotools calls numpy.asarray(copy=False) style APIs that numpy 2 warns about.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("coco")
    return generate_synthetic_coco(out, 8, seed=5, image_size=(72, 88))


def _tiny_coco(tmp_path, annotations, categories=((3, "b"), (7, "a"))):
    """One 10x12 (HxW) image `img.png` with the given annotations; returns the json path."""
    Image.fromarray(np.full((10, 12, 3), 100, np.uint8)).save(tmp_path / "img.png")
    data = {"images": [{"id": 42, "file_name": "img.png", "height": 10, "width": 12}],
            "annotations": annotations, "categories": [{"id": i, "name": n} for i, n in categories]}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(data))
    return path


def test_synthetic_items_shapes_dtypes_and_labels(synth):
    ds = CocoDetectionDataset(synth)
    assert ds.image_dir == synth.parent / "train"
    assert len(ds) == 8 and ds.num_classes == 7
    assert ds.class_names[0] == "__background__" and ds.class_names[1:3] == ["circle", "rectangle"]
    assert ds.category_ids == [0, 1, 2, 3, 4, 5, 6]
    n_anns = 0
    for i in range(len(ds)):
        image, t = ds[i]
        assert image.dtype == torch.float32 and image.shape == (3, 72, 88)
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        n = len(t["labels"])
        n_anns += n
        assert t["boxes"].shape == (n, 4) and t["boxes"].dtype == torch.float32
        assert t["labels"].dtype == torch.int64 and ((t["labels"] >= 1) & (t["labels"] <= 6)).all()
        assert t["masks"].shape == (n, 72, 88) and t["masks"].dtype == torch.uint8
        assert int(t["image_id"]) == ds.image_ids[i] and t["image_id"].dtype == torch.int64
        assert torch.equal(t["area"], t["masks"].flatten(1).sum(1).float())
        for box, mask in zip(t["boxes"], t["masks"]):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    assert n_anns == len(ds.coco.anns)


def test_label_mapping_crowd_and_degenerate_boxes(tmp_path):
    rle = {"size": [10, 12], "counts": [22, 3, 7, 3, 85]}  # uncompressed RLE (column-major)
    anns = [
        {"id": 1, "image_id": 42, "category_id": 7, "bbox": [2, 2, 4, 3], "area": 12, "iscrowd": 0,
         "segmentation": [[2, 2, 6, 2, 6, 5, 2, 5]]},
        {"id": 2, "image_id": 42, "category_id": 3, "bbox": [2, 2, 2, 3], "area": 6, "iscrowd": 0,
         "segmentation": rle},
        {"id": 3, "image_id": 42, "category_id": 3, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 1,
         "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]},
        {"id": 4, "image_id": 42, "category_id": 7, "bbox": [1, 1, 0.5, 4], "area": 2, "iscrowd": 0,
         "segmentation": [[1, 1, 1.5, 1, 1.5, 5, 1, 5]]},
    ]
    ds = CocoDetectionDataset(_tiny_coco(tmp_path, anns))
    assert ds.image_dir == tmp_path and ds.category_ids == [0, 3, 7] and ds.class_names == ["__background__", "b", "a"]
    image, t = ds[0]
    assert image.shape == (3, 10, 12)
    assert t["labels"].tolist() == [2, 1]  # crowd (id 3) and 0.5 px wide box (id 4) dropped
    assert t["boxes"].tolist() == [[2, 2, 6, 5], [2, 2, 4, 5]]
    assert t["masks"][0].sum() == 12 and t["masks"][0][2:5, 2:6].all()
    assert t["masks"][1].sum() == 6 and t["masks"][1][2:5, 2:4].all()
    assert t["iscrowd"].tolist() == [0, 0] and int(t["image_id"]) == 42


def test_image_without_annotations_gives_empty_target(tmp_path):
    _, t = CocoDetectionDataset(_tiny_coco(tmp_path, []))[0]
    assert t["boxes"].shape == (0, 4) and t["masks"].shape == (0, 10, 12) and t["labels"].shape == (0,)


def test_bad_annotation_files(tmp_path):
    with pytest.raises(AnnotationError, match="no COCO annotation file"):
        CocoDetectionDataset(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AnnotationError, match="bad.json"):
        CocoDetectionDataset(bad)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(AnnotationError, match="no images"):
        CocoDetectionDataset(empty)


def test_load_image_modes(tmp_path):
    gray = tmp_path / "g.png"
    Image.fromarray(np.full((5, 6), 255, np.uint8)).save(gray)
    rgba = tmp_path / "a.png"
    Image.fromarray(np.zeros((5, 6, 4), np.uint8)).save(rgba)
    pal = tmp_path / "p.bmp"
    Image.fromarray(np.full((5, 6, 3), 51, np.uint8)).convert("P").save(pal)
    for path, value in ((gray, 1.0), (rgba, 0.0), (pal, 0.2)):
        img = load_image(path)
        assert img.shape == (3, 5, 6) and img.dtype == torch.float32
        assert torch.allclose(img, torch.full_like(img, value), atol=1e-6)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n garbage", b"not an image at all"])
def test_bad_images_raise_image_load_error_naming_file(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError) as err:
        load_image(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_truncated_and_missing_images(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(good.read_bytes()[:200])
    for path in (truncated, tmp_path / "missing.png"):
        with pytest.raises(ImageLoadError, match=path.name):
            load_image(path)


def test_list_images_and_collate(tmp_path, synth):
    for name in ("b.PNG", "a.jpg", "c.txt", "d.bmp"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "d.bmp"]
    ds = CocoDetectionDataset(synth)
    images, targets = collate([ds[0], ds[1]])
    assert len(images) == len(targets) == 2 and int(targets[1]["image_id"]) == ds.image_ids[1]
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate)
    images, targets = next(iter(loader))
    assert len(images) == 3 and images[0].shape == (3, 72, 88)
