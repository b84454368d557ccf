"""Activation ranges on calibration data, through onnxruntime's calibrators.

    amax = collect_ranges(graph, batches, method="percentile", tensors=names)   # {tensor: amax}

Methods (all symmetric, amax >= 0 per tensor, scale = amax / 127):
    max        : largest |x| seen                        (onnxruntime MinMaxCalibrater, symmetric)
    percentile : the `percentile`-th percentile of |x|   (onnxruntime PercentileCalibrater: |x| histogram,
                 2048 bins, threshold = left edge of the bin where the CDF reaches the percentile)
    entropy    : TensorRT's entropy calibration: on the same |x| histogram, the clipping threshold
                 whose 128-level quantization loses least information, min KL(P || Q)
                 (`entropy_threshold`)

What onnxruntime's calibrators lack, and this module adds:
    - they open their own InferenceSession, which here must register our custom RoIAlign op
      (onnxruntime-extensions PyOp);
    - they calibrate all tensors of chosen op types, where we want an explicit tensor list;
    - they collect every batch before reducing; we feed one batch at a time (bounded memory,
      progress per batch);
    - their EntropyCalibrater is not TensorRT's method (a signed histogram whose 128 levels span
      both signs, half of int8's resolution per side) and searches in pure-Python loops, hours on
      a real model; `entropy_threshold` is the |x| method, vectorised.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from maskrcnn_deploy.calibration.regions import PrecisionError
from maskrcnn_deploy.common.files import atomic_write
from maskrcnn_deploy.common.interrupts import deferred_interrupt
from maskrcnn_deploy.common.progress import Progress

__all__ = ["METHODS", "collect_ranges", "region_tensors", "entropy_threshold", "read_ranges"]

METHODS = ("max", "percentile", "entropy")
# seconds between saves of the range statistics; a save costs well under a second (a few MB)
SAVE_EVERY_S = 30.0


def _calibrator_class(method: str):
    from onnxruntime.quantization import calibrate as ortcal

    # entropy reads the |x| histograms the percentile calibrater collects (entropy_threshold)
    base = ortcal.MinMaxCalibrater if method == "max" else ortcal.PercentileCalibrater

    class Calibrator(base):
        """onnxruntime's calibrator with our custom op registered and an explicit tensor list."""

        tensor_names: set[str] | None = None

        def select_tensors_to_calibrate(self, model):
            tensors, value_infos = super().select_tensors_to_calibrate(model)
            if self.tensor_names is not None:
                tensors &= self.tensor_names
            return tensors, value_infos

        def create_inference_session(self):
            import onnxruntime as ort

            from maskrcnn_deploy.plugins import onnxruntime_op as onnx_backend

            options = ort.SessionOptions()
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.register_custom_ops_library(onnx_backend.custom_op_library_path())
            model = onnx_backend.for_pyop(onnx.load(self.augmented_model_path))
            self.infer_session = ort.InferenceSession(model.SerializeToString(), options,
                                                      providers=["CPUExecutionProvider"])

    return Calibrator


class _OneFeed:
    """A CalibrationDataReader over a single feed."""

    def __init__(self, feed):
        self.feed = feed

    def get_next(self):
        feed, self.feed = self.feed, None
        return feed


def region_tensors(model: onnx.ModelProto, node_names) -> set[str]:
    """Activation tensors (inputs and outputs, no initializers) of the named nodes."""
    initializers = {i.name for i in model.graph.initializer}
    wanted = set(node_names)
    names = set()
    for node in model.graph.node:
        if node.name in wanted:
            names.update(n for n in list(node.input) + list(node.output) if n and n not in initializers)
    return names


