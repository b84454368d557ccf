"""Parity tolerances: the pass/fail limits (`Tolerances`), the per-precision presets, and the per-pair
limits measured on matched pairs (`pair_checks`, shared by `check_parity` and the HTML report)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Mapping

import numpy as np

from maskrcnn_deploy.common.errors import UsageError

__all__ = ["Tolerances", "TOLERANCE_PRESETS", "ToleranceError", "tolerances_from", "PairCheck", "pair_checks"]


class ToleranceError(UsageError, ValueError):
    """An unknown tolerance preset or field (`--tolerance`, `--set`); exit code 2."""


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
    """A preset's tolerances with some fields replaced; ToleranceError naming the valid presets/fields."""
    if preset not in TOLERANCE_PRESETS:
        raise ToleranceError(f"unknown tolerance preset {preset!r}; valid presets: {', '.join(TOLERANCE_PRESETS)}")
    valid = [f.name for f in fields(Tolerances) if f.name != "name"]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ToleranceError(f"unknown tolerance field(s) {', '.join(unknown)}; valid fields: {', '.join(valid)}")
    name = preset + (f" + {', '.join(sorted(overrides))}" if overrides else "")
    return replace(TOLERANCE_PRESETS[preset], name=name, **{k: float(v) for k, v in overrides.items()})


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
