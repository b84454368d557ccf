"""OpenVINO against ONNX Runtime on the CPU, FP32 and INT8, in one run (issue 22).

Graphs, all from one float32 standard-ops deploy graph (`export --roi-align standard`):
    fp32     the graph itself
    qdq      the project's Q/DQ graph (`calibrate`, every layer group INT8, placed for TensorRT: symmetric s8
             activations, per-channel weights)
    ort_qs   ONNX Runtime's own `quantize_static` of it (QDQ, u8 asymmetric activations, s8 weights; Conv, Gemm
             and MatMul), the tool a CPU user would pick instead
each run in ONNX Runtime and in OpenVINO (runtime/backend/openvino.py: float32 precision hint, so the FP32 rows
compute what ONNX Runtime computes). Latency: `run_raw` (the graph alone) on one preprocessed image, every
predictor timed once per round, round-robin, median of --repeat rounds after --warmup. AP: COCO bbox/segm AP
points on --eval-data (held out from --calib-data). Prints a table with each row's speed-up over FP32 in the same
runtime and over the fastest other row; writes OUT/summary.json.

    .venv/bin/python bench/openvino_speed.py --graph out/t17/model.standard.onnx --calib-data out/t17/data/train.json \\
        --eval-data out/t17/data/val.json --out out/openvino_speed --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnx

from maskrcnn_deploy.calibration.budget import EvalSet
from maskrcnn_deploy.calibration.calibrate import CalibrateOptions, calibrate_int8
from maskrcnn_deploy.calibration.data import CalibrationBatches
from maskrcnn_deploy.calibration.deploy_graph import load_float_graph
from maskrcnn_deploy.export.graph_io import metadata_of
from maskrcnn_deploy.model.evaluation import coco_ap
from maskrcnn_deploy.runtime.evaluate import category_ids_of
from maskrcnn_deploy.runtime.load import load

RUNTIMES = ("onnxruntime", "openvino")


def project_qdq(graph: Path, calib: Path, out: Path, images: int) -> Path:
    """The project's Q/DQ graph of `graph` (calibrate without an AP budget: every layer group INT8)."""
    path = out / "qdq.onnx"
    if not path.is_file():
        calibrate_int8(CalibrateOptions(model=graph, data=calib, output=path, num_images=images))
    return path


def ort_quantize_static(graph: Path, calib: Path, out: Path, images: int) -> Path:
    """ONNX Runtime's `quantize_static` of `graph` on the calibration images, with the graph's metadata."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    path = out / "ort_qs.onnx"
    if path.is_file():
        return path
    batches = CalibrationBatches.from_data(calib, load_float_graph(graph), images)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(batches)

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(graph), str(path), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "Gemm", "MatMul"])
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, metadata_of(onnx.load(str(graph), load_external_data=False)))
    onnx.save(model, str(path))
    return path


def round_robin(predictors: dict, image: np.ndarray, repeat: int, warmup: int) -> dict[str, float]:
    """name -> median ms of `run_raw` on one image; each round times every predictor once, in turn."""
    first = next(iter(predictors.values()))
    batch, sizes = first.prepare([image])
    times: dict[str, list[float]] = {name: [] for name in predictors}
    for r in range(warmup + repeat):
        for name, predictor in predictors.items():
            t0 = time.perf_counter()
            predictor.run_raw(batch, sizes)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def ap_points(predictor, evalset: EvalSet) -> dict[str, float]:
    detections = [predictor.predict([image])[0] for image in evalset.images]
    metrics = coco_ap(evalset.coco, evalset.image_ids, detections, category_ids_of(predictor))
    return {kind: 100.0 * metrics[kind]["AP"] for kind in ("bbox", "segm")}


def table(rows: list[dict]) -> list[str]:
    lines = [f"{'graph':<8} {'runtime':<12} {'bbox AP':>8} {'segm AP':>8} {'segm drop':>9} {'median ms':>10} "
             f"{'vs FP32 same runtime':>21} {'vs fastest other':>17}"]
    for r in rows:
        lines.append(f"{r['graph']:<8} {r['runtime']:<12} {r['bbox']:8.2f} {r['segm']:8.2f} {r['segm_drop']:+9.2f} "
                     f"{r['ms']:10.1f} {r['vs_fp32']:20.2f}x {r['vs_best_other']:16.2f}x ({r['best_other']})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", required=True, help="float32 standard-ops deploy graph (.onnx)")
    parser.add_argument("--calib-data", required=True, help="calibration images: COCO json or folder")
    parser.add_argument("--eval-data", required=True, help="held-out COCO json for AP")
    parser.add_argument("--out", default="out/openvino_speed")
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--eval-images", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    graph = Path(args.graph)
    graphs = {"fp32": graph, "qdq": project_qdq(graph, Path(args.calib_data), out, args.calib_images),
              "ort_qs": ort_quantize_static(graph, Path(args.calib_data), out, args.calib_images)}
    predictors = {(g, rt): load(path, threads=args.threads, backend=rt) for g, path in graphs.items() for rt in RUNTIMES}
    evalset = EvalSet.from_data(args.eval_data, args.eval_images)
    aps = {key: ap_points(p, evalset) for key, p in predictors.items()}
    from maskrcnn_deploy.model.data.images import load_rgb, to_float_chw
    ms = round_robin({f"{g}/{rt}": p for (g, rt), p in predictors.items()}, to_float_chw(load_rgb(evalset.images[0])),
                     args.repeat, args.warmup)
    rows = []
    for (g, rt) in predictors:
        others = {k: v for k, v in ms.items() if k != f"{g}/{rt}"}
        best = min(others, key=others.get)
        rows.append({"graph": g, "runtime": rt, **aps[(g, rt)], "segm_drop": aps[("fp32", rt)]["segm"] - aps[(g, rt)]["segm"],
                     "ms": ms[f"{g}/{rt}"], "vs_fp32": ms[f"fp32/{rt}"] / ms[f"{g}/{rt}"],
                     "best_other": best, "vs_best_other": others[best] / ms[f"{g}/{rt}"]})
    for line in table(rows):
        print(line)
    settings = {k: getattr(args, k) for k in ("graph", "calib_data", "eval_data", "calib_images", "eval_images",
                                               "repeat", "warmup", "threads")}
    (out / "summary.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))
    print(f"summary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
