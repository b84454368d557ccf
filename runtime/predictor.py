"""One predictor interface over PyTorch checkpoints and ONNX graphs: `load(path).predict(images)`.

A checkpoint runs as the original eager `MaskRCNN` (`EagerPredictor`, the reference of `check`);
`DeployTorchPredictor` runs the fixed-shape deploy graph (export/deploy_model.py) in PyTorch; ONNX
and TensorRT run the exported deploy graph. All resize images by one rule (`Fit`, model/transform.py:
a static graph's canvas caps the scale, so any aspect ratio fits) and share the post-processing, so
results differ only by what the backend computes:

    preprocess : resize by the predictor's `fit` (short side test_min_size, long side <= max_size,
                 and inside a static graph's canvas; bilinear), pad bottom/right with the image mean
                 (0 after the in-graph normalisation) to the graph's static size, or to a multiple of
                 size_divisible for dynamic graphs
    raw        : boxes [N,4] resized pixels, scores [N], labels [N], masks [N,28,28], num_detections
    postprocess: boxes to original pixels, masks pasted full size (torchvision's paste), binary masks
                 (probability >= 0.5) and their COCO RLE

A detection dict per image: boxes [D,4] float32, scores [D], labels [D] int64 (1..K-1),
masks [D,H,W] bool, rles (list of COCO RLE dicts), raw (that image's rows of the raw outputs).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils

from maskrcnn_deploy.model.config import MaskRCNNConfig
from maskrcnn_deploy.model.transform import Fit, paste_masks_in_image, resize_boxes, resize_image_and_target

__all__ = ["Predictor", "EagerPredictor", "DeployTorchPredictor", "OnnxPredictor", "load", "preprocess_images",
           "check_fits", "graph_fit", "PredictorError", "METADATA_KEY", "STAGES"]

from maskrcnn_deploy.export.onnx_export import METADATA_KEY  # noqa: E402  (config + class names in the ONNX file)

# the parts of one predict call that `predict(..., timings=)` times (runtime/bench.py reports them)
STAGES = ("preprocess", "inference", "postprocess")


# Full-size float masks are pasted in chunks of at most this many bytes: 100 detections on a 24-MP image
# would need 10 GB at once.
PASTE_BUDGET_BYTES = 256 * 2**20


class PredictorError(ValueError):
    """A model file or an input the predictor cannot use; the message is one line."""


def _as_tensor(image) -> torch.Tensor:
    """Path, uint8 HxWx3 array or float [3,H,W] tensor in 0-1 -> float32 [3,H,W]."""
    if isinstance(image, (str, Path)):
        from maskrcnn_deploy.runtime.coco import load_image
        return load_image(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise PredictorError(f"numpy images must be HxWx3, got shape {image.shape}")
        scale = 255.0 if image.dtype == np.uint8 else 1.0
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / scale
    if image.dim() != 3 or image.shape[0] != 3 or image.shape[1] == 0 or image.shape[2] == 0:
        raise PredictorError(f"images must be [3,H,W] with H,W > 0, got shape {tuple(image.shape)}")
    return image.float()


def check_fits(image: torch.Tensor, fit: Fit) -> tuple[int, int]:
    """Resized (h, w) of a [3,H,W] image; PredictorError ("does not fit") when a side rounds down to 0 px."""
    h, w = (int(v) for v in image.shape[-2:])
    size = fit.resized_size(h, w)
    if min(size) < 1:
        where = f" and the {fit.canvas[0]}x{fit.canvas[1]} input" if fit.canvas else ""
        raise PredictorError(f"a {w}x{h} image is too thin for this model: it does not fit, as scaling it to at most "
                             f"{fit.max_size} px on the long side{where} leaves less than 1 px on the short side")
    return size


def graph_fit(info: dict, config: MaskRCNNConfig, canvas: tuple[int, int] | None) -> Fit:
    """The fit an exported graph records in its metadata (`info`, the METADATA_KEY json); files written
    before it was recorded get the same rule from their config and static input size."""
    return Fit.from_dict(info["fit"]) if info.get("fit") else Fit.of(config, canvas)


def preprocess_images(images: Sequence[torch.Tensor], config: MaskRCNNConfig, input_size: tuple[int, int] | None,
                      fit: Fit | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[3,H,W] 0-1 images -> batch [B,3,Hp,Wp] (mean-padded) and resized sizes [B,2] float (h, w).

    fit: the resize rule (default: the config's test size, capped by the static `input_size`)."""
    fit = fit or Fit.of(config, input_size)
    for image in images:
        check_fits(image, fit)
    resized = [resize_image_and_target(image, fit.min_size, fit.max_size, canvas=fit.canvas)[0] for image in images]
    if input_size is None:
        d = config.size_divisible
        input_size = (int(math.ceil(max(r.shape[-2] for r in resized) / d) * d),
                      int(math.ceil(max(r.shape[-1] for r in resized) / d) * d))
    mean = torch.tensor(config.image_mean).reshape(3, 1, 1)
    batch = mean.expand(3, *input_size).repeat(len(resized), 1, 1, 1).contiguous()
    for img, slot in zip(resized, batch):
        if img.shape[-2] > input_size[0] or img.shape[-1] > input_size[1]:  # only with a fit for another canvas
            raise PredictorError(f"an image resized to {img.shape[-2]}x{img.shape[-1]} does not fit the graph's static "
                                 f"input {input_size[0]}x{input_size[1]}")
        slot[:, :img.shape[-2], :img.shape[-1]].copy_(img)
    sizes = torch.tensor([[r.shape[-2], r.shape[-1]] for r in resized], dtype=torch.float32)
    return batch, sizes


