"""Accuracy parity: do an artifact's detections (ONNX Runtime / TensorRT) match the PyTorch reference's?

Input, per image and per side, a detection dict in original image coordinates (runtime/predictor.py):
    boxes [D,4] float32 xyxy pixels   scores [D] float32   labels [D] int64 (1..K-1)
    masks [D,H,W] bool (full image)   rles (optional, COCO RLE of masks; reused when present)
    raw (optional): that image's fixed-size outputs before post-processing: boxes [N,4] (model input
        pixels), scores [N], labels [N], masks [N,28,28] probabilities, num_detections (int); raw row i
        (i < num_detections) is detection i.

Detection order differs between runtimes (NMS ties), so detections are matched as sets: within a
label, greedily by descending reference score, each to the unused test detection of highest box IoU.
`check_parity` aggregates the matches of all images and checks them against `Tolerances`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pycocotools import mask as mask_utils

from maskrcnn_deploy.common.files import atomic_write, write_json
from maskrcnn_deploy.runtime.backend.tensorrt.environment import package_version  # pure Python: no TensorRT needed

__all__ = ["Tolerances", "TOLERANCE_PRESETS", "tolerances_from", "MatchResult", "box_iou", "match_detections",
           "RawComparison", "compare_raw", "ParityReport", "PairCheck", "pair_checks", "check_parity", "write_report_json",
           "save_error_histograms", "REPORT_SCHEMA", "REPORT_SCHEMA_FILE"]

AP_TYPES = ("bbox", "segm")
HIST_BINS = 20

# The JSON report's name and version, written into every report. CI jobs read reports by these fields, so
# adding, removing, renaming or retyping a field means version + 1 and a new schema file (tests/test_ci_gate.py
# holds the frozen key list of each version).
REPORT_SCHEMA = {"name": "maskrcnn-deploy.parity-report", "version": 1}
REPORT_SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "parity_report.v1.schema.json"  # JSON Schema


@dataclass(frozen=True)
class Tolerances:
    """Pass/fail limits. "Worst pair" statistics are taken at `outlier_percentile`: 0 is the true
    worst pair (min IoU, max error); 1 uses p1 of IoUs and p99 of errors, letting 1% of pairs be outliers."""

    name: str = "custom"
    min_match_fraction: float = 1.0  # of reference detections with a partner, and of test detections
    match_iou: float = 0.5           # box IoU (same label) needed to pair two detections
    min_box_iou: float = 0.98        # box IoU of matched pairs
    max_box_error_px: float = 0.05   # max |coordinate difference| of a matched pair, original pixels
    min_mask_iou: float = 0.99       # full-size binary mask IoU of matched pairs
    max_score_delta: float = 1e-3    # |score difference| of matched pairs
    max_ap_delta: float = 0.001      # |AP difference| per iou type (bbox, segm); AP on the 0-1 scale
    outlier_percentile: float = 0.0  # see the class docstring


# fp32: the same math in another runtime; differences are float rounding (~1e-5), so every detection
#   must match, boxes within 0.05 px, AP within 0.1 point. Masks: rounding still flips a pixel whose
#   probability lies within ~1e-5 of the 0.5 threshold, and one pixel of a 74-pixel mask is IoU 0.986
#   (seen on 1 of 1980 pairs of the trained synthetic model, demo): mask IoU >= 0.98, i.e. one pixel on
#   a 50-pixel mask.
# fp16: 10-bit mantissa: coordinates in 1024-2048 px are spaced 1 px, deltas/logits carry ~1e-3 relative
#   error, and detections near the score threshold or NMS IoU can flip: 98% matched, 2 px, AP within 0.5
#   point, the worst 1% of pairs ignored.
# int8: post-training quantization moves every activation by up to half a step, so low-score detections
#   shift and masks near the threshold change: AP within 2 points, 90% matched, worst 5% ignored, and per
#   pair limits set from the trained synthetic model (bench/precision_table.py, 100 report images, six
#   INT8 graphs: box IoU p5 0.69-0.74, mask IoU p5 0.60-0.69, box error p95 9.8-12.1 px on 256-px images,
#   matched 93.5-95.3%, |AP delta| <= 0.9 points) with margin: box IoU 0.6, mask IoU 0.5, 16 px.
TOLERANCE_PRESETS: dict[str, Tolerances] = {
    "fp32": Tolerances(name="fp32", min_mask_iou=0.98),
    "fp16": Tolerances(name="fp16", min_match_fraction=0.98, min_box_iou=0.95, max_box_error_px=2.0,
                       min_mask_iou=0.90, max_score_delta=0.02, max_ap_delta=0.005, outlier_percentile=1.0),
    "int8": Tolerances(name="int8", min_match_fraction=0.90, min_box_iou=0.60, max_box_error_px=16.0,
                       min_mask_iou=0.50, max_score_delta=0.10, max_ap_delta=0.02, outlier_percentile=5.0),
}


def tolerances_from(preset: str, **overrides) -> Tolerances:
    """A preset's tolerances with some fields replaced; ValueError naming the valid presets/fields."""
    if preset not in TOLERANCE_PRESETS:
        raise ValueError(f"unknown tolerance preset {preset!r}; valid presets: {', '.join(TOLERANCE_PRESETS)}")
    valid = [f.name for f in fields(Tolerances) if f.name != "name"]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown tolerance field(s) {', '.join(unknown)}; valid fields: {', '.join(valid)}")
    name = preset + (f" + {', '.join(sorted(overrides))}" if overrides else "")
    return replace(TOLERANCE_PRESETS[preset], name=name, **{k: float(v) for k, v in overrides.items()})


