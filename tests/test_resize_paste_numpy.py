"""The numpy resize and mask pasting against the PyTorch path (torch's interpolate, torchvision's paste), and
the predictors' pre- and postprocessing built on them (export/preprocess.py, runtime/predictor.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision.models.detection.roi_heads import paste_masks_in_image as torchvision_paste

from maskrcnn_deploy.export.preprocess import preprocess_images, torch_float32_source
from maskrcnn_deploy.model.config import resnet18_fpn
from maskrcnn_deploy.model.data.coco import load_image
from maskrcnn_deploy.model.data.images import load_rgb, to_float_chw
from maskrcnn_deploy.model.fit import Fit
from maskrcnn_deploy.model.resize_paste_numpy import (
    bilinear_weights,
    masks_array,
    paste_masks,
    resize_bilinear,
    rle_encode,
)
from maskrcnn_deploy.model.transform import paste_masks_in_image, resize_boxes, resize_image_and_target
from maskrcnn_deploy.runtime import predictor as predictor_module
from maskrcnn_deploy.runtime.predictor import PredictorError, as_image_array, detections_from_raw

# (height, width): portrait, landscape, panorama 3:1, tiny, odd sizes, one row
SIZES = [(427, 640), (640, 427), (300, 900), (48, 64), (37, 91), (1, 50), (801, 1333)]


@pytest.mark.parametrize("size", SIZES)
def test_resize_equals_the_pytorch_path(size):
    rng = np.random.default_rng(size[0] * 7 + size[1])
    image = rng.random((3, *size), dtype=np.float32)
    for fit in (Fit(800, 1333), Fit(800, 1333, (512, 672)), Fit(32, 64)):
        scale = fit.scale(*size)
        expected = resize_image_and_target(torch.from_numpy(image), fit.min_size, fit.max_size,
                                           canvas=fit.canvas)[0].numpy()
        got = [resize_bilinear(image, scale, float32_source) for float32_source in (False, True)]
        assert got[0].shape == expected.shape == (3, *fit.resized_size(*size))
        # torch 2.14 rounds each source position once, torch 2.15 computes it in float32: one of the two
        assert min(np.abs(g - expected).max() for g in got) <= 1e-5, (size, fit)


def test_the_two_source_roundings_differ_where_torch_versions_do():
    """The float32-arithmetic variant really is a different rounding (one ulp of the source position), so the
    test above, which accepts either, still pins the weights to what some torch computes."""
    exact, f32 = bilinear_weights(640, 1199), bilinear_weights(640, 1199, float32_source=True)
    assert np.abs(exact - f32).max() == pytest.approx(3.0517578e-05)
    assert exact[959, 511] == pytest.approx(0.33987427) and f32[959, 511] == pytest.approx(0.3399048)


def test_resize_matches_interpolate_up_and_down():
    rng = np.random.default_rng(1)
    image = rng.standard_normal((2, 13, 29)).astype(np.float32) * 100
    for scale in (0.31, 0.5, 1.0, 1.7, 3.25):
        expected = F.interpolate(torch.from_numpy(image)[None], scale_factor=scale, mode="bilinear",
                                 recompute_scale_factor=True, align_corners=False)[0].numpy()
        worst = min(np.abs(resize_bilinear(image, scale, f32) - expected).max() for f32 in (False, True))
        assert worst <= 1e-4, scale  # values ~ 100


def _boxes(rng, n, h, w):
    """[n,4] boxes of every kind: inside, touching each border, crossing it, tiny, whole-image, degenerate.
    Each overlaps the image, as a detection does (torchvision's paste fails on a box wholly outside)."""
    x1 = rng.uniform(-0.2 * w, w - 1, n)
    y1 = rng.uniform(-0.2 * h, h - 1, n)
    bw = rng.uniform(np.maximum(0.5, 1 - x1), 0.8 * w, n)
    bh = rng.uniform(np.maximum(0.5, 1 - y1), 0.8 * h, n)
    boxes = np.stack([x1, y1, x1 + bw, y1 + bh], axis=1)
    fixed = [[0, 0, w, h], [0, 0, w - 1, h - 1], [w - 10, h - 10, w, h], [-5, -5, 3, 3], [w - 3, 2, w + 40, 30],
             [10, 10, 10.4, 10.3], [5, 5, 5, 5], [0.25, 0.75, 17.5, 33.25]]
    return np.concatenate([boxes, fixed]).astype(np.float32)


@pytest.mark.parametrize("size", [(427, 640), (640, 427), (300, 900), (48, 64)])
def test_pasted_masks_equal_torchvision(size):
    h, w = size
    rng = np.random.default_rng(h + w)
    boxes = _boxes(rng, 60, h, w)
    # blobs with a smooth edge, as a trained mask head gives, and some speckle
    yy, xx = np.mgrid[0:28, 0:28] / 27.0
    centres = rng.uniform(0.3, 0.7, (len(boxes), 2))
    blob = 1 / (1 + np.exp(-12 * (0.3 - np.hypot(yy - centres[:, :1, None], xx - centres[:, 1:, None]))))
    masks = np.where(rng.random(len(boxes))[:, None, None] < 0.2, rng.random((len(boxes), 28, 28)), blob)
    masks = masks.astype(np.float32)
    expected = torchvision_paste(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes), (h, w))[:, 0].numpy()
    probs = paste_masks(masks, boxes, (h, w))
    assert probs.shape == expected.shape == (len(boxes), h, w)
    assert np.abs(probs - expected).max() <= 1e-5
    binary = paste_masks(masks, boxes, (h, w), threshold=0.5)
    same = np.mean(binary == (expected >= 0.5))
    assert same >= 0.9999, same
    assert binary.any(axis=(1, 2)).mean() >= 0.5 and binary.sum() >= 1000  # not an empty comparison