def postprocess(raw: dict[str, np.ndarray], sizes: torch.Tensor, original_sizes: list[tuple[int, int]],
                mask_threshold: float = 0.5, min_score: float | None = None) -> list[dict]:
    """Batch raw outputs -> one detection dict per image (see the module docstring).

    min_score: keep only detections scoring at least this (None: all). Only kept masks are pasted at
    full size, so a caller that draws confident detections of a large photo never pastes the rest.
    """
    results = []
    for i, orig in enumerate(original_sizes):
        n = int(raw["num_detections"][i])
        row = {"boxes": raw["boxes"][i], "scores": raw["scores"][i], "labels": raw["labels"][i].astype(np.int64),
               "masks": raw["masks"][i], "num_detections": n}
        keep = np.arange(n) if min_score is None else np.flatnonzero(row["scores"][:n] >= min_score)
        n = len(keep)
        size = (int(sizes[i, 0]), int(sizes[i, 1]))
        boxes = resize_boxes(torch.from_numpy(row["boxes"][keep].astype(np.float32)), size, orig)
        small = torch.from_numpy(row["masks"][keep].astype(np.float32))[:, None]
        masks = np.zeros((n, *orig), dtype=bool)
        step = max(1, PASTE_BUDGET_BYTES // (4 * orig[0] * orig[1]))  # float masks pasted at a time
        for start in range(0, n, step):
            probs = paste_masks_in_image(small[start:start + step], boxes[start:start + step], orig)
            masks[start:start + step] = (probs[:, 0] >= mask_threshold).numpy()
        rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
        results.append({"boxes": boxes.numpy(), "scores": row["scores"][keep].astype(np.float32),
                        "labels": row["labels"][keep], "masks": masks, "rles": rles, "raw": row})
    return results


class Predictor:
    """Common driver: subclasses provide `run_raw(batch, sizes) -> {output name: numpy [B,...]}`."""

    backend = "base"

    def __init__(self, config: MaskRCNNConfig, input_size: tuple[int, int] | None, batch_size: int | None,
                 class_names: list[str] | None, category_ids: list[int] | None, fit: Fit | None = None):
        self.config, self.input_size, self.fixed_batch = config, input_size, batch_size
        self.class_names, self.category_ids = class_names, category_ids
        self.fit = fit or Fit.of(config, input_size)  # how images are resized (see model/transform.py)

    def prepare(self, chunk: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded images -> (model input, resized sizes [B,2] float): resize, pad, top up a static batch."""
        batch, sizes = preprocess_images(chunk, self.config, self.input_size, self.fit)
        if self.fixed_batch and len(chunk) < self.fixed_batch:  # a static batch: pad with copies
            extra = self.fixed_batch - len(chunk)
            batch = torch.cat([batch, batch[-1:].expand(extra, -1, -1, -1)])
            sizes = torch.cat([sizes, sizes[-1:].expand(extra, -1)])
        return batch, sizes

    def run_raw(self, batch, sizes: torch.Tensor) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def predict(self, images: Sequence, batch_size: int = 1, mask_threshold: float = 0.5,
                timings: dict[str, float] | None = None, min_score: float | None = None) -> list[dict]:
        """Detections for each image (paths, uint8 HxWx3 arrays or float [3,H,W] tensors); with
        `min_score`, only those scoring at least that (their masks alone are pasted, see postprocess).

        timings: when given, the wall seconds of each of STAGES are added to it (missing keys start at 0):
        preprocess (image to tensor, which decodes paths, resize, padding, static-batch padding),
        inference (`run_raw`: the graph, host-device copies included; TensorRT synchronizes its
        stream there) and postprocess (boxes to original pixels, mask pasting, thresholding, RLE).
        """
        step = self.fixed_batch or batch_size
        results = []
        for start in range(0, len(images), step):
            t0 = time.perf_counter()
            chunk = [_as_tensor(im) for im in images[start:start + step]]
            originals = [(int(c.shape[-2]), int(c.shape[-1])) for c in chunk]
            batch, sizes = self.prepare(chunk)
            t1 = time.perf_counter()
            raw = self.run_raw(batch, sizes)
            t2 = time.perf_counter()
            results.extend(postprocess(raw, sizes, originals, mask_threshold, min_score))
            if timings is not None:
                for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, time.perf_counter() - t2)):
                    timings[stage] = timings.get(stage, 0.0) + seconds
        return results


class EagerPredictor(Predictor):
    """The reference: a checkpoint's original eager `MaskRCNN` (eval mode), one image at a time (as the
    eager model sees an image at batch 1), on the same resized pixels a graph gets. fit: resize as an
    artifact does (`check` passes the artifact's); default: the checkpoint's own test size."""

    backend = "pytorch"

    def __init__(self, checkpoint: str | Path, device: str = "cpu", fit: Fit | None = None):
        from maskrcnn_deploy.model import load_checkpoint

        model, config, extra = load_checkpoint(checkpoint, map_location=device)
        super().__init__(config, None, None, extra.get("class_names"), extra.get("category_ids"), fit)
        self.model = model.to(device).eval()
        self.device = device

    @torch.inference_mode()
    def run_raw(self, batch, sizes):
        """batch [B,3,Hp,Wp] of resized images (preprocess_images) -> the deploy graph's raw outputs."""
        n, m = self.config.detections_per_img, self.config.mask_roi_output_size * 2
        B = len(batch)
        raw = {"boxes": np.zeros((B, n, 4), np.float32), "scores": np.zeros((B, n), np.float32),
               "labels": np.zeros((B, n), np.int64), "masks": np.zeros((B, n, m, m), np.float32),
               "num_detections": np.zeros(B, np.int64)}
        for i, (h, w) in enumerate(sizes.to(torch.int64).tolist()):
            as_is = Fit(min(h, w), max(h, w))  # scale 1: the eager model normalises and pads, keeps the pixels
            (out,), _ = self.model([batch[i, :, :h, :w].to(self.device)], fit=as_is, raw=True)
            d = len(out["scores"])
            raw["boxes"][i, :d], raw["scores"][i, :d] = out["boxes"].cpu().numpy(), out["scores"].cpu().numpy()
            raw["labels"][i, :d], raw["masks"][i, :d] = out["labels"].cpu().numpy(), out["masks"][:, 0].cpu().numpy()
            raw["num_detections"][i] = d
        return raw


class DeployTorchPredictor(Predictor):
    """The deploy graph (export/deploy_model.py) in PyTorch: what ONNX and TensorRT compute, before any
    export. input_size: a static canvas (H, W) to pad to, like a static graph; None: pad as a dynamic one."""

    backend = "pytorch-deploy"

    def __init__(self, checkpoint: str | Path, device: str = "cpu", input_size: tuple[int, int] | None = None):
        from maskrcnn_deploy.export import DeployMaskRCNN
        from maskrcnn_deploy.model import load_checkpoint

        model, config, extra = load_checkpoint(checkpoint, map_location=device)
        super().__init__(config, input_size, None, extra.get("class_names"), extra.get("category_ids"))
        self.deploy = DeployMaskRCNN(model.to(device)).eval()
        self.device = device

    @torch.inference_mode()
    def run_raw(self, batch, sizes):
        outputs = self.deploy(batch.to(self.device), sizes.to(self.device))
        from maskrcnn_deploy.export import OUTPUT_NAMES
        return {name: t.cpu().numpy() for name, t in zip(OUTPUT_NAMES, outputs)}


class OnnxPredictor(Predictor):
    """An exported deploy graph in ONNX Runtime (custom RoIAlign node or standard ops)."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None):
        from maskrcnn_deploy.runtime.onnx_backend import load_session

        self.session = load_session(path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if meta is None:
            raise PredictorError(f"{path} has no '{METADATA_KEY}' metadata: export it with `maskrcnn-deploy export`")
        info = json.loads(meta)
        shape = self.session.get_inputs()[0].shape  # [B,3,H,W], ints when static
        static = all(isinstance(d, int) for d in shape)
        config, canvas = MaskRCNNConfig.from_dict(info["config"]), tuple(shape[2:]) if static else None
        super().__init__(config, canvas, shape[0] if isinstance(shape[0], int) else None, info.get("class_names"),
                         info.get("category_ids"), graph_fit(info, config, canvas))

    def run_raw(self, batch, sizes):
        from maskrcnn_deploy.runtime.onnx_backend import run_session
        return run_session(self.session, batch.numpy(), sizes.numpy())


def load(path: str | Path, device: str = "cpu", threads: int | None = None, fit: Fit | None = None) -> Predictor:
    """A predictor for a checkpoint (.pt/.pth: the eager model, resized by `fit` when given, e.g. an
    artifact's), an ONNX deploy graph (.onnx) or a TensorRT engine (.engine/.plan from
    `maskrcnn-deploy build`; runs on the current CUDA device). Graphs use the fit they record."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return EagerPredictor(path, device, fit)
    if suffix == ".onnx":
        return OnnxPredictor(path, threads)
    if suffix in (".engine", ".plan"):
        from maskrcnn_deploy.runtime.tensorrt_backend import TensorRTPredictor
        return TensorRTPredictor(path)
    raise PredictorError(f"cannot tell the backend of {path}: use a .pt/.pth checkpoint, an .onnx graph or a "
                         ".engine/.plan TensorRT engine")
