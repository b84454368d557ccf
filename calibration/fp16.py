"""Mixed-precision float16 deploy graphs (`maskrcnn-deploy convert --fp16`).

    amax = collect_ranges(graph.model, CalibrationBatches.from_data(data, graph), "max")  # all tensors
    model, rows = convert_fp16(graph, amax)          # graph inputs/outputs stay float32
    save_checked(model, "m.fp16.onnx")
    write_precision_report(rows, "m.fp16.precision.json", title=REPORT_TITLE)   # precision_report.py

A node computes in float16 only if all of these hold; every other node stays float32, and its
report row says why:
    region : it is in the network region with its logit layers (graph.find_region(with_logits=True)):
             Conv / Gemm / ConvTranspose of backbone, FPN, RPN head, box and mask heads, and the
             Relu / Add / MaxPool / Resize between them. Box decoding (Exp), level assignment (Log,
             Sqrt), scores (Sigmoid, Softmax), NMS, top-k and MultiLevelRoIAlign are all outside.
    op     : not fragile (FRAGILE_OPS); in FP16_OPS (float16 CPU kernels in ONNX Runtime 1.31, checked
             by tests/test_fp16.py); not in onnxconverter-common's default op block list (Resize,
             whose float scales input must stay float32; nearest Resize is exact in float32 anyway)
    range  : the max |x| observed on calibration data for its outputs and activation inputs, and
             the max |w| of its weights, are <= max_fp16_abs. FP16_SAFE_MAX = 65504 / 2: half of
             float16's largest finite value, headroom for inputs beyond the calibration set.

onnxconverter-common's convert_float_to_float16 does the rewrite and inserts the casts; `_convert`
adds what it lacks (each seen on the exported graph):
    - value_info entries naming initializers (torch.onnx writes them) make it convert constants that
      float32 nodes read (image mean/std; the -inf score padding became -1e4): dropped first
    - it casts only typed tensors, and our node's schema infers no output type: typed first
    - an initializer read by float16 and float32 nodes (the RPN head weights, one Conv per FPN level)
      would stay float32 for all: the float16 readers get a copy
    - it renames the output of every float32 node and gives the name to a Cast to float16: names are
      restored (`x` is the float32 output, the cast's is `x_fp16`), so tensors keep the float32
      graph's names (calibration caches, reports), and graph outputs stay float32 with keep_io_types
    - edges between two float32 nodes go Cast16 -> Cast32 (rounding boxes to float16, overflowing
      large values): those casts are removed
    - it clips weights to 1e4 by default: max_finite_val is float16's 65504 (the range rule holds)
MultiLevelRoIAlign keeps float32 inputs and outputs: ONNX Runtime runs it as an onnxruntime-extensions
PyOp declared float32-only (plugins/onnxruntime_op.py). The TensorRT plugin already takes float16 feature
maps (its CUDA kernel is templated on the map type and accumulates in float32), but never float16 rois
(docs/ops.md: float16 box corners move in 1-pixel steps from 1024 px on), so the node stays float32 here.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx

from maskrcnn_deploy.calibration.deploy_graph import DeployGraph
from maskrcnn_deploy.calibration.precision_report import NodePrecision
from maskrcnn_deploy.calibration.regions import GLUE_OPS, WEIGHTED_OPS, PrecisionError, check_float_graph, find_region
from maskrcnn_deploy.export.onnx_ops import register_schema
from maskrcnn_deploy.plugins.op_spec import OP_TYPE

__all__ = ["FP16_SAFE_MAX", "FRAGILE_OPS", "FP16_OPS", "REPORT_TITLE", "plan_precision", "convert_fp16",
           "convert_nodes_fp16"]

FP16_MAX = 65504.0
FP16_SAFE_MAX = FP16_MAX / 2
FRAGILE_OPS = ("Exp", "Log", "Sqrt", "Pow", "Reciprocal", "Div", "Sigmoid", "Softmax", "Erf")
FP16_OPS = (*WEIGHTED_OPS, *GLUE_OPS)  # each has a float16 CPU kernel in ONNX Runtime 1.31
REPORT_TITLE = "float16 conversion"  # the heading of `convert --fp16`'s precision report
_FLOAT, _FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def _float16_module():
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise PrecisionError("convert --fp16 needs onnxconverter-common: pip install onnxconverter-common") from None
    return float16


def _op_block_list() -> list[str]:
    """onnxconverter-common's default op block list plus our custom RoIAlign (float32-only PyOp)."""
    return [*_float16_module().DEFAULT_OP_BLOCK_LIST, OP_TYPE]


