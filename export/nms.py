"""Fixed-size NMS for the deploy graph: a keep-mask instead of a variable-length index list.

`nms_keep(boxes [B,N,4], scores [B,N], iou_threshold, score_threshold) -> keep [B,N] bool` runs
single-class NMS per image (class-aware NMS offsets boxes per class first, see `offset_by_class`).
Its output shape never depends on the data, so torch.export needs no data-dependent guards
(torchvision's batched_nms has them, which is why its Mask R-CNN fails torch.export).

Eager: torchvision.ops.nms on the boxes scoring above the threshold. ONNX: one standard
`NonMaxSuppression` (with its score_threshold input) whose selected indices are scattered into the
mask (`nms_keep_onnx`, used through the exporter's custom_translation_table).
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor

__all__ = ["nms_keep", "offset_by_class", "nms_keep_onnx"]


@torch.library.custom_op("maskrcnn_deploy::nms_keep", mutates_args=())
def nms_keep(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float) -> Tensor:
    """keep[b, i] is True when box i of image b scores > score_threshold and survives NMS."""
    keep = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    for b in range(scores.shape[0]):
        candidates = torch.where(scores[b] > score_threshold)[0]
        kept = torchvision.ops.nms(boxes[b, candidates], scores[b, candidates], iou_threshold)
        keep[b, candidates[kept]] = True
    return keep


@nms_keep.register_fake
def _(boxes, scores, iou_threshold, score_threshold):
    return torch.empty(scores.shape, dtype=torch.bool, device=scores.device)


def offset_by_class(boxes: Tensor, classes: Tensor) -> Tensor:
    """Shift boxes [B,N,4] by class [B,N] * (max coordinate + 1) so boxes of different classes
    never overlap: single-class NMS on the result is class-aware NMS (torchvision's trick)."""
    span = boxes.amax(dim=(1, 2), keepdim=True) + 1  # [B,1,1]
    return boxes + (classes.to(boxes.dtype)[..., None] * span)


def nms_keep_onnx(boxes, scores, iou_threshold: float, score_threshold: float):
    """ONNX translation of nms_keep (onnxscript, standard opset 18 ops only)."""
    from onnxscript import opset18 as op

    num_boxes = op.Shape(boxes, start=1, end=2)                                   # [1] int64
    selected = op.NonMaxSuppression(boxes, op.Unsqueeze(scores, [1]), num_boxes,
                                    op.Constant(value_float=iou_threshold),
                                    op.Constant(value_float=score_threshold))    # [S,3] (image, class, box)
    image_and_box = op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)  # [S,2]
    ones = op.Expand(op.Constant(value_int=1), op.Shape(selected, start=0, end=1))
    zeros = op.Expand(op.Constant(value_int=0), op.Shape(scores))
    return op.Cast(op.ScatterND(zeros, image_and_box, ones), to=9)  # 9 = BOOL
