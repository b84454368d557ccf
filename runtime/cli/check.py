"""`maskrcnn-deploy check`: accuracy parity of an artifact against a reference (runtime/check.py,
runtime/parity.py), with JSON, HTML and histogram reports; exit 0 PASS, 1 FAIL (runtime/cli/exit_codes.py).

    maskrcnn-deploy check runs/r18/model_final.pt out/model.onnx --data data/synth/val.json [--report r.json]
                          [--html r.html] [--tolerance fp32|fp16|int8] [--set NAME=VALUE] [--diverge [OUT_DIR]]
                          [--ray [ADDRESS] [--ray-workers N]]     # the images spread over a Ray cluster

--diverge: when the check fails and both sides are ONNX graphs, also where the error enters, layer by layer
(runtime/diverge/, as `maskrcnn-deploy diverge`), into OUT_DIR and as a section of the HTML report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maskrcnn_deploy.common.errors import UsageError
from maskrcnn_deploy.common.extras import require_extra
from maskrcnn_deploy.runtime.cli.checkpoint_options import (
    add_backend_option,
    add_checkpoint_options,
    add_ray_options,
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
    ch.add_argument("--diverge", nargs="?", const="", default=None, metavar="OUT_DIR",
                    help="when the check fails and both sides are ONNX graphs: the layer-by-layer divergence report "
                         "(as `maskrcnn-deploy diverge`) into OUT_DIR (default: <artifact stem>.diverge)")
    add_ray_options(ch)
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


def _diverge(args: argparse.Namespace):
    """The divergence report of a failed check (None, saying why in one line, unless both sides are ONNX)."""
    from maskrcnn_deploy.runtime.diverge import (
        DEFAULT_IMAGES,
        run_divergence,
        save_divergence_plot,
        write_divergence_json,
    )
    from maskrcnn_deploy.runtime.report_html import write_divergence_html

    not_onnx = [p for p in (args.reference, args.artifact) if Path(p).suffix.lower() != ".onnx"]
    if not_onnx:
        print(f"diverge: skipped: it compares two ONNX graphs tensor by tensor, and {not_onnx[0]} is not one")
        return None
    images = min(args.max_images or DEFAULT_IMAGES, DEFAULT_IMAGES)
    divergence = run_divergence(args.reference, args.artifact, args.data, images, threads=args.threads)
    for line in divergence.summary_lines():
        print(line)
    out = Path(args.diverge or f"{Path(args.artifact).stem}.diverge")  # the files `maskrcnn-deploy diverge` writes
    out.mkdir(parents=True, exist_ok=True)
    for path in (write_divergence_json(divergence, out / "divergence.json"),
                 save_divergence_plot(divergence, out / "divergence.png"),
                 write_divergence_html(divergence, out / "divergence.html")):
        print(f"divergence: {path}")
    return divergence


def run(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.model.data.images import unreadable_summary
    from maskrcnn_deploy.runtime import parity
    from maskrcnn_deploy.runtime.check import run_check
    from maskrcnn_deploy.runtime.report_html import write_check_html

    if args.ray is not None:
        require_extra("ray", "`maskrcnn-deploy check --ray`")
    tolerances = _tolerances(args.tolerance, args.set)
    require_torch_for_checkpoints("check", [args.reference, args.artifact])
    if args.ray is not None:
        from maskrcnn_deploy.runtime.distributed import check_on_ray
        checked = check_on_ray(args.reference, args.artifact, args.data, tolerances, args.max_images, args.threads,
                               checkpoint_options(args), address=args.ray, workers=args.ray_workers,
                               backend=args.backend)
    else:
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
    divergence = _diverge(args) if args.diverge is not None and not report.passed else None
    if html:
        print(f"html report: {write_check_html(checked, html, divergence=divergence)}")
    print("PASS" if report.passed else "FAIL: " + "; ".join(report.failures))
    if checked.unreadable:  # the verdict covers only the readable images: the input must be fixed first
        total = len(checked.unreadable) + len(checked.image_paths)
        print(unreadable_summary(list(checked.unreadable), total), file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK if report.passed else EXIT_PARITY_FAILURE