def collect_ranges(model: onnx.ModelProto, feeds: Sequence[dict], method: str = "percentile",
                   tensors: set[str] | None = None, percentile: float = 99.99, num_bins: int = 2048,
                   show_progress: bool = True, progress_file: str | Path | None = None, key: str = "",
                   save_every_s: float | None = None) -> dict[str, float]:
    """amax per tensor over all feeds (all float activations when `tensors` is None).

    feeds: a sized iterable of ONNX Runtime input dicts, e.g. `CalibrationBatches`.
    progress_file: where the statistics gathered so far are saved (`.npz`, atomically) every
    `save_every_s` seconds (default SAVE_EVERY_S) and after the last feed, tagged with `key` (a digest
    of everything the statistics depend on). A run that finds the file with its key resumes after the
    saved feed, with the same result as an uninterrupted run; the caller deletes the file once its
    outputs are written. (The statistics are saved between feeds only: a feed cut off midway may have
    updated some tensors' histograms and not others.)
    """
    if method not in METHODS:
        raise PrecisionError(f"unknown calibration method {method!r}: use one of {', '.join(METHODS)}")
    if method == "percentile" and not 0 < percentile <= 100:
        raise PrecisionError(f"--percentile must be in (0, 100], got {percentile}")
    import onnx.shape_inference

    from maskrcnn_deploy.export.onnx_ops import register_schema
    register_schema()  # our op's schema, for the checker and shape inference

    with tempfile.TemporaryDirectory(prefix="mrd_calib_") as tmp:
        source = Path(tmp) / "model.onnx"
        onnx.save(onnx.shape_inference.infer_shapes(model), str(source))
        options = dict(symmetric=True) if method == "max" else \
            dict(symmetric=True, num_bins=num_bins, percentile=percentile)
        cls = _calibrator_class(method)
        cls.tensor_names = tensors
        calibrator = cls(source, None, str(Path(tmp) / "augmented.onnx"), **options)
        calibrator.augment_graph()
        calibrator.create_inference_session()
        done = _restore_state(calibrator, progress_file, key) if progress_file else 0
        if done:
            print(f"resuming: {done} of {len(feeds)} calibration batches already collected ({progress_file})",
                  flush=True)
        progress = Progress(len(feeds), f"calibrate ({method})", interval=5.0, start=done) if show_progress else None
        save_every_s = SAVE_EVERY_S if save_every_s is None else save_every_s
        last_save = time.monotonic()
        with contextlib.redirect_stdout(io.StringIO()):  # onnxruntime prints a line per batch
            for i, feed in enumerate(itertools.islice(feeds, done, None), start=done + 1):
                with deferred_interrupt():  # a Ctrl-C inside the custom op's callback would abort
                    calibrator.collect_data(_OneFeed(feed))
                if progress_file and (i == len(feeds) or time.monotonic() - last_save >= save_every_s):
                    _save_state(calibrator, progress_file, key, i)
                    last_save = time.monotonic()
                if progress:
                    progress.update(i)
            if method == "entropy":
                histograms = calibrator.collector.histogram_dict if calibrator.collector else {}
                amax = {name: entropy_threshold(h[0], h[1], num_bins) for name, h in histograms.items()}
            else:
                amax = {name: float(max(np.abs(np.asarray(v, dtype=np.float64)).max() for v in data.range_value))
                        for name, data in calibrator.compute_data().data.items()}
    if tensors is not None and not amax:
        raise PrecisionError("calibration observed none of the requested tensors")
    return amax


# The statistics onnxruntime's calibrators accumulate batch by batch: MinMaxCalibrater's
# `calibrate_tensors_range` (per tensor lowest, highest) and HistogramCalibrater's
# `collector.histogram_dict` (per tensor hist, edges, min, max). Saved as plain arrays (no pickle).

