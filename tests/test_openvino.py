"""The OpenVINO backend (issue 22): `--backend openvino` runs the standard-ops graph and computes what ONNX Runtime
computes (runtime/backend/openvino.py). Each op-level test runs a tiny hand-built ONNX graph in both runtimes and
fails on one of the differences the backend removes: bf16 inference, unstable TopK ties, NMS at IoU == threshold.
The end-to-end tests check OpenVINO against ONNX Runtime and against the PyTorch model with the fp32 preset.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

ov = pytest.importorskip("openvino")

from maskrcnn_deploy.common.errors import MissingExtraError  # noqa: E402
from maskrcnn_deploy.plugins.op_spec import DOMAIN, OP_TYPE  # noqa: E402
from maskrcnn_deploy.runtime import cli  # noqa: E402
from maskrcnn_deploy.runtime.backend.openvino import compile_model, match_onnx_semantics  # noqa: E402
from maskrcnn_deploy.runtime.cli.exit_codes import (  # noqa: E402
    EXIT_BACKEND_UNAVAILABLE,
    EXIT_BAD_INPUT,
    EXIT_OK,
)
from maskrcnn_deploy.runtime.load import load  # noqa: E402
from maskrcnn_deploy.runtime.predictor import PredictorError  # noqa: E402

NUM_CLASSES = 4


def _graph(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "probe", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _both(model: onnx.ModelProto, feeds: dict, tmp_path) -> tuple[list, list]:
    """(ONNX Runtime's outputs, the OpenVINO backend's outputs) of `model` on `feeds`."""
    import onnxruntime as ort

    path = tmp_path / "probe.onnx"
    onnx.save(model, str(path))
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    ov_model = match_onnx_semantics(ov.Core().read_model(str(path)))
    got = compile_model(ov_model, threads=1).create_infer_request().infer(feeds)
    return expected, [np.asarray(v) for v in got.values()]


def test_nms_keeps_a_box_at_iou_exactly_the_threshold(tmp_path):
    """ONNX (reference implementation), ONNX Runtime and torchvision suppress only above the threshold; OpenVINO's
    NMS also at it: without the raised threshold OpenVINO selects one box here, not two."""
    nms = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "score_min"], ["selected"])
    model = _graph([nms], [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 2, 4]),
                           helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 2])],
                   [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])],
                   [helper.make_tensor("max_out", TensorProto.INT64, [1], [10]),
                    helper.make_tensor("iou", TensorProto.FLOAT, [1], [0.5]),
                    helper.make_tensor("score_min", TensorProto.FLOAT, [1], [0.0])])
    boxes = np.array([[[0, 0, 1, 2], [0, 0, 1, 1]]], np.float32)  # intersection 1, union 2: IoU 0.5 exactly
    feeds = {"boxes": boxes, "scores": np.array([[[0.9, 0.8]]], np.float32)}
    expected, got = _both(model, feeds, tmp_path)
    assert expected[0].tolist() == [[0, 0, 0], [0, 0, 1]]
    assert got[0].tolist() == expected[0].tolist()


def test_topk_breaks_ties_lowest_index_first(tmp_path):
    """Many tied values: ONNX Runtime returns tied values lowest index first; OpenVINO's imported TopK is unstable."""
    topk = helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=1)
    model = _graph([topk], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4000])],
                   [helper.make_tensor_value_info("values", TensorProto.FLOAT, [1, 1000]),
                    helper.make_tensor_value_info("indices", TensorProto.INT64, [1, 1000])],
                   [helper.make_tensor("k", TensorProto.INT64, [1], [1000])])
    x = (np.random.default_rng(0).integers(0, 20, (1, 4000)) / 20).astype(np.float32)
    expected, got = _both(model, {"x": x}, tmp_path)
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("shape, k, axis, largest", [((2, 30000), 3000, 1, 1), ((3, 1000), 100, 1, 0),
                                                     ((700, 2), 50, 0, 1), ((1, 5000), 5000, -1, 1), ((4, 33), 1, 1, 0)])