def test_paste_of_nothing():
    assert paste_masks(np.zeros((0, 28, 28), np.float32), np.zeros((0, 4), np.float32), (5, 7)).shape == (0, 5, 7)
    assert rle_encode(masks_array(0, (5, 7))) == []


def test_rle_of_either_layout_is_pycocotools_per_mask():
    masks = np.random.default_rng(2).random((4, 6, 9)) > 0.5                                # C order
    column_major = masks_array(4, (6, 9))
    column_major[:] = masks
    assert column_major[0].flags.f_contiguous and not masks[0].flags.f_contiguous
    expected = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    assert rle_encode(masks) == rle_encode(column_major) == expected


# ---------------------------------------------------------------- the predictors' pre- and postprocessing

def _torch_preprocess(images, config, input_size, fit):
    """The PyTorch path the numpy preprocess replaced: model/transform.py's resize, mean padding."""
    resized = [resize_image_and_target(torch.from_numpy(im), fit.min_size, fit.max_size, canvas=fit.canvas)[0]
               for im in images]
    batch = torch.tensor(config.image_mean).reshape(3, 1, 1).expand(3, *input_size).repeat(len(images), 1, 1, 1)
    for img, slot in zip(resized, batch):
        slot[:, :img.shape[-2], :img.shape[-1]] = img
    return batch.numpy(), np.array([r.shape[-2:] for r in resized], np.float32)


@pytest.mark.parametrize("canvas", [None, (512, 672)])
def test_preprocess_images_equals_the_pytorch_path(canvas):
    config = resnet18_fpn(3)
    rng = np.random.default_rng(3)
    images = [rng.random((3, h, w), dtype=np.float32) for h, w in [(427, 640), (640, 427), (300, 900), (37, 91)]]
    fit = Fit.of(config, canvas)
    batch, sizes = preprocess_images(images, config, canvas, fit)
    assert batch.dtype == sizes.dtype == np.float32 and batch.flags.c_contiguous
    assert sizes.tolist() == [list(fit.resized_size(*im.shape[1:])) for im in images]
    expected, expected_sizes = _torch_preprocess(images, config, batch.shape[-2:], fit)
    np.testing.assert_array_equal(sizes, expected_sizes)
    assert np.abs(batch - expected).max() <= 1e-5
    # the rounding picked for the installed torch reproduces its resize to float32 rounding, not only 1e-5
    assert torch_float32_source() == (tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 15))
    assert np.abs(batch - expected).max() <= 1e-6


