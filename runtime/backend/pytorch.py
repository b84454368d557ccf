"""PyTorch backends: the original eager model (the reference of `check`) and the deploy graph in PyTorch.

`EagerPredictor` is the one path that runs "the original model" (`predict`/`eval`/`check` on a checkpoint);
`DeployTorchPredictor` runs the fixed-shape deploy graph (export/deploy_model.py) before any export, for
tests and benchmarks of the deploy rewrite itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from maskrcnn_deploy.model.checkpoint import load_checkpoint
from maskrcnn_deploy.model.fit import Fit
from maskrcnn_deploy.runtime.predictor import Predictor

__all__ = ["EagerPredictor", "DeployTorchPredictor"]


class EagerPredictor(Predictor):
    """The reference: a checkpoint's original eager `MaskRCNN` (eval mode), one image at a time (as the
    eager model sees an image at batch 1), on the same resized pixels a graph gets. fit: resize as an
    artifact does (`check` passes the artifact's); default: the checkpoint's own test size."""

    backend = "pytorch"

    def __init__(self, checkpoint: str | Path, device: str = "cpu", fit: Fit | None = None):
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
        from maskrcnn_deploy.export.deploy_model import DeployMaskRCNN

        model, config, extra = load_checkpoint(checkpoint, map_location=device)
        super().__init__(config, input_size, None, extra.get("class_names"), extra.get("category_ids"))
        self.deploy = DeployMaskRCNN(model.to(device)).eval()
        self.device = device

    @torch.inference_mode()
    def run_raw(self, batch, sizes):
        outputs = self.deploy(batch.to(self.device), sizes.to(self.device))
        from maskrcnn_deploy.export.deploy_model import OUTPUT_NAMES
        return {name: t.cpu().numpy() for name, t in zip(OUTPUT_NAMES, outputs)}
