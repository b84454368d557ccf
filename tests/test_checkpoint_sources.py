"""Recognising checkpoint files (ours, torchvision v1/v2, Detectron2) and torchvision's BatchNorm flavours."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models.detection import maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from maskrcnn_deploy.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from maskrcnn_deploy.model.config import resnet18_fpn
from maskrcnn_deploy.model.mask_rcnn import MaskRCNN

import detectron2_golden as golden


def _tv_v1(num_classes: int, frozen_eps: float | None = None):
    """torchvision v1: from scratch (BatchNorm2d) or, with frozen_eps, built as its pretrained builders do."""
    if frozen_eps is None:
        return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes).eval()
    body = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    model = torchvision.models.detection.MaskRCNN(_resnet_fpn_extractor(body, 3), num_classes=num_classes).eval()
    overwrite_eps(model, frozen_eps)
    return model


def _randomise_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Small running variances (so eps 0 vs 1e-5 matters: ~5%) with gammas that keep activations in range."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
            n = m.running_var.shape[0]
            m.running_var.copy_(1e-4 * (1 + torch.rand(n, generator=g)))
            m.running_mean.copy_(0.01 * torch.randn(n, generator=g))
            m.weight.data.copy_(m.running_var.sqrt() * (0.5 + torch.rand(n, generator=g)))
            m.bias.data.copy_(0.01 * torch.randn(n, generator=g))


def test_recognises_each_source(tmp_path):
    tv = _tv_v1(4).state_dict()
    for i, payload in enumerate((tv, {"model": tv}, {"state_dict": tv, "epoch": 3})):
        torch.save(payload, tmp_path / f"tv{i}.pth")
        _, cfg, extra = load_checkpoint(tmp_path / f"tv{i}.pth")
        assert extra["source"] == "torchvision-v1" and cfg.num_classes == 4
        assert (cfg.norm, cfg.norm_eps) == ("bn", 1e-5)  # num_batches_tracked: built with BatchNorm2d
    legacy = {k.replace("rpn.head.conv.0.0.", "rpn.head.conv.").replace("mask_head.0.0.", "mask_head.mask_fcn1."): v
              for k, v in tv.items()}  # torchvision's 2019 names (the released COCO_V1 file)
    assert "rpn.head.conv.weight" in legacy and "roi_heads.mask_head.mask_fcn1.weight" in legacy
    torch.save(legacy, tmp_path / "legacy.pth")
    model, cfg, extra = load_checkpoint(tmp_path / "legacy.pth")
    assert extra["source"] == "torchvision-v1" and torch.equal(model.state_dict()["rpn.head.conv.0.0.weight"],
                                                               tv["rpn.head.conv.0.0.weight"])
    torch.save(maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=3).state_dict(),
               tmp_path / "v2.pth")
    _, cfg, extra = load_checkpoint(tmp_path / "v2.pth")
    assert extra["source"] == "torchvision-v2" and cfg.num_classes == 3 and cfg.box_head == "conv4_fc"
    weights = golden.recipe_weights("R50-FPN")
    for path in (golden.write_pkl(tmp_path / "d2.pkl", weights), golden.write_pth(tmp_path / "d2.pth", weights)):
        model, cfg, extra = load_checkpoint(path)
        assert extra["source"] == "detectron2" and cfg.num_classes == 6 and cfg.stride_in_1x1
        assert torch.equal(model.state_dict()["roi_heads.mask_predictor.mask_fcn_logits.weight"],
                           torch.from_numpy(weights["roi_heads.mask_head.predictor.weight"]))
    own = resnet18_fpn(3, min_size=128, max_size=160)
    save_checkpoint(tmp_path / "own.pt", MaskRCNN(own), own)
    assert load_checkpoint(tmp_path / "own.pt")[2]["source"] == "maskrcnn-deploy"


def test_refusals_name_what_was_looked_for_and_the_closest_match(tmp_path):
    torch.save({"roi_heads.box_head.fc1.weight": torch.zeros(2, 2), "head.fc.weight": torch.zeros(2)},
               tmp_path / "odd.pth")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "odd.pth")
    msg = str(err.value)
    assert "\n" not in msg and "looked for" in msg and "closest: detectron2 (1 of 2 keys match)" in msg, msg
    torch.save({"weights": torch.zeros(3)}, tmp_path / "none.pth")
    with pytest.raises(CheckpointError, match="no key matches any"):
        load_checkpoint(tmp_path / "none.pth")
    torch.save(_tv_v1(4).state_dict(), tmp_path / "tv.pth")
    with pytest.raises(CheckpointError, match="unknown checkpoint source 'd2'; use one of maskrcnn-deploy"):
        load_checkpoint(tmp_path / "tv.pth", source="d2")
    with pytest.raises(CheckpointError, match="no Detectron2 ResNet weights"):  # a forced source that does not fit
        load_checkpoint(tmp_path / "tv.pth", source="detectron2")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path / "tv.pth", source="torchvision-v2")


def _features(ours: MaskRCNN, tv) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    x = torch.rand(1, 3, 128, 160, generator=torch.Generator().manual_seed(1)) - 0.5
    with torch.no_grad():
        return ours.backbone(x), list(tv.backbone(x).values())


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.allclose(x, y, rtol=1e-4, atol=1e-4 * float(y.abs().max())) for x, y in zip(a, b))


@pytest.mark.parametrize("flavour", ["batchnorm", "frozen_eps0", "frozen_eps1e-5"])
def test_torchvision_batchnorm_flavours_match_torchvision(tmp_path, flavour):
    """The file tells BatchNorm2d (num_batches_tracked) from FrozenBN; FrozenBN's eps (0 for COCO_V1 weights,
    1e-5 for an ImageNet-only backbone) needs bn_eps. Checked on FPN features against torchvision's model."""
    torch.manual_seed(0)
    frozen_eps = {"batchnorm": None, "frozen_eps0": 0.0, "frozen_eps1e-5": 1e-5}[flavour]
    tv = _tv_v1(3, frozen_eps)
    _randomise_norms(tv)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    bn_eps = 1e-5 if flavour == "frozen_eps1e-5" else None
    ours, cfg, _ = load_checkpoint(tmp_path / "tv.pth", bn_eps=bn_eps)
    assert (cfg.norm, cfg.norm_eps) == {"batchnorm": ("bn", 1e-5), "frozen_eps0": ("frozen_bn", 0.0),
                                        "frozen_eps1e-5": ("frozen_bn", 1e-5)}[flavour]
    assert _same(*_features(ours, tv))
    wrong = 0.0 if cfg.norm_eps else 1e-5
    ours_wrong, _, _ = load_checkpoint(tmp_path / "tv.pth", bn_eps=wrong)
    assert ours_wrong.config.norm_eps == wrong and not _same(*_features(ours_wrong, tv))
