"""Parity checks: identical or reordered detections pass, jitter/missing/relabelled detections fail with the
violated tolerance named, empty references fail, raw-output errors follow the matched pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from maskrcnn_deploy.runtime.parity import (
    TOLERANCE_PRESETS,
    box_iou,
    check_parity,
    compare_raw,
    match_detections,
    save_error_histograms,
    tolerances_from,
    write_report_json,
)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W, N_RAW = 64, 80, 100
FP32 = TOLERANCE_PRESETS["fp32"]


def _detections(seed: int, n: int = 8) -> dict:
    """n non-overlapping boxes (one per 20x16 grid cell), rectangle masks, scores descending, raw outputs."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(16, size=n, replace=False)
    x1 = (cells % 4) * 20 + rng.integers(0, 3, n)
    y1 = (cells // 4) * 16 + rng.integers(0, 3, n)
    boxes = np.stack([x1, y1, x1 + rng.integers(12, 17, n), y1 + rng.integers(10, 13, n)], 1).astype(np.float32)
    masks = np.zeros((n, H, W), bool)
    for k, (a, b, c, d) in enumerate(boxes.astype(int)):
        masks[k, b:d, a:c] = True
    raw = {"boxes": np.zeros((N_RAW, 4), np.float32), "scores": np.zeros(N_RAW, np.float32),
           "labels": np.zeros(N_RAW, np.int64), "masks": np.zeros((N_RAW, 28, 28), np.float32), "num_detections": n}
    dets = {"boxes": boxes, "scores": np.sort(rng.uniform(0.3, 1.0, n)).astype(np.float32)[::-1].copy(),
            "labels": rng.integers(1, 4, n).astype(np.int64), "masks": masks, "raw": raw}
    raw["boxes"][:n], raw["scores"][:n], raw["labels"][:n] = boxes * 2, dets["scores"], dets["labels"]
    raw["masks"][:n] = rng.uniform(0.0, 0.9, (n, 28, 28))
    return dets


def _copy(det: dict, order=None) -> dict:
    """Deep copy, detections (and raw rows) reordered by `order`."""
    n = len(det["boxes"])
    order = np.arange(n) if order is None else np.asarray(order)
    out = {k: det[k][order].copy() for k in ("boxes", "scores", "labels", "masks")}
    raw = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in det["raw"].items()}
    for k in ("boxes", "scores", "labels", "masks"):
        raw[k][:len(order)] = det["raw"][k][order]
        raw[k][len(order):] = 0
    raw["num_detections"] = len(order)
    return {**out, "raw": raw}


@pytest.fixture
def ref():
    return [_detections(seed) for seed in range(3)]


def test_identical_inputs_pass(ref):
    report = check_parity(ref, [_copy(d) for d in ref], FP32)
    assert report.passed and report.failures == []
    assert report.matched == report.ref_detections == 24
    assert report.match_fraction_ref == report.match_fraction_test == 1.0
    assert report.box_error_px.max() == 0.0 and report.mask_iou.min() == 1.0 and report.box_iou.min() == 1.0
    assert report.raw["max_mask_prob_error"] == 0.0 and report.raw["num_detections_mismatch"] == 0


def test_permuted_order_matches_fully(ref):
    order = np.random.default_rng(5).permutation(8)
    m = match_detections(ref[0], _copy(ref[0], order))
    assert len(m.pairs) == 8 and m.unmatched_ref.size == m.unmatched_test.size == 0
    np.testing.assert_array_equal(order[m.pairs[:, 1]], m.pairs[:, 0])  # each test row is its original
    report = check_parity(ref, [_copy(d, np.random.default_rng(i).permutation(8)) for i, d in enumerate(ref)], FP32)
    assert report.passed and report.match_fraction_ref == 1.0 and report.mask_iou.min() == 1.0


def test_box_jitter_fails_fp32_and_passes_with_override(ref):
    test = [_copy(d) for d in ref]
    for d in test:
        d["boxes"][:, 2] += 0.2  # x2 only: box IoU >= 12/12.2 stays above min_box_iou 0.98
    report = check_parity(ref, test, FP32)
    assert not report.passed and len(report.failures) == 1
    assert "box error max 0.2000 px > max_box_error_px 0.0500" in report.failures[0]
    assert report.box_error_px == pytest.approx(np.full(24, 0.2), abs=1e-5)
    loose = tolerances_from("fp32", max_box_error_px=0.25)
    assert loose.max_box_error_px == 0.25 and loose.min_mask_iou == FP32.min_mask_iou
    assert check_parity(ref, test, loose).passed


