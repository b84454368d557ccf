"""COCO evaluation: perfect predictions score 1, shifted boxes score lower, empty results score 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from maskrcnn_deploy.model.data.coco import CocoDetectionDataset
from maskrcnn_deploy.model.data.synthetic import generate_synthetic_coco
from maskrcnn_deploy.model.evaluation import STAT_NAMES, detections_to_coco_results, evaluate_coco

# pycocotools calls numpy.asarray(copy=False) style APIs that numpy 2 warns about.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = generate_synthetic_coco(tmp_path_factory.mktemp("eval"), 12, seed=2, image_size=(96, 96))
    return CocoDetectionDataset(path)


def _gt_results(ds, shift=0.0, as_tensor=False, prob_masks=False):
    results = []
    for i in range(len(ds)):
        _, t = ds[i]
        boxes = t["boxes"] + shift
        masks = t["masks"].float()[:, None] * 0.9 if prob_masks else t["masks"]  # [D,1,H,W] probabilities
        det = {"boxes": boxes, "scores": torch.ones(len(boxes)), "labels": t["labels"], "masks": masks}
        if not as_tensor:
            det = {k: v.numpy() for k, v in det.items()}
        results.extend(detections_to_coco_results(int(t["image_id"]), det, ds.category_ids))
    return results


def test_result_format():
    det = {"boxes": np.array([[1.0, 2.0, 5.0, 8.0]]), "scores": np.array([0.7]), "labels": np.array([2]),
           "masks": np.pad(np.ones((1, 3, 4), bool), ((0, 0), (2, 5), (1, 5)))}
    (r,) = detections_to_coco_results(9, det, [0, 11, 22])
    assert r["image_id"] == 9 and r["category_id"] == 22 and r["bbox"] == [1.0, 2.0, 4.0, 6.0]
    assert r["score"] == pytest.approx(0.7) and isinstance(r["segmentation"]["counts"], str)
    m = mask_utils.decode(r["segmentation"])
    assert m.shape == (10, 10) and m.sum() == 12 and m[2:5, 1:5].all()


def test_perfect_predictions_score_one(dataset):
    for kwargs in ({}, {"as_tensor": True, "prob_masks": True}):
        metrics = evaluate_coco(dataset.coco, _gt_results(dataset, **kwargs))
        assert set(metrics) == {"bbox", "segm"} and tuple(metrics["bbox"]) == STAT_NAMES
        for iou_type in ("bbox", "segm"):
            assert metrics[iou_type]["AP"] == pytest.approx(1.0)
            assert metrics[iou_type]["AP50"] == pytest.approx(1.0)
            assert metrics[iou_type]["AR100"] == pytest.approx(1.0)


def test_shifted_boxes_lower_bbox_ap_only(dataset):
    perfect = evaluate_coco(dataset.coco, _gt_results(dataset))
    shifted = evaluate_coco(dataset.coco, _gt_results(dataset, shift=4.0))
    assert shifted["bbox"]["AP"] < perfect["bbox"]["AP"] - 0.2
    assert shifted["bbox"]["AP75"] <= shifted["bbox"]["AP50"]
    assert shifted["segm"]["AP"] == pytest.approx(1.0)  # masks untouched


def test_missing_detections_and_image_subset(dataset):
    results = _gt_results(dataset)
    half = [r for r in results if r["image_id"] <= 6]
    metrics = evaluate_coco(dataset.coco, half, iou_types=("segm",))
    assert set(metrics) == {"segm"} and 0.2 < metrics["segm"]["AR100"] < 0.8
    subset = evaluate_coco(dataset.coco, half, image_ids=range(1, 7))
    assert subset["segm"]["AP"] == pytest.approx(1.0) and subset["bbox"]["AP"] == pytest.approx(1.0)


def test_empty_results_give_zeros(dataset, tmp_path, capsys):
    metrics = evaluate_coco(dataset.ann_file, [])
    assert metrics == {t: {name: 0.0 for name in STAT_NAMES} for t in ("bbox", "segm")}
    no_dets = detections_to_coco_results(1, {"boxes": np.zeros((0, 4)), "scores": np.zeros(0),
                                              "labels": np.zeros(0, int), "masks": np.zeros((0, 96, 96))}, [0, 1])
    assert no_dets == []
    assert capsys.readouterr().out == ""


def test_verbose_prints_summary(dataset, capsys):
    evaluate_coco(dataset.coco, _gt_results(dataset)[:3], iou_types=("bbox",), verbose=True)
    assert "Average Precision" in capsys.readouterr().out
