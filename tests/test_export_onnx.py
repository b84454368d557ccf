"""ONNX export (both RoIAlign flavours), ONNX Runtime backend and PyTorch parity.

Models: the seeded ResNet-18-FPNs of tests/conftest.py (`small_r18`: custom op static and dynamic, standard ops
static; `small_heads_r18`: standard ops with a dynamic batch and size, the graph tests/test_triton_package.py
serves). ResNet-50-FPN with torchvision-format weights keeps parity in both flavours in
tests/test_static_canvas.py. Images: synthetic scenes. Sizes are small so the suite stays fast;
bench/onnx_runtime_speed.py runs the 800x1344 shapes.
"""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import pytest
import torch

from maskrcnn_deploy.export.deploy_model import DeployMaskRCNN
from maskrcnn_deploy.export.onnx_export import ExportError, ExportOptions, export_checkpoint, verify_onnx
from maskrcnn_deploy.export.preprocess import ImageFitError
from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset
from maskrcnn_deploy.runtime import load, parity
from maskrcnn_deploy.runtime.backend.pytorch import DeployTorchPredictor
from maskrcnn_deploy.runtime.cli import main
from maskrcnn_deploy.runtime.predictor import PredictorError

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    paths = make_synthetic_dataset(out, num_train=1, num_val=4, seed=3, image_size=(150, 190))
    coco = json.loads(open(paths["val"]).read())
    images = [out / "val" / im["file_name"] for im in coco["images"]]
    return paths["val"], images


@pytest.fixture(scope="module")
def checkpoints(small_r18, small_heads_r18):
    return {"r18": small_r18.checkpoint, "r18_heads": small_heads_r18.checkpoint}  # tests/conftest.py


@pytest.fixture(scope="module")
def exported(small_r18, small_heads_r18):
    """The graphs, shared with other test files (tests/conftest.py exports each once per session)."""
    files = {("r18", flavour, dynamic): small_r18.graph(flavour, dynamic)
             for flavour, dynamic in (("custom", False), ("standard", False), ("custom", True))}
    files[("r18_heads", "standard", True)] = small_heads_r18.graph("standard", dynamic=True)
    return files


def test_deploy_graph_reproduces_the_eager_model(checkpoints, data):
    """The fixed-shape deploy graph gives MaskRCNN's detections (before any export)."""
    from maskrcnn_deploy.model.data.coco import load_image
    from maskrcnn_deploy.runtime.backend.pytorch import EagerPredictor

    images = [load_image(p) for p in data[1][:2]]
    eager = EagerPredictor(checkpoints["r18"]).predict(images)
    deploy = DeployTorchPredictor(checkpoints["r18"]).predict(images)
    for e, d in zip(eager, deploy):
        assert len(e["scores"]) == len(d["scores"]) > 0
        assert np.abs(e["boxes"] - d["boxes"]).max() < 1e-3
        assert np.array_equal(e["labels"], d["labels"])


