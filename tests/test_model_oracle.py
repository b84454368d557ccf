"""Our Mask R-CNN against torchvision's, same random weights: detections, masks and losses."""

import pytest
import torch
import torchvision
from torchvision.models.detection import MaskRCNN as TVMaskRCNN
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import misc as misc_ops

from maskrcnn_deploy.model.checkpoint import load_torchvision_state_dict
from maskrcnn_deploy.model.config import torchvision_v1, torchvision_v2
from maskrcnn_deploy.model.mask_rcnn import MaskRCNN

NUM_CLASSES = 4
# Fewer proposals than the defaults keep CPU time down; both models get the same settings.
SIZES = dict(min_size=320, max_size=512, rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=300,
             rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=400, box_batch_size_per_image=256)


def _tv_v1() -> torch.nn.Module:
    """maskrcnn_resnet50_fpn exactly as its COCO_V1 builder makes it (FrozenBN, eps 0)."""
    body = torchvision.models.resnet50(weights=None, norm_layer=misc_ops.FrozenBatchNorm2d)
    model = TVMaskRCNN(_resnet_fpn_extractor(body, 3), num_classes=NUM_CLASSES, **SIZES)
    overwrite_eps(model, 0.0)
    return model


def _tv_v2() -> torch.nn.Module:
    return torchvision.models.detection.maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None,
                                                                 num_classes=NUM_CLASSES, **SIZES)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Seeded random values for every parameter and buffer (scale-preserving convs, positive variances)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) * 1.5 + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            elif t.dim() == 1 and ("bn" in name or "downsample.1" in name or name.endswith(".1.weight")
                                   or name.endswith(".1.bias")):
                if name.endswith("weight"):
                    t.copy_(torch.rand(t.shape, generator=gen) * 0.5 + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            elif t.dim() == 1:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            else:
                fan_in = t[0].numel() if "conv5_mask" not in name else t.shape[0] * t[0, 0].numel()
                t.copy_(torch.randn(t.shape, generator=gen) * (1.0 / fan_in) ** 0.5)


def _images():
    gen = torch.Generator().manual_seed(123)
    imgs = []
    for h, w in ((300, 400), (420, 380)):
        base = torch.rand(3, h // 20, w // 20, generator=gen)
        img = torch.nn.functional.interpolate(base[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        imgs.append((img + 0.05 * torch.rand(3, h, w, generator=gen)).clamp(0, 1))
    return imgs


def _targets(images):
    gen = torch.Generator().manual_seed(7)
    out = []
    for img in images:
        h, w = img.shape[-2:]
        n = 3
        xy = torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.6, h * 0.6])
        wh = torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.35, h * 0.35]) + 20
        boxes = torch.cat([xy, xy + wh], 1).round()
        masks = torch.zeros(n, h, w, dtype=torch.uint8)
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
            masks[i] = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).to(torch.uint8)
        labels = torch.randint(1, NUM_CLASSES, (n,), generator=gen)
        out.append({"boxes": boxes, "labels": labels, "masks": masks})
    return out


def _pair(version: str):
    torch.manual_seed(0)
    tv = _tv_v1() if version == "v1" else _tv_v2()
    _randomize(tv, seed=1 if version == "v1" else 2)
    preset = torchvision_v1 if version == "v1" else torchvision_v2
    ours = MaskRCNN(preset(NUM_CLASSES, **SIZES))
    load_torchvision_state_dict(ours, tv.state_dict())
    return tv, ours


@pytest.fixture(scope="module", params=["v1", "v2"])
def pair(request):
    return request.param, *_pair(request.param)


def _mask_iou(a, b):
    a, b = a[:, 0] > 0.5, b[:, 0] > 0.5
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def test_eval_matches_torchvision(pair):
    version, tv, ours = pair
    images = _images()
    tv.eval(), ours.eval()
    with torch.no_grad():
        ref = tv(images)
        got = ours(images)
    for i, (r, g) in enumerate(zip(ref, got)):
        n = len(r["boxes"])
        assert n > 10, f"only {n} detections: the oracle test would be vacuous"
        assert len(g["boxes"]) == n
        assert torch.equal(g["labels"], r["labels"])
        box_err = (g["boxes"] - r["boxes"]).abs().max().item()
        score_err = (g["scores"] - r["scores"]).abs().max().item()
        prob_err = (g["masks"] - r["masks"]).abs().max().item()
        iou = _mask_iou(g["masks"], r["masks"]).min().item()
        print(f"\n[oracle {version} image {i} {tuple(images[i].shape[-2:])}] detections {n}: max|dbox| {box_err:.3g} px, "
              f"max|dscore| {score_err:.3g}, max|dmask prob| {prob_err:.3g}, min mask IoU {iou:.5f}")
        assert box_err < 1e-3
        assert score_err < 1e-5
        assert iou >= 0.99


def test_training_losses_match_torchvision(pair):
    version, tv, ours = pair
    images, targets = _images(), _targets(_images())
    tv.transform.min_size = (288, 320)
    ours.config.min_size = (288, 320)
    tv.train(), ours.train()
    torch.manual_seed(42)
    ref = tv(images, targets)
    torch.manual_seed(42)
    got = ours(images, targets)
    assert set(got) == set(ref)
    for k in sorted(ref):
        a, b = got[k].item(), ref[k].item()
        rel = abs(a - b) / max(abs(b), 1e-8)
        print(f"\n[oracle {version} train] {k}: ours {a:.7f} torchvision {b:.7f} rel diff {rel:.2e}")
        assert rel < 1e-4, k
