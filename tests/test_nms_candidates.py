"""The box-head NMS of the deploy graph takes at most NMS_MAX_CANDIDATES (5000) score-sorted candidates,
TensorRT's INMSLayer limit (NvInfer.h), so ONNX Runtime and TensorRT compute the same detections.

A seeded model with 7 classes and 1000 proposals has 1000 x 6 = 6000 box-head candidates, every one above
the score threshold (a random model's softmax is near 1/7 everywhere)."""

from __future__ import annotations

import onnx
import pytest
import torch

from maskrcnn_deploy.export import deploy_model
from maskrcnn_deploy.export.deploy_model import NMS_MAX_CANDIDATES, DeployMaskRCNN
from maskrcnn_deploy.export.onnx_export import ExportOptions, export_checkpoint
from maskrcnn_deploy.model.checkpoint import save_checkpoint
from maskrcnn_deploy.model.config import resnet18_fpn

from seeded_models import seeded_model

CONFIG = dict(norm="bn", min_size=128, max_size=160, fpn_channels=32, mask_head_channels=32, box_fc_dim=64,
              detections_per_img=20, rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000)
NUM_CLASSES = 7


@pytest.fixture(scope="module")
def model():
    return seeded_model(resnet18_fpn(NUM_CLASSES, **CONFIG)).eval()


def _nms_box_counts(path) -> list[int]:
    """The number of boxes per image each NonMaxSuppression node of an ONNX graph receives."""
    from maskrcnn_deploy.export.onnx_ops import register_schema

    register_schema()
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.value_info}
    return [dims[node.input[0]][1] for node in graph.node if node.op_type == "NonMaxSuppression"]


def test_every_nms_of_the_exported_graph_takes_at_most_5000_boxes(model, tmp_path):
    cfg = model.config
    assert cfg.rpn_post_nms_top_n_test * (NUM_CLASSES - 1) > NMS_MAX_CANDIDATES  # 6000: the cap has work to do
    save_checkpoint(tmp_path / "m.pt", model, cfg)
    export_checkpoint(tmp_path / "m.pt", tmp_path / "m.onnx", ExportOptions())
    counts = _nms_box_counts(tmp_path / "m.onnx")
    assert len(counts) == 2 and counts[-1] == NMS_MAX_CANDIDATES, counts  # RPN, then the box head
    assert max(counts) <= NMS_MAX_CANDIDATES


def test_the_cap_keeps_the_detections_of_the_uncapped_graph(model, monkeypatch):
    # NMS never lets a lower score suppress a higher one, so the kept boxes among the 5000 best are the kept
    # boxes of all; the output (the 20 best kept) is the same while 20 survive among those 5000
    images = torch.rand(1, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    sizes = torch.tensor([[128.0, 160.0]])
    deploy = DeployMaskRCNN(model).eval()
    with torch.no_grad():
        capped = deploy(images, sizes)
        monkeypatch.setattr(deploy_model, "NMS_MAX_CANDIDATES", 10 ** 9)
        uncapped = deploy(images, sizes)
    assert int(capped[4]) == int(uncapped[4]) == CONFIG["detections_per_img"]
    for got, want in zip(capped, uncapped):
        assert torch.equal(got, want)