def plan_precision(model: onnx.ModelProto, observed_amax: dict[str, float], nodes=None,
                   max_fp16_abs: float = FP16_SAFE_MAX) -> list[NodePrecision]:
    """A row per node of `model`: fp16 for the candidates (`nodes`, default the network region with its
    logit layers) that pass the op and range rules, fp32 with a reason for every other node."""
    region = find_region(model, with_logits=True).groups
    candidates = set(region if nodes is None else nodes)
    weights = {i.name: i for i in model.graph.initializer if i.data_type == _FLOAT}
    blocked_ops = set(_op_block_list())
    rows = []
    for node in model.graph.node:
        outputs = [o for o in node.output if o]
        observed = [observed_amax[o] for o in outputs if o in observed_amax]
        if node.name in candidates and len(observed) < len(outputs):
            missing = next(o for o in outputs if o not in observed_amax)
            raise PrecisionError(f"no observed range for {missing!r} (output of {node.name}, {node.op_type}): "
                                 "collect ranges over all tensors of this graph (collect_ranges(..., tensors=None))")
        x_abs = max(observed + [observed_amax[i] for i in node.input if i in observed_amax and i not in weights],
                    default=0.0)
        reason = ""
        if node.name not in candidates:
            reason = "outside the network region"
        elif node.op_type in FRAGILE_OPS:
            reason = f"fragile op {node.op_type}"
        elif node.op_type not in FP16_OPS:
            reason = f"no float16 CPU kernel checked for {node.op_type} in ONNX Runtime"
        elif node.op_type in blocked_ops:
            reason = f"{node.op_type} is in onnxconverter-common's default op block list"
        elif not x_abs <= max_fp16_abs:  # also catches inf and nan
            reason = f"observed |x| {x_abs:.3g} > {max_fp16_abs:.3g} (float16 max {FP16_MAX:.0f}, 2x headroom)"
        else:
            w_abs = max((float(np.abs(onnx.numpy_helper.to_array(weights[i])).max(initial=0.0))
                         for i in node.input if i in weights), default=0.0)
            reason = f"weight |w| {w_abs:.3g} > {max_fp16_abs:.3g}" if not w_abs <= max_fp16_abs else ""
        rows.append(NodePrecision(node.name, node.op_type, region.get(node.name), "fp32" if reason else "fp16",
                                  reason, max(observed) if observed else None))
    return rows


def convert_fp16(graph: DeployGraph, observed_amax: dict[str, float], keep_io_types: bool = True,
                 max_fp16_abs: float = FP16_SAFE_MAX) -> tuple[onnx.ModelProto, list[NodePrecision]]:
    """The float32 deploy graph as mixed float16/float32 (rules in the module docstring), and its report rows.

    observed_amax: tensor name -> max |x| on calibration data, for (at least) every tensor of the
    network region; keep_io_types: graph inputs and outputs stay float32 (else float ones become float16).
    The result passed the full ONNX checker; `calibrate.save_checked` saves it and opens it in ONNX Runtime.
    """
    check_float_graph(graph.model, str(graph.path))
    rows = plan_precision(graph.model, observed_amax, None, max_fp16_abs)
    model = _convert(graph.model, {r.node for r in rows if r.precision == "fp16"}, keep_io_types)
    onnx.checker.check_model(model, full_check=True)
    return model, rows


def convert_nodes_fp16(model: onnx.ModelProto, nodes, amax: dict[str, float],
                       max_fp16_abs: float = FP16_SAFE_MAX) -> onnx.ModelProto:
    """Float16 for the named nodes only (the INT8 budget's float groups in a Q/DQ graph), same rules;
    graph inputs and outputs stay float32."""
    rows = plan_precision(model, amax, nodes, max_fp16_abs)
    return _convert(model, {r.node for r in rows if r.precision == "fp16"}, keep_io_types=True)