def test_missing_detection_lowers_match_fraction(ref):
    test = [_copy(ref[0], np.arange(1, 8))] + [_copy(d) for d in ref[1:]]
    report = check_parity(ref, test, FP32)
    assert report.matched == 23 and report.match_fraction_ref == pytest.approx(23 / 24)
    assert report.match_fraction_test == 1.0
    assert not report.passed and report.failures == [
        "match fraction (reference) 0.9583 < min_match_fraction 1.0000 (1 of 24 reference detections unmatched)"]
    assert report.raw["num_detections_mismatch"] == 1
    assert report.to_dict()["worst_images"] == [{"image": 0, "reference": 8, "test": 7, "matched": 7}]
    assert check_parity(ref, test, tolerances_from("fp32", min_match_fraction=0.95)).passed


def test_label_swap_prevents_matching(ref):
    test = _copy(ref[0])
    test["labels"][3] = 4 if ref[0]["labels"][3] != 4 else 1
    m = match_detections(ref[0], test)
    assert m.unmatched_ref.tolist() == [3] and m.unmatched_test.tolist() == [3] and len(m.pairs) == 7
    report = check_parity(ref[:1], [test], FP32)
    assert not report.passed and report.match_fraction_test == pytest.approx(7 / 8)


def test_greedy_match_prefers_iou_then_score():
    box = np.array([[0, 0, 10, 10]], np.float32)
    empty = np.zeros((1, 8, 8), bool)
    ref = {"boxes": box, "scores": np.array([0.9], np.float32), "labels": np.array([1]), "masks": empty}
    cand = np.array([[0, 0, 10, 12], [0, 0, 10, 11], [0, 0, 10, 11]], np.float32)
    test = {"boxes": cand, "scores": np.array([0.9, 0.5, 0.7], np.float32), "labels": np.array([1, 1, 1]),
            "masks": np.zeros((3, 8, 8), bool)}
    m = match_detections(ref, test)
    assert m.pairs.tolist() == [[0, 2]]  # IoU 10/11 beats 10/12; the tie between 1 and 2 goes to score 0.7
    assert m.box_iou[0] == pytest.approx(10 / 11) and m.mask_iou[0] == 1.0  # two empty masks agree
    assert box_iou(box, cand)[0].tolist() == pytest.approx([10 / 12, 10 / 11, 10 / 11])


def test_mask_iou_value(ref):
    test = _copy(ref[0])
    a, b, c, d = ref[0]["boxes"][2].astype(int)
    test["masks"][2, b:d, a] = False  # remove one column of the rectangle
    m = match_detections(ref[0], test)
    k = int(np.flatnonzero(m.pairs[:, 0] == 2)[0])
    assert m.mask_iou[k] == pytest.approx(((c - a) - 1) / (c - a))
    assert np.delete(m.mask_iou, k).min() == 1.0


def test_empty_reference_fails():
    empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
             "labels": np.zeros(0, np.int64), "masks": np.zeros((0, H, W), bool)}
    report = check_parity([empty, empty], [empty, empty], FP32)
    assert not report.passed and report.match_fraction_ref is None
    assert report.failures == ["reference has no detections in 2 images: parity cannot be checked on nothing"]
    json.dumps(report.to_dict())


def test_empty_test_side_fails(ref):
    empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
             "labels": np.zeros(0, np.int64), "masks": np.zeros((0, H, W), bool)}
    report = check_parity(ref, [empty] * 3, tolerances_from("int8", min_match_fraction=0.0))
    assert not report.passed and report.failures == ["test side has no detections while the reference has 24"]


def test_ap_delta_beyond_tolerance_fails(ref):
    ref_ap = {"bbox": {"AP": 0.500, "AP50": 0.7}, "segm": {"AP": 0.450, "AP50": 0.65}}
    test_ap = {"bbox": {"AP": 0.497, "AP50": 0.7}, "segm": {"AP": 0.4505, "AP50": 0.65}}
    report = check_parity(ref, [_copy(d) for d in ref], FP32, ref_ap, test_ap)
    assert not report.passed and len(report.failures) == 1
    assert report.failures[0].startswith("bbox AP delta -0.0030") and "max_ap_delta 0.0010" in report.failures[0]
    assert report.ap_delta["segm"]["AP"] == pytest.approx(0.0005)
    assert check_parity(ref, [_copy(d) for d in ref], TOLERANCE_PRESETS["fp16"], ref_ap, test_ap).passed


