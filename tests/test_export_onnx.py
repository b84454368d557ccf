"""ONNX export (both RoIAlign flavours), ONNX Runtime backend and PyTorch parity.

Models: ResNet-18-FPN (seeded) and ResNet-50-FPN with seeded torchvision weights loaded through
`load_torchvision_state_dict`. Images: synthetic scenes. Sizes are small so the suite stays fast;
bench/onnx_runtime_speed.py runs the 800x1344 shapes.
"""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import pytest
import torch
import torchvision

from maskrcnn_deploy.export.deploy_model import DeployMaskRCNN
from maskrcnn_deploy.export.onnx_export import ExportError, ExportOptions, export_checkpoint, verify_onnx
from maskrcnn_deploy.export.preprocess import ImageFitError
from maskrcnn_deploy.model.checkpoint import load_torchvision_state_dict, save_checkpoint
from maskrcnn_deploy.model.config import torchvision_v1
from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset
from maskrcnn_deploy.model.mask_rcnn import MaskRCNN
from maskrcnn_deploy.runtime import load, parity
from maskrcnn_deploy.runtime.backend.pytorch import DeployTorchPredictor
from maskrcnn_deploy.runtime.cli import main
from maskrcnn_deploy.runtime.predictor import PredictorError

from seeded_models import make_masks_confident

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    paths = make_synthetic_dataset(out, num_train=1, num_val=4, seed=3, image_size=(150, 190))
    coco = json.loads(open(paths["val"]).read())
    images = [out / "val" / im["file_name"] for im in coco["images"]]
    return paths["val"], images


def _r50_checkpoint(path):
    torch.manual_seed(1)
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                            num_classes=NUM_CLASSES)
    cfg = torchvision_v1(NUM_CLASSES, min_size=192, max_size=256, box_score_thresh=0.05)
    model = MaskRCNN(cfg)
    load_torchvision_state_dict(model, tv.state_dict())
    save_checkpoint(path, make_masks_confident(model), cfg)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, small_r18):
    root = tmp_path_factory.mktemp("ckpt")
    return {"r18": small_r18.checkpoint, "r50": _r50_checkpoint(root / "r50.pt")}  # r18: tests/conftest.py


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory, small_r18):
    root = tmp_path_factory.mktemp("onnx")
    files = {}
    for flavour, dynamic in (("custom", False), ("standard", False), ("custom", True)):
        files[("r18", flavour, dynamic)] = small_r18.graph(flavour, dynamic)  # shared with other test files
    for flavour, dynamic in (("custom", False), ("standard", True)):
        path = root / f"r50_{flavour}_{'dynamic' if dynamic else 'static'}.onnx"
        export_checkpoint(checkpoints["r50"], path, ExportOptions(roi_align=flavour, dynamic=dynamic))
        files[("r50", flavour, dynamic)] = path
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
                                 ("r50", "custom", False), ("r50", "standard", True)])
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


def test_export_switches_a_training_model_to_eval(checkpoints, tmp_path, capsys):
    from maskrcnn_deploy.export.onnx_export import export_onnx
    from maskrcnn_deploy.model.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(checkpoints["r18"])
    model.train()
    export_onnx(model, tmp_path / "m.onnx")
    assert "exporting it in eval mode" in capsys.readouterr().out
    assert not model.training
    assert isinstance(DeployMaskRCNN(model), torch.nn.Module)
