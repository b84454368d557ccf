"""The numpy resize and mask pasting against the PyTorch path (torch's interpolate, torchvision's paste)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import paste_masks_in_image as torchvision_paste

from maskrcnn_deploy.model.fit import Fit
from maskrcnn_deploy.model.transform import resize_image_and_target
from maskrcnn_deploy.runtime.resize_paste_numpy import bilinear_weights, paste_masks, resize_bilinear

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
