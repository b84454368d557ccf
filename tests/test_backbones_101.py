"""ResNet-101-FPN and ResNeXt-101-32x8d-FPN for this project's own models: shapes, strides, one training step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from maskrcnn_deploy.model.backbone import ResNetBody
from maskrcnn_deploy.model.checkpoint_sources import map_detectron2_key
from maskrcnn_deploy.model.config import resnet101_fpn, resnext101_32x8d_fpn
from maskrcnn_deploy.model.mask_rcnn import MaskRCNN

import detectron2_golden as golden
from seeded_models import two_images, two_object_targets

PRESETS = {"R101-FPN": (resnet101_fpn, torchvision.models.resnet101),
           "X101-32x8d-FPN": (resnext101_32x8d_fpn, torchvision.models.resnext101_32x8d)}


def _body(config) -> ResNetBody:
    """The ResNet body a config builds (without the FPN and heads, to keep the test quick)."""
    return ResNetBody(config.backbone_depth, config.norm, config.norm_eps, config.block_groups,
                      config.block_width_per_group, config.stride_in_1x1)


@pytest.mark.parametrize("name", PRESETS)
def test_body_has_torchvisions_and_detectron2s_parameter_shapes(name):
    preset, tv_builder = PRESETS[name]
    body = _body(preset(3, norm="bn")).state_dict()
    tv = {k: tuple(v.shape) for k, v in tv_builder(weights=None).state_dict().items() if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in body.items()} == tv
    # Detectron2 has no num_batches_tracked (FrozenBN) and names everything else differently
    d2 = {map_detectron2_key(k): tuple(s) for k, s in golden.keys(name).items()}
    d2_body = {k[len("backbone.body."):]: s for k, s in d2.items() if k.startswith("backbone.body.")}
    assert d2_body == {k: s for k, s in tv.items() if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("name", PRESETS)
def test_stride_placement(name):
    preset = PRESETS[name][0]
    for stride_in_1x1 in (False, True):
        block = _body(preset(3, stride_in_1x1=stride_in_1x1)).layer2[0]
        assert block.conv1.stride == ((2, 2) if stride_in_1x1 else (1, 1))
        assert block.conv2.stride == ((1, 1) if stride_in_1x1 else (2, 2))
        assert block.conv2.groups == (32 if name.startswith("X") else 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_trains_one_step_and_infers_at_small_size(name):
    torch.manual_seed(0)
    cfg = PRESETS[name][0](3, min_size=(96, 112), max_size=144, rpn_post_nms_top_n_train=200,
                           box_batch_size_per_image=32)
    model = MaskRCNN(cfg).train()
    images = two_images()
    targets = two_object_targets(images)
    losses = model(images, targets)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    params = dict(model.named_parameters())
    for key in ("backbone.body.conv1.weight", "backbone.body.layer3.22.conv2.weight",
                "backbone.body.layer4.2.conv3.weight", "backbone.fpn.inner_blocks.3.0.weight",
                "roi_heads.box_head.fc6.weight"):
        assert params[key].grad is not None and params[key].grad.abs().sum() > 0, key
    before = params["backbone.body.layer3.22.conv2.weight"].detach().clone()
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    assert not torch.equal(before, params["backbone.body.layer3.22.conv2.weight"])
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert out[0]["masks"].shape[1:] == (1, 120, 150) and out[1]["masks"].shape[1:] == (1, 100, 90)
    conv = sum(p.numel() for p in model.backbone.body.parameters() if p.dim() == 4)
    assert conv == sum(int(np.prod(s)) for k, s in golden.keys(name).items()
                       if k.startswith("backbone.bottom_up.") and len(s) == 4)
