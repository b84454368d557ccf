"""How the fused RoIAlign op reaches ONNX: one custom node, or standard ops only.

The deploy graph calls `torch.ops.maskrcnn_deploy.multilevel_roi_align`; the exporter's
custom_translation_table maps it to one of two ONNX forms:

* `multilevel_roi_align_custom`: ONE node `maskrcnn_deploy::MultiLevelRoIAlign` (version 1),
  inputs (rois [R,5], P2, P3, P4, P5[, extents [B,2]]), output [R, C, output_height, output_width].
  Its name, attributes and shapes are the contract the TensorRT plugin implements (docs/ops.md).
* `multilevel_roi_align_standard`: the same computation with standard ops only (opset >= 16
  RoiAlign per level, the FPN level rule, NonZero/Gather/ScatterND to route rois), for runtimes
  without the custom op. Extents (each image's covered part of the maps) become: maps whose rows and
  columns beyond it repeat its last row and column (so RoiAlign's edge clamp reads what it would on
  the image's own map), and, for the rois whose samples may reach past it, a RoiAlign at
  sampling_ratio x the output size with one sample per bin, the samples past the covered map set to 0,
  then averaged back to the output size (the same samples, as RoIAlign with extents takes them).

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
    inputs += [OpSchema.FormalParameter("extents", "tensor(float)", "[B,2] (height, width) in input pixels of the "
                                        "part of the maps each image covers (optional, docs/ops.md)",
                                        param_option=OpSchema.FormalParameterOption.Optional)]
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
                                canonical_level: int, eps: float, extents=None):
    """Translation to the one custom node (onnxscript)."""
    import onnxscript

    register_schema()
    custom = onnxscript.values.Opset(DOMAIN, OP_VERSION)
    optional = [] if extents is None else [extents]
    return getattr(custom, OP_TYPE)(  # custom.MultiLevelRoIAlign(...)
        rois, *features, *optional, output_height=output_height, output_width=output_width, sampling_ratio=sampling_ratio,
        aligned=int(aligned), spatial_scales=[float(s) for s in spatial_scales], canonical_scale=float(canonical_scale),
        canonical_level=int(canonical_level), level_eps=float(eps), mode=mode)


def multilevel_roi_align_standard(rois, features, output_height: int, output_width: int, spatial_scales: list[float],
                                  sampling_ratio: int, aligned: bool, mode: str, canonical_scale: float,
                                  canonical_level: int, eps: float, extents=None):
    """Translation to standard ops: level rule, then per level NonZero -> RoiAlign -> ScatterND (with extents:
    edge-repeated maps, and the rois that may sample past their image's map through `_pool_covered`)."""
    from onnxscript import opset18 as op

    if mode != "avg":  # ONNX RoiAlign's max mode takes the max of weighted taps, not of samples
        raise ValueError("--roi-align standard supports average pooling only (ONNX RoiAlign 'max' differs)")
    if extents is not None and sampling_ratio == 0 and not aligned:
        raise ValueError("--roi-align standard cannot bound adaptive legacy RoIAlign to each image's extent "
                         "(rois of at least one cell sample past it): export --roi-align custom")
    first_level = int(round(-math.log2(spatial_scales[0])))
    last_level = first_level + len(features) - 1
    boxes = op.Slice(rois, [1], [5], [1])                                   # [R,4]
    batch_index = op.Cast(_column(op, rois, 0), to=onnx.TensorProto.INT64)  # [R]
    x1, y1, x2, y2 = (_column(op, rois, i) for i in range(1, 5))
    size = op.Sqrt(op.Mul(op.Sub(x2, x1), op.Sub(y2, y1)))                 # sqrt(area) [R]
    log2 = op.Div(op.Log(op.Div(size, op.CastLike(canonical_scale, size))), op.CastLike(math.log(2.0), size))
    level = op.Floor(op.Add(op.Add(op.CastLike(float(canonical_level), size), log2), op.CastLike(eps, size)))
    level = op.Clip(level, op.CastLike(float(first_level), size), op.CastLike(float(last_level), size))
    mode_name = "half_pixel" if aligned else "output_half_pixel"
    num_rois = op.Shape(rois, start=0, end=1)
    channels = op.Shape(features[0], start=1, end=2)
    out_shape = op.Concat(num_rois, channels, op.Constant(value_ints=[output_height, output_width]), axis=0)
    result = op.CastLike(op.Expand(op.Constant(value_float=0.0), out_shape), features[0])

    def pool(feat, on, scale, cells=None):  # RoiAlign of the rois where `on` [R] holds, scattered into result
        idx = op.NonZero(on)                                                # [1, R_l]
        idx_flat = op.Squeeze(idx, [0])                                     # [R_l]
        picked, picked_batch = op.Gather(boxes, idx_flat, axis=0), op.Gather(batch_index, idx_flat, axis=0)
        if cells is not None:  # [R,2] covered rows, columns per roi: samples past them read 0 (`_pool_covered`)
            pooled = _pool_covered(op, feat, picked, picked_batch, op.Gather(cells, idx_flat, axis=0), scale,
                                   output_height, output_width, sampling_ratio, aligned)
        else:
            pooled = op.RoiAlign(feat, picked, picked_batch, coordinate_transformation_mode=mode_name, mode=mode,
                                 output_height=output_height, output_width=output_width,
                                 sampling_ratio=sampling_ratio, spatial_scale=float(scale))
        return op.ScatterND(result, op.Transpose(idx, perm=[1, 0]), pooled)

    for i, (feat, scale) in enumerate(zip(features, spatial_scales)):
        on_level = op.Equal(level, op.CastLike(float(first_level + i), size))
        if extents is None:
            result = pool(feat, on_level, scale)
            continue
        image_cells = op.Ceil(op.Mul(extents, op.Constant(value_float=float(scale))))  # [B,2] rows, columns covered
        feat = _repeat_edges(op, feat, image_cells)
        cells = op.Gather(image_cells, batch_index, axis=0)                   # [R,2] of each roi's image
        if sampling_ratio == 0:  # aligned and adaptive: rois inside their image never sample past its map
            result = pool(feat, on_level, scale)
            continue
        past = _may_sample_past(op, boxes, cells, scale, aligned)           # [R] bool
        result = pool(feat, op.And(on_level, op.Not(past)), scale)
        result = pool(feat, op.And(on_level, past), scale, cells)
    return result


def _column(op, x, k: int):
    """Column k of x [R,N] -> [R]. A Gather, not a Slice: onnxscript's optimizer merges Slices of one tensor into a
    Split it can place after their users (a graph onnx.checker refuses as not topologically sorted)."""
    return op.Gather(x, op.Constant(value_int=k), axis=1)


def _repeat_edges(op, feat, cells):
    """feat [B,C,H,W] with every row at or past each image's covered rows cells[:,0] set to its last covered row,
    then the same for columns (cells [B,2] float)."""
    rows, cols = (op.Cast(op.Unsqueeze(_column(op, cells, k), [1]), to=onnx.TensorProto.INT64) for k in (0, 1))  # [B,1]
    one = op.Constant(value_ints=[1])
    gather_rows = op.Concat(op.Shape(feat, start=0, end=2), one, op.Shape(feat, start=3, end=4), axis=0)  # [B,C,1,W]
    last_row = op.GatherElements(feat, op.Expand(op.Reshape(op.Sub(rows, one), [-1, 1, 1, 1]), gather_rows), axis=2)
    row_index = op.Reshape(op.Range(op.Constant(value_int=0), op.Squeeze(op.Shape(feat, start=2, end=3), [0]),
                                    op.Constant(value_int=1)), [1, 1, -1, 1])                          # [1,1,H,1]
    feat = op.Where(op.Less(row_index, op.Reshape(rows, [-1, 1, 1, 1])), feat, last_row)
    gather_cols = op.Concat(op.Shape(feat, start=0, end=3), one, axis=0)                                # [B,C,H,1]
    last_col = op.GatherElements(feat, op.Expand(op.Reshape(op.Sub(cols, one), [-1, 1, 1, 1]), gather_cols), axis=3)
    col_index = op.Reshape(op.Range(op.Constant(value_int=0), op.Squeeze(op.Shape(feat, start=3, end=4), [0]),
                                    op.Constant(value_int=1)), [1, 1, 1, -1])                          # [1,1,1,W]
    return op.Where(op.Less(col_index, op.Reshape(cols, [-1, 1, 1, 1])), feat, last_col)


def _roi_span(op, boxes, axis: int, scale: float, aligned: bool):
    """Start and size [R] of rois [R,4] along axis 0 (x) or 1 (y), in feature cells, as RoIAlign takes them."""
    start, end = _column(op, boxes, axis), _column(op, boxes, axis + 2)
    offset = op.Constant(value_float=0.5 if aligned else 0.0)
    s = op.Constant(value_float=float(scale))
    start, end = op.Sub(op.Mul(start, s), offset), op.Sub(op.Mul(end, s), offset)
    span = op.Sub(end, start)
    return start, (span if aligned else op.Max(span, op.Constant(value_float=1.0)))


def _may_sample_past(op, boxes, cells, scale: float, aligned: bool):
    """[R] bool: the roi reaches past its image's covered map (or before -1), so some samples may read 0."""
    flags = []
    for axis, column in ((0, 1), (1, 0)):                                   # x against columns, y against rows
        start, span = _roi_span(op, boxes, axis, scale, aligned)
        limit = _column(op, cells, column)
        flags += [op.Greater(op.Add(start, span), limit), op.Less(start, op.Constant(value_float=-1.0))]
    past = flags[0]
    for flag in flags[1:]:
        past = op.Or(past, flag)
    return past


def _pool_covered(op, feat, boxes, batch, cells, scale: float, output_height: int, output_width: int,
                  sampling_ratio: int, aligned: bool):
    """RoIAlign of rois [R,4] with samples past their image's covered map [R,2] reading 0: each sample is one bin of
    a sampling_ratio times finer RoiAlign with one sample per bin (at the same place), masked, then averaged."""
    n_h, n_w = output_height * sampling_ratio, output_width * sampling_ratio
    fine = op.RoiAlign(feat, boxes, batch, coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel",
                       mode="avg", output_height=n_h, output_width=n_w, sampling_ratio=1, spatial_scale=float(scale))
    inside = []
    for axis, column, n in ((1, 0, n_h), (0, 1, n_w)):                      # y (rows), then x (columns)
        start, span = _roi_span(op, boxes, axis, scale, aligned)
        step = op.Div(op.Unsqueeze(span, [1]), op.Constant(value_float=float(n)))  # [R,1] one fine bin
        index = op.Constant(value_floats=[float(j) for j in range(n)])      # [n]
        at = op.Add(op.Add(op.Unsqueeze(start, [1]), op.Mul(index, step)), op.Mul(op.Constant(value_float=0.5), step))
        limit = op.Unsqueeze(_column(op, cells, column), [1])               # [R,1]
        ok = op.And(op.Not(op.Less(at, op.Constant(value_float=-1.0))), op.Not(op.Greater(at, limit)))
        inside.append(op.CastLike(ok, feat))                                # [R,n]
    mask = op.Mul(op.Unsqueeze(inside[0], [1, 3]), op.Unsqueeze(inside[1], [1, 2]))  # [R,1,n_h,n_w]
    # average each bin's sampling_ratio x sampling_ratio samples: a reshape and a mean, not an AveragePool, which
    # OpenVINO refuses on an empty batch (a level without such rois)
    bins = op.Concat(op.Shape(fine, start=0, end=2),
                     op.Constant(value_ints=[output_height, sampling_ratio, output_width, sampling_ratio]), axis=0)
    return op.ReduceMean(op.Reshape(op.Mul(fine, mask), bins), op.Constant(value_ints=[3, 5]), keepdims=0)
