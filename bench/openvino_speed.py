"""OpenVINO against ONNX Runtime on the CPU, FP32 and INT8, in one run (issue 22).

Graphs, all from one float32 standard-ops deploy graph (`export --roi-align standard`):
    fp32     the graph itself
    qdq      the project's Q/DQ graph (`calibrate`, every layer group INT8, placed for TensorRT: symmetric s8
             activations, per-channel weights)
    cpu_int8 the CPU INT8 output of `calibrate --target cpu` (calibration/cpu_int8.py: ONNX Runtime's own
             `quantize_static`, QDQ, u8 asymmetric activations, s8 weights; Conv, Gemm and MatMul), the tool a CPU
             user would pick instead, which this project now ships for CPUs
each run in ONNX Runtime and in OpenVINO (runtime/backend/openvino.py: float32 precision hint, so the FP32 rows
compute what ONNX Runtime computes), plus, with --custom-graph, the custom-op export of the same checkpoint in ONNX
Runtime (graph `custom`: the RoIAlign node of plugins/onnxruntime), and, with --checkpoint, the eager PyTorch
model (runtime/backend/pytorch.py `EagerPredictor.run_raw`: it runs on the resized image without the canvas
padding, so give a --timing-image that fills the canvas for a like-for-like row). Latency: `run_raw` (the model
alone) on --batch copies of one preprocessed image (the graph must have that static batch), every predictor timed
once per round, round-robin, median of --repeat rounds after --warmup. AP: COCO bbox/segm AP points on --eval-data
(held out from --calib-data; --eval-images 0 skips it); drops are against the eager model with --checkpoint, else
against the FP32 graph in ONNX Runtime. Prints a table with each row's speed-up over FP32 in the same runtime and
over the fastest other row; writes OUT/summary.json.

    .venv/bin/python bench/openvino_speed.py --graph out/t17/model.standard.onnx \
        --calib-data out/t17/data/train.json --eval-data out/t17/data/val.json --out out/openvino_speed \
        --threads 2 [--checkpoint out/t17/model/model_final.pt] [--custom-graph out/t17/model.custom.onnx]
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np
import onnx
from timing import round_robin_ms  # bench/timing.py

from maskrcnn_deploy.calibration.budget import EvalSet
from maskrcnn_deploy.calibration.calibrate import CalibrateOptions, calibrate_int8
from maskrcnn_deploy.calibration.cpu_int8 import quantize_cpu_int8
from maskrcnn_deploy.export.graph_io import static_input_size
from maskrcnn_deploy.model.data.images import load_rgb, to_float_chw
from maskrcnn_deploy.model.evaluation import coco_ap
from maskrcnn_deploy.runtime.evaluate import category_ids_of
from maskrcnn_deploy.runtime.load import load

RUNTIMES = ("onnxruntime", "openvino")


def project_qdq(graph: Path, calib: Path, out: Path, images: int, batch: int) -> Path:
    """The project's Q/DQ graph of `graph` (calibrate without an AP budget: every layer group INT8)."""
    path = out / "qdq.onnx"
    if not path.is_file():
        calibrate_int8(CalibrateOptions(model=graph, data=calib, output=path, num_images=images, batch_size=batch))
    return path


def cpu_int8(graph: Path, calib: Path, out: Path, images: int, batch: int) -> Path:
    """`calibrate --target cpu` of `graph` on the calibration images (calibration/cpu_int8.py)."""
    path = out / "cpu_int8.onnx"
    if not path.is_file():
        quantize_cpu_int8(CalibrateOptions(model=graph, data=calib, output=path, method="max", num_images=images,
                                           batch_size=batch))
    return path


def round_robin(predictors: dict, image: np.ndarray, batch_size: int, repeat: int, warmup: int) -> dict[str, float]:
    """name -> median ms of `run_raw` on `batch_size` copies of one image; each round times every predictor once,
    in turn (timing.py `round_robin_ms`). The batch is the first predictor's preprocessing (a graph's: resized and
    padded to its canvas)."""
    first = next(iter(predictors.values()))
    batch, sizes = first.prepare([image] * batch_size)
    calls = {name: functools.partial(predictor.run_raw, batch, sizes) for name, predictor in predictors.items()}
    return round_robin_ms(calls, repeat, warmup)


def ap_points(predictor, evalset: EvalSet) -> dict[str, float]:
    detections = [predictor.predict([image])[0] for image in evalset.images]
    metrics = coco_ap(evalset.coco, evalset.image_ids, detections, category_ids_of(predictor))
    return {kind: 100.0 * metrics[kind]["AP"] for kind in ("bbox", "segm")}