# ----------------------------------------------------------------------------------------------- matching

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


# ---------------------------------------------------------------------------------------------- report

def _summary(values: np.ndarray) -> dict:
    """count, min, p1, p5, median, mean, p95, p99, max (None when empty) as plain floats."""
    keys = ("min", "p1", "p5", "median", "mean", "p95", "p99", "max")
    if not values.size:
        return {"count": 0, **{k: None for k in keys}}
    p = np.percentile(values, [0, 1, 5, 50, 95, 99, 100])
    stats = [p[0], p[1], p[2], p[3], values.mean(), p[4], p[5], p[6]]
    return {"count": int(values.size), **{k: float(v) for k, v in zip(keys, stats)}}


def _histogram(values: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(counts [B], edges [B+1]): IoUs binned from their minimum up to 1, errors from 0 to their maximum."""
    if kind == "iou":
        lo = float(values.min()) if values.size and values.min() < 1.0 - 1e-9 else 0.999
        lo, hi = min(lo, 0.999), 1.0
    else:
        lo, hi = 0.0, max(float(values.max()) if values.size else 0.0, 1e-3)
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=HIST_BINS, range=(lo, hi))
    return counts, edges


@dataclass
class ParityReport:
    """Aggregated parity of all images. Per-pair arrays [M] span the matched pairs of every image."""

    passed: bool
    failures: list[str]
    tolerances: Tolerances
    num_images: int
    ref_detections: int
    test_detections: int
    matched: int
    match_fraction_ref: float | None   # matched / ref_detections (None when 0 / 0)
    match_fraction_test: float | None
    box_iou: np.ndarray
    box_error_px: np.ndarray
    score_delta: np.ndarray
    mask_iou: np.ndarray
    per_image: np.ndarray              # int64 [images,3]: reference, test, matched counts
    raw: dict | None = None            # aggregated raw-output errors (None: no image had raw outputs)
    ap_ref: dict | None = None
    ap_test: dict | None = None
    ap_delta: dict | None = None                 # {iou type: {stat: test - ref}}

    def to_dict(self, worst_images: int = 20) -> dict:
        """JSON-ready: summaries, 20-bin histograms and the images with most unmatched detections; the layout
        is REPORT_SCHEMA, described field by field in REPORT_SCHEMA_FILE."""
        unmatched = self.per_image[:, 0] + self.per_image[:, 1] - 2 * self.per_image[:, 2]
        worst = [i for i in np.argsort(-unmatched, kind="stable")[:worst_images] if unmatched[i] > 0]
        hists = {}
        for name, kind in (("mask_iou", "iou"), ("box_error_px", "error")):
            counts, edges = _histogram(getattr(self, name), kind)
            hists[name] = {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}
        return {
            "schema": dict(REPORT_SCHEMA), "package_version": package_version(),
            "passed": bool(self.passed), "failures": list(self.failures), "tolerances": asdict(self.tolerances),
            "images": int(self.num_images),
            "detections": {"reference": int(self.ref_detections), "test": int(self.test_detections),
                           "matched": int(self.matched)},
            "match_fraction": {"reference": self.match_fraction_ref, "test": self.match_fraction_test},
            **{name: _summary(getattr(self, name)) for name in ("box_iou", "box_error_px", "score_delta", "mask_iou")},
            "histograms": hists, "raw": self.raw,
            "ap": None if self.ap_ref is None else {"reference": self.ap_ref, "test": self.ap_test,
                                                    "delta": self.ap_delta},
            "worst_images": [{"image": int(i), "reference": int(self.per_image[i, 0]),
                              "test": int(self.per_image[i, 1]), "matched": int(self.per_image[i, 2])}
                             for i in worst],
        }

    def summary_lines(self) -> list[str]:
        """Human-readable lines, one metric each, ending with one line per failure."""
        t, fmt = self.tolerances, (lambda v: "n/a" if v is None else f"{v:.4f}")
        lines = [f"parity: {'PASS' if self.passed else 'FAIL'} (tolerances {t.name}, {self.num_images} images)",
                 f"detections: reference {self.ref_detections}, test {self.test_detections}, matched {self.matched}",
                 f"match fraction: reference {fmt(self.match_fraction_ref)}, test {fmt(self.match_fraction_test)}"
                 f" (min {t.min_match_fraction:.4f})"]
        for name, unit in (("box_iou", ""), ("box_error_px", " px"), ("score_delta", ""), ("mask_iou", "")):
            s = _summary(getattr(self, name))
            if s["count"]:
                lines.append(f"{name}: min {s['min']:.4f}  p1 {s['p1']:.4f}  median {s['median']:.4f}  "
                             f"p99 {s['p99']:.4f}  max {s['max']:.4f}{unit}")
        if self.raw:
            r = self.raw
            lines.append(f"raw outputs: box {fmt(r['max_box_error'])}, score {fmt(r['max_score_error'])}, "
                         f"mask prob {fmt(r['max_mask_prob_error'])} max abs error; num_detections differ in "
                         f"{r['num_detections_mismatch']} of {r['images']} images")
        for kind in sorted(self.ap_delta or {}):
            ref, test, delta = (d[kind].get("AP") for d in (self.ap_ref, self.ap_test, self.ap_delta))
            lines.append(f"{kind} AP: reference {fmt(ref)}, test {fmt(test)}, delta {fmt(delta)}"
                         f" (max {t.max_ap_delta:.4f})")
        return lines + [f"FAILED: {f}" for f in self.failures]


def _aggregate_raw(comparisons: list[RawComparison]) -> dict | None:
    if not comparisons:
        return None

    def worst(attr):
        vals = [getattr(c, attr) for c in comparisons if getattr(c, attr) is not None]
        return float(max(vals)) if vals else None
    return {"images": len(comparisons),
            "num_detections_mismatch": sum(not c.num_detections_equal for c in comparisons),
            "max_box_error": worst("max_box_error"), "max_score_error": worst("max_score_error"),
            "max_mask_prob_error": worst("max_mask_prob_error")}


def _ap_deltas(ref_ap: Mapping, test_ap: Mapping, limit: float, failures: list[str]) -> dict:
    """{iou type: {stat: test - ref}} (None where pycocotools reports -1); appends AP violations to failures."""
    deltas = {}
    for kind in sorted(set(ref_ap) | set(test_ap)):
        if kind not in ref_ap or kind not in test_ap:
            failures.append(f"{kind} AP given for only one side")
            continue
        r, t = ref_ap[kind], test_ap[kind]
        deltas[kind] = {k: (None if r[k] < 0 or t[k] < 0 else float(t[k]) - float(r[k])) for k in r if k in t}
        d = deltas[kind].get("AP")
        if d is not None and abs(d) > limit:
            failures.append(f"{kind} AP delta {d:+.4f} (reference {r['AP']:.4f}, test {t['AP']:.4f}) "
                            f"exceeds max_ap_delta {limit:.4f}")
    return deltas


@dataclass(frozen=True)
class PairCheck:
    """One per-pair tolerance: `stat` (min/max, or the outlier percentile) of the matched pairs' values."""

    label: str            # "box IoU"
    key: str              # the ParityReport field holding the values, e.g. "box_iou"
    stat: str             # "min", "p5", "max", "p95"
    limit_name: str       # the Tolerances field, e.g. "min_box_iou"
    limit: float
    value: float | None   # None when nothing matched
    unit: str = ""

    @property
    def is_min(self) -> bool:
        return self.limit_name.startswith("min")

    @property
    def held(self) -> bool | None:
        if self.value is None:
            return None
        return not (self.value < self.limit if self.is_min else self.value > self.limit)


def pair_checks(tol: Tolerances, values: Mapping[str, np.ndarray]) -> list[PairCheck]:
    """The per-pair limits of `tol` measured on matched-pair `values` (box_iou, mask_iou, box_error_px,
    score_delta), taking the worst pair or, with an outlier percentile p, p_p of IoUs and p_(100-p) of errors."""
    p = tol.outlier_percentile
    low, high = ("min", "max") if p == 0 else (f"p{p:g}", f"p{100 - p:g}")
    specs = [("box IoU", "box_iou", low, p, "min_box_iou", ""), ("mask IoU", "mask_iou", low, p, "min_mask_iou", ""),
             ("box error", "box_error_px", high, 100 - p, "max_box_error_px", " px"),
             ("score delta", "score_delta", high, 100 - p, "max_score_delta", "")]
    return [PairCheck(label, key, stat, name, getattr(tol, name),
                      float(np.percentile(values[key], q)) if values[key].size else None, unit)
            for label, key, stat, q, name, unit in specs]


def check_parity(ref_dets: Sequence[Mapping], test_dets: Sequence[Mapping], tolerances: Tolerances,
                 ref_ap: Mapping | None = None, test_ap: Mapping | None = None) -> ParityReport:
    """Match every image's detections, aggregate, and check against `tolerances`.

    ref_ap/test_ap: optional COCO metrics of each side, `{"bbox": {"AP": .., ...}, "segm": {...}}` (0-1),
    both or neither. Fails when the reference has no detections at all, or the test side has none.
    """
    if len(ref_dets) != len(test_dets):
        raise ValueError(f"{len(ref_dets)} reference images but {len(test_dets)} test images")
    if (ref_ap is None) != (test_ap is None):
        raise ValueError("give AP metrics of both sides or of neither")
    tol, failures = tolerances, []
    matches, raws, per_image = [], [], []
    for ref, test in zip(ref_dets, test_dets):
        m = match_detections(ref, test, tol.match_iou)
        matches.append(m)
        per_image.append((len(m.pairs) + len(m.unmatched_ref), len(m.pairs) + len(m.unmatched_test), len(m.pairs)))
        if ref.get("raw") is not None and test.get("raw") is not None:
            raws.append(compare_raw(ref["raw"], test["raw"], m.pairs))
    per_image = np.array(per_image, np.int64).reshape(-1, 3)
    n_ref, n_test, n_match = (int(v) for v in per_image.sum(axis=0))
    cat = {name: np.concatenate([getattr(m, name) for m in matches] + [np.zeros(0)])
           for name in ("box_iou", "box_error_px", "score_delta", "mask_iou")}
    frac_ref = n_match / n_ref if n_ref else None
    frac_test = n_match / n_test if n_test else None

    if n_ref == 0:
        failures.append(f"reference has no detections in {len(ref_dets)} images: parity cannot be checked on nothing")
    elif n_test == 0:
        failures.append(f"test side has no detections while the reference has {n_ref}")
    for side, frac, total in (("reference", frac_ref, n_ref), ("test", frac_test, n_test)):
        if frac is not None and frac < tol.min_match_fraction:
            failures.append(f"match fraction ({side}) {frac:.4f} < min_match_fraction {tol.min_match_fraction:.4f}"
                            f" ({total - n_match} of {total} {side} detections unmatched)")
    if n_match:
        for c in pair_checks(tol, cat):
            if not c.held:
                failures.append(f"{c.label} {c.stat} {c.value:.4f}{c.unit} {'<' if c.is_min else '>'} "
                                f"{c.limit_name} {c.limit:.4f}{c.unit}")
    ap_delta = None
    if ref_ap is not None:
        ap_delta = _ap_deltas(ref_ap, test_ap, tol.max_ap_delta, failures)
        ref_ap = {k: {s: float(v) for s, v in d.items()} for k, d in ref_ap.items()}
        test_ap = {k: {s: float(v) for s, v in d.items()} for k, d in test_ap.items()}

    return ParityReport(passed=not failures, failures=failures, tolerances=tol, num_images=len(ref_dets),
                        ref_detections=n_ref, test_detections=n_test, matched=n_match, match_fraction_ref=frac_ref,
                        match_fraction_test=frac_test, per_image=per_image, raw=_aggregate_raw(raws),
                        ap_ref=ref_ap, ap_test=test_ap, ap_delta=ap_delta, **cat)


# ---------------------------------------------------------------------------------------------- output

def write_report_json(report: ParityReport, path: str | Path) -> Path:
    """Write `report.to_dict()` as indented JSON, atomically (layout: REPORT_SCHEMA_FILE)."""
    return write_json(path, report.to_dict())


def _draw_histogram(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], values: np.ndarray, kind: str,
                    title: str, xlabel: str, font) -> None:
    """One bar chart inside box (x0, y0, x1, y1): title on top, x ticks and label below, count at the top left."""
    x0, y0, x1, y1 = box
    ax0, ay0, ax1, ay1 = x0 + 55, y0 + 30, x1 - 15, y1 - 45  # plot area
    draw.text((x0 + 10, y0 + 8), f"{title} ({values.size} pairs)", fill="black", font=font)
    draw.line([(ax0, ay0), (ax0, ay1), (ax1, ay1)], fill="black")
    draw.text((x0 + (x1 - x0) // 2 - 6 * len(xlabel) // 2, ay1 + 24), xlabel, fill="black", font=font)
    if not values.size:
        draw.text((ax0 + 20, (ay0 + ay1) // 2), "no matched pairs", fill="gray", font=font)
        return
    counts, edges = _histogram(values, kind)
    top = max(int(counts.max()), 1)
    draw.text((x0 + 5, ay0 - 4), str(top), fill="black", font=font)
    draw.text((x0 + 5, ay1 - 12), "0", fill="black", font=font)
    draw.text((x0 + 5, (ay0 + ay1) // 2), "pairs", fill="black", font=font)
    width = (ax1 - ax0) / len(counts)
    for k, c in enumerate(counts):
        if c:
            h = max((ay1 - ay0) * c / top, 2.0)  # a bar of a few pairs among thousands stays visible
            draw.rectangle([ax0 + k * width + 1, ay1 - h, ax0 + (k + 1) * width - 1, ay1 - 1], fill=(70, 130, 180))
    for frac in (0.0, 0.5, 1.0):
        x = ax0 + frac * (ax1 - ax0)
        draw.line([(x, ay1), (x, ay1 + 4)], fill="black")
        label = f"{edges[0] + frac * (edges[-1] - edges[0]):.4g}"
        draw.text((x - 3 * len(label), ay1 + 7), label, fill="black", font=font)


def save_error_histograms(report: ParityReport, path_png: str | Path, size: tuple[int, int] = (900, 320)) -> Path:
    """PNG (width x height pixels) with histograms of mask IoU and box coordinate error over matched pairs."""
    w, h = size
    image = Image.new("RGB", (w, h), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    _draw_histogram(draw, (0, 0, w // 2, h), report.mask_iou, "iou", "mask IoU", "mask IoU (full size)", font)
    _draw_histogram(draw, (w // 2, 0, w, h), report.box_error_px, "error", "box error",
                    "max |coordinate error| (px)", font)
    return atomic_write(path_png, lambda tmp: image.save(tmp, format="PNG"))