def test_unknown_preset_or_field_raises():
    with pytest.raises(ValueError, match="fp32, fp16, int8"):
        tolerances_from("bf16")
    with pytest.raises(ValueError, match="max_box_error_px"):
        tolerances_from("fp32", max_box_err=1.0)


def test_report_json_and_summary(ref, tmp_path):
    test = [_copy(d) for d in ref]
    test[1]["boxes"][0, 0] -= 0.5
    report = check_parity(ref, test, FP32, {"bbox": {"AP": 0.4}}, {"bbox": {"AP": 0.4}})
    d = json.loads(json.dumps(report.to_dict()))
    assert d["detections"] == {"reference": 24, "test": 24, "matched": 24, "tied_at_cap": 0}
    assert d["box_error_px"]["max"] == pytest.approx(0.5) and d["box_error_px"]["count"] == 24
    assert sum(d["histograms"]["box_error_px"]["counts"]) == 24 and len(d["histograms"]["mask_iou"]["edges"]) == 21
    path = write_report_json(report, tmp_path / "out" / "parity.json")
    assert json.loads(path.read_text())["passed"] is False and list(path.parent.iterdir()) == [path]
    lines = report.summary_lines()
    assert lines[0].startswith("parity: FAIL") and any(line.startswith("bbox AP: reference 0.4000") for line in lines)
    assert lines[-1].startswith("FAILED: box error max 0.5000 px")


def test_histogram_png(ref, tmp_path):
    test = [_copy(d) for d in ref]
    test[0]["masks"][0] = False
    report = check_parity(ref, test, FP32)
    path = save_error_histograms(report, tmp_path / "hist.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (900, 320)
        pixels = np.asarray(im.convert("RGB"))
    assert (pixels == (70, 130, 180)).all(-1).sum() > 100  # bars drawn


def test_raw_comparison_follows_pairs(ref):
    order = np.array([3, 1, 4, 0, 2, 7, 6, 5])
    test = _copy(ref[0], order)
    row = int(np.flatnonzero(order == 4)[0])  # test row of reference detection 4
    test["raw"]["masks"][row, 5, 7] += 0.03
    test["raw"]["masks"][20] = 1.0  # padding beyond num_detections is ignored
    m = match_detections(ref[0], test)
    raw = compare_raw(ref[0]["raw"], test["raw"], m.pairs)
    assert raw.max_mask_prob_error == pytest.approx(0.03, abs=1e-6)
    assert raw.max_box_error == 0.0 and raw.max_score_error == 0.0 and raw.num_detections_equal
    report = check_parity(ref[:1], [test], FP32)
    assert report.passed and report.raw["max_mask_prob_error"] == pytest.approx(0.03, abs=1e-6)


def test_ties_at_the_detection_cap_count_as_matched():
    """Found on the trained demo model's 3:1 panoramas: dozens of candidates score exactly the 100th place's score,
    and which of them fill the last places is an arbitrary order that differs between runtimes. Both sides at the
    cap, the unmatched ones all at the lowest score: tied, PASS (reported); anything else still fails."""
    ref = _detections(5, n=8)
    ref["scores"][-3:] = ref["scores"][-3]                   # the last three places tie
    test = _copy(ref)
    test["boxes"][-1] += np.float32(9.0)                     # another of the tied candidates took the last place
    test["boxes"][-1] = np.clip(test["boxes"][-1], 0, [W, H, W, H])
    test["labels"][-1] = test["labels"][-1] % 3 + 1
    without = check_parity([ref], [test], FP32)
    assert not without.passed and without.matched == 7 and without.tied_at_cap == 0
    tied = check_parity([ref], [test], FP32, max_detections=8)
    assert tied.passed, tied.failures
    assert tied.matched == 7 and tied.tied_at_cap == 1 and tied.match_fraction_ref == 1.0
    assert tied.to_dict()["detections"]["tied_at_cap"] == 1
    assert "tied at the detection cap 1" in tied.summary_lines()[1]
    assert not check_parity([ref], [test], FP32, max_detections=9).passed   # not at the cap: a real difference
    higher = _copy(test)
    higher["scores"][-1] = np.float32(ref["scores"][-1] + 0.01)  # not the lowest score: a real difference
    assert not check_parity([ref], [higher], FP32, max_detections=8).passed