def test_images_of_every_kind_become_the_same_array(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    expected = load_image(tmp_path / "a.png").numpy()  # the training side's torch tensor
    assert load_rgb(tmp_path / "a.png").dtype == np.uint8 and to_float_chw(rgb).flags.c_contiguous
    for image in (tmp_path / "a.png", str(tmp_path / "a.png"), rgb, rgb / np.float32(255), torch.from_numpy(expected)):
        got = as_image_array(image)
        assert got.dtype == np.float32 and got.shape == (3, 5, 7)
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(PredictorError, match="HxWx3"):
        as_image_array(rgb.transpose(2, 0, 1))


def _raw_batch(rng, resized_sizes, n):
    """Raw outputs of a batch: n detections per image in resized pixels (inside, on and across the borders),
    28x28 blob masks with smooth edges, some speckle; 3 of n rows past num_detections."""
    boxes = np.stack([_boxes(rng, n - 8, h, w) for h, w in resized_sizes])                    # [B,n,4]
    yy, xx = np.mgrid[0:28, 0:28] / 27.0
    centres = rng.uniform(0.3, 0.7, (len(resized_sizes), n, 2, 1, 1))
    blob = 1 / (1 + np.exp(-12 * (0.3 - np.hypot(yy - centres[:, :, 0], xx - centres[:, :, 1]))))
    masks = np.where(rng.random((len(resized_sizes), n, 1, 1)) < 0.2, rng.random(blob.shape), blob)
    return {"boxes": boxes, "scores": rng.random((len(resized_sizes), n)).astype(np.float32),
            "labels": rng.integers(1, 5, (len(resized_sizes), n)), "masks": masks.astype(np.float32),
            "num_detections": np.full(len(resized_sizes), n - 3)}


def _torch_detections(raw, sizes, originals, threshold, min_score):
    """The PyTorch postprocessing: model/transform.py's resize_boxes and paste_masks_in_image, threshold."""
    out = []
    for i, orig in enumerate(originals):
        n = int(raw["num_detections"][i])
        keep = np.flatnonzero(raw["scores"][i][:n] >= min_score)
        boxes = resize_boxes(torch.from_numpy(raw["boxes"][i][keep]), tuple(int(v) for v in sizes[i]), orig)
        probs = paste_masks_in_image(torch.from_numpy(raw["masks"][i][keep])[:, None], boxes, orig)
        out.append((boxes.numpy(), (probs[:, 0] >= threshold).numpy()))
    return out


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools' decode
@pytest.mark.parametrize("originals", [[(427, 640), (640, 427), (300, 900)], [(48, 64), (1000, 333), (801, 1333)]])
def test_detections_from_raw_equal_the_pytorch_path(originals, monkeypatch):
    """Boxes to <= 1e-4 px and binary masks on >= 99.99 % of pixels, against torchvision's rules in torch, on
    portrait, landscape, panorama, upscaled and tall images (a static canvas for the second set)."""
    rng = np.random.default_rng(len(originals[0]) + originals[0][0])
    fit = Fit(800, 1333) if originals[0][0] != 48 else Fit(800, 1333, (512, 672))
    sizes = np.array([fit.resized_size(*o) for o in originals], np.float32)
    raw = _raw_batch(rng, [tuple(int(v) for v in s) for s in sizes], 40)
    for min_score, threshold in ((None, 0.5), (0.5, 0.3)):
        got = detections_from_raw(raw, sizes, originals, threshold, min_score)
        expected = _torch_detections(raw, sizes, originals, threshold, -1 if min_score is None else min_score)
        for det, (boxes, masks), orig in zip(got, expected, originals):
            assert det["boxes"].dtype == np.float32 and det["masks"].dtype == bool
            assert det["masks"].shape == masks.shape and masks.shape[1:] == orig and len(masks) >= 10
            assert np.abs(det["boxes"] - boxes).max() <= 1e-4
            assert np.mean(det["masks"] == masks) >= 0.9999 and masks.sum() >= 1000  # not an empty comparison
            assert (masks[:, 0].any() or masks[:, -1].any()) and (masks[:, :, 0].any() or masks[:, :, -1].any())
            decoded = mask_utils.decode(det["rles"])                                              # [H,W,D]
            np.testing.assert_array_equal(decoded.transpose(2, 0, 1), det["masks"])
    # chunked by PASTE_BUDGET_BYTES: the same masks, pasted a few at a time
    monkeypatch.setattr(predictor_module, "PASTE_BUDGET_BYTES", 3 * 4 * 1000 * 333)
    for det, again in zip(got, detections_from_raw(raw, sizes, originals, 0.3, 0.5)):
        np.testing.assert_array_equal(det["masks"], again["masks"])


def test_runtime_modules_import_without_torch():
    """The predictor side (load, the ONNX Runtime backend, pre- and postprocessing, image files) imports no
    torch: a fresh interpreter that imports them has no `torch` in sys.modules (module imports only; running
    the custom op's session is tests/test_torch_free.py's)."""
    modules = ["maskrcnn_deploy.runtime.load", "maskrcnn_deploy.runtime.backend.onnxrt",
               "maskrcnn_deploy.runtime.predictor", "maskrcnn_deploy.export.preprocess",
               "maskrcnn_deploy.model.data.images", "maskrcnn_deploy.model.resize_paste_numpy"]
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules) + \
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'torchvision')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"
