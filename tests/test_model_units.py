"""Unit tests: checkpoints and the from-scratch preset (RoIAlign has tests/test_roi_align.py)."""

import pytest
import torch
import torchvision

from maskrcnn_deploy.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_torchvision_state_dict,
    map_legacy_key,
    save_checkpoint,
)
from maskrcnn_deploy.model.config import resnet18_fpn, torchvision_v1
from maskrcnn_deploy.model.mask_rcnn import MaskRCNN

from seeded_models import two_images, two_object_targets


# ----------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    cfg = resnet18_fpn(num_classes=3, min_size=128, max_size=160, box_score_thresh=0.0,
                       rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100)
    model = MaskRCNN(cfg).eval()
    return cfg, model


def test_checkpoint_round_trip(tmp_path, small):
    cfg, model = small
    path = save_checkpoint(tmp_path / "ck.pt", model, cfg, iteration=7, optimizer={"lr": 0.1},
                           class_names=["bg", "a", "b"])
    assert not list(tmp_path.glob("*.tmp"))
    model2, cfg2, extra = load_checkpoint(path)
    assert cfg2 == cfg and extra["iteration"] == 7 and extra["class_names"] == ["bg", "a", "b"]
    with torch.no_grad():
        a, b = model(two_images()), model2(two_images())
    for x, y in zip(a, b):
        assert len(x["boxes"]) > 0
        for k in ("boxes", "scores", "labels", "masks"):
            assert torch.equal(x[k], y[k]), k


def test_bare_state_dict_needs_config(tmp_path, small):
    cfg, model = small
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    # read as torchvision's layout (ResNet-50) by default: a bare ResNet-18 state dict needs its config
    with pytest.raises(CheckpointError, match=r"\(torchvision-v1\) does not fit the model .*missing keys"):
        load_checkpoint(tmp_path / "bare.pth")
    m2, _, _ = load_checkpoint(tmp_path / "bare.pth", config=cfg)
    assert torch.equal(m2.state_dict()["rpn.head.cls_logits.weight"], model.state_dict()["rpn.head.cls_logits.weight"])


def _tv_state(num_classes=91):
    return torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                              num_classes=num_classes).state_dict()


@pytest.fixture(scope="module")
def tv_state():
    return _tv_state(91)


def test_legacy_names_and_mismatches(tv_state):
    legacy = {}
    for k, v in tv_state.items():
        k = k.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for i in range(4):
            k = k.replace(f"mask_head.{i}.0.", f"mask_head.mask_fcn{i + 1}.")
            k = k.replace(f"inner_blocks.{i}.0.", f"inner_blocks.{i}.").replace(f"layer_blocks.{i}.0.",
                                                                                 f"layer_blocks.{i}.")
        legacy[k] = v
    assert "roi_heads.mask_head.mask_fcn1.weight" in legacy and "rpn.head.conv.weight" in legacy
    assert map_legacy_key("backbone.fpn.layer_blocks.3.bias") == "backbone.fpn.layer_blocks.3.0.bias"
    model = MaskRCNN(torchvision_v1(91))
    load_torchvision_state_dict(model, legacy)  # num_batches_tracked dropped for FrozenBN
    assert torch.equal(model.state_dict()["roi_heads.mask_head.0.0.weight"], tv_state["roi_heads.mask_head.0.0.weight"])

    with pytest.raises(CheckpointError, match=r"checkpoint has 91 classes .*\[91, 1024\].* config says 5"):
        load_torchvision_state_dict(MaskRCNN(torchvision_v1(5)), tv_state)
    missing = dict(tv_state)
    del missing["backbone.fpn.layer_blocks.2.0.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing keys: backbone\.fpn\.layer_blocks\.2\.0\.weight"):
        load_torchvision_state_dict(model, missing)
    extra = {**tv_state, "roi_heads.extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"1 unexpected keys: roi_heads\.extra\.weight"):
        load_torchvision_state_dict(model, extra)
    bad = {**tv_state, "rpn.head.bbox_pred.weight": torch.zeros(3, 256, 1, 1)}
    with pytest.raises(CheckpointError, match=r"shape mismatch.*rpn\.head\.bbox_pred\.weight"):
        load_torchvision_state_dict(model, bad)


def test_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint|could not be loaded") as err:
        load_checkpoint(tmp_path / "junk.pt")
    assert "\n" not in str(err.value)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a dict"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"format": "other", "model": {}}, tmp_path / "fmt.pt")
    with pytest.raises(CheckpointError, match="format 'other'"):
        load_checkpoint(tmp_path / "fmt.pt")


# ----------------------------------------------------------------------------- from-scratch preset
def test_resnet18_trains_one_step_and_infers():
    torch.manual_seed(0)
    cfg = resnet18_fpn(num_classes=3, min_size=(112, 128), max_size=160, rpn_post_nms_top_n_train=300,
                       box_batch_size_per_image=64)
    model = MaskRCNN(cfg).train()
    images = two_images()
    targets = two_object_targets(images)
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    for name in ("backbone.body.conv1.weight", "backbone.body.layer1.0.conv1.weight", "backbone.fpn.inner_blocks.0.0.weight",
                 "roi_heads.mask_predictor.mask_fcn_logits.weight", "rpn.head.cls_logits.weight"):
        p = dict(model.named_parameters())[name]
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert out[0]["masks"].shape[1:] == (1, 120, 150) and out[1]["masks"].shape[1:] == (1, 100, 90)
    assert out[0]["labels"].dtype == torch.int64
