"""Error of one artifact tensor against its reference tensor, per image and over all images.

Per image and tensor, through Polygraphy's comparator (polygraphy.comparator):
    cosine  : `CosineSimilarityCompareFunc` (1 for equal tensors, also for two all-zero ones)
    rel_l2  : `L2CompareFunc`'s ||artifact - reference||_2, divided by ||reference||_2 (by 1e-12 when it is 0)
    p99_abs : the 99th percentile of |artifact - reference|, `comparator.util.compute_quantile`
    max_abs : the largest |artifact - reference|, `comparator.util.compute_max`
Polygraphy's `SimpleCompareFunc` also gives quantiles, but computes relative-error arrays, medians and
histograms of every tensor besides, several times the work on hundreds of tensors per image.

Both arrays are compared in float64 (a float16 artifact tensor is widened exactly). Over images each metric
keeps its worst value: the lowest cosine, the highest errors, so an error that one image shows is not
averaged away. A tensor whose shapes differ between the sides on any image (a data-dependent count after
NMS, when the two sides keep different boxes) is `shape_mismatch`; one with inf or nan on either side
where the other is finite is `nonfinite`; both have no metrics.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

__all__ = ["TensorError", "compare_tensor", "worst_of", "STATUSES"]

STATUSES = ("compared", "shape_mismatch", "nonfinite")
_TINY = 1e-12


@dataclass
class TensorError:
    """Errors of one tensor (on one image, or the worst over images); None where status != compared."""

    status: str                 # one of STATUSES
    shape: list[int]            # the reference tensor's shape (the first image's)
    dtype: str                  # the artifact tensor's dtype ("float16", "float32", ...)
    cosine: float | None = None
    rel_l2: float | None = None
    p99_abs: float | None = None
    max_abs: float | None = None


def _polygraphy_metrics(ref: np.ndarray, art: np.ndarray) -> tuple[float, float, float, float]:
    """(cosine, rel_l2, p99_abs, max_abs) of two finite float64 arrays of one shape."""
    from polygraphy.comparator import CosineSimilarityCompareFunc, IterationResult, L2CompareFunc
    from polygraphy.comparator import util as comp_util
    from polygraphy.logger import G_LOGGER

    one = lambda _name, _index, _result: ["t"]  # noqa: E731  (each side holds the one tensor "t")
    results = [IterationResult(OrderedDict(t=a), runner_name=n) for a, n in ((art, "artifact"), (ref, "reference"))]
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # Polygraphy logs a pass/fail line per call
        cosine = CosineSimilarityCompareFunc(find_output_func=one)(*results)["t"].cosine_similarity
        l2 = L2CompareFunc(find_output_func=one)(*results)["t"].l2_norm
    diff = np.abs(art - ref)
    norm = float(np.sqrt(np.sum(ref * ref)))
    return (float(cosine), float(l2) / max(norm, _TINY), float(comp_util.compute_quantile(diff, 0.99)),
            float(comp_util.compute_max(diff)))


def compare_tensor(ref: np.ndarray, art: np.ndarray) -> TensorError:
    """The errors of artifact tensor `art` against reference tensor `ref` on one image."""
    shape, dtype = [int(d) for d in ref.shape], str(art.dtype)
    if ref.shape != art.shape:
        return TensorError("shape_mismatch", shape, dtype)
    ref64, art64 = ref.astype(np.float64), art.astype(np.float64)
    finite_ref, finite_art = np.isfinite(ref64), np.isfinite(art64)
    if not (finite_ref.all() and finite_art.all()):
        same = np.array_equal(finite_ref, finite_art) and np.array_equal(ref64[~finite_ref], art64[~finite_art],
                                                                          equal_nan=True)
        if not same:
            return TensorError("nonfinite", shape, dtype)
        ref64, art64 = ref64[finite_ref], art64[finite_art]  # the same infs on both sides: compare the rest
    if ref64.size == 0:
        return TensorError("compared", shape, dtype, 1.0, 0.0, 0.0, 0.0)
    return TensorError("compared", shape, dtype, *_polygraphy_metrics(ref64, art64))


def _worst(values: list[float | None], pick) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return pick(values) if values else None


def worst_of(errors: list[TensorError]) -> TensorError:
    """One tensor's errors over images: worst status (nonfinite, then shape_mismatch), else the worst of each
    metric (min cosine, max errors)."""
    first = errors[0]
    for status in ("nonfinite", "shape_mismatch"):
        if any(e.status == status for e in errors):
            return TensorError(status, first.shape, first.dtype)
    return TensorError("compared", first.shape, first.dtype, _worst([e.cosine for e in errors], min),
                       *(_worst([getattr(e, k) for e in errors], max) for k in ("rel_l2", "p99_abs", "max_abs")))