def table(rows: list[dict]) -> list[str]:
    def num(value, fmt):
        return f"{'-':>{int(fmt.split('.')[0].lstrip('+'))}}" if value is None else format(value, fmt)

    lines = [f"{'graph':<8} {'runtime':<12} {'bbox AP':>8} {'segm AP':>8} {'bbox drop':>9} {'segm drop':>9} "
             f"{'median ms':>10} {'vs FP32 same runtime':>21} {'vs fastest other':>17}"]
    for r in rows:
        lines.append(f"{r['graph']:<8} {r['runtime']:<12} {num(r.get('bbox'), '8.2f')} {num(r.get('segm'), '8.2f')} "
                     f"{num(r.get('bbox_drop'), '+9.2f')} {num(r.get('segm_drop'), '+9.2f')} "
                     f"{r['ms']:10.1f} {r['vs_fp32']:20.2f}x "
                     f"{r['vs_best_other']:16.2f}x ({r['best_other']})")
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", required=True, help="float32 standard-ops deploy graph (.onnx)")
    parser.add_argument("--calib-data", required=True, help="calibration images: COCO json or folder")
    parser.add_argument("--eval-data", required=True, help="held-out COCO json for AP")
    parser.add_argument("--custom-graph", default=None, help="adds the custom-op export (`--roi-align custom`) of "
                        "the same checkpoint, same size and batch, in ONNX Runtime")
    parser.add_argument("--checkpoint", default=None, help="adds the eager PyTorch model of this checkpoint")
    parser.add_argument("--timing-image", default=None, help="the image timed (default: the first --eval-data one)")
    parser.add_argument("--batch", type=int, default=1, help="images per timed call: the graph's static batch")
    parser.add_argument("--out", default="out/openvino_speed")
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--eval-images", type=int, default=30, help="0: no AP")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    graph, calib = Path(args.graph), Path(args.calib_data)
    static_batch = static_input_size(onnx.load(str(graph), load_external_data=False))[0]
    if static_batch != args.batch:
        raise SystemExit(f"--batch {args.batch} but {graph} has a static batch of {static_batch}: export it with "
                         f"--batch-size {args.batch}")
    graphs = {"fp32": graph, "qdq": project_qdq(graph, calib, out, args.calib_images, args.batch),
              "cpu_int8": cpu_int8(graph, calib, out, args.calib_images, args.batch)}
    predictors = {(g, rt): load(path, threads=args.threads, backend=rt)
                  for g, path in graphs.items() for rt in RUNTIMES}
    if args.custom_graph:
        predictors[("custom", "onnxruntime")] = load(args.custom_graph, threads=args.threads, backend="onnxruntime")
    if args.checkpoint:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        predictors[("eager", "pytorch")] = load(args.checkpoint, fit=predictors[("fp32", RUNTIMES[0])].fit)
    aps = {}
    if args.eval_images:
        evalset = EvalSet.from_data(args.eval_data, args.eval_images)
        for key, predictor in predictors.items():
            aps[key] = ap_points(predictor, evalset)
            print(f"AP {key[0]}/{key[1]}: bbox {aps[key]['bbox']:.2f} segm {aps[key]['segm']:.2f}", flush=True)
        timing_image = args.timing_image or evalset.images[0]
    else:
        timing_image = args.timing_image or EvalSet.from_data(args.eval_data, 1).images[0]
    ms = round_robin({f"{g}/{rt}": p for (g, rt), p in predictors.items()}, to_float_chw(load_rgb(timing_image)),
                     args.batch, args.repeat, args.warmup)
    reference = ("eager", "pytorch") if ("eager", "pytorch") in predictors else ("fp32", RUNTIMES[0])  # of AP drops
    rows = []
    for (g, rt) in predictors:
        key, fp32 = f"{g}/{rt}", (("fp32", rt) if ("fp32", rt) in predictors else (g, rt))
        others = {k: v for k, v in ms.items() if k != key}
        best = min(others, key=others.get)
        row = {"graph": g, "runtime": rt, "ms": ms[key], "vs_fp32": ms["/".join(fp32)] / ms[key], "best_other": best,
               "vs_best_other": others[best] / ms[key]}
        if aps:
            row.update(aps[(g, rt)], bbox_drop=aps[reference]["bbox"] - aps[(g, rt)]["bbox"],
                       segm_drop=aps[reference]["segm"] - aps[(g, rt)]["segm"])
        rows.append(row)
    for line in table(rows):
        print(line)
    settings = {k: getattr(args, k) for k in ("graph", "custom_graph", "calib_data", "eval_data", "checkpoint",
                                               "timing_image", "batch", "calib_images", "eval_images", "repeat",
                                               "warmup", "threads")}
    (out / "summary.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))
    print(f"summary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
