"""Mask R-CNN: own implementation, torchvision-compatible weights, one RoIAlign swap point."""

from .checkpoint import CheckpointError, load_checkpoint, load_torchvision_state_dict, save_checkpoint
from .checkpoint_sources import SOURCES, map_detectron2_key, safe_unpickle
from .config import (MaskRCNNConfig, detectron2_mask_rcnn, detectron2_style, resnet18_fpn, resnet50_fpn, resnet101_fpn,
                     resnext101_32x8d_fpn, torchvision_v1, torchvision_v2)
from .mask_rcnn import MaskRCNN, binarize_masks
from .roi_align import assign_fpn_levels, multilevel_roi_align, roi_align

__all__ = ["MaskRCNN", "MaskRCNNConfig", "binarize_masks", "torchvision_v1", "torchvision_v2", "resnet18_fpn",
           "resnet50_fpn", "resnet101_fpn", "resnext101_32x8d_fpn", "detectron2_style", "detectron2_mask_rcnn",
           "SOURCES", "map_detectron2_key", "safe_unpickle", "load_checkpoint", "save_checkpoint", "load_torchvision_state_dict",
           "CheckpointError", "roi_align", "multilevel_roi_align", "assign_fpn_levels"]
