"""FP32, FP16 and INT8 of the trained synthetic ResNet-18-FPN: COCO AP and ONNX Runtime CPU latency.

Issue 5's figures, in one run on this CPU:

    .venv/bin/python bench/train_synthetic.py --out out/r18_trained      # the model (15 min), once
    .venv/bin/python bench/precision_table.py --run out/r18_trained --out out/precision

Data (three disjoint sets of synthetic scenes):
    calibration : the first --calib-images of RUN/data/train.json (images the model trained on)
    budget      : --holdout-images fresh scenes (seed 1) for the sensitivity sweep and AP budget
    report      : RUN/data/val.json (100 held-out scenes): every AP in the table

Rows: FP32 (the exported graph), FP16 (`convert --fp16`, ranges from the calibration images), and
for each calibration method INT8 with every layer group quantized ("all INT8") and after the
budget search (`calibrate --max-ap-drop`, groups returned to float16). AP is in points (x100) on the
report set; drops are FP32 minus the row. Parity: the parity checker against the FP32 graph on the
report set with the row's preset (fp16 or int8 tolerances): verdict and matched detections; the
JSON also holds the mask IoU and box error summaries of the matched pairs. Latency: the deploy graph on one preprocessed report image
in ONNX Runtime (CPU), all sessions timed round-robin in the same loop, median of --repeat after
--warmup; speed-up = FP32 median / row median. Writes OUT/summary.json and OUT/table.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from pathlib import Path

import onnxruntime
import torch
from timing import round_robin_ms  # bench/timing.py

from maskrcnn_deploy.calibration.budget import EvalSet
from maskrcnn_deploy.calibration.calibrate import CalibrateOptions, calibrate_int8, save_checked
from maskrcnn_deploy.calibration.data import CalibrationBatches
from maskrcnn_deploy.calibration.deploy_graph import load_float_graph
from maskrcnn_deploy.calibration.fp16 import REPORT_TITLE, convert_fp16
from maskrcnn_deploy.calibration.precision_report import write_precision_report
from maskrcnn_deploy.calibration.qdq import quantize_qdq
from maskrcnn_deploy.calibration.ranges import METHODS, collect_ranges
from maskrcnn_deploy.calibration.regions import find_region
from maskrcnn_deploy.export.onnx_export import ExportOptions, export_checkpoint
from maskrcnn_deploy.export.preprocess import preprocess_images
from maskrcnn_deploy.model.data.coco import load_image
from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset
from maskrcnn_deploy.model.evaluation import coco_ap
from maskrcnn_deploy.runtime import parity
from maskrcnn_deploy.runtime.backend.onnxrt import OnnxPredictor
from maskrcnn_deploy.runtime.evaluate import category_ids_of, graph_evaluator


def ap_points(detections: list[dict], evalset: EvalSet, category_ids) -> dict[str, float]:
    """{"bbox", "segm"} AP points (AP x 100) of one side's detections on the report set."""
    metrics = coco_ap(evalset.coco, evalset.image_ids, detections, category_ids)
    return {kind: 100.0 * metrics[kind]["AP"] for kind in ("bbox", "segm")}


def round_robin_latency(paths: dict[str, Path], image: Path, repeat: int, warmup: int, threads: int | None
                        ) -> dict[str, float]:
    """name -> median ms of run_raw on one image; every round times each graph once, in turn (timing.py
    `round_robin_ms`), with a progress line every 5 timed rounds."""
    predictors = {name: OnnxPredictor(path, threads) for name, path in paths.items()}
    first = next(iter(predictors.values()))
    batch, sizes = preprocess_images([load_image(image)], first.config, first.input_size)
    calls = {name: functools.partial(predictor.run_raw, batch, sizes) for name, predictor in predictors.items()}
    return round_robin_ms(calls, repeat, warmup, progress_every=5)