def _convert(model: onnx.ModelProto, fp16_nodes: set[str], keep_io_types: bool) -> onnx.ModelProto:
    """convert_float_to_float16 with every node but `fp16_nodes` blocked, plus the fixes it lacks."""
    float16 = _float16_module()
    register_schema()  # our op's schema, for shape inference
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    value_info = [v for v in graph.value_info if v.name not in initializers]
    graph.ClearField("value_info")
    graph.value_info.extend(value_info)
    typed = {v.name for v in graph.value_info}  # the converter casts only typed tensors; our node's schema
    for node in graph.node:                      # infers no output type (Q/DQ graphs lose its value_info)
        if node.op_type == OP_TYPE and node.output[0] not in typed:
            graph.value_info.append(onnx.helper.make_tensor_value_info(node.output[0], _FLOAT, None))
    _split_shared_initializers(graph, fp16_nodes)
    original = {n.name: list(n.output) for n in graph.node}
    custom_outputs = {n.output[0] for n in graph.node if n.op_type == OP_TYPE}
    custom_info = [onnx.ValueInfoProto.FromString(v.SerializeToString())  # copies: the converter edits in place
                   for v in graph.value_info if v.name in custom_outputs]
    float_outputs = {o.name for o in graph.output if o.type.tensor_type.elem_type == _FLOAT}
    with warnings.catch_warnings():  # "the float32 number 1e-09 will be truncated to 5.96e-08", per tensor
        warnings.filterwarnings("ignore", message="the float32 number")
        model = float16.convert_float_to_float16(
            model, min_positive_val=2.0 ** -24, max_finite_val=FP16_MAX, keep_io_types=keep_io_types,
            op_block_list=_op_block_list(), node_block_list=sorted(set(original) - fp16_nodes))
    _remove_float32_round_trips(model.graph, original, fp16_nodes, set() if keep_io_types else float_outputs)
    # the converter's value_info now describes renamed tensors: infer again, strictly, from scratch; only
    # the custom node's output (float32, RoIAlign is never converted) needs its entry, no schema infers it
    model.graph.ClearField("value_info")
    model.graph.value_info.extend(custom_info)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _split_shared_initializers(graph: onnx.GraphProto, fp16_nodes: set[str]) -> None:
    """A float initializer read by float16 and float32 nodes: the float16 readers get a copy `<name>_fp16`."""
    floats = {i.name: i for i in graph.initializer if i.data_type == _FLOAT}
    readers: dict[str, set[bool]] = {}
    for node in graph.node:
        for name in node.input:
            if name in floats:
                readers.setdefault(name, set()).add(node.name in fp16_nodes)
    for name in [n for n, kinds in readers.items() if kinds == {True, False}]:
        copy = onnx.TensorProto()
        copy.CopyFrom(floats[name])
        copy.name = f"{name}_fp16"
        graph.initializer.append(copy)
        for node in graph.node:
            if node.name in fp16_nodes:
                node.input[:] = [copy.name if i == name else i for i in node.input]


def _remove_float32_round_trips(graph: onnx.GraphProto, original: dict[str, list[str]], fp16_nodes: set[str],
                                float16_outputs: set[str]) -> None:
    """Undo the converter's renaming and its round trips, in place. original: node name -> its outputs
    before the conversion.

    The converter renames the outputs of every float32 node (`x` -> `<node>_output_cast_0`), and when
    float16 nodes read `x`, gives `x` to an inserted Cast to float16. Here `x` is the float32 output of
    its node again and that Cast's output is `x_fp16` (graph outputs in `float16_outputs`,
    keep_io_types=False, stay float16 under their name), so tensor names match the float32 graph
    (calibration caches, reports, debugging). Float32 nodes then read float32 sources instead of
    Cast16 -> Cast32 chains, and inserted casts left unused are removed.
    """
    producer = {o: n for n in graph.node for o in n.output}
    graph_outputs = {o.name: o for o in graph.output}

    def inserted_cast(tensor: str, to: int):
        node = producer.get(tensor)
        if node is not None and node.op_type == "Cast" and node.name not in original and node.attribute[0].i == to:
            return node
        return None

    for node in [n for n in graph.node if n.name in original]:
        for k, (now, name) in enumerate(zip(list(node.output), original[node.name])):
            if now == name or name in float16_outputs:
                continue
            rename = {now: name}
            cast = inserted_cast(name, _FLOAT16)
            if cast is not None:  # float16 readers keep the cast, under a new name
                rename[name] = f"{name}_fp16"
                cast.output[0] = rename[name]
                producer[rename[name]] = cast
            for reader in graph.node:
                reader.input[:] = [rename.get(i, i) for i in reader.input]
            node.output[k] = name
            producer[name] = node
            if name in graph_outputs:
                graph_outputs[name].type.tensor_type.elem_type = _FLOAT
    for node in graph.node:
        if node.name in fp16_nodes or node.name not in original:
            continue
        for k, tensor in enumerate(node.input):
            up = inserted_cast(tensor, _FLOAT)
            cast16 = inserted_cast(up.input[0] if up is not None else tensor, _FLOAT16)
            if cast16 is not None:
                node.input[k] = cast16.input[0]
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.name not in original and n.op_type == "Cast" and n.output[0] not in used]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)
