"""The versioned parity report: `ParityReport` (aggregated matches of all images), its JSON layout and writer.

The JSON layout is REPORT_SCHEMA, described field by field by the JSON Schema in REPORT_SCHEMA_FILE
(runtime/schemas/); `check_parity` (compare.py) builds the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from maskrcnn_deploy.common.files import write_json
from maskrcnn_deploy.runtime.backend.tensorrt.environment import package_version  # pure Python: no TensorRT needed
from maskrcnn_deploy.runtime.parity.histograms import histogram
from maskrcnn_deploy.runtime.parity.tolerances import Tolerances

__all__ = ["REPORT_SCHEMA", "REPORT_SCHEMA_FILE", "ParityReport", "write_report_json"]

# The JSON report's name and version, written into every report. CI jobs read reports by these fields, so
# adding, removing, renaming or retyping a field means version + 1 and a new schema file (tests/test_ci_gate.py
# holds the frozen key list of each version).
REPORT_SCHEMA = {"name": "maskrcnn-deploy.parity-report", "version": 2}  # 2: detections.tied_at_cap
REPORT_SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "parity_report.v2.schema.json"  # JSON Schema


def _summary(values: np.ndarray) -> dict:
    """count, min, p1, p5, median, mean, p95, p99, max (None when empty) as plain floats."""
    keys = ("min", "p1", "p5", "median", "mean", "p95", "p99", "max")
    if not values.size:
        return {"count": 0, **{k: None for k in keys}}
    p = np.percentile(values, [0, 1, 5, 50, 95, 99, 100])
    stats = [p[0], p[1], p[2], p[3], values.mean(), p[4], p[5], p[6]]
    return {"count": int(values.size), **{k: float(v) for k, v in zip(keys, stats)}}


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
    match_fraction_ref: float | None   # (matched + tied_at_cap) / ref_detections (None when 0 / 0)
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
    tied_at_cap: int = 0               # unmatched pairs that are ties at the detection cap (matching.py)

    def to_dict(self, worst_images: int = 20) -> dict:
        """JSON-ready: summaries, 20-bin histograms and the images with most unmatched detections; the layout
        is REPORT_SCHEMA, described field by field in REPORT_SCHEMA_FILE."""
        unmatched = self.per_image[:, 0] + self.per_image[:, 1] - 2 * self.per_image[:, 2]
        worst = [i for i in np.argsort(-unmatched, kind="stable")[:worst_images] if unmatched[i] > 0]
        hists = {}
        for name, kind in (("mask_iou", "iou"), ("box_error_px", "error")):
            counts, edges = histogram(getattr(self, name), kind)
            hists[name] = {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}
        return {
            "schema": dict(REPORT_SCHEMA), "package_version": package_version(),
            "passed": bool(self.passed), "failures": list(self.failures), "tolerances": asdict(self.tolerances),
            "images": int(self.num_images),
            "detections": {"reference": int(self.ref_detections), "test": int(self.test_detections),
                           "matched": int(self.matched), "tied_at_cap": int(self.tied_at_cap)},
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
                 f"detections: reference {self.ref_detections}, test {self.test_detections}, matched {self.matched}"
                 + (f", tied at the detection cap {self.tied_at_cap}" if self.tied_at_cap else ""),
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


def write_report_json(report: ParityReport, path: str | Path) -> Path:
    """Write `report.to_dict()` as indented JSON, atomically (layout: REPORT_SCHEMA_FILE)."""
    return write_json(path, report.to_dict())
