"""Predictors per backend: pytorch (the eager model and the deploy graph in PyTorch), onnxrt, tensorrt/."""
