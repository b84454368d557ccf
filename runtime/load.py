"""`load(path)`: the predictor for a model file, chosen by its suffix."""

from __future__ import annotations

from pathlib import Path

from maskrcnn_deploy.model.fit import Fit
from maskrcnn_deploy.runtime.predictor import Predictor, PredictorError

__all__ = ["load", "BACKENDS"]

# what runs an .onnx graph: "auto" (ONNX Runtime), "onnxruntime", "openvino" (standard-ops graphs, `[openvino]`)
BACKENDS = ("auto", "onnxruntime", "openvino")


def load(path: str | Path, device: str = "cpu", threads: int | None = None, fit: Fit | None = None,
         source: str | None = None, bn_eps: float | None = None, backend: str = "auto") -> Predictor:
    """A predictor for a checkpoint (.pt/.pth/.pkl: the eager model, resized by `fit` when given, e.g. an
    artifact's), an ONNX deploy graph (.onnx) or a TensorRT engine (.engine/.plan from
    `maskrcnn-deploy build`; runs on the current CUDA device). Graphs use the fit they record.
    source / bn_eps: how to read a checkpoint (model/checkpoint.py `load_checkpoint`: the file kind is
    recognised without them). backend: what runs an .onnx graph (BACKENDS); checkpoints and engines take "auto"."""
    path = Path(path)
    suffix = path.suffix.lower()
    if backend not in BACKENDS:
        raise PredictorError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend != "auto" and suffix != ".onnx":
        raise PredictorError(f"the {backend} backend runs .onnx graphs, not {path.name}")
    if backend == "openvino":
        from maskrcnn_deploy.runtime.backend.openvino import OpenVINOPredictor
        return OpenVINOPredictor(path, threads)
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