def test_topk_from_unstable_topks_is_onnx_topk(shape, k, axis, largest, tmp_path):
    """The backend rebuilds each TopK from unstable TopKs over unique keys (runtime/backend/openvino_topk.py): the
    same values and indices as ONNX Runtime, bit for bit, with ties (values 0..19 and -inf), mode min, axis 0, k = n
    and k = 1."""
    topk = helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=axis, largest=largest)
    out_shape = list(shape)
    out_shape[axis] = k
    model = _graph([topk], [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                   [helper.make_tensor_value_info("values", TensorProto.FLOAT, out_shape),
                    helper.make_tensor_value_info("indices", TensorProto.INT64, out_shape)],
                   [helper.make_tensor("k", TensorProto.INT64, [1], [k])])
    rng = np.random.default_rng(k)
    x = rng.integers(0, 20, shape).astype(np.float32)
    x[rng.random(shape) < 0.1] = -np.inf
    onnx.save(model, str(tmp_path / "topk.onnx"))
    rewritten = match_onnx_semantics(ov.Core().read_model(str(tmp_path / "topk.onnx")))
    kinds = [op.get_type_name() for op in rewritten.get_ops()]
    assert kinds.count("TopK") == 4 and not any(op.get_attributes().get("stable") for op in rewritten.get_ops()
                                                if op.get_type_name() == "TopK")
    expected, got = _both(model, {"x": x}, tmp_path)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])


def test_topk_with_a_computed_k_stays_openvinos_stable_topk(tmp_path):
    """k from the graph (not a constant): no int32 key bound can be proven, so the backend keeps OpenVINO's
    `stable=True`, still ONNX's answer."""
    topk = helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=1)
    model = _graph([topk], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 500]),
                            helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
                   [helper.make_tensor_value_info("values", TensorProto.FLOAT, [1, None]),
                    helper.make_tensor_value_info("indices", TensorProto.INT64, [1, None])])
    x = (np.random.default_rng(2).integers(0, 5, (1, 500))).astype(np.float32)
    expected, got = _both(model, {"x": x, "k": np.array([120], np.int64)}, tmp_path)
    np.testing.assert_array_equal(got[1], expected[1])


def test_float32_graphs_run_in_float32(tmp_path):
    """The CPU plugin's default runs float32 in bf16 where the CPU has it (8 bits of mantissa): a MatMul then
    misses ONNX Runtime's float32 result by ~1e-2 relative. The backend compiles with the f32 precision hint."""
    matmul = helper.make_node("MatMul", ["a", "b"], ["c"])
    rng = np.random.default_rng(1)
    b = rng.normal(size=(256, 64)).astype(np.float32)
    model = _graph([matmul], [helper.make_tensor_value_info("a", TensorProto.FLOAT, [8, 256])],
                   [helper.make_tensor_value_info("c", TensorProto.FLOAT, [8, 64])],
                   [onnx.numpy_helper.from_array(b, "b")])
    a = rng.normal(size=(8, 256)).astype(np.float32)
    expected, got = _both(model, {"a": a}, tmp_path)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-4, atol=1e-4)


