"""`maskrcnn-deploy diverge`: where an artifact graph's numbers first leave its reference graph's, layer by layer
(runtime/diverge/); writes divergence.json, divergence.png and divergence.html into OUT_DIR; exit 0.

    maskrcnn-deploy diverge out/model.onnx out/model.int8.onnx --data data/synth/val.json [-o out/diverge]
                            [--max-images 4] [--threshold 0.01]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from maskrcnn_deploy.runtime.cli.exit_codes import EXIT_OK

__all__ = ["add_parser", "run", "write_divergence_outputs"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    from maskrcnn_deploy.runtime.diverge.report import DEFAULT_THRESHOLD
    from maskrcnn_deploy.runtime.diverge.run import DEFAULT_IMAGES

    dv = sub.add_parser("diverge", help="layer-by-layer error of an ONNX graph against its reference ONNX graph")
    dv.add_argument("reference", help="the reference ONNX graph (FP32)")
    dv.add_argument("artifact", help="the ONNX graph to check (FP16, INT8), made from the reference")
    dv.add_argument("--data", required=True, help="COCO json or a folder of images")
    dv.add_argument("-o", "--out", default="diverge", help="output folder (default: ./diverge)")
    dv.add_argument("--max-images", type=int, default=DEFAULT_IMAGES,
                    help=f"images to run (default {DEFAULT_IMAGES}: every tensor of both graphs is held per image)")
    dv.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                    help=f"relative L2 error past which a tensor diverges (default {DEFAULT_THRESHOLD:g})")
    dv.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    dv.set_defaults(func=run)


def write_divergence_outputs(report, out_dir: str | Path) -> dict[str, Path]:
    """divergence.json, divergence.png and divergence.html (assets in divergence_files/) in `out_dir`."""
    from maskrcnn_deploy.runtime.diverge import save_divergence_plot, write_divergence_json
    from maskrcnn_deploy.runtime.report_html import write_divergence_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {"json": write_divergence_json(report, out / "divergence.json"),
            "png": save_divergence_plot(report, out / "divergence.png"),
            "html": write_divergence_html(report, out / "divergence.html")}


def run(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.runtime.diverge import run_divergence

    report = run_divergence(args.reference, args.artifact, args.data, args.max_images, args.threshold, args.threads)
    for line in report.summary_lines():
        print(line)
    for kind, path in write_divergence_outputs(report, args.out).items():
        print(f"{kind}: {path}")
    return EXIT_OK
