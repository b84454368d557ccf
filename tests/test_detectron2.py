"""Detectron2 checkpoints: safe .pkl reading, key mapping, presets vs Detectron2's config, and its golden outputs.

The golden tests (marked slow) run R50-FPN, R101-FPN and X101-32x8d-FPN with weights regenerated from the
recipe in tests/data/detectron2/README.md on its four images and compare proposals and detections with what
Detectron2 itself produced (see tests/detectron2_golden.py for the matching rules).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from maskrcnn_deploy.model.checkpoint import CheckpointError, load_checkpoint
from maskrcnn_deploy.model.checkpoint_sources import (
    UnsafePickleError,
    detectron2_config,
    map_detectron2_key,
    safe_unpickle,
)
from maskrcnn_deploy.model.fit import Fit
from maskrcnn_deploy.model.mask_rcnn import MaskRCNN
from maskrcnn_deploy.plugins.torch_ops import fpn_levels

import detectron2_golden as golden


# ----------------------------------------------------------------------------- safe .pkl reading
class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pkl_that_would_run_a_command_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model_final.pkl"
    with open(evil, "wb") as f:
        pickle.dump({"model": {"backbone.bottom_up.stem.conv1.weight": _RunsCommand(marker)},
                     "__author__": "Detectron2 Model Zoo"}, f)
    with pytest.raises(UnsafePickleError, match=r"asks for (posix|os|nt)\.system"):
        safe_unpickle(evil)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(evil)
    message = str(err.value)
    assert "\n" not in message and "refused" in message and "system" in message, message
    for suffix in (".pth", ".bin"):  # the same pickle under another name goes through the same gate
        other = evil.with_suffix(suffix)
        other.write_bytes(evil.read_bytes())
        with pytest.raises(CheckpointError, match="refused"):
            load_checkpoint(other)
    assert not marker.exists()
    # the pickle is live: plain pickle.load would have run the command
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(evil)!r}, 'rb'))"], check=True)
    assert marker.exists()


def test_safe_unpickle_reads_arrays_and_plain_containers(tmp_path):
    from collections import OrderedDict
    data = {"model": OrderedDict(a=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.float64(2.5)),
            "__author__": "Detectron2 Model Zoo", "meta": [1, 2.0, ("x", None, True)], "raw": b"\x00\x01"}
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        back = safe_unpickle(path)
        assert np.array_equal(back["model"]["a"], data["model"]["a"]) and back["model"]["a"].dtype == np.float32
        assert back["model"]["b"] == 2.5 and back["meta"] == data["meta"] and back["raw"] == b"\x00\x01"


# ----------------------------------------------------------------------------- names, shapes, presets
@pytest.mark.parametrize("name", golden.MODELS)
def test_detectron2_keys_map_onto_the_model_one_to_one(name):
    shapes = golden.keys(name)
    fake = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
    config = detectron2_config(fake, name)
    own = {k: tuple(v.shape) for k, v in MaskRCNN(config).state_dict().items()}
    mapped = {map_detectron2_key(k): tuple(s) for k, s in shapes.items()}
    assert len(mapped) == len(shapes) == len(own)
    assert mapped == own


def _yaml(name):
    return yaml.safe_load((golden.DATA / name / "config.yaml").read_text())


@pytest.mark.parametrize("name", golden.MODELS)
def test_preset_is_detectron2s_config(name):
    """Every setting the eager model takes from Detectron2 equals the config the golden run used."""
    y = _yaml(name)
    m, r, inp = y["MODEL"], y["MODEL"]["RESNETS"], y["INPUT"]
    fake = {k: np.broadcast_to(np.float32(0), s) for k, s in golden.keys(name).items()}
    c = detectron2_config(fake, name)
    assert (c.backbone_depth, c.block_groups, c.block_width_per_group, c.stride_in_1x1) == (
        r["DEPTH"], r["NUM_GROUPS"], r["WIDTH_PER_GROUP"], r["STRIDE_IN_1X1"])
    assert r["NORM"] == "FrozenBN" and c.norm == "frozen_bn" and c.norm_eps == 1e-5
    assert c.num_classes == m["ROI_HEADS"]["NUM_CLASSES"] + 1 and c.background_class == "last"
    assert (c.input_format, c.input_scale, c.transform_rule) == (inp["FORMAT"], 255.0, "detectron2")
    assert list(c.image_mean) == m["PIXEL_MEAN"] and list(c.image_std) == m["PIXEL_STD"]
    assert (c.test_min_size, c.max_size) == (inp["MIN_SIZE_TEST"], inp["MAX_SIZE_TEST"])
    assert c.size_divisible == 32  # FPN's size_divisibility = its largest stride (modeling/backbone/fpn.py)
    a = m["ANCHOR_GENERATOR"]
    assert [list(s) for s in c.anchor_sizes] == a["SIZES"] and [list(c.anchor_ratios)] == a["ASPECT_RATIOS"]
    assert c.anchor_rule == "detectron2" and c.anchor_offset == a["OFFSET"]
    rpn = m["RPN"]
    assert (c.rpn_pre_nms_top_n_test, c.rpn_post_nms_top_n_test, c.rpn_nms_thresh) == (
        rpn["PRE_NMS_TOPK_TEST"], rpn["POST_NMS_TOPK_TEST"], rpn["NMS_THRESH"])
    assert c.proposal_rule == "detectron2" and c.rpn_min_size == m["PROPOSAL_GENERATOR"]["MIN_SIZE"]
    box, mask = m["ROI_BOX_HEAD"], m["ROI_MASK_HEAD"]
    assert list(c.box_reg_weights) == box["BBOX_REG_WEIGHTS"]
    assert (c.box_score_thresh, c.box_nms_thresh, c.detections_per_img) == (
        m["ROI_HEADS"]["SCORE_THRESH_TEST"], m["ROI_HEADS"]["NMS_THRESH_TEST"], y["TEST"]["DETECTIONS_PER_IMAGE"])
    for head in (box, mask):
        assert head["POOLER_TYPE"] == "ROIAlignV2" and head["POOLER_SAMPLING_RATIO"] == c.roi_sampling_ratio == 0
    assert c.roi_aligned and (c.box_roi_output_size, c.mask_roi_output_size) == (
        box["POOLER_RESOLUTION"], mask["POOLER_RESOLUTION"])
    assert (box["NUM_FC"], box["NUM_CONV"], box["FC_DIM"], c.box_head, c.box_fc_dim) == (2, 0, 1024, "two_mlp", 1024)


def test_fpn_level_rule_is_detectron2s():
    """Detectron2 (modeling/poolers.py): floor(4 + log2(sqrt(area) / 224 + 1e-8)); the kernels with eps 0
    give the same levels in float32 (1e-8 is below half an ulp of the ratio near each cut point)."""
    g = torch.Generator().manual_seed(0)
    side = torch.cat([torch.rand(20000, generator=g) * 900 + 0.01,
                      (torch.tensor([112.0, 224.0, 448.0])[:, None] * (1 + torch.arange(-40, 41) * 6e-8)).reshape(-1)])
    side = side.to(torch.float32)
    rois = torch.zeros(len(side), 5)
    rois[:, 1:3] = 10.0
    rois[:, 3] = 10.0 + side
    rois[:, 4] = 10.0 + side
    boxes = rois[:, 1:]
    size = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    expected = torch.floor(4 + torch.log2(size / 224 + 1e-8)).clamp(2, 5).to(torch.int32) - 2
    levels = fpn_levels(rois, [1 / 4, 1 / 8, 1 / 16, 1 / 32], 224.0, 4, 0.0)
    assert torch.equal(levels, expected)
    assert set(expected.tolist()) == {0, 1, 2, 3}
    torchvision_rule = fpn_levels(rois, [1 / 4, 1 / 8, 1 / 16, 1 / 32], 224.0, 4, 1e-6)
    assert not torch.equal(torchvision_rule, expected)  # the boundary boxes tell the two rules apart


def test_shortest_edge_size_rounds_like_detectron2():
    fit = Fit(800, 1333, resize="detectron2")
    assert fit.resized_size(480, 640) == (800, 1067)  # 1066.67 rounds up (torchvision: 1066)
    assert Fit(800, 1333).resized_size(480, 640) == (800, 1066)
    assert fit.resized_size(427, 640) == (800, 1199)
    assert fit.resized_size(600, 400) == (1200, 800)
    assert fit.resized_size(100, 1000) == (133, 1333)
    # into a static canvas: the canvas caps the size only when Detectron2's own size exceeds it
    assert Fit(800, 1333, (800, 1344), "detectron2").resized_size(480, 640) == (800, 1067)
    assert Fit(800, 1333, (800, 1344), "detectron2").resized_size(600, 400) == (800, 533)
    assert Fit.from_dict(Fit(800, 1333, (800, 1344), "detectron2").to_dict()).resize == "detectron2"


# ----------------------------------------------------------------------------- golden outputs
_LOADED = {}


def _model(name, tmp_path_factory):
    """R101 is read from a trainer .pth, the others from model-zoo .pkl files (both formats get covered)."""
    if name not in _LOADED:
        folder = tmp_path_factory.mktemp(name)
        weights = golden.recipe_weights(name)
        path = (golden.write_pth(folder / "model_0000999.pth", weights) if name == "R101-FPN"
                else golden.write_pkl(folder / "model_final.pkl", weights))
        model, config, extra = load_checkpoint(path)
        assert extra["source"] == "detectron2"
        _LOADED.clear()  # one model in memory at a time
        _LOADED[name] = model
    return _LOADED[name]


@pytest.mark.slow
@pytest.mark.parametrize("stem", golden.STEMS)  # varies fastest: each model is built once
@pytest.mark.parametrize("name", golden.MODELS)
def test_golden_detectron2(name, stem, tmp_path_factory):
    model = _model(name, tmp_path_factory)
    detections, boxes, logits = golden.our_outputs(model, golden.image(stem))
    g_boxes, g_logits = golden.proposals(name, stem)
    p = golden.match_proposals(g_boxes, g_logits, boxes, logits)
    print(f"\n{name} {stem} proposals {p['matched']}/{p['golden']} (ours {p['ours']}), "
          f"worst box {p['worst_box']:.3g} px, worst logit {p['worst_logit']:.3g}")
    assert p["matched"] == p["golden"] == p["ours"], f"proposals {p['unmatched'][:10]} differ"
    d = golden.match_detections(golden.predictions(name)[f"{stem}.png"], detections)
    print(f"{name} {stem} detections {d['matched']}/{d['golden']} (exempt {d['exempt']}), worst box "
          f"{d['worst_box']:.3g} px, score {d['worst_score']:.3g}, mask IoU {d['worst_mask_iou']:.4f} "
          f"(re-pasted {d.get('repasted', 0)}), extra {d['extra']}")
    assert d["golden"] > 0 and d["matched"] + d["exempt"] == d["golden"], d["failed"][:5]
    assert d["exempt"] <= 2 and d["extra"] == 0


def test_background_last_layout_trains_and_labels_foreground_from_1():
    """Detectron2's head layout (background = last logit, boxes and masks for the K foreground classes)
    trains with the usual targets (labels 1..K) and outputs labels 1..K."""
    from maskrcnn_deploy.model.config import resnet18_fpn
    torch.manual_seed(0)
    cfg = resnet18_fpn(3, background_class="last", min_size=96, max_size=128, rpn_post_nms_top_n_train=200,
                       box_batch_size_per_image=32, box_score_thresh=0.0)
    model = MaskRCNN(cfg).train()
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 4 * 2
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 2
    img = torch.rand(3, 100, 120, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(1, 100, 120, dtype=torch.uint8)
    masks[0, 20:70, 30:90] = 1
    target = {"boxes": torch.tensor([[30.0, 20.0, 90.0, 70.0]]), "labels": torch.tensor([2]), "masks": masks}
    losses = model([img], [target])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    # class 2's regression and mask columns (index 1) get gradients; the background logit is the last one
    assert model.roi_heads.box_predictor.bbox_pred.weight.grad[4:8].abs().sum() > 0
    assert model.roi_heads.box_predictor.bbox_pred.weight.grad[0:4].abs().sum() == 0
    assert model.roi_heads.mask_predictor.mask_fcn_logits.weight.grad[1].abs().sum() > 0
    assert model.roi_heads.mask_predictor.mask_fcn_logits.weight.grad[0].abs().sum() == 0
    model.eval()
    with torch.no_grad():
        out = model([img])[0]
    assert len(out["labels"]) > 0 and set(out["labels"].tolist()) <= {1, 2}


def test_predict_runs_a_detectron2_pkl_with_detectron2s_rules(tmp_path, capsys):
    """`load(model_final.pkl)` (what `predict`, `eval` and `bench` use) runs Detectron2's own input and
    output rules on the original image; before, the predictor resized with torchvision's rule and pasted
    masks torchvision's way, so its detections were not Detectron2's."""
    from maskrcnn_deploy.runtime import load
    from maskrcnn_deploy.runtime.cli import main

    path = golden.write_pkl(tmp_path / "model_final.pkl", golden.recipe_weights("R50-FPN"))
    stem = golden.STEMS[0]
    det = load(path).predict([golden.DATA / "images" / f"{stem}.png"])[0]
    ours = {"boxes": torch.from_numpy(det["boxes"]), "scores": torch.from_numpy(det["scores"]),
            "labels": torch.from_numpy(det["labels"]), "masks": torch.from_numpy(det["masks"][:, None].astype(np.float32))}
    d = golden.match_detections(golden.predictions("R50-FPN")[f"{stem}.png"], ours)
    assert d["golden"] > 0 and d["matched"] + d["exempt"] == d["golden"] and d["exempt"] <= 2, d["failed"][:5]
    assert d["extra"] == 0
    images = tmp_path / "images"
    images.mkdir()
    (images / f"{stem}.png").write_bytes((golden.DATA / "images" / f"{stem}.png").read_bytes())
    assert main(["predict", str(path), str(images), "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / f"{stem}.png").is_file()
