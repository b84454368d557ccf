"""Run, check and ship exported models: predictors per backend, TensorRT engines, parity checks, reports,
bench, demo and the command line. `load(path)` is the one entry point to run a model:

    from maskrcnn_deploy.runtime import load
    detections = load("model.onnx").predict(["image.png"])   # or a .pt checkpoint, or a TensorRT .engine
"""

from maskrcnn_deploy.runtime.load import load

__all__ = ["load"]
