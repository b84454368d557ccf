"""`load(path)`: the predictor for a model file, chosen by its suffix."""

from __future__ import annotations

from pathlib import Path

from maskrcnn_deploy.model.fit import Fit
from maskrcnn_deploy.runtime.predictor import Predictor, PredictorError

__all__ = ["load"]


def load(path: str | Path, device: str = "cpu", threads: int | None = None, fit: Fit | None = None,
         source: str | None = None, bn_eps: float | None = None) -> Predictor:
    """A predictor for a checkpoint (.pt/.pth/.pkl: the eager model, resized by `fit` when given, e.g. an
    artifact's), an ONNX deploy graph (.onnx) or a TensorRT engine (.engine/.plan from
    `maskrcnn-deploy build`; runs on the current CUDA device). Graphs use the fit they record.
    source / bn_eps: how to read a checkpoint (model/checkpoint.py `load_checkpoint`: the file kind is
    recognised without them)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth", ".pkl"):  # .pkl: a Detectron2 model-zoo file
        from maskrcnn_deploy.runtime.backend.pytorch import EagerPredictor
        return EagerPredictor(path, device, fit, source=source, bn_eps=bn_eps)
    if suffix == ".onnx":
        from maskrcnn_deploy.runtime.backend.onnxrt import OnnxPredictor
        return OnnxPredictor(path, threads)
    if suffix in (".engine", ".plan"):
        from maskrcnn_deploy.runtime.backend.tensorrt.predictor import TensorRTPredictor
        return TensorRTPredictor(path)
    raise PredictorError(f"cannot tell the backend of {path}: use a .pt/.pth/.pkl checkpoint, an .onnx graph or a "
                         ".engine/.plan TensorRT engine")
