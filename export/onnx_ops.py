"""How the fused RoIAlign op reaches ONNX: one custom node, or standard ops only.

The deploy graph calls `torch.ops.maskrcnn_deploy.multilevel_roi_align`; the exporter's
custom_translation_table maps it to one of two ONNX forms:

* `multilevel_roi_align_custom`: ONE node `maskrcnn_deploy::MultiLevelRoIAlign` (version 1),
  inputs (rois [R,5], P2, P3, P4, P5), output [R, C, output_height, output_width]. Its name,
  attributes and shapes are the contract the TensorRT plugin implements (docs/ops.md).
* `multilevel_roi_align_standard`: the same computation with standard ops only (opset >= 16
  RoiAlign per level, the FPN level rule, NonZero/Gather/ScatterND to route rois), for runtimes
  without the custom op.

The onnxscript tracer needs an OpSchema for a custom-domain op; `register_schema()` registers one
in this process (it is not needed to load or run the graph elsewhere).
"""

from __future__ import annotations

import math

import onnx
from onnx.defs import OpSchema

__all__ = ["register_schema", "multilevel_roi_align_custom", "multilevel_roi_align_standard"]

from maskrcnn_deploy.plugins.op_spec import ATTRIBUTES, DOMAIN, OP_TYPE, OP_VERSION  # noqa: E402  (the op's identity)


def register_schema() -> None:
    """Register the MultiLevelRoIAlign OpSchema in this process (idempotent)."""
    if onnx.defs.has(OP_TYPE, DOMAIN):
        return
    inputs = [OpSchema.FormalParameter("rois", "tensor(float)", "[R,5] (batch_index, x1, y1, x2, y2), input "
                                       "pixels, float32 whatever T is (docs/ops.md)")]
    inputs += [OpSchema.FormalParameter(f"p{i}", "T", f"P{i} features [B,C,H/{2 ** i},W/{2 ** i}]") for i in range(2, 6)]
    schema = OpSchema(
        OP_TYPE, DOMAIN, OP_VERSION,
        "RoIAlign of each roi on its FPN level (level = clamp(floor(canonical_level + "
        "log2(sqrt(area)/canonical_scale) + level_eps), 2, 5)), fused over P2..P5.",
        inputs=inputs,
        outputs=[OpSchema.FormalParameter("pooled", "T", "[R, C, output_height, output_width]")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "float32 or float16")],
        attributes=[OpSchema.Attribute(name, getattr(OpSchema.AttrType, kind), doc) for name, (kind, doc) in ATTRIBUTES.items()],
    )
    onnx.defs.register_schema(schema)


def multilevel_roi_align_custom(rois, features, output_height: int, output_width: int, spatial_scales: list[float],
                                sampling_ratio: int, aligned: bool, mode: str, canonical_scale: float,
                                canonical_level: int, eps: float):
    """Translation to the one custom node (onnxscript)."""
    import onnxscript

    register_schema()
    custom = onnxscript.values.Opset(DOMAIN, OP_VERSION)
    return getattr(custom, OP_TYPE)(  # custom.MultiLevelRoIAlign(...)
        rois, *features, output_height=output_height, output_width=output_width, sampling_ratio=sampling_ratio,
        aligned=int(aligned), spatial_scales=[float(s) for s in spatial_scales], canonical_scale=float(canonical_scale),
        canonical_level=int(canonical_level), level_eps=float(eps), mode=mode)


def multilevel_roi_align_standard(rois, features, output_height: int, output_width: int, spatial_scales: list[float],
                                  sampling_ratio: int, aligned: bool, mode: str, canonical_scale: float,
                                  canonical_level: int, eps: float):
    """Translation to standard ops: level rule, then per level NonZero -> RoiAlign -> ScatterND."""
    from onnxscript import opset18 as op

    if mode != "avg":  # ONNX RoiAlign's max mode takes the max of weighted taps, not of samples
        raise ValueError("--roi-align standard supports average pooling only (ONNX RoiAlign 'max' differs)")
    first_level = int(round(-math.log2(spatial_scales[0])))
    last_level = first_level + len(features) - 1
    boxes = op.Slice(rois, [1], [5], [1])                                   # [R,4]
    batch_index = op.Cast(op.Squeeze(op.Slice(rois, [0], [1], [1]), [1]), to=onnx.TensorProto.INT64)  # [R]
    x1, y1, x2, y2 = (op.Squeeze(op.Slice(rois, [i], [i + 1], [1]), [1]) for i in range(1, 5))
    size = op.Sqrt(op.Mul(op.Sub(x2, x1), op.Sub(y2, y1)))                 # sqrt(area) [R]
    log2 = op.Div(op.Log(op.Div(size, op.CastLike(canonical_scale, size))), op.CastLike(math.log(2.0), size))
    level = op.Floor(op.Add(op.Add(op.CastLike(float(canonical_level), size), log2), op.CastLike(eps, size)))
    level = op.Clip(level, op.CastLike(float(first_level), size), op.CastLike(float(last_level), size))
    mode_name = "half_pixel" if aligned else "output_half_pixel"
    num_rois = op.Shape(rois, start=0, end=1)
    channels = op.Shape(features[0], start=1, end=2)
    out_shape = op.Concat(num_rois, channels, op.Constant(value_ints=[output_height, output_width]), axis=0)
    result = op.CastLike(op.Expand(op.Constant(value_float=0.0), out_shape), features[0])
    for i, (feat, scale) in enumerate(zip(features, spatial_scales)):
        idx = op.NonZero(op.Equal(level, op.CastLike(float(first_level + i), size)))  # [1, R_l]
        idx_flat = op.Squeeze(idx, [0])                                              # [R_l]
        pooled = op.RoiAlign(feat, op.Gather(boxes, idx_flat, axis=0), op.Gather(batch_index, idx_flat, axis=0),
                             coordinate_transformation_mode=mode_name, mode=mode, output_height=output_height,
                             output_width=output_width, sampling_ratio=sampling_ratio, spatial_scale=float(scale))
        result = op.ScatterND(result, op.Transpose(idx, perm=[1, 0]), pooled)
    return result
