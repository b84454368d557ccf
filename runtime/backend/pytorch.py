"""PyTorch backends: the original eager model (the reference of `check`) and the deploy graph in PyTorch.

`EagerPredictor` is the one path that runs "the original model" (`predict`/`eval`/`check` on a checkpoint);
`DeployTorchPredictor` runs the fixed-shape deploy graph (export/deploy_model.py) before any export, for
tests and benchmarks of the deploy rewrite itself.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

from maskrcnn_deploy.model.checkpoint import load_checkpoint
from maskrcnn_deploy.model.fit import Fit
from maskrcnn_deploy.runtime.predictor import Predictor, add_stage_times, as_image_array

__all__ = ["EagerPredictor", "DeployTorchPredictor"]


class EagerPredictor(Predictor):
    """The reference: a checkpoint's original eager `MaskRCNN` (eval mode), one image at a time (as the
    eager model sees an image at batch 1), on the same resized pixels a graph gets. fit: resize as an
    artifact does (`check` passes the artifact's); default: the checkpoint's own test size."""

    backend = "pytorch"

    def __init__(self, checkpoint: str | Path, device: str = "cpu", fit: Fit | None = None,
                 source: str | None = None, bn_eps: float | None = None):
        model, config, extra = load_checkpoint(checkpoint, map_location=device, source=source, bn_eps=bn_eps)
        super().__init__(config, None, None, extra.get("class_names"), extra.get("category_ids"), fit)
        self.model = model.to(device).eval()
        self.device = device

    def predict(self, images, batch_size: int = 1, mask_threshold: float = 0.5,
                timings: dict[str, float] | None = None, min_score: float | None = None) -> list[dict]:
        """As `Predictor.predict`; a Detectron2 model runs its own input and output rules (BGR 0-255, PIL
        resize, its mask pasting: model/detectron2_transform.py) on the original images instead."""
        if self.config.transform_rule != "detectron2":
            return super().predict(images, batch_size, mask_threshold, timings, min_score)
        results = []
        for image in images:
            t0 = time.perf_counter()
            tensor = torch.from_numpy(as_image_array(image)).to(self.device)
            t1 = time.perf_counter()
            with torch.inference_mode():
                (out,) = self.model([tensor], fit=self.fit)  # boxes in original pixels, masks [D,1,H,W] pasted probabilities
            t2 = time.perf_counter()
            results.append(_detection_dict(out, mask_threshold, min_score))
            add_stage_times(timings, t0, t1, t2)
        return results

    @torch.inference_mode()
    def run_raw(self, batch, sizes):
        """batch float32 [B,3,Hp,Wp] of resized images (numpy, preprocess_images), sizes [B,2] -> the deploy
        graph's raw outputs (numpy)."""
        batch = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        n, m = self.config.detections_per_img, self.config.mask_roi_output_size * 2
        B = len(batch)
        raw = {"boxes": np.zeros((B, n, 4), np.float32), "scores": np.zeros((B, n), np.float32),
               "labels": np.zeros((B, n), np.int64), "masks": np.zeros((B, n, m, m), np.float32),
               "num_detections": np.zeros(B, np.int64)}
        for i, (h, w) in enumerate(np.asarray(sizes).astype(np.int64).tolist()):
            as_is = Fit(min(h, w), max(h, w))  # scale 1: the eager model normalises and pads, keeps the pixels
            (out,), _ = self.model([batch[i, :, :h, :w].to(self.device)], fit=as_is, raw=True)
            d = len(out["scores"])
            raw["boxes"][i, :d], raw["scores"][i, :d] = out["boxes"].cpu().numpy(), out["scores"].cpu().numpy()
            raw["labels"][i, :d], raw["masks"][i, :d] = out["labels"].cpu().numpy(), out["masks"][:, 0].cpu().numpy()
            raw["num_detections"][i] = d
        return raw


def _detection_dict(out: dict, mask_threshold: float, min_score: float | None) -> dict:
    """The eager model's output for one image (original pixels) -> a predictor's detection dict (no raw rows)."""
    keep = np.arange(len(out["scores"])) if min_score is None else \
        np.flatnonzero(out["scores"].cpu().numpy() >= min_score)
    masks = (out["masks"][keep, 0] >= mask_threshold).cpu().numpy()
    return {"boxes": out["boxes"][keep].cpu().numpy().astype(np.float32),
            "scores": out["scores"][keep].cpu().numpy().astype(np.float32),
            "labels": out["labels"][keep].cpu().numpy().astype(np.int64), "masks": masks,
            "rles": [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks], "raw": None}


class DeployTorchPredictor(Predictor):
    """The deploy graph (export/deploy_model.py) in PyTorch: what ONNX and TensorRT compute, before any
    export. input_size: a static canvas (H, W) to pad to, like a static graph; None: pad as a dynamic one."""

    backend = "pytorch-deploy"

    def __init__(self, checkpoint: str | Path, device: str = "cpu", input_size: tuple[int, int] | None = None):
        from maskrcnn_deploy.export.deploy_model import DeployMaskRCNN

        model, config, extra = load_checkpoint(checkpoint, map_location=device)
        super().__init__(config, input_size, None, extra.get("class_names"), extra.get("category_ids"))
        self.deploy = DeployMaskRCNN(model.to(device)).eval()
        self.device = device

    @torch.inference_mode()
    def run_raw(self, batch, sizes):
        """batch float32 [B,3,Hp,Wp], sizes float32 [B,2] (numpy, Predictor.run_raw) -> the graph's raw outputs."""
        batch = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        sizes = torch.from_numpy(np.ascontiguousarray(sizes, dtype=np.float32)).to(self.device)
        outputs = self.deploy(batch, sizes)
        from maskrcnn_deploy.export.deploy_model import OUTPUT_NAMES
        return {name: t.cpu().numpy() for name, t in zip(OUTPUT_NAMES, outputs)}
