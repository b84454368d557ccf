"""Explicitly quantized (Q/DQ) graphs, placed the way TensorRT fuses them.

    qdq_model = quantize_qdq(graph.model, amax, nodes=region.nodes(groups))

onnxruntime's QDQQuantizer inserts the pairs; this module fixes the policy:
    - symmetric int8 everywhere: zero point 0, scale = amax / 127 (range [-127, 127])
    - weights of Conv / Gemm / ConvTranspose per channel, on the axis TensorRT accepts for each
      (WEIGHT_AXES); biases stay float (TensorRT folds them; an int32 bias would not survive its fusions)
    - activations per tensor on the inputs of each quantized layer, and on its output, which is the
      next layer's input (Conv -> Q -> DQ -> Relu ... ; ONNX Runtime needs DQ-Conv-Q units to run
      the convolution in int8, TensorRT fuses the same units)
    - residual and FPN adds quantize both inputs, so TensorRT can fuse Conv + Add in int8
    - only nodes of the network region (graph.py) are touched: NMS, box decoding, scores and the
      final logit layers compute in float on float inputs (a Q/DQ pair that only float layers read,
      e.g. the RPN head's Relu feeding the objectness logits, is removed again). RoIAlign computes
      in float too; it reads the FPN maps through the Q/DQ pair they share with the INT8 RPN conv.
"""

from __future__ import annotations

import numpy as np
import onnx

from maskrcnn_deploy.calibration.regions import GLUE_OPS, WEIGHTED_OPS, PrecisionError

__all__ = ["quantize_qdq", "QDQ_OP_TYPES", "WEIGHT_AXES", "activation_scales"]

QDQ_OP_TYPES = (*WEIGHTED_OPS, *GLUE_OPS)

# The per-channel axis of each weighted op's weight DequantizeLinear, as TensorRT accepts it:
#   Conv           [K, C/g, kH, kW]: axis 0, the output channels (NvInfer.h, IQuantizeLayer: "a 4D KCRS
#                  weights input and K (dimension 0) as the quantization axis")
#   ConvTranspose  [C_in, K/g, kH, kW]: axis 0 as well, the INPUT channels. TensorRT's deconvolution kernels
#                  take per-channel scales only there: "We don't support per-output-channel quant for
#                  ConvTranspose" (NVIDIA/TensorRT#2380; #1694: axis 1 gives wrong results), and NVIDIA's
#                  pytorch-quantization uses axis 0 for ConvTranspose. ONNX Runtime's quantizer takes
#                  axis 1 (its output channels) and ignores QDQOpTypePerChannelSupportToAxis for Conv and
#                  ConvTranspose (onnxruntime 1.32, operators/conv.py), hence a per-weight TensorQuantOverrides.
#   Gemm           B [K, N], or [N, K] with transB=1: the output-channel axis N, which ONNX Runtime already
#                  picks (1, or 0 with transB=1), so nothing is overridden.
# conv5_mask on axis 0, per tensor or in float, measured on seeded models: docs/tensorrt.md (INT8 weight axes).
WEIGHT_AXES = {"ConvTranspose": 0}


def quantize_qdq(model: onnx.ModelProto, amax: dict[str, float], nodes: list[str]) -> onnx.ModelProto:
    """A copy of the float graph with Q/DQ pairs around `nodes`, activation scales from `amax`."""
    import onnx.shape_inference
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    from maskrcnn_deploy.export.onnx_ops import register_schema
    register_schema()  # our op's schema, for the checker and shape inference

    if not nodes:
        return onnx.ModelProto.FromString(model.SerializeToString())
    ranges = TensorsData(CalibrationMethod.MinMax, {
        name: TensorData(lowest=np.array(-a, dtype=np.float32), highest=np.array(a, dtype=np.float32))
        for name, a in amax.items()})
    inferred = onnx.shape_inference.infer_shapes(model)
    missing = _unranged_inputs(inferred, set(nodes), amax)
    if missing:
        raise PrecisionError(f"no calibrated range for tensor {missing[0]!r} ({len(missing)} missing): "
                             "calibrate with the same graph")
    quantizer = QDQQuantizer(inferred, True, False, QuantType.QInt8, QuantType.QInt8, ranges, list(nodes), None,
                             list(QDQ_OP_TYPES), {"ActivationSymmetric": True, "WeightSymmetric": True,
                                                  "QuantizeBias": False,
                                                  "TensorQuantOverrides": _weight_axis_overrides(model, nodes)})
    quantizer.quantize_model()
    quantizer.model.topological_sort()  # the inserted Q/DQ nodes are appended at the end
    quantized = quantizer.model.model
    _remove_pairs_read_only_by_float_nodes(quantized.graph, set(nodes))
    quantized.graph.ClearField("value_info")  # stale after the rewrite; checkers re-infer
    kept = [p for p in quantized.metadata_props if p.key != "onnx.infer"]  # onnxruntime's own stamp
    quantized.ClearField("metadata_props")
    quantized.metadata_props.extend(kept)
    return quantized


def _weight_axis_overrides(model: onnx.ModelProto, nodes: list[str]) -> dict[str, list[dict]]:
    """ONNX Runtime's per-tensor overrides putting each WEIGHT_AXES op's weight on its TensorRT axis."""
    initializers, quantized = {i.name for i in model.graph.initializer}, set(nodes)
    return {n.input[1]: [{"axis": WEIGHT_AXES[n.op_type]}] for n in model.graph.node
            if n.name in quantized and n.op_type in WEIGHT_AXES and n.input[1] in initializers}


def _remove_pairs_read_only_by_float_nodes(graph: onnx.GraphProto, quantized: set[str]) -> None:
    """Activation QuantizeLinear -> DequantizeLinear pairs none of whose readers is a quantized node: the
    readers get the float tensor back, the pair goes (it would only round a float layer's input)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    initializers = {i.name for i in graph.initializer}
    dead = []
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in initializers:
            continue
        dqs = readers.get(q.output[0], [])
        if not dqs or any(dq.op_type != "DequantizeLinear" or dq.output[0] in outputs for dq in dqs):
            continue
        if any(r.name in quantized for dq in dqs for r in readers.get(dq.output[0], [])):
            continue
        for dq in dqs:
            for reader in readers.get(dq.output[0], []):
                reader.input[:] = [q.input[0] if name == dq.output[0] else name for name in reader.input]
        dead += [q, *dqs]
    for node in dead:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    params = {name for node in dead for name in node.input[1:]}  # their scales and zero points
    for init in [i for i in graph.initializer if i.name in params and i.name not in used]:
        graph.initializer.remove(init)


def _unranged_inputs(model: onnx.ModelProto, nodes: set[str], amax: dict[str, float]) -> list[str]:
    initializers = {i.name for i in model.graph.initializer}
    return [t for n in model.graph.node if n.name in nodes
            for t in n.input[:1] if t and t not in initializers and t not in amax]


def activation_scales(model: onnx.ModelProto) -> dict[str, float]:
    """tensor -> scale of every per-tensor QuantizeLinear in a Q/DQ graph (for reports and tests)."""
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    scales = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[1] in initializers:
            scale = initializers[node.input[1]]
            if scale.size == 1:
                scales[node.input[0]] = float(scale.reshape(-1)[0])
    return scales
