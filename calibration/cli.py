"""The precision subcommands of `maskrcnn-deploy` (thin layers over the library):

    maskrcnn-deploy calibrate model.onnx --data data/train.json -o model.int8.onnx
                              [--method max|percentile|entropy] [--eval-data data/val.json --max-ap-drop 0.5]
    maskrcnn-deploy convert --fp16 model.onnx -o model.fp16.onnx (--data data/train.json | --ranges R.json)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from maskrcnn_deploy.calibration.ranges import METHODS
from maskrcnn_deploy.calibration.trt_cache import ALGORITHMS, DEFAULT_TRT_VERSION


def cmd_calibrate(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.calibration.calibrate import CalibrateOptions, calibrate_int8

    options = CalibrateOptions(
        model=args.model, data=args.data, output=args.output, method=args.method, percentile=args.percentile,
        num_images=args.num_images, batch_size=args.batch_size, num_bins=args.num_bins, eval_data=args.eval_data,
        eval_images=args.eval_images, max_ap_drop=args.max_ap_drop, fallback=args.fallback,
        trt_version=args.trt_version, cache_algorithm=args.cache_algorithm, threads=args.threads,
        resume=not args.no_resume)
    calibrate_int8(options)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.calibration.calibrate import save_checked
    from maskrcnn_deploy.calibration.data import CalibrationBatches, load_float_graph
    from maskrcnn_deploy.calibration.fp16 import convert_fp16, write_precision_report
    from maskrcnn_deploy.calibration.ranges import collect_ranges, read_ranges
    from maskrcnn_deploy.calibration.regions import PrecisionError

    if not args.fp16:
        raise PrecisionError("convert needs a target precision: --fp16")
    t0 = time.monotonic()
    graph = load_float_graph(args.model)
    if args.ranges:
        amax = read_ranges(args.ranges)
    elif args.data:
        batches = CalibrationBatches.from_data(args.data, graph, args.num_images, args.batch_size)
        amax = collect_ranges(graph.model, batches, "max")  # every float tensor: overflow is judged on the real maxima
    else:
        raise PrecisionError("convert --fp16 keeps in float32 what overflows float16 on real data: give --data "
                             "(calibration images) or --ranges (from a `calibrate` run over the same graph)")
    model, rows = convert_fp16(graph, amax, keep_io_types=not args.fp16_io)
    save_checked(model, args.output)
    report = Path(args.output).with_suffix(".precision.json")
    write_precision_report(rows, report)
    fp32 = [r for r in rows if r.precision == "fp32"]
    print(f"wrote {args.output}: {len(rows) - len(fp32)} nodes float16, {len(fp32)} float32 (report {report}) "
          f"in {time.monotonic() - t0:.0f} s")
    return 0


def add_commands(sub) -> None:
    ca = sub.add_parser("calibrate", help="INT8: calibrate, write a Q/DQ graph, a TensorRT cache and a precision report")
    ca.add_argument("model", help="float32 .onnx from `maskrcnn-deploy export`")
    ca.add_argument("--data", required=True, help="calibration images: a folder or a COCO json")
    ca.add_argument("-o", "--output", required=True, help="the Q/DQ .onnx to write")
    ca.add_argument("--method", choices=METHODS, default="percentile")
    ca.add_argument("--percentile", type=float, default=99.99, help="for --method percentile")
    ca.add_argument("--num-images", type=int, default=64)
    ca.add_argument("--batch-size", type=int, default=1, help="must equal the graph's batch when it is static")
    ca.add_argument("--num-bins", type=int, default=2048, help="histogram bins (percentile, entropy)")
    ca.add_argument("--eval-data", default=None,
                    help="COCO json held out from calibration: runs the sensitivity sweep and the AP budget")
    ca.add_argument("--eval-images", type=int, default=50)
    ca.add_argument("--max-ap-drop", type=float, default=0.5, help="segm AP points the INT8 graph may lose")
    ca.add_argument("--fallback", choices=["fp16", "fp32"], default="fp16",
                    help="precision of the layer groups the budget keeps out of INT8")
    ca.add_argument("--trt-version", default=DEFAULT_TRT_VERSION, help="TensorRT version written in the cache header")
    ca.add_argument("--cache-algorithm", choices=ALGORITHMS, default="EntropyCalibration2",
                    help="calibrator named in the cache header (must match the one TensorRT runs)")
    ca.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads for evaluation")
    ca.add_argument("--no-resume", action="store_true",
                    help="start afresh, ignoring the progress files an interrupted run left beside the output")
    ca.set_defaults(func=cmd_calibrate)

    co = sub.add_parser("convert", help="FP16: a mixed-precision float16 graph with fragile parts kept float32")
    co.add_argument("model", help="float32 .onnx from `maskrcnn-deploy export`")
    co.add_argument("-o", "--output", required=True)
    co.add_argument("--fp16", action="store_true", help="convert to mixed float16 (the only target so far)")
    co.add_argument("--data", default=None, help="images whose activation ranges decide what stays float32")
    co.add_argument("--ranges", default=None, help="<stem>.ranges.json from `calibrate` instead of --data")
    co.add_argument("--num-images", type=int, default=32)
    co.add_argument("--batch-size", type=int, default=1)
    co.add_argument("--fp16-io", action="store_true", help="float16 graph inputs and outputs (default float32)")
    co.set_defaults(func=cmd_convert)
