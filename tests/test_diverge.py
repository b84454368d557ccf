"""Layer-by-layer divergence (`maskrcnn-deploy diverge`, runtime/diverge/): an injected fault is found where it
was injected, a graph against itself has no error, Cast and Q/DQ wrappers are seen through, the JSON validates.

The model is a small seeded ResNet-18-FPN (narrow heads, 128x160 canvas) exported with the custom RoIAlign node
(tests/conftest.py `small_heads_r18`, shared with other test files).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset
from maskrcnn_deploy.runtime.cli import main
from maskrcnn_deploy.runtime.diverge import DIVERGENCE_SCHEMA_FILE, match_tensors, run_divergence

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def graphs(small_heads_r18, tmp_path_factory):
    """The FP32 graph (tests/conftest.py `small_heads_r18`, shared), and a copy with the weights of one mid-network
    convolution perturbed."""
    root = tmp_path_factory.mktemp("diverge")
    val = make_synthetic_dataset(root / "data", num_train=1, num_val=2, seed=3, image_size=(150, 190))["val"]
    fp32 = small_heads_r18.graph("custom")
    model = onnx.load(str(fp32))
    weights = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in weights]
    conv = convs[len(convs) // 3]  # inside the backbone: every later tensor depends on it
    w = numpy_helper.to_array(weights[conv.input[1]])
    noise = np.random.default_rng(0).standard_normal(w.shape).astype(np.float32)
    weights[conv.input[1]].CopyFrom(numpy_helper.from_array(w + 0.5 * w.std() * noise, conv.input[1]))
    onnx.save(model, str(root / "perturbed.onnx"))
    return SimpleNamespace(root=root, val=val, fp32=fp32, perturbed=root / "perturbed.onnx", conv=conv)


def test_a_perturbed_convolution_is_the_first_divergent_tensor(graphs):
    report = run_divergence(graphs.fp32, graphs.perturbed, graphs.val, max_images=1)
    first = report.first_divergent
    assert first is not None and first.pair.name == graphs.conv.output[0] and first.pair.op == "Conv"
    assert first.error.rel_l2 > 0.1 and first.input_rel_l2 == 0.0  # its inputs are untouched
    before = report.rows[:report.rows.index(first)]
    assert len(before) > 100 and all(r.error.rel_l2 == 0.0 for r in before)


def test_a_graph_against_itself_has_zero_error_everywhere(graphs):
    report = run_divergence(graphs.fp32, graphs.fp32, graphs.val, max_images=2)
    assert report.first_divergent is None and not report.not_in_artifact and len(report.images) == 2
    assert not report.largest_jumps()
    assert len(report.rows) > 100 and report.input_shape == [1, 3, 128, 160]
    for row in report.rows:
        e = row.error
        assert e.status == "compared" and e.rel_l2 == 0.0 and e.p99_abs == 0.0 and e.max_abs == 0.0, row.pair.name
        assert e.cosine == pytest.approx(1.0, abs=1e-9) and row.pair.artifact == row.pair.name
        assert row.pair.seen_through == []  # the graph's own Casts are no wrappers
    assert report.rows[0].pair.depth == 1 and [r.pair.index for r in report.rows] == sorted(r.pair.index
                                                                                            for r in report.rows)
    assert report.not_float  # NMS indices and detection counts are matched but not compared


def test_cli_writes_json_png_html_and_the_json_validates(graphs, capsys):
    out = graphs.root / "cli"
    assert main(["diverge", str(graphs.fp32), str(graphs.perturbed), "--data", str(graphs.val), "-o", str(out),
                 "--max-images", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"first divergent tensor (> 0.01): {graphs.conv.output[0]}" in printed
    data = json.loads((out / "divergence.json").read_text())
    jsonschema.Draft202012Validator(json.loads(DIVERGENCE_SCHEMA_FILE.read_text())).validate(data)
    assert data["schema"] == {"name": "maskrcnn-deploy.divergence-report", "version": 1}
    assert data["first_divergent"]["name"] == graphs.conv.output[0]
    assert (out / "divergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "divergence.html").read_text()
    assert "Where the error enters" in page and "divergence_files/divergence.png" in page


def test_check_diverge_runs_when_the_check_fails(graphs, capsys):
    out = graphs.root / "check"
    code = main(["check", str(graphs.fp32), str(graphs.perturbed), "--data", str(graphs.val), "--max-images", "1",
                 "--html", str(out / "check.html"), "--diverge", str(out / "diverge")])
    printed = capsys.readouterr().out
    assert code == 1 and f"first divergent tensor (> 0.01): {graphs.conv.output[0]}" in printed
    assert (out / "diverge" / "divergence.json").is_file()
    assert "Where the error enters" in (out / "check.html").read_text()


# ------------------------------------------------------------------------------------ seeing through wrappers
def _conv_relu(wrap: str) -> onnx.ModelProto:
    """x -> Conv(w) -> y -> Relu -> z, with y wrapped as the project's rewrites name it. "qdq": y quantized
    for Relu (QDQQuantizer's names); "fp16": Conv in float16 behind casts (calibration/fp16.py's names);
    "output": y a quantized graph output (QDQQuantizer renames the Conv's output and gives y to the DQ)."""
    w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w")
    scale, zero = numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "zp")
    node = helper.make_node

    def qdq(tensor: str, out: str) -> list:
        return [node("QuantizeLinear", [tensor, "s", "zp"], [f"{tensor}_QuantizeLinear_Output"]),
                node("DequantizeLinear", [f"{tensor}_QuantizeLinear_Output", "s", "zp"], [out])]

    nodes = {"none": [node("Conv", ["x", "w"], ["y"]), node("Relu", ["y"], ["z"])],
             "qdq": [node("Conv", ["x", "w"], ["y"]), *qdq("y", "y_DequantizeLinear_Output"),
                     node("Relu", ["y_DequantizeLinear_Output"], ["z"])],
             "fp16": [node("Cast", ["x"], ["x_fp16"], to=TensorProto.FLOAT16), node("Conv", ["x_fp16", "w"], ["y"]),
                      node("Cast", ["y"], ["conv_output_cast_0"], to=TensorProto.FLOAT),
                      node("Relu", ["conv_output_cast_0"], ["z"])],
             "output": [node("Conv", ["x", "w"], ["y_QuantizeLinear_Input"]), *qdq("y_QuantizeLinear_Input", "y"),
                        node("Relu", ["y"], ["z"])]}[wrap]
    for k, n in enumerate(nodes):
        n.name = f"n{k}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2, 2, 2])], [w, scale, zero])
    return helper.make_model(graph)


@pytest.mark.parametrize("wrap, seen_through", [("none", []), ("qdq", []), ("fp16", []),
                                                ("output", ["DequantizeLinear", "QuantizeLinear"])])
def test_cast_and_qdq_wrappers_map_back_to_the_tensor_they_wrap(wrap, seen_through):
    matched = match_tensors(_conv_relu("none"), _conv_relu(wrap))
    pairs = {p.name: p for p in matched.pairs}
    # the wrappers (x_fp16, y_QuantizeLinear_Output, y_DequantizeLinear_Output, conv_output_cast_0) are no rows
    assert list(pairs) == ["y", "z"] and not matched.not_in_artifact
    assert pairs["y"].artifact == "y" and pairs["y"].seen_through == seen_through and pairs["z"].seen_through == []
    assert pairs["z"].inputs == ["y"] and (pairs["y"].depth, pairs["z"].depth) == (1, 2)