def test_custom_node_is_the_documented_contract(exported):
    model = onnx.load(str(exported[("r18", "custom", False)]))
    nodes = [n for n in model.graph.node if n.domain == "maskrcnn_deploy"]
    assert [n.op_type for n in nodes] == ["MultiLevelRoIAlign", "MultiLevelRoIAlign"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs["spatial_scales"] == [0.25, 0.125, 0.0625, 0.03125]
    assert (attrs["output_height"], attrs["sampling_ratio"], attrs["aligned"], attrs["canonical_level"]) == (7, 2, 0, 4)
    assert attrs["canonical_scale"] == 224.0 and attrs["mode"] == b"avg"
    assert {a.type for a in nodes[0].attribute} <= {onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT,
                                                    onnx.AttributeProto.FLOATS, onnx.AttributeProto.STRING}
    assert len(nodes[0].input) == 6  # rois, P2..P5, extents (each image's padded extent: docs/ops.md)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops["NonMaxSuppression"] == 2 and ops["RoiAlign"] == 0
    outputs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert outputs == {"boxes": [1, 100, 4], "scores": [1, 100], "labels": [1, 100], "masks": [1, 100, 28, 28],
                       "num_detections": [1]}


def test_standard_flavour_uses_only_standard_ops(exported):
    model = onnx.load(str(exported[("r18", "standard", False)]))
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    # 4 levels x (box head, mask head) x (rois inside their image's extent, rois that may sample past it)
    assert ops["RoiAlign"] == 16 and ops["ReduceMean"] == 8
    modes = {onnx.helper.get_attribute_value(a) for n in model.graph.node if n.op_type == "RoiAlign"
             for a in n.attribute if a.name == "coordinate_transformation_mode"}
    assert modes == {b"output_half_pixel"}  # aligned=False, as torchvision's checkpoints
    fine = {onnx.helper.get_attribute_value(a) for n in model.graph.node if n.op_type == "RoiAlign"
            for a in n.attribute if a.name == "output_height"}
    assert fine == {7, 14, 28}  # box head 7 (14 sampled finely), mask head 14 (28)
    verify_onnx(exported[("r18", "standard", False)])


def _ap(detections, coco_json):
    """COCO AP of seeded-random models on the synthetic split (labels 1..3 stand for categories 1..3)."""
    from maskrcnn_deploy.model.evaluation import detections_to_coco_results, evaluate_coco

    coco = json.loads(open(coco_json).read())
    ids = [im["id"] for im in coco["images"]]
    results = [r for i, d in zip(ids, detections) for r in detections_to_coco_results(i, d, list(range(NUM_CLASSES)))]
    return evaluate_coco(coco_json, results, image_ids=ids)


@pytest.mark.parametrize("key", [("r18", "custom", False), ("r18", "standard", False), ("r18", "custom", True),
                                 ("r18_heads", "standard", True)])
def test_onnxruntime_matches_pytorch(key, checkpoints, exported, data):
    artifact = load(exported[key])
    reference = load(checkpoints[key[0]], fit=artifact.fit)  # the eager model, resized as the graph does
    images = data[1]
    ref, test = reference.predict(images), artifact.predict(images)
    report = parity.check_parity(ref, test, parity.tolerances_from("fp32"), ref_ap=_ap(ref, data[0]),
                                 test_ap=_ap(test, data[0]))
    assert report.passed, report.failures
    assert abs(report.ap_delta["segm"]["AP"]) <= 0.001 and report.ap_ref["segm"]["AP"] >= 0
    assert report.ref_detections > 0 and report.matched == report.ref_detections
    if key[2]:  # dynamic graph: a second input size on the same graph
        from maskrcnn_deploy.model.data.coco import load_image
        small = [torch.nn.functional.interpolate(load_image(p)[None], scale_factor=0.7)[0] for p in images[:2]]
        report = parity.check_parity(reference.predict(small), artifact.predict(small), parity.tolerances_from("fp32"))
        assert report.passed, report.failures


def test_check_cli_reports_and_exits(checkpoints, exported, data, tmp_path, capsys):
    report = tmp_path / "report.json"
    code = main(["check", str(checkpoints["r18"]), str(exported[("r18", "custom", False)]), "--data", str(data[0]),
                 "--report", str(report), "--histogram", str(tmp_path / "hist.png")])
    out = capsys.readouterr().out
    assert code == 0 and "PASS" in out
    content = json.loads(report.read_text())
    assert content["passed"] is True
    # a deliberately impossible tolerance fails with exit code 1
    code = main(["check", str(checkpoints["r18"]), str(exported[("r18", "custom", False)]), "--data", str(data[0]),
                 "--set", "max_box_error_px=-1"])
    assert code == 1 and "FAIL" in capsys.readouterr().out


def test_export_refuses_what_it_cannot_export(checkpoints, tmp_path, capsys):
    with pytest.raises(ExportError, match="opset 11 is not supported"):
        export_checkpoint(checkpoints["r18"], tmp_path / "m.onnx", ExportOptions(opset=11))
    with pytest.raises(ExportError, match="has 4 classes .* not 91"):
        export_checkpoint(checkpoints["r18"], tmp_path / "m.onnx", num_classes=91)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["export", str(bad), "-o", str(tmp_path / "m.onnx")]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(PredictorError, match="cannot tell the backend"):
        load(tmp_path / "model.xyz")


def test_static_graph_fits_a_tall_image_and_refuses_only_a_thin_one(exported):
    artifact = load(exported[("r18", "custom", False)])
    tall = torch.rand(3, 400, 100)  # torchvision's rule: 160 x 40, taller than the 128-high input; fitted: 128 x 32
    assert artifact.fit.resized_size(400, 100) == (128, 32)
    assert artifact.predict([tall])[0]["masks"].shape[1:] == (400, 100)
    with pytest.raises(ImageFitError, match="a 1000x1 image is too thin for this model: it does not fit"):
        artifact.predict([torch.rand(3, 1, 1000)])


def test_the_graph_optimizer_gives_torchs_optimized_graph(checkpoints, tmp_path, monkeypatch):
    """export/graph_optimizer.py runs onnxscript's optimizer without its SlicesSplit rule (quadratic in the graph's
    size: most of an export's time). The graph written is the one `ONNXProgram.optimize()` (what
    torch.onnx.export(optimize=True) runs) makes of the same trace, node for node."""
    import onnx_ir as ir

    from maskrcnn_deploy.export.graph_optimizer import SKIPPED_RULES

    traced = []
    real_export = torch.onnx.export

    def export(*args, **kwargs):
        assert kwargs["optimize"] is False  # the exporter's own optimizer is not run
        program = real_export(*args, **kwargs)
        traced.append((program, ir.serde.serialize_model(program.model)))
        return program

    monkeypatch.setattr(torch.onnx, "export", export)
    ours = export_checkpoint(checkpoints["r18"], tmp_path / "m.onnx", ExportOptions(roi_align="custom"))
    program, before = traced[0]
    program.model = ir.serde.deserialize_model(before)
    program.optimize()  # torch's, with every rule
    stock = program.model_proto
    assert SKIPPED_RULES == ("SlicesSplit",) and len(stock.graph.node) > 1000
    assert _canonical(ours.graph) == _canonical(stock.graph)


def _canonical(graph: onnx.GraphProto) -> tuple:
    """The graph with every value renamed by first use (the round trip through onnx_ir above renumbers the
    constants' names): inputs, each node's op, attributes and wiring, the initializers' bytes, the outputs."""
    names: dict[str, str] = {}

    def name(value: str) -> str:
        return names.setdefault(value, f"v{len(names)}") if value else ""

    inputs = [name(i.name) for i in graph.input]
    nodes = [(n.domain, n.op_type, [name(v) for v in n.input], [name(v) for v in n.output],
              [a.SerializeToString() for a in n.attribute]) for n in graph.node]
    initializers = sorted((name(t.name), onnx.numpy_helper.to_array(t).tobytes()) for t in graph.initializer)
    return inputs, nodes, initializers, [name(o.name) for o in graph.output]


def test_export_switches_a_training_model_to_eval(checkpoints, tmp_path, capsys, monkeypatch):
    """What is traced is in eval mode (the trace itself is stopped: the other tests export whole graphs)."""
    from maskrcnn_deploy.export.onnx_export import export_onnx
    from maskrcnn_deploy.model.checkpoint import load_checkpoint

    class Traced(Exception):
        pass

    def trace(deploy, *args, **kwargs):
        modes = {name or "deploy": module.training for name, module in deploy.named_modules()}
        raise Traced(modes)

    model, _, _ = load_checkpoint(checkpoints["r18"])
    model.train()
    monkeypatch.setattr(torch.onnx, "export", trace)
    with pytest.raises(Traced) as traced:
        export_onnx(model, tmp_path / "m.onnx")
    modes = traced.value.args[0]
    assert "exporting it in eval mode" in capsys.readouterr().out
    assert len(modes) > 100 and not any(modes.values()) and not model.training
    assert isinstance(DeployMaskRCNN(model), torch.nn.Module)