def _save_state(calibrator, path: str | Path, key: str, done: int) -> None:
    arrays = {"key": np.array(key), "done": np.array(done)}
    if hasattr(calibrator, "collector"):  # HistogramCalibrater
        items = calibrator.collector.histogram_dict.items()
        arrays["names"] = np.array([name for name, _ in items])
        for i, (_, (hist, edges, low, high)) in enumerate(items):
            arrays.update({f"hist{i}": hist, f"edges{i}": edges,
                           f"min{i}": np.asarray(low), f"max{i}": np.asarray(high)})
    else:
        ranges = calibrator.calibrate_tensors_range
        arrays["names"] = np.array(list(ranges.keys()))
        for i, data in enumerate(ranges.values()):
            arrays.update({f"min{i}": np.asarray(data.range_value[0]), f"max{i}": np.asarray(data.range_value[1])})

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def _restore_state(calibrator, path: str | Path, key: str) -> int:
    """Load the statistics saved under `key` into a fresh calibrator; the number of feeds they cover."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, HistogramCollector, TensorsData

    path = Path(path)
    if not path.exists():
        return 0
    try:
        with np.load(path, allow_pickle=False) as saved:
            state = {name: saved[name] for name in saved.files}
    except (OSError, ValueError, EOFError):
        state = {}
    if "key" not in state or str(state["key"]) != key:
        print(f"not resuming from {path}: it records a calibration with other inputs; starting afresh", flush=True)
        return 0
    names = [str(n) for n in state["names"]]
    if hasattr(calibrator, "collector"):
        calibrator.collector = HistogramCollector(
            method=calibrator.method, symmetric=calibrator.symmetric, num_bins=calibrator.num_bins,
            num_quantized_bins=calibrator.num_quantized_bins, percentile=calibrator.percentile,
            scenario=calibrator.scenario)
        calibrator.collector.histogram_dict = {
            name: (state[f"hist{i}"], state[f"edges{i}"], state[f"min{i}"][()], state[f"max{i}"][()])
            for i, name in enumerate(names)}
    else:
        calibrator.calibrate_tensors_range = TensorsData(
            CalibrationMethod.MinMax, {name: (state[f"min{i}"], state[f"max{i}"]) for i, name in enumerate(names)})
    return int(state["done"])


def entropy_threshold(hist: np.ndarray, edges: np.ndarray, num_bins: int = 2048,
                      num_levels: int = 128) -> float:
    """Entropy calibration threshold of a |x| histogram (counts [n], edges [n + 1]), as TensorRT's
    entropy calibrator and NVIDIA's pytorch-quantization compute it.

    The histogram is first merged to at most `num_bins` bins (onnxruntime's collector adds bins
    of the first batch's width when later batches reach further), and bin 0 is given bin 1's
    count: post-ReLU tensors are mostly exact zeros, which int8 represents exactly, and left in
    they would make clipping the tail look cheap. Then, for every i in [num_levels, n]:
        P = the first i bins, with everything beyond added to bin i - 1 (clipping at edges[i])
        Q = those i bins quantized to `num_levels` levels (bin k -> level k * num_levels // i),
            each level's count spread evenly over its non-empty bins (empty bins stay empty)
        KL(P || Q), both normalised; Q's empty bins where P is not get a small epsilon.
    The threshold is edges[i] of the smallest KL, the largest such i on ties.
    """
    hist = np.asarray(hist, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if hist.sum() == 0 or edges[-1] <= 0:
        return 0.0
    merge = -(-hist.size // num_bins)  # ceil
    if merge > 1:  # the bins have one width: merging `merge` neighbours keeps the edges exact
        width = edges[1] - edges[0]
        hist = np.concatenate([hist, np.zeros(-hist.size % merge)]).reshape(-1, merge).sum(axis=1)
        edges = edges[0] + width * merge * np.arange(hist.size + 1)
    n = hist.size
    if n <= num_levels:
        return float(edges[-1])
    hist = hist.copy()
    hist[0] = hist[1]
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = sum(hist[i:])
    best_i, best_kl = n, np.inf
    for i in range(num_levels, n + 1):
        sliced = hist[:i]
        p = sliced.copy()
        p[-1] += tail[i]
        level = np.arange(i) * num_levels // i
        nonzero = (sliced != 0).astype(np.float64)
        level_sum = np.bincount(level, weights=sliced, minlength=num_levels)
        level_nonzero = np.bincount(level, weights=nonzero, minlength=num_levels)
        spread = np.divide(level_sum, level_nonzero, out=np.zeros(num_levels), where=level_nonzero > 0)
        kl = _kl_divergence(p, spread[level] * nonzero)
        if kl <= best_kl:
            best_i, best_kl = i, kl
    return float(edges[best_i])


def _kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-4) -> float:
    """KL(p || q) of two unnormalised histograms over the bins where p > 0; q's zeros there get eps."""
    p = p / p.sum()
    q_sum = q.sum()
    if q_sum == 0:
        return np.inf
    q = q / q_sum
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / np.where(q[mask] > 0, q[mask], eps))))


def read_ranges(path: str | Path) -> dict[str, float]:
    """tensor -> amax from the `<stem>.ranges.json` that `calibrate` writes beside its graph."""
    import json

    path = Path(path)
    if not path.is_file():
        raise PrecisionError(f"ranges file not found: {path} (calibrate writes <output stem>.ranges.json)")
    try:
        amax = json.loads(path.read_text())["amax"]
        return {str(name): float(value) for name, value in amax.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise PrecisionError(f"{path} is not a ranges file from `maskrcnn-deploy calibrate` "
                             "(expected {\"amax\": {tensor: value}})") from None
