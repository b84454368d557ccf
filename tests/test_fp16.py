"""Float16 conversion (`convert --fp16`): which nodes run in float16, the casts around them, parity.

The model is a seeded ResNet-18-FPN (GroupNorm backbone) exported with the custom RoIAlign node;
activation ranges come from calibration images through `collect_ranges(..., "max")`.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from maskrcnn_deploy.calibration.calibrate import save_checked
from maskrcnn_deploy.calibration.data import CalibrationBatches
from maskrcnn_deploy.calibration.deploy_graph import load_float_graph
from maskrcnn_deploy.calibration.fp16 import FP16_OPS, FP16_SAFE_MAX, REPORT_TITLE, convert_fp16, convert_nodes_fp16
from maskrcnn_deploy.calibration.precision_report import write_precision_report
from maskrcnn_deploy.calibration.qdq import quantize_qdq
from maskrcnn_deploy.calibration.ranges import collect_ranges
from maskrcnn_deploy.calibration.regions import PrecisionError, find_region
from maskrcnn_deploy.export.graph_io import read_onnx
from maskrcnn_deploy.export.onnx_ops import register_schema
from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset
from maskrcnn_deploy.plugins.onnxruntime_op import load_session
from maskrcnn_deploy.runtime import load, parity

NUM_CLASSES = 4
FLOAT32_OPS = ("Exp", "Sigmoid", "Softmax", "MultiLevelRoIAlign", "Log", "Sqrt", "NonMaxSuppression", "TopK")


@pytest.fixture(scope="module")
def fp16(tmp_path_factory, small_r18):
    root = tmp_path_factory.mktemp("fp16")
    data = make_synthetic_dataset(root / "data", num_train=6, num_val=3, seed=5, image_size=(150, 190))
    graph = load_float_graph(small_r18.graph("custom"))  # tests/conftest.py: the shared seeded R18
    amax = collect_ranges(graph.model, CalibrationBatches.from_data(data["train"], graph), "max", show_progress=False)
    model16, rows = convert_fp16(graph, amax)
    save_checked(model16, root / "r18.fp16.onnx")  # full checker + an ONNX Runtime session on the saved file
    write_precision_report(rows, root / "r18.fp16.precision.json", title=REPORT_TITLE)
    return SimpleNamespace(root=root, graph=graph, amax=amax, rows=rows, path=root / "r18.fp16.onnx",
                           model=onnx.shape_inference.infer_shapes(onnx.load(str(root / "r18.fp16.onnx"))),
                           val_images=sorted((root / "data" / "val").glob("*.png")), train=data["train"])


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """tensor -> elem type, from (inferred) value_info, graph inputs/outputs and initializers."""
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.input,
                                                            *model.graph.output)}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


def _fp32_nodes(rows) -> set[str]:
    return {r.node for r in rows if r.precision == "fp32"}


def test_graph_is_checked_keeps_float32_io_and_metadata(fp16):
    onnx.checker.check_model(str(fp16.path), full_check=True)
    original = fp16.graph.model
    io = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in (*m.graph.input, *m.graph.output)]  # noqa: E731
    assert io(fp16.model) == io(original)
    assert dict(io(fp16.model))["images"] == dict(io(fp16.model))["boxes"] == TensorProto.FLOAT
    assert [(p.key, p.value) for p in fp16.model.metadata_props] == [(p.key, p.value) for p in original.metadata_props]
    # every tensor of the float32 graph keeps its name (casts to float16 are new `<name>_fp16` tensors)
    before = {t for n in original.graph.node for t in n.output}
    after = {t for n in fp16.model.graph.node for t in n.output}
    assert before <= after and all(t.endswith("_fp16") or "_cast" in t for t in after - before)
    assert {p.key for p in fp16.model.metadata_props} == {"maskrcnn_deploy"}


def test_network_convolutions_run_in_float16(fp16):
    region = find_region(fp16.graph.model, with_logits=True)
    nodes = {n.name: n for n in fp16.model.graph.node}
    init = {i.name: i.data_type for i in fp16.model.graph.initializer}
    types = _types(fp16.model)
    convs = [nodes[name] for name in region.nodes() if nodes[name].op_type in ("Conv", "Gemm", "ConvTranspose")]
    half = [n for n in convs if init[n.input[1]] == TensorProto.FLOAT16 and types[n.input[0]] == TensorProto.FLOAT16]
    groups = {region.groups[n.name].split(".")[0] + "." + region.groups[n.name].split(".")[1] for n in half}
    counts = {p: sum(r.precision == p for r in fp16.rows) for p in ("fp16", "fp32")}
    print(f"\nfp16 nodes {counts['fp16']}, fp32 nodes {counts['fp32']}; float16 weighted layers {len(half)} of "
          f"{len(convs)}; casts {sum(n.op_type == 'Cast' for n in fp16.model.graph.node)}")
    assert len(convs) >= 50 and len(half) >= 0.9 * len(convs)
    assert {"backbone.body", "backbone.fpn", "rpn.head", "roi_heads.mask_head", "roi_heads.box_head"} <= groups
    rows = {r.node: r for r in fp16.rows}
    assert all(rows[n.name].precision == "fp16" and rows[n.name].reason == "" for n in half)
    assert all(0 <= rows[n.name].max_abs <= FP16_SAFE_MAX for n in half)
    # FPN's extra-level MaxPool computes in float16; nearest Resize (converter's block list) in float32
    pools = [n for n in fp16.model.graph.node if n.op_type == "MaxPool" and n.name in region.groups]
    assert pools and all(types[n.input[0]] == TensorProto.FLOAT16 for n in pools)
    resizes = [n for n in fp16.model.graph.node if n.op_type == "Resize"]
    assert resizes and all(types[n.input[0]] == TensorProto.FLOAT for n in resizes)
    assert all("block list" in rows[n.name].reason for n in resizes)


def test_fragile_ops_and_the_custom_node_compute_in_float32(fp16):
    types = _types(fp16.model)
    rows = {r.node: r for r in fp16.rows}
    checked = 0
    for node in fp16.model.graph.node:
        if node.op_type in FLOAT32_OPS:
            floats = [types[t] for t in (*node.input, *node.output) if t and types[t] in (TensorProto.FLOAT,
                                                                                              TensorProto.FLOAT16)]
            assert floats and set(floats) == {TensorProto.FLOAT}, node.name
            assert rows[node.name].precision == "fp32" and rows[node.name].reason, node.name
            checked += 1
    ops = [n.op_type for n in fp16.model.graph.node]
    assert ops.count("MultiLevelRoIAlign") == 2 and ops.count("Exp") >= 10 and checked >= 25
    # no float32 -> float16 -> float32 round trips between float32 nodes
    producer = {o: n for n in fp16.model.graph.node for o in n.output}
    for node in fp16.model.graph.node:
        if node.op_type == "Cast" and node.attribute[0].i == TensorProto.FLOAT and node.input[0] in producer:
            up = producer[node.input[0]]
            assert not (up.op_type == "Cast" and up.attribute[0].i == TensorProto.FLOAT16), node.name
    # constants read only by float32 nodes are untouched (mean/std, the -inf score padding)
    before = {i.name: i for i in fp16.graph.model.graph.initializer}
    fp32 = _fp32_nodes(fp16.rows)
    fp32_only = {i for n in fp16.graph.model.graph.node for i in n.input if i in before} - \
        {i for n in fp16.graph.model.graph.node if n.name not in fp32 for i in n.input}
    after = {i.name: i for i in fp16.model.graph.initializer}
    assert {"mean", "std"} <= fp32_only
    for name in fp32_only:
        assert after[name].data_type == before[name].data_type
        assert np.array_equal(numpy_helper.to_array(after[name]), numpy_helper.to_array(before[name]))


def test_an_overflowing_range_keeps_that_node_float32(fp16):
    """A backbone Conv (read only by float32 GroupNorm) at 1e6 keeps exactly that node float32. One of
    the five RPN head Convs (one per FPN level, sharing weights) at 1e6 keeps that Conv and the Relu
    reading its output float32: the other four levels get a float16 copy of the shared weight."""
    region = find_region(fp16.graph.model, with_logits=True)
    nodes = {n.name: n for n in fp16.graph.model.graph.node}
    backbone = next(n for n in region.nodes(["backbone.body.layer2"]) if nodes[n].op_type == "Conv")
    rpn = [n for n in region.nodes(["rpn.head.conv"]) if nodes[n].op_type == "Conv"]
    assert len(rpn) == 5 and len({nodes[n].input[1] for n in rpn}) == 1
    relu = next(n.name for n in nodes.values() if n.op_type == "Relu" and n.input[0] == nodes[rpn[2]].output[0])
    amax = dict(fp16.amax)
    amax[nodes[backbone].output[0]] = amax[nodes[rpn[2]].output[0]] = 1e6
    model, rows = convert_fp16(fp16.graph, amax)
    assert _fp32_nodes(rows) - _fp32_nodes(fp16.rows) == {backbone, rpn[2], relu}
    reasons = {r.node: r.reason for r in rows}
    assert "1e+06" in reasons[backbone] and "1e+06" in reasons[rpn[2]] and "1e+06" in reasons[relu]
    init = {i.name: i.data_type for i in model.graph.initializer}
    converted = {n.name: n for n in model.graph.node}
    weight = nodes[rpn[0]].input[1]
    assert converted[rpn[2]].input[1] == weight and init[weight] == TensorProto.FLOAT
    assert all(init[converted[n].input[1]] == TensorProto.FLOAT16 for n in rpn if n != rpn[2])
    path = fp16.root / "overflow.fp16.onnx"
    save_checked(model, path)
    dets = load(path).predict(fp16.val_images[:1])
    assert len(dets) == 1 and len(dets[0]["scores"]) > 0


def test_float16_graph_matches_float32_within_fp16_tolerances(fp16):
    ref = load(fp16.graph.path).predict(fp16.val_images)
    test = load(fp16.path).predict(fp16.val_images)
    report = parity.check_parity(ref, test, parity.tolerances_from("fp16"))
    print("\n" + "\n".join(report.summary_lines()))
    assert report.passed, report.failures
    assert report.ref_detections > 0
    # raw boxes (model input pixels) of the same detections: pairs that are the same box (IoU >= 0.9);
    # the rest are NMS / threshold flips, which the fp16 tolerances allow for 1% of pairs
    errors, flips = [], 0
    for r, t in zip(ref, test):
        match = parity.match_detections(r, t)
        same = match.pairs[match.box_iou >= 0.9]
        flips += len(match.pairs) - len(same)
        errors.append(np.abs(r["raw"]["boxes"][same[:, 0]] - t["raw"]["boxes"][same[:, 1]]).max(initial=0.0))
    print(f"raw box max abs difference {max(errors):.4f} px over same-box pairs; {flips} flipped pairs")
    assert 0 < max(errors) < 1.0
    assert flips <= 0.01 * report.matched + 1


def test_missing_ranges_and_float16_input_are_refused(fp16):
    nodes = {n.name: n for n in fp16.graph.model.graph.node}
    conv = next(n for n in find_region(fp16.graph.model).nodes() if nodes[n].op_type == "Conv")
    amax = {k: v for k, v in fp16.amax.items() if k != nodes[conv].output[0]}
    with pytest.raises(PrecisionError, match=f"no observed range for '{nodes[conv].output[0]}'") as err:
        convert_fp16(fp16.graph, amax)
    assert "\n" not in str(err.value)
    with pytest.raises(PrecisionError, match="already float16"):
        load_float_graph(fp16.path)


def test_precision_report_json_and_markdown(fp16):
    report = json.loads(fp16.path.with_suffix(".precision.json").read_text())
    assert report["schema"] == "maskrcnn_deploy.precision/1"
    assert [row["node"] for row in report["layers"]] == [n.name for n in fp16.graph.model.graph.node]
    assert set(report["layers"][0]) == {"node", "op_type", "group", "precision", "reason", "max_abs"}
    by_node = {row["node"]: row for row in report["layers"]}
    roi = next(r for r in fp16.rows if r.op_type == "MultiLevelRoIAlign")
    assert by_node[roi.node]["precision"] == "fp32" and by_node[roi.node]["reason"] == "outside the network region"
    markdown = fp16.path.with_suffix(".precision.md").read_text()
    assert "| node | op | group | precision | max abs | reason |" in markdown
    assert f"fp16 nodes: {sum(r.precision == 'fp16' for r in fp16.rows)}" in markdown


def test_float16_io_graph_and_int8_fallback_groups(fp16):
    """keep_io_types=False: float inputs and outputs become float16; convert_nodes_fp16 (the INT8 budget's
    float fallback) turns only the named nodes of a Q/DQ graph to float16. Both check and run."""
    feed = next(iter(CalibrationBatches.from_data(fp16.train, fp16.graph, num_images=1)))
    model, _ = convert_fp16(fp16.graph, fp16.amax, keep_io_types=False)
    kinds = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)}
    assert kinds["images"] == kinds["boxes"] == kinds["masks"] == TensorProto.FLOAT16
    assert kinds["labels"] == TensorProto.INT64
    save_checked(model, fp16.root / "io16.onnx")
    outputs = load_session(read_onnx(fp16.root / "io16.onnx")).run(None, {k: v.astype(np.float16) for k, v in feed.items()})
    assert outputs[0].dtype == np.float16 and np.isfinite(outputs[0]).all()

    region = find_region(fp16.graph.model)
    heads = [g for g in region.group_names() if g.startswith(("roi_heads.mask_head", "backbone.fpn"))]
    qdq = quantize_qdq(fp16.graph.model, fp16.amax, region.nodes([g for g in region.group_names() if g not in heads]))
    mixed = convert_nodes_fp16(qdq, region.nodes(heads), fp16.amax)
    types = _types(mixed)
    converted = {n.name: n for n in mixed.graph.node}
    assert all(types[converted[n].output[0]] == TensorProto.FLOAT16 for n in region.nodes(heads)
               if converted[n].op_type == "Conv")
    save_checked(mixed, fp16.root / "int8_fp16.onnx")
    boxes = load_session(read_onnx(fp16.root / "int8_fp16.onnx")).run(["boxes"], feed)[0]
    assert boxes.dtype == np.float32 and np.isfinite(boxes).all()


@pytest.mark.parametrize("op", FP16_OPS)
def test_region_op_types_have_float16_cpu_kernels(op):
    """FP16_OPS is the allow-list of region op types converted to float16: each runs in ONNX Runtime's CPU
    provider with float16 inputs (ops without a kernel there stay float32, with a reason)."""
    register_schema()
    half = lambda name, shape: numpy_helper.from_array(np.full(shape, 0.5, np.float16), name)  # noqa: E731
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 2, 4, 4])
    inputs, inits, attrs = ["x"], [], {}
    if op in ("Conv", "ConvTranspose"):
        inputs, inits = ["x", "w"], [half("w", [2, 3, 3, 3] if op == "ConvTranspose" else [3, 2, 3, 3])]
    elif op == "Gemm":
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 4])
        inputs, inits, attrs = ["x", "w", "b"], [half("w", [3, 4]), half("b", [3])], {"transB": 1}
    elif op == "Add":
        inputs, inits = ["x", "z"], [half("z", [1, 2, 4, 4])]
    elif op == "MaxPool":
        attrs = {"kernel_shape": [1, 1], "strides": [2, 2]}
    elif op == "Resize":
        inputs, inits = ["x", "", "", "sizes"], [numpy_helper.from_array(np.array([1, 2, 8, 8], np.int64), "sizes")]
        attrs = {"mode": "nearest"}
    graph = helper.make_graph([helper.make_node(op, inputs, ["y"], **attrs)], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    shape = [d.dim_value for d in x.type.tensor_type.shape.dim]
    (y,) = session.run(None, {"x": np.ones(shape, np.float16)})
    assert y.dtype == np.float16 and np.isfinite(y).all()


def _roi_align_graph(rois_type: int, maps_type: int) -> onnx.ModelProto:
    """One MultiLevelRoIAlign node with rois and P2..P5 of the given element types."""
    node = helper.make_node("MultiLevelRoIAlign", ["rois", "p2", "p3", "p4", "p5"], ["pooled"],
                            domain="maskrcnn_deploy",
                            output_height=7, output_width=7, sampling_ratio=2, aligned=0,
                            spatial_scales=[1 / 4, 1 / 8, 1 / 16, 1 / 32], canonical_scale=224.0, canonical_level=4,
                            level_eps=1e-6, mode="avg")
    inputs = [helper.make_tensor_value_info("rois", rois_type, [3, 5])]
    inputs += [helper.make_tensor_value_info(f"p{i}", maps_type, [1, 8, 64 >> i, 64 >> i]) for i in range(2, 6)]
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("pooled", maps_type, [3, 8, 7, 7])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                   helper.make_opsetid("maskrcnn_deploy", 1)])


def test_the_custom_op_takes_float32_rois_with_float16_maps_and_refuses_float16_rois():
    # docs/ops.md: rois float32 always (float16 corners >= 1024 px move in 1-pixel steps), maps float32/float16
    register_schema()
    for maps in (TensorProto.FLOAT, TensorProto.FLOAT16):
        model = onnx.shape_inference.infer_shapes(_roi_align_graph(TensorProto.FLOAT, maps), strict_mode=True)
        onnx.checker.check_model(model, full_check=True)
    with pytest.raises(onnx.shape_inference.InferenceError, match="rois typestr: tensor\\(float\\), has unsupported "
                                                                  "type: tensor\\(float16\\)"):
        onnx.checker.check_model(_roi_align_graph(TensorProto.FLOAT16, TensorProto.FLOAT16), full_check=True)
