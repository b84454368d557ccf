"""`check_parity`: match every image's detections, aggregate them and check them against `Tolerances`."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from maskrcnn_deploy.runtime.parity.matching import RawComparison, compare_raw, match_detections, ties_at_the_cap
from maskrcnn_deploy.runtime.parity.report import ParityReport
from maskrcnn_deploy.runtime.parity.tolerances import Tolerances, pair_checks

__all__ = ["check_parity"]


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


def check_parity(ref_dets: Sequence[Mapping], test_dets: Sequence[Mapping], tolerances: Tolerances,
                 ref_ap: Mapping | None = None, test_ap: Mapping | None = None,
                 max_detections: int | None = None) -> ParityReport:
    """Match every image's detections, aggregate, and check against `tolerances`.

    ref_ap/test_ap: optional COCO metrics of each side, `{"bbox": {"AP": .., ...}, "segm": {...}}` (0-1),
    both or neither. Fails when the reference has no detections at all, or the test side has none.
    max_detections: the models' detection cap; unmatched detections that are ties at it
    (matching.ties_at_the_cap) count as matched in the match fractions and are reported as `tied_at_cap`.
    """
    if len(ref_dets) != len(test_dets):
        raise ValueError(f"{len(ref_dets)} reference images but {len(test_dets)} test images")
    if (ref_ap is None) != (test_ap is None):
        raise ValueError("give AP metrics of both sides or of neither")
    tol, failures = tolerances, []
    matches, raws, per_image, tied = [], [], [], 0
    for ref, test in zip(ref_dets, test_dets):
        m = match_detections(ref, test, tol.match_iou)
        matches.append(m)
        tied += ties_at_the_cap(ref, test, m, max_detections, tol.max_score_delta)
        per_image.append((len(m.pairs) + len(m.unmatched_ref), len(m.pairs) + len(m.unmatched_test), len(m.pairs)))
        if ref.get("raw") is not None and test.get("raw") is not None:
            raws.append(compare_raw(ref["raw"], test["raw"], m.pairs))
    per_image = np.array(per_image, np.int64).reshape(-1, 3)
    n_ref, n_test, n_match = (int(v) for v in per_image.sum(axis=0))
    cat = {name: np.concatenate([getattr(m, name) for m in matches] + [np.zeros(0)])
           for name in ("box_iou", "box_error_px", "score_delta", "mask_iou")}
    frac_ref = (n_match + tied) / n_ref if n_ref else None
    frac_test = (n_match + tied) / n_test if n_test else None

    if n_ref == 0:
        failures.append(f"reference has no detections in {len(ref_dets)} images: parity cannot be checked on nothing")
    elif n_test == 0:
        failures.append(f"test side has no detections while the reference has {n_ref}")
    for side, frac, total in (("reference", frac_ref, n_ref), ("test", frac_test, n_test)):
        if frac is not None and frac < tol.min_match_fraction:
            failures.append(f"match fraction ({side}) {frac:.4f} < min_match_fraction {tol.min_match_fraction:.4f}"
                            f" ({total - n_match - tied} of {total} {side} detections unmatched)")
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
                        ap_ref=ref_ap, ap_test=test_ap, ap_delta=ap_delta, tied_at_cap=tied, **cat)
