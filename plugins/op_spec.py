"""The fused RoIAlign op's identity, in one place: what the ONNX node is called, its version and attributes.

The exporter writes nodes with these (export/onnx_ops.py), ONNX Runtime registers them
(plugins/onnxruntime_op.py), the TensorRT engine builder looks for them (runtime/backend/tensorrt/build_plan.py)
and the TensorRT plugin implements them (plugins/tensorrt/, whose C++ creator repeats the name and version:
tests/test_tensorrt_plugin.py checks that they agree). Contract: docs/ops.md.
"""

from __future__ import annotations

__all__ = ["DOMAIN", "OP_TYPE", "OP_VERSION", "ATTRIBUTES", "is_custom_roi_align"]

DOMAIN = "maskrcnn_deploy"
OP_TYPE = "MultiLevelRoIAlign"
OP_VERSION = 1

# name -> (ONNX attribute type name, meaning); all plain ints/floats/lists/strings, as TensorRT's ONNX
# parser hands them to plugins as PluginFields.
ATTRIBUTES = {
    "output_height": ("INT", "bins per roi along y (7 box head, 14 mask head)"),
    "output_width": ("INT", "bins per roi along x"),
    "sampling_ratio": ("INT", "bilinear samples per bin per axis; 0 = adaptive ceil(roi/bin)"),
    "aligned": ("INT", "1 = half-pixel offset (Detectron2 ROIAlignV2), 0 = legacy (torchvision)"),
    "spatial_scales": ("FLOATS", "feature cells per input pixel of P2..P5 (1/4, 1/8, 1/16, 1/32)"),
    "canonical_scale": ("FLOAT", "FPN level rule: canonical box size in pixels (224)"),
    "canonical_level": ("INT", "FPN level rule: level of the canonical box (4)"),
    "level_eps": ("FLOAT", "FPN level rule: added before the floor (torchvision 1e-6)"),
    "mode": ("STRING", "'avg' (Mask R-CNN) or 'max' over the bin's samples"),
}


def is_custom_roi_align(node) -> bool:
    """Whether an onnx NodeProto is our custom op."""
    return node.domain == DOMAIN and node.op_type == OP_TYPE
