"""Export a trained Mask R-CNN to ONNX: the fixed-shape deploy graph and its custom RoIAlign node."""

from .deploy_model import OUTPUT_NAMES, DeployMaskRCNN

__all__ = ["DeployMaskRCNN", "OUTPUT_NAMES"]
