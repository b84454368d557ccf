"""`maskrcnn-deploy calibrate`: INT8 calibration of a float32 deploy graph. Two targets:

    tensorrt (default)  calibration/calibrate.py: a Q/DQ graph placed for TensorRT, a TensorRT calibration cache
                        and a precision report, with an optional AP budget that returns layer groups to float
    cpu                 calibration/cpu_int8.py: ONNX Runtime's quantize_static of the standard-ops graph (QDQ,
                        u8 activations, s8 weights), the faster INT8 graph in ONNX Runtime and OpenVINO; with
                        --eval-data, refused (exit 1, nothing written) when its segm AP drop exceeds --max-ap-drop

    maskrcnn-deploy calibrate model.onnx --data data/train.json -o model.int8.onnx
                              [--method max|percentile|entropy] [--eval-data data/val.json --max-ap-drop 0.5]
    maskrcnn-deploy calibrate model.standard.onnx --data data/train.json --target cpu -o model.cpu-int8.onnx
"""

from __future__ import annotations

import argparse

from maskrcnn_deploy.common.extras import require_extra
from maskrcnn_deploy.runtime.cli.checkpoint_options import add_backend_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    from maskrcnn_deploy.calibration.ranges import METHODS
    from maskrcnn_deploy.calibration.trt_cache import ALGORITHMS, DEFAULT_TRT_VERSION

    ca = sub.add_parser("calibrate", help="INT8: calibrate, write a Q/DQ graph, a TensorRT cache and a precision report")
    ca.add_argument("model", help="float32 .onnx from `maskrcnn-deploy export`")
    ca.add_argument("--data", required=True, help="calibration images: a folder or a COCO json")
    ca.add_argument("-o", "--output", required=True, help="the Q/DQ .onnx to write")
    ca.add_argument("--target", choices=["tensorrt", "cpu"], default="tensorrt",
                    help="tensorrt: the Q/DQ graph placed for TensorRT, with its cache; cpu: ONNX Runtime's "
                         "quantize_static of a standard-ops graph, for ONNX Runtime and OpenVINO on a CPU")
    ca.add_argument("--method", choices=METHODS, default=None,
                    help="range calibration (default: percentile for tensorrt, max for cpu)")
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
    add_backend_option(ca, "the candidate graphs --eval-data scores")
    ca.add_argument("--no-resume", action="store_true",
                    help="start afresh, ignoring the progress files an interrupted run left beside the output")
    ca.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.eval_data and args.backend == "openvino":
        require_extra("openvino", "`maskrcnn-deploy calibrate --backend openvino`")
    if args.eval_data and args.fallback == "fp16" and args.target == "tensorrt":  # the AP budget writes the groups it keeps out of INT8 in fp16
        require_extra("calibrate", "`maskrcnn-deploy calibrate --fallback fp16`")
    from maskrcnn_deploy.calibration.calibrate import CalibrateOptions, calibrate_int8

    options = CalibrateOptions(
        model=args.model, data=args.data, output=args.output, percentile=args.percentile,
        method=args.method or ("max" if args.target == "cpu" else "percentile"),
        num_images=args.num_images, batch_size=args.batch_size, num_bins=args.num_bins, eval_data=args.eval_data,
        eval_images=args.eval_images, max_ap_drop=args.max_ap_drop, fallback=args.fallback,
        trt_version=args.trt_version, cache_algorithm=args.cache_algorithm, threads=args.threads,
        evaluator=args.backend, resume=not args.no_resume)
    evaluate = None
    if args.eval_data:  # the AP budget scores candidate graphs in --backend (calibration imports no runtime)
        from maskrcnn_deploy.runtime.evaluate import graph_evaluator

        evaluate = graph_evaluator(args.threads, args.backend)
    if args.target == "cpu":
        return _run_cpu(options, evaluate)
    calibrate_int8(options, evaluate=evaluate)
    return 0


def _run_cpu(options, evaluate) -> int:
    """--target cpu: 0 when written, 1 (one line on stderr, nothing written) when the AP drop exceeds the budget."""
    import sys

    from maskrcnn_deploy.calibration.cpu_int8 import quantize_cpu_int8, refusal_line

    summary = quantize_cpu_int8(options, evaluate=evaluate)
    if summary["met"]:
        return 0
    print(refusal_line(summary), file=sys.stderr)
    return 1
