"""Accuracy parity: do an artifact's detections (ONNX Runtime / TensorRT) match the PyTorch reference's?

Input, per image and per side, a detection dict in original image coordinates (runtime/predictor.py):
    boxes [D,4] float32 xyxy pixels   scores [D] float32   labels [D] int64 (1..K-1)
    masks [D,H,W] bool (full image)   rles (optional, COCO RLE of masks; reused when present)
    raw (optional): that image's fixed-size outputs before post-processing: boxes [N,4] (model input
        pixels), scores [N], labels [N], masks [N,28,28] probabilities, num_detections (int); raw row i
        (i < num_detections) is detection i.

One concept per module:
    tolerances : `Tolerances`, the fp32/fp16/int8 presets, the per-pair limits (`pair_checks`)
    matching   : pairing one image's detections as sets (`match_detections`), raw-output differences
    compare    : `check_parity`, all images matched, aggregated and checked against `Tolerances`
    report     : `ParityReport` and its versioned JSON layout (REPORT_SCHEMA, runtime/schemas/), writer
    histograms : the error histograms of the report and the PNG of `check --histogram`
The names below are re-exported here: callers write `parity.check_parity`, `parity.tolerances_from`.
"""

from __future__ import annotations

from maskrcnn_deploy.runtime.parity.compare import check_parity
from maskrcnn_deploy.runtime.parity.histograms import save_error_histograms
from maskrcnn_deploy.runtime.parity.matching import MatchResult, RawComparison, box_iou, compare_raw, match_detections
from maskrcnn_deploy.runtime.parity.report import REPORT_SCHEMA, REPORT_SCHEMA_FILE, ParityReport, write_report_json
from maskrcnn_deploy.runtime.parity.tolerances import (
    TOLERANCE_PRESETS,
    PairCheck,
    Tolerances,
    pair_checks,
    tolerances_from,
)

__all__ = ["Tolerances", "TOLERANCE_PRESETS", "tolerances_from", "MatchResult", "box_iou", "match_detections",
           "RawComparison", "compare_raw", "ParityReport", "PairCheck", "pair_checks", "check_parity", "write_report_json",
           "save_error_histograms", "REPORT_SCHEMA", "REPORT_SCHEMA_FILE"]
