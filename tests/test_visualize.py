"""Detection drawing: masks tint their pixels, size is kept, low scores are skipped, PNG writes atomically."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from maskrcnn_deploy.runtime.visualize import draw_detections, instance_color, save_png, to_uint8_rgb

# pycocotools calls numpy.asarray(copy=False) style APIs that numpy 2 warns about.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _detections(scores=(0.9, 0.3)):
    masks = np.zeros((2, 60, 80), bool)
    masks[0, 20:40, 10:30] = True
    masks[1, 30:50, 50:70] = True
    return {"boxes": np.array([[10, 20, 30, 40], [50, 30, 70, 50]], np.float32), "scores": np.array(scores),
            "labels": np.array([1, 2]), "masks": masks}


def test_draw_tints_masks_and_keeps_size():
    image = torch.full((3, 60, 80), 0.5)
    out = draw_detections(image, _detections(), ["__background__", "cat", "dog"], score_thresh=0.5)
    assert isinstance(out, Image.Image) and out.size == (80, 60) and out.mode == "RGB"
    before, after = to_uint8_rgb(image).astype(int), np.asarray(out).astype(int)
    inner = (slice(25, 35), slice(15, 25))  # mask interior, away from box outline and label
    expected = np.rint(0.5 * 128 + 0.5 * np.array(instance_color(0)))
    assert np.abs(after[inner] - expected).max() <= 1
    assert (after[inner] != before[inner]).any(-1).all()
    assert (after[35:48, 55:68] == before[35:48, 55:68]).all()  # score 0.3 < 0.5: not drawn
    assert (after[0:5, 40:48] == before[0:5, 40:48]).all()  # far from everything: untouched


def test_draw_accepts_pil_numpy_and_prob_masks():
    dets = _detections((0.9, 0.8))
    dets["masks"] = dets["masks"][:, None].astype(np.float32) * 0.7  # [D,1,H,W] probabilities
    base = np.zeros((60, 80, 3), np.uint8)
    a = draw_detections(base, dets, ["bg", "a", "b"])
    b = draw_detections(Image.fromarray(base), dets, ["bg", "a", "b"])
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.asarray(a)[40:48, 55:65].any()  # second instance drawn too
    assert instance_color(0) != instance_color(1) and instance_color(3) == instance_color(3)


def test_save_png_atomic(tmp_path):
    path = save_png(Image.new("RGB", (7, 5), (1, 2, 3)), tmp_path / "sub" / "x.png")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["x.png"]
    with Image.open(path) as img:
        assert img.size == (7, 5) and img.getpixel((3, 3)) == (1, 2, 3)
    save_png(np.zeros((5, 7, 3), np.uint8), path)
    with Image.open(path) as img:
        assert img.getpixel((3, 3)) == (0, 0, 0)
