"""Data, inference, evaluation and the command line; `load(path)` is the one entry point to run a model.

    from maskrcnn_deploy.runtime import load
    detections = load("model.onnx").predict(["image.png"])   # or a .pt checkpoint
"""


def load(path, device: str = "cpu", threads: int | None = None, fit=None):
    """A predictor for a checkpoint (.pt/.pth) or an ONNX deploy graph (.onnx); see runtime/predictor.py
    (fit: resize a checkpoint's inputs as an artifact does, e.g. `load("m.pt", fit=load("m.onnx").fit)`)."""
    from .predictor import load as load_predictor

    return load_predictor(path, device, threads, fit)


__all__ = ["load"]
