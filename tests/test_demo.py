"""`maskrcnn-deploy demo` end to end at toy size: every step runs (data, export in both flavours, float16
and INT8 graphs, a check of each against PyTorch), the table, JSON and HTML agree, TensorRT rows are
skipped with the reason, and a second run reuses every artifact.

The trained model is replaced by a seeded random one placed where the demo looks for its checkpoint
(training has its own tests), with the demo's model recipe (a square 128x128 input, which the exported
graph's static input equals, so PyTorch and the graph see the same padding); its mask logits are scaled
so masks are confident, as a trained model's are."""

from __future__ import annotations

import importlib.util
import json

import pytest

from maskrcnn_deploy.model.checkpoint import save_checkpoint
from maskrcnn_deploy.model.data.coco import CocoDetectionDataset
from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset
from maskrcnn_deploy.model.train import synthetic_model_config
from maskrcnn_deploy.runtime.cli import main
from maskrcnn_deploy.runtime.demo import COLUMNS

from seeded_models import seeded_model

DEMO_ARGS = ["--train-images", "2", "--val-images", "3", "--calibration-images", "2", "--threads", "2"]
# with OpenVINO installed the demo adds its rows: the standard-ops graph and its CPU INT8 flavour
OPENVINO_ROWS = [("openvino", "fp32", "standard ops"), ("openvino", "int8", "standard ops, CPU INT8")] \
    if importlib.util.find_spec("openvino") else []


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    paths = make_synthetic_dataset(out / "data", num_train=2, num_val=3, seed=0, image_size=(256, 256))
    dataset = CocoDetectionDataset(paths["train"])
    config = synthetic_model_config(dataset.num_classes, box_score_thresh=0.05)  # the demo's own recipe
    save_checkpoint(out / "model" / "model_final.pt", seeded_model(config), config, class_names=dataset.class_names,
                    category_ids=dataset.category_ids)
    code = main(["demo", "--out", str(out)] + DEMO_ARGS)
    return out, code


def test_demo_runs_every_step_and_writes_one_table(demo_run, capsys):
    out, code = demo_run
    summary = json.loads((out / "demo.json").read_text())
    assert summary["schema"] == {"name": "maskrcnn-deploy.demo", "version": 1}
    rows = summary["rows"]
    assert [(r["backend"], r["precision"], r["graph"]) for r in rows] == [
        ("pytorch", "fp32", "checkpoint"), ("onnxruntime", "fp32", "custom op"), ("onnxruntime", "fp32", "standard ops"),
        ("onnxruntime", "fp16", "custom op"), ("onnxruntime", "int8", "custom op"), *OPENVINO_ROWS,
        ("tensorrt", "fp32", "engine"), ("tensorrt", "fp16", "engine"), ("tensorrt", "int8", "engine")]
    reference = rows[0]
    assert reference["parity"] == "reference" and reference["speedup"] == 1.0 and reference["median_ms"] > 0
    ran = rows[1:5 + len(OPENVINO_ROWS)]
    for row in ran:
        assert row["parity"] in ("PASS", "FAIL") and (out / row["report"]).is_file()
        assert (out / row["report"]).with_suffix(".json").is_file()
        assert row["median_ms"] > 0 and row["speedup"] == pytest.approx(reference["median_ms"] / row["median_ms"],
                                                                       abs=0.01)
        assert row["segm_ap_drop"] == pytest.approx(reference["segm_ap"] - row["segm_ap"], abs=0.011)
    # float32 ONNX Runtime (and OpenVINO) runs the same graph as PyTorch: parity holds and AP is equal
    for row in rows[1:3] + rows[5:6] * bool(OPENVINO_ROWS):
        assert row["parity"] == "PASS", row["failures"]
        assert abs(row["segm_ap_drop"]) <= 0.5
    assert code == (1 if any(r["parity"] == "FAIL" for r in rows) else 0)
    for row in rows[5 + len(OPENVINO_ROWS):]:  # no TensorRT on CI machines
        assert row["parity"] == "skipped" and row["note"] and row["median_ms"] is None
    html = (out / "demo.html").read_text()
    assert all(column in html for column in COLUMNS) and "checks/onnxruntime_int8.html" in html
    if OPENVINO_ROWS:
        assert "checks/openvino_fp32_standard.html" in html and "checks/openvino_int8_standard.html" in html


def test_demo_prints_the_table_and_reuses_artifacts_on_a_second_run(demo_run, capsys):
    out, _ = demo_run
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("model*.onnx")}
    assert set(stamps) == {"model.onnx", "model.standard.onnx", "model.fp16.onnx", "model.int8.onnx",
                           *(["model.cpu-int8.onnx"] if OPENVINO_ROWS else [])}
    main(["demo", "--out", str(out)] + DEMO_ARGS)
    printed = capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("model*.onnx")} == stamps  # nothing rebuilt
    assert "reusing trained model" in printed and "reusing dataset" in printed
    header = [line for line in printed.splitlines() if line.startswith("backend")]
    assert len(header) == 1 and header[0].split() == ["backend", "precision", "graph", "bbox", "AP", "segm", "AP",
                                                      "AP", "drop", "parity", "median", "ms", "speed-up"]
    assert "tensorrt fp32: " in printed  # the skip reason, under the table
