"""Per-channel weight quantization axes that TensorRT accepts, in every Q/DQ graph `calibrate` writes.

TensorRT quantizes weights per channel only on these axes of the weight a DequantizeLinear feeds:
    Conv           [K, C/g, kH, kW]   axis 0 (NvInfer.h, IQuantizeLayer: "K (dimension 0) as the quantization axis")
    ConvTranspose  [C, K/g, kH, kW]   axis 0: "We don't support per-output-channel quant for ConvTranspose"
                                      (NVIDIA/TensorRT#2380; axis 1 gives wrong results, #1694)
    Gemm           B [K, N] / [N, K] with transB=1: the output-channel axis, 1 / 0
    MatMul         B [K, N]           the last axis
A per-tensor (scalar) scale is accepted everywhere. ONNX Runtime's quantizer picks axis 1 for ConvTranspose,
so calibration/qdq.py overrides it (WEIGHT_AXES).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from maskrcnn_deploy.calibration.qdq import quantize_qdq
from maskrcnn_deploy.calibration.ranges import region_tensors
from maskrcnn_deploy.calibration.regions import find_region
from maskrcnn_deploy.export.deploy_model import DeployMaskRCNN  # noqa: F401  (the graph below is its export)
from maskrcnn_deploy.export.onnx_export import ExportOptions, export_checkpoint
from maskrcnn_deploy.model.checkpoint import save_checkpoint
from maskrcnn_deploy.model.config import resnet18_fpn

from seeded_models import seeded_model


def accepted_axis(consumer: onnx.NodeProto, weight_rank: int) -> int:
    """The per-channel axis TensorRT accepts for the weight (input 1) of `consumer` (module docstring)."""
    if consumer.op_type in ("Conv", "ConvTranspose"):
        return 0
    if consumer.op_type == "Gemm":
        trans_b = next((a.i for a in consumer.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if consumer.op_type == "MatMul":
        return weight_rank - 1
    raise AssertionError(f"no TensorRT rule known for a quantized weight of {consumer.op_type}")


def weight_axis_problems(model: onnx.ModelProto) -> tuple[int, list[str]]:
    """(number of weight DequantizeLinear nodes, one line per one whose axis TensorRT does not accept)."""
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    checked, problems = 0, []
    for dq in model.graph.node:
        if dq.op_type != "DequantizeLinear" or dq.input[0] not in init:
            continue
        checked += 1
        if init[dq.input[1]].size == 1:
            continue  # per tensor
        rank = init[dq.input[0]].ndim
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % rank  # ONNX default axis: 1
        for consumer in readers.get(dq.output[0], []):
            want = accepted_axis(consumer, rank)
            if consumer.input[1] != dq.output[0] or axis != want:
                problems.append(f"{consumer.op_type} {consumer.name}: weight {dq.input[0]} quantized on axis {axis}, "
                                f"TensorRT takes axis {want}")
    return checked, problems


def _every_weighted_op() -> onnx.ModelProto:
    """x [1,4,8,8] -> Conv -> ConvTranspose (4 -> 6 channels) -> flatten -> Gemm (transB 0) -> Gemm (transB 1)."""
    rng = np.random.default_rng(0)
    w = lambda name, *shape: numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "conv_w"], ["a"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("ConvTranspose", ["a", "deconv_w"], ["b"], name="deconv", strides=[2, 2]),
             helper.make_node("Flatten", ["b"], ["c"], name="flatten"),
             helper.make_node("Gemm", ["c", "fc1_w"], ["d"], name="fc1"),
             helper.make_node("Gemm", ["d", "fc2_w"], ["y"], name="fc2", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                              [w("conv_w", 4, 4, 3, 3), w("deconv_w", 4, 6, 2, 2), w("fc1_w", 6 * 16 * 16, 7),
                               w("fc2_w", 5, 7)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_every_weighted_op_is_quantized_on_an_axis_tensorrt_accepts():
    model = _every_weighted_op()
    amax = {name: 4.0 for name in ("x", "a", "b", "c", "d", "y")}
    quantized = quantize_qdq(model, amax, ["conv", "deconv", "fc1", "fc2"])
    checked, problems = weight_axis_problems(quantized)
    assert checked == 4 and problems == []
    init = {i.name: numpy_helper.to_array(i) for i in quantized.graph.initializer}
    assert init["deconv_w_scale"].shape == (4,)  # per channel on axis 0: the 4 input channels, not the 6 outputs
    # still symmetric int8, and the scales are the per-input-channel amax / 127
    assert init["deconv_w_quantized"].dtype == np.int8 and not init["deconv_w_zero_point"].any()
    weight = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "deconv_w"))
    np.testing.assert_allclose(init["deconv_w_scale"], np.abs(weight).reshape(4, -1).max(axis=1) / 127, rtol=1e-6)


@pytest.fixture(scope="module")
def deploy_graph(tmp_path_factory) -> onnx.ModelProto:
    root = tmp_path_factory.mktemp("qdq_axes")
    cfg = resnet18_fpn(3, norm="bn", min_size=64, max_size=96, fpn_channels=32, mask_head_channels=24,
                       box_fc_dim=64, detections_per_img=5, rpn_post_nms_top_n_test=50)
    save_checkpoint(root / "m.pt", seeded_model(cfg), cfg)
    export_checkpoint(root / "m.pt", root / "m.onnx", ExportOptions())
    return onnx.load(str(root / "m.onnx"))


def test_the_calibrated_deploy_graph_quantizes_every_weight_on_an_axis_tensorrt_accepts(deploy_graph):
    region = find_region(deploy_graph)
    amax = {name: 1.0 for name in region_tensors(deploy_graph, find_region(deploy_graph, with_logits=True).nodes())}
    quantized = quantize_qdq(deploy_graph, amax, region.nodes())
    checked, problems = weight_axis_problems(quantized)
    ops = {n.op_type for n in quantized.graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm")}
    assert ops == {"Conv", "ConvTranspose", "Gemm"} and checked >= 20
    assert problems == [], problems
