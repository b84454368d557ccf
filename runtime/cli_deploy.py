"""The deployment subcommands of `maskrcnn-deploy`: export and check (thin layers over the library).

    maskrcnn-deploy export runs/r18/model_final.pt -o out/model.onnx [--input-size 800x1344] [--dynamic]
                                                   [--roi-align custom|standard]
    maskrcnn-deploy check runs/r18/model_final.pt out/model.onnx --data data/synth/val.json [--report r.json]
                                                   [--html r.html]
    maskrcnn-deploy build out/model.onnx -o out/model.engine        (runtime/cli_tensorrt.py)
"""

from __future__ import annotations

import argparse
import sys
import time

from maskrcnn_deploy.runtime.exit_codes import EXIT_BAD_INPUT, EXIT_OK, EXIT_PARITY_FAILURE


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are HEIGHTxWIDTH, e.g. 800x1344, got {text!r}") from None
    return h, w


def cmd_export(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.export.onnx_export import ExportOptions, export_checkpoint

    t0 = time.monotonic()
    options = ExportOptions(input_size=args.input_size, batch_size=args.batch_size, dynamic=args.dynamic,
                            roi_align=args.roi_align, opset=args.opset, max_detections=args.max_detections)
    export_checkpoint(args.checkpoint, args.output, options, num_classes=args.num_classes)
    print(f"exported in {time.monotonic() - t0:.1f} s")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from maskrcnn_deploy.model.data.coco import unreadable_summary
    from maskrcnn_deploy.runtime import parity
    from maskrcnn_deploy.runtime.check import run_check
    from maskrcnn_deploy.runtime.report_html import write_check_html

    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        try:
            overrides[name] = float(value)
        except ValueError:
            raise ValueError(f"--set {item!r}: give NAME=NUMBER, e.g. --set max_box_error_px=0.1") from None
    tolerances = parity.tolerances_from(args.tolerance, **overrides)
    run = run_check(args.reference, args.artifact, args.data, tolerances, args.max_images, args.threads)
    report = run.report
    for line in report.summary_lines():
        print(line)
    if args.report:
        parity.write_report_json(report, args.report)
        print(f"report: {args.report}")
    if args.histogram:
        parity.save_error_histograms(report, args.histogram)
        print(f"histograms: {args.histogram}")
    html = args.html
    if html is None and args.report:
        html = Path(args.report).with_suffix(".html")
        html = html if html != Path(args.report) else Path(args.report + ".html")  # never over the JSON
    if html:
        print(f"html report: {write_check_html(run, html)}")
    print("PASS" if report.passed else "FAIL: " + "; ".join(report.failures))
    if run.unreadable:  # the verdict covers only the readable images: the input must be fixed first
        print(unreadable_summary(list(run.unreadable), len(run.unreadable) + len(run.image_paths)), file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK if report.passed else EXIT_PARITY_FAILURE


def add_commands(sub) -> None:
    ex = sub.add_parser("export", help="export a checkpoint to an ONNX deploy graph")
    ex.add_argument("checkpoint")
    ex.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    ex.add_argument("--input-size", type=_size, default=None,
                    help="static HEIGHTxWIDTH (default: the config's test size padded, 800x1344 for COCO models)")
    ex.add_argument("--batch-size", type=int, default=1)
    ex.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    ex.add_argument("--roi-align", choices=["custom", "standard"], default="custom",
                    help="custom: one maskrcnn_deploy::MultiLevelRoIAlign node (TensorRT plugin); "
                         "standard: standard ONNX ops only")
    ex.add_argument("--opset", type=int, default=18)
    ex.add_argument("--max-detections", type=int, default=None)
    ex.add_argument("--num-classes", type=int, default=None,
                    help="refuse the export unless the checkpoint has this many classes (background included)")
    ex.set_defaults(func=cmd_export)

    ch = sub.add_parser("check", help="accuracy parity of an artifact against a reference")
    ch.add_argument("reference", help="checkpoint (.pt) or ONNX file")
    ch.add_argument("artifact", help="ONNX file or TensorRT engine (or checkpoint) to check")
    ch.add_argument("--data", required=True, help="COCO json (AP is compared), or a folder of images")
    ch.add_argument("--max-images", type=int, default=None)
    ch.add_argument("--tolerance", default="fp32", help="preset: fp32, fp16, int8")
    ch.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override one tolerance")
    ch.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    ch.add_argument("--report", default=None, help="write the JSON report here")
    ch.add_argument("--histogram", default=None, help="write error histograms (PNG) here")
    ch.add_argument("--html", default=None,
                    help="write an HTML report here (assets in <name>_files/ beside it); default with "
                         "--report X.json: X.html")
    ch.set_defaults(func=cmd_check)

    from maskrcnn_deploy.runtime import cli_tensorrt
    cli_tensorrt.add_commands(sub)  # build (TensorRT engine)