def test_a_custom_op_graph_is_refused_in_one_line(tmp_path):
    node = helper.make_node(OP_TYPE, ["rois", "p2", "p3", "p4", "p5"], ["pooled"], domain=DOMAIN)
    model = _graph([node], [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                            for n in ("rois", "p2", "p3", "p4", "p5")],
                   [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    with pytest.raises(PredictorError, match="--roi-align standard"):
        load(path, backend="openvino")
    image = tmp_path / "x.png"
    from PIL import Image
    Image.new("RGB", (8, 8)).save(image)
    assert cli.main(["predict", str(path), str(image), "--out", str(tmp_path / "out"), "--backend", "openvino"]) \
        == EXIT_BAD_INPUT


def test_openvino_runs_only_onnx_graphs(tmp_path):
    with pytest.raises(PredictorError, match="runs .onnx graphs"):
        load(tmp_path / "model.pt", backend="openvino")


def test_missing_openvino_exits_3(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails as if it were not installed
    with pytest.raises(MissingExtraError, match=r"maskrcnn-deploy\[openvino\]"):
        load(tmp_path / "model.onnx", backend="openvino")
    image = tmp_path / "x.png"
    from PIL import Image
    Image.new("RGB", (8, 8)).save(image)
    code = cli.main(["predict", str(tmp_path / "model.onnx"), str(image), "--out", str(tmp_path / "o"),
                     "--backend", "openvino"])
    assert code == EXIT_BACKEND_UNAVAILABLE and "[openvino]" in capsys.readouterr().err


# ------------------------------------------------------------------------------ a seeded model, end to end
@pytest.fixture(scope="module")
def made(cpu_r18, tmp_path_factory):
    """The shared seeded R18-FPN checkpoint with confident masks and its standard-ops graph (tests/conftest.py
    `cpu_r18`, also tests/test_cpu_int8.py's model), two synthetic scenes (a folder, and a COCO json of the
    checkpoint's own top detections: AP well above 0) and the mixed-aspect photos."""
    from photos import write_mixed_photos
    from seeded_models import pseudo_ground_truth

    root = tmp_path_factory.mktemp("openvino")
    scenes = Path(shutil.copytree(cpu_r18["scenes"], root / "val"))  # the pseudo ground truth lies beside it
    gt = pseudo_ground_truth(cpu_r18["ckpt"], sorted(scenes.glob("*.png")), root / "val_pseudo.json",
                             NUM_CLASSES)
    return {"ckpt": cpu_r18["ckpt"], "graph": cpu_r18["graph"], "scenes": scenes, "gt": gt,
            "photos": write_mixed_photos(root / "photos")[0].parent}


def test_check_openvino_against_onnxruntime_passes_fp32_on_mixed_aspect_photos(made):
    """The same graph in both runtimes: float32 rounding apart (bf16 alone moved boxes by pixels)."""
    from maskrcnn_deploy.runtime import parity
    from maskrcnn_deploy.runtime.check import run_check

    checked = run_check(made["graph"], made["graph"], made["photos"], parity.tolerances_from("fp32"), threads=2,
                        backend="openvino")
    report = checked.report.to_dict()
    assert (checked.reference.backend, checked.artifact.backend) == ("onnxruntime", "openvino")
    assert checked.report.passed, report["failures"]
    assert report["detections"]["reference"] > 0 and report["match_fraction"] == {"reference": 1.0, "test": 1.0}
    assert report["raw"]["num_detections_mismatch"] == 0 and report["raw"]["max_box_error"] < 1e-3


def test_check_openvino_against_pytorch_passes_fp32_on_synthetic_scenes(made, capsys):
    code = cli.main(["check", str(made["ckpt"]), str(made["graph"]), "--data", str(made["scenes"]), "--backend",
                     "openvino", "--tolerance", "fp32", "--threads", "2"])
    captured = capsys.readouterr()
    assert code == EXIT_OK and "PASS" in captured.out, captured.out[-2000:]
    assert "artifact (openvino)" in captured.err  # the progress line names the backend that ran


def test_bench_runs_one_graph_in_both_runtimes(made, tmp_path, capsys):
    code = cli.main(["bench", str(made["graph"]), str(made["graph"]), "--backend", "onnxruntime", "--backend",
                     "openvino", "--data", str(made["scenes"]), "--max-images", "1", "--warmup", "0",
                     "--iterations", "1", "--threads", "2"])
    rows = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("r18_standard")]
    assert code == EXIT_OK and rows == ["onnxruntime", "openvino"]
    assert cli.main(["bench", str(made["graph"]), "--backend", "openvino", "--backend", "openvino", "--data",
                     str(made["scenes"])]) == EXIT_BAD_INPUT


def test_the_int8_budget_evaluator_scores_graphs_in_openvino(made):
    """`calibrate --eval-data --backend openvino` scores candidates with graph_evaluator(threads, "openvino"): on the
    float32 graph it gives ONNX Runtime's AP."""
    from maskrcnn_deploy.calibration.budget import EvalSet
    from maskrcnn_deploy.runtime.evaluate import graph_evaluator

    evalset, model = EvalSet.from_data(made["gt"]), onnx.load(str(made["graph"]))
    in_openvino = graph_evaluator(2, "openvino")(model, evalset)
    assert in_openvino == graph_evaluator(2)(model, evalset) and in_openvino["segm"] > 20
