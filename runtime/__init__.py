"""Data, inference, evaluation and the command line; `load(path)` is the one entry point to run a model.

    from maskrcnn_deploy.runtime import load
    detections = load("model.onnx").predict(["image.png"])   # or a .pt checkpoint
"""


def load(path, device: str = "cpu", threads: int | None = None):
    """A predictor for a checkpoint (.pt/.pth) or an ONNX deploy graph (.onnx); see runtime/predictor.py."""
    from .predictor import load as load_predictor

    return load_predictor(path, device, threads)


__all__ = ["load"]