def make_graphs(args: argparse.Namespace, out: Path, graph, train_json: Path) -> tuple[list[dict], dict[str, Path]]:
    """The table's rows (without figures) and their graphs: FP32, FP16 and per method INT8 all / after the budget."""
    region = find_region(graph.model)
    fp32 = Path(graph.path)
    holdout = make_synthetic_dataset(out / "holdout", num_train=0, num_val=args.holdout_images, seed=1)["val"]
    rows = [{"name": "fp32", "precision": "FP32", "method": "", "float_groups": []}]
    paths = {"fp32": fp32}
    print("FP16: ranges of every tensor on the calibration images", flush=True)
    amax_all = collect_ranges(graph.model, CalibrationBatches.from_data(train_json, graph, args.calib_images), "max")
    model16, precision16 = convert_fp16(graph, amax_all)
    paths["fp16"] = out / "fp16.onnx"
    save_checked(model16, paths["fp16"])
    write_precision_report(precision16, out / "fp16.precision.json", title=REPORT_TITLE)
    rows.append({"name": "fp16", "precision": "FP16", "method": "", "float_groups": [],
                 "fp32_nodes": sum(r.precision == "fp32" for r in precision16)})

    for method in args.methods:
        print(f"INT8 ({method}): calibrate, sweep and budget search", flush=True)
        t0 = time.monotonic()
        output = out / f"int8_{method}.onnx"
        summary = calibrate_int8(CalibrateOptions(
            model=fp32, data=train_json, output=output, method=method, num_images=args.calib_images,
            eval_data=holdout, eval_images=args.holdout_images, max_ap_drop=args.max_ap_drop, threads=args.threads),
            evaluate=graph_evaluator(args.threads))
        amax = json.loads(output.with_suffix(".ranges.json").read_text())["amax"]
        all_int8 = out / f"int8_{method}_all.onnx"
        save_checked(quantize_qdq(graph.model, amax, region.nodes()), all_int8)
        paths[f"int8_{method}_all"], paths[f"int8_{method}"] = all_int8, output
        budget = summary["budget"]
        rows.append({"name": f"int8_{method}_all", "precision": "INT8", "method": method, "float_groups": []})
        rows.append({"name": f"int8_{method}", "precision": "INT8 + budget", "method": method,
                     "float_groups": summary["fallback_groups"], "budget_met_on_budget_set": budget["met"],
                     "budget_set_drop": budget["baseline"]["segm"] - summary["budget"]["final"]["segm"],
                     "calibrate_s": round(time.monotonic() - t0, 1)})
    return rows, paths


def score_rows(rows: list[dict], paths: dict[str, Path], report: EvalSet, threads: int | None) -> None:
    """Each row's AP points on the report set and, against the FP32 row, its parity verdict (in place)."""
    reference = None
    for row in rows:
        print(f"evaluate {row['name']} on the report set", flush=True)
        predictor = OnnxPredictor(paths[row["name"]], threads)
        detections = predictor.predict(report.images)
        row.update(ap_points(detections, report, category_ids_of(predictor)))
        if reference is None:
            reference = detections
            continue
        parity_report = parity.check_parity(reference, detections, parity.tolerances_from(
            "fp16" if row["precision"] == "FP16" else "int8"))
        row.update(parity="PASS" if parity_report.passed else "FAIL", parity_failures=parity_report.failures,
                   matched=f"{parity_report.matched}/{parity_report.ref_detections}",
                   mask_iou=parity_report.to_dict()["mask_iou"], box_error_px=parity_report.to_dict()["box_error_px"])


def table_markdown(rows: list[dict]) -> str:
    """The Markdown table of the scored rows (drops and speed-ups against the first, FP32, row)."""
    lines = ["| precision | method | float16 groups | bbox AP | segm AP | bbox drop | segm drop | parity | "
             "ORT CPU median | vs FP32 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        verdict = f"{r['parity']} ({r['matched']})" if "parity" in r else "reference"
        lines.append(f"| {r['precision']} | {r['method']} | {len(r['float_groups'])} | {r['bbox']:.2f} | "
                     f"{r['segm']:.2f} | {r['bbox_drop']:+.2f} | {r['segm_drop']:+.2f} | {verdict} | "
                     f"{r['latency_ms']:.1f} ms | {r['speedup']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="out/r18_trained", help="output folder of bench/train_synthetic.py")
    parser.add_argument("--out", default="out/precision")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--holdout-images", type=int, default=50)
    parser.add_argument("--max-ap-drop", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all)")
    args = parser.parse_args()
    t_start = time.monotonic()
    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_json, val_json = run / "data" / "train.json", run / "data" / "val.json"

    fp32 = out / "fp32.onnx"
    export_checkpoint(run / "run" / "model_final.pt", fp32, ExportOptions())
    report = EvalSet.from_data(val_json)
    graph = load_float_graph(fp32)
    print(f"{fp32}: input {graph.input_size}, {len(find_region(graph.model).group_names())} layer groups; report set "
          f"{len(report.images)} images, budget set {args.holdout_images}, calibration {args.calib_images}", flush=True)
    rows, paths = make_graphs(args, out, graph, train_json)
    score_rows(rows, paths, report, args.threads)
    latency = round_robin_latency(paths, report.images[0], args.repeat, args.warmup, args.threads)
    base = rows[0]
    for row in rows:
        row.update(bbox_drop=base["bbox"] - row["bbox"], segm_drop=base["segm"] - row["segm"],
                   latency_ms=latency[row["name"]], speedup=latency["fp32"] / latency[row["name"]])
    table = table_markdown(rows)
    print(table)
    for r in rows:
        if r.get("parity_failures"):
            print(f"{r['name']}: parity failures: {'; '.join(r['parity_failures'])}")
    for r in rows:
        if r["float_groups"]:
            print(f"{r['name']}: float16 groups {', '.join(r['float_groups'])}")
    (out / "table.md").write_text(table + "\n")
    meta = {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "input_size": graph.input_size,
            "repeat": args.repeat, "warmup": args.warmup, "wall_s": round(time.monotonic() - t_start, 1)}
    (out / "summary.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"summary: {out / 'summary.json'} ({meta['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
