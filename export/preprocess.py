"""Images into a deploy graph's input: resize by the graph's `Fit`, pad to its canvas, batch. numpy only.

Every backend and calibration feed graphs through `preprocess_images`, so the activations calibration
observes are those the deployed model sees, and the eager reference (runtime/backend/pytorch.py) gets the
same pixels as the graphs:

    resize : by `fit` (short side test_min_size, long side <= max_size, and inside a static graph's
             canvas; bilinear with torch's scale-factor rule: model/resize_paste_numpy.py
             `resize_bilinear`, equal to model/transform.py's torch resize to <= 1e-5; a Detectron2 model's
             fit resizes the uint8 image with PIL: `resize_uint8_chw`)
    pad    : bottom/right with the image mean (`MaskRCNNConfig.input_pad_value`: 0 after the in-graph
             normalisation) to the graph's static size, or to a multiple of size_divisible for dynamic graphs

No torch is imported here: predictors of .onnx graphs and engines run where it is not installed.
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import metadata
from typing import Sequence

import numpy as np

from maskrcnn_deploy.common.errors import BadInputError
from maskrcnn_deploy.model.config import MaskRCNNConfig
from maskrcnn_deploy.model.fit import Fit
from maskrcnn_deploy.model.resize_paste_numpy import resize_bilinear, resize_uint8_chw

__all__ = ["ImageFitError", "check_fits", "preprocess_images", "torch_float32_source"]


class ImageFitError(BadInputError, ValueError):
    """An image that was read but cannot be fitted to the model's input (too thin, or larger than a canvas)."""


@lru_cache(maxsize=1)
def torch_float32_source() -> bool:
    """Which rounding of bilinear source positions `resize_bilinear` uses (its `float32_source`): the one of
    the installed torch, so that the numpy resize equals the eager model's own (torch 2.15 computes the
    positions in float32 arithmetic, True; torch 2.14 rounds a double product once, False). The version
    is read from the package metadata, without importing torch; where torch is not installed, the newer
    rule (True). Either way the two differ by at most 3e-5 of a weight (model/resize_paste_numpy.py)."""
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return True
    major, minor = (int("".join(c for c in part if c.isdigit()) or 0) for part in (version.split(".") + ["0"])[:2])
    return (major, minor) >= (2, 15)


def check_fits(image, fit: Fit) -> tuple[int, int]:
    """Resized (h, w) of a [3,H,W] image; ImageFitError ("does not fit") when a side rounds down to 0 px."""
    h, w = (int(v) for v in image.shape[-2:])
    size = fit.resized_size(h, w)
    if min(size) < 1:
        where = f" and the {fit.canvas[0]}x{fit.canvas[1]} input" if fit.canvas else ""
        raise ImageFitError(f"a {w}x{h} image is too thin for this model: it does not fit, as scaling it to at most "
                             f"{fit.max_size} px on the long side{where} leaves less than 1 px on the short side")
    return size


def preprocess_images(images: Sequence, config: MaskRCNNConfig, input_size: tuple[int, int] | None,
                      fit: Fit | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[3,H,W] 0-1 images (numpy float32, or anything np.asarray reads: a CPU torch tensor) -> batch float32
    [B,3,Hp,Wp] (mean-padded, C-contiguous) and resized sizes float32 [B,2] (h, w).

    fit: the resize rule (default: the config's test size, capped by the static `input_size`)."""
    fit = fit or Fit.of(config, input_size)
    images = [np.asarray(image, dtype=np.float32) for image in images]
    for image in images:
        check_fits(image, fit)
    if fit.resize == "detectron2":
        resized = [resize_uint8_chw(image, fit.resized_size(*image.shape[-2:])) for image in images]
    else:
        float32_source = torch_float32_source()
        resized = [resize_bilinear(image, fit.scale(*image.shape[-2:]), float32_source) for image in images]
    if input_size is None:
        input_size = padded_size(max(r.shape[-2] for r in resized), max(r.shape[-1] for r in resized),
                                 config.size_divisible)
    batch = np.empty((len(resized), 3, *input_size), dtype=np.float32)                   # [B,3,Hp,Wp]
    batch[:] = np.asarray(config.input_pad_value(), dtype=np.float32).reshape(3, 1, 1)
    for img, slot in zip(resized, batch):
        if img.shape[-2] > input_size[0] or img.shape[-1] > input_size[1]:  # only with a fit for another canvas
            raise ImageFitError(f"an image resized to {img.shape[-2]}x{img.shape[-1]} does not fit the graph's static "
                                 f"input {input_size[0]}x{input_size[1]}")
        slot[:, :img.shape[-2], :img.shape[-1]] = img
    sizes = np.array([[r.shape[-2], r.shape[-1]] for r in resized], dtype=np.float32).reshape(-1, 2)  # [B,2]
    return batch, sizes


def padded_size(height: float, width: float, size_divisible: int) -> tuple[int, int]:
    """(h, w) rounded up to multiples of size_divisible: what the eager model pads an image (or a batch) to."""
    return (int(math.ceil(height / size_divisible) * size_divisible),
            int(math.ceil(width / size_divisible) * size_divisible))


