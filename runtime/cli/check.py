"""`maskrcnn-deploy check`: accuracy parity of an artifact against a reference (runtime/check.py,
runtime/parity.py), with JSON, HTML and histogram reports; exit 0 PASS, 1 FAIL (runtime/cli/exit_codes.py).

    maskrcnn-deploy check runs/r18/model_final.pt out/model.onnx --data data/synth/val.json [--report r.json]
                          [--html r.html] [--tolerance fp32|fp16|int8] [--set NAME=VALUE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maskrcnn_deploy.common.errors import UsageError
from maskrcnn_deploy.runtime.cli.checkpoint_options import (
    add_backend_option,
    add_checkpoint_options,
    checkpoint_options,
    require_torch_for_checkpoints,
)
from maskrcnn_deploy.runtime.cli.exit_codes import EXIT_BAD_INPUT, EXIT_OK, EXIT_PARITY_FAILURE


def add_parser(sub: argparse._SubParsersAction) -> None:
    ch = sub.add_parser("check", help="accuracy parity of an artifact against a reference")
    ch.add_argument("reference", help="checkpoint (.pt/.pth/.pkl) or ONNX file")
    add_checkpoint_options(ch)
    ch.add_argument("artifact", help="ONNX file or TensorRT engine (or checkpoint) to check")
    ch.add_argument("--data", required=True, help="COCO json (AP is compared), or a folder of images")
    ch.add_argument("--max-images", type=int, default=None)
    ch.add_argument("--tolerance", default="fp32", help="preset: fp32, fp16, int8")
    ch.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override one tolerance")
    ch.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op (or OpenVINO) threads")
    add_backend_option(ch, "the artifact when it is an .onnx graph (an .onnx reference runs in ONNX Runtime)")
    ch.add_argument("--report", default=None, help="write the JSON report here")
    ch.add_argument("--histogram", default=None, help="write error histograms (PNG) here")
    ch.add_argument("--html", default=None,
                    help="write an HTML report here (assets in <name>_files/ beside it); default with "
                         "--report X.json: X.html")
    ch.set_defaults(func=run)


def _tolerances(preset: str, settings: list[str]):
    """parity.Tolerances of `--tolerance` and each `--set NAME=NUMBER`; UsageError for a bad one."""
    from maskrcnn_deploy.runtime import parity

    overrides = {}
    for item in settings:
        name, _, value = item.partition("=")
        try:
            overrides[name] = float(value)
        except ValueError:
            raise UsageError(f"--set {item!r}: give NAME=NUMBER, e.g. --set max_box_error_px=0.1") from None
    return parity.tolerances_from(preset, **overrides)  # ToleranceError (exit 2) names the valid presets/fields


def run(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.model.data.images import unreadable_summary
    from maskrcnn_deploy.runtime import parity
    from maskrcnn_deploy.runtime.check import run_check
    from maskrcnn_deploy.runtime.report_html import write_check_html

    tolerances = _tolerances(args.tolerance, args.set)
    require_torch_for_checkpoints("check", [args.reference, args.artifact])
    checked = run_check(args.reference, args.artifact, args.data, tolerances, args.max_images, args.threads,
                        checkpoint=checkpoint_options(args), backend=args.backend)
    report = checked.report
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
        print(f"html report: {write_check_html(checked, html)}")
    print("PASS" if report.passed else "FAIL: " + "; ".join(report.failures))
    if checked.unreadable:  # the verdict covers only the readable images: the input must be fixed first
        total = len(checked.unreadable) + len(checked.image_paths)
        print(unreadable_summary(list(checked.unreadable), total), file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK if report.passed else EXIT_PARITY_FAILURE
