"""Detection matching: pair one image's reference and test detections as sets, and compare their raw outputs.

Detection order differs between runtimes (NMS ties), so detections are matched as sets: within a
label, greedily by descending reference score, each to the unused test detection of highest box IoU.
A detection dict is described in the package docstring (runtime/parity/__init__.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["box_iou", "MatchResult", "match_detections", "ties_at_the_cap", "RawComparison", "compare_raw"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [A,B] of xyxy boxes a [A,4] and b [B,4] (identical zero-area boxes count as IoU 1)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    same = np.all(a[:, None, :] == b[None, :, :], axis=-1)
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), same.astype(np.float64))


@dataclass
class MatchResult:
    """Matches of one image. Per-pair arrays [M] follow `pairs` [M,2] (reference index, test index)."""

    pairs: np.ndarray            # int64 [M,2]
    unmatched_ref: np.ndarray    # int64 [R-M] reference indices without partner
    unmatched_test: np.ndarray   # int64 [T-M]
    box_iou: np.ndarray          # float64 [M]
    box_error_px: np.ndarray     # float64 [M] max over the 4 coordinates of |ref - test|, pixels
    score_delta: np.ndarray      # float64 [M] |ref score - test score|
    mask_iou: np.ndarray         # float64 [M] full-size binary mask IoU (two empty masks: 1)

    @property
    def max_box_error_px(self) -> float:
        return float(self.box_error_px.max()) if self.box_error_px.size else 0.0


def _fields(det: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4)
    scores = np.asarray(det["scores"], np.float64).reshape(-1)
    labels = np.asarray(det["labels"], np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"boxes/scores/labels lengths differ: {len(boxes)}, {len(scores)}, {len(labels)}")
    return boxes, scores, labels


def _rles(det: Mapping, indices: np.ndarray) -> list[dict]:
    """COCO RLEs of the detections at `indices` (the dict's "rles" when present, else encoded from masks)."""
    if det.get("rles") is not None:
        return [det["rles"][i] for i in indices]
    masks = np.asarray(det["masks"])
    masks = masks.reshape(masks.shape[0], *masks.shape[-2:])[indices]
    return mask_utils.encode(np.asfortranarray(np.moveaxis(masks, 0, -1).astype(np.uint8))) if len(indices) else []


def _mask_ious(ref: Mapping, test: Mapping, pairs: np.ndarray) -> np.ndarray:
    if not len(pairs):
        return np.zeros(0)
    ra, ta = _rles(ref, pairs[:, 0]), _rles(test, pairs[:, 1])
    if list(ra[0]["size"]) != list(ta[0]["size"]):
        raise ValueError(f"mask sizes differ: reference {ra[0]['size']}, test {ta[0]['size']}")
    out = np.empty(len(pairs))
    for k, (r, t) in enumerate(zip(ra, ta)):
        empty = mask_utils.area(r) == 0 and mask_utils.area(t) == 0
        out[k] = 1.0 if empty else float(mask_utils.iou([t], [r], [0])[0, 0])
    return out


def match_detections(ref: Mapping, test: Mapping, min_iou: float = 0.5) -> MatchResult:
    """Pair one image's detections as sets (see the module docstring); ties in IoU go to the higher test score."""
    rb, rs, rl = _fields(ref)
    tb, ts, tl = _fields(test)
    iou = box_iou(rb, tb)
    iou[rl[:, None] != tl[None, :]] = -1.0
    used = np.zeros(len(tb), bool)
    pairs = []
    for i in np.argsort(-rs, kind="stable"):
        cand = np.flatnonzero(~used & (iou[i] >= min_iou))
        if cand.size:
            j = cand[np.lexsort((-ts[cand], -iou[i, cand]))[0]]
            used[j] = True
            pairs.append((i, j))
    pairs = np.array(sorted(pairs), np.int64).reshape(-1, 2)
    ri, ti = pairs[:, 0], pairs[:, 1]
    return MatchResult(
        pairs=pairs,
        unmatched_ref=np.setdiff1d(np.arange(len(rb)), ri).astype(np.int64),
        unmatched_test=np.flatnonzero(~used).astype(np.int64),
        box_iou=iou[ri, ti].astype(np.float64),
        box_error_px=np.abs(rb[ri] - tb[ti]).max(axis=1) if len(pairs) else np.zeros(0),
        score_delta=np.abs(rs[ri] - ts[ti]),
        mask_iou=_mask_ious(ref, test, pairs),
    )


def ties_at_the_cap(ref: Mapping, test: Mapping, match: MatchResult, max_detections: int | None,
                    score_tolerance: float) -> int:
    """How many of one image's unmatched detections are ties at the detection cap (0 when they are not).

    When more candidates than the cap share the lowest kept score, which of them fill the last places is
    an arbitrary order (sort and NMS ties differ between runtimes): both outputs are the model's. They are
    recognised only when both sides hold exactly `max_detections`, leave as many unmatched, and every
    unmatched detection, on either side, has the lowest score of its side, within `score_tolerance` of
    the other side's lowest."""
    unmatched = len(match.unmatched_ref)
    _, rs, _ = _fields(ref)
    _, ts, _ = _fields(test)
    if not max_detections or unmatched == 0 or unmatched != len(match.unmatched_test):
        return 0
    if not len(rs) == len(ts) == max_detections:
        return 0
    low_r, low_t = rs.min(), ts.min()
    tied = (np.abs(rs[match.unmatched_ref] - low_r).max() <= score_tolerance
            and np.abs(ts[match.unmatched_test] - low_t).max() <= score_tolerance
            and abs(low_r - low_t) <= score_tolerance)
    return unmatched if tied else 0


# ------------------------------------------------------------------------------------------- raw outputs

@dataclass
class RawComparison:
    """Raw-output differences of one image over its matched pairs (None: no pairs to compare)."""

    num_detections_ref: int
    num_detections_test: int
    max_box_error: float | None        # raw box coordinates, model input pixels
    max_score_error: float | None
    max_mask_prob_error: float | None  # 28x28 mask probabilities

    @property
    def num_detections_equal(self) -> bool:
        return self.num_detections_ref == self.num_detections_test


def compare_raw(ref_raw: Mapping, test_raw: Mapping, pairs: np.ndarray) -> RawComparison:
    """Max abs differences of the raw rows of matched pairs [M,2] (detection i = raw row i)."""
    nr, nt = int(ref_raw["num_detections"]), int(test_raw["num_detections"])
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if len(pairs) and (pairs[:, 0].max() >= nr or pairs[:, 1].max() >= nt):
        raise ValueError(f"a matched index is beyond num_detections (reference {nr}, test {nt})")
    if not len(pairs):
        return RawComparison(nr, nt, None, None, None)

    def err(key):
        a = np.asarray(ref_raw[key], np.float64)[pairs[:, 0]]
        return float(np.abs(a - np.asarray(test_raw[key], np.float64)[pairs[:, 1]]).max())
    return RawComparison(nr, nt, err("boxes"), err("scores"), err("masks"))
