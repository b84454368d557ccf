"""`maskrcnn-deploy export`: a checkpoint to an ONNX deploy graph (export/onnx_export.py).

    maskrcnn-deploy export runs/r18/model_final.pt -o out/model.onnx [--input-size 800x1344] [--dynamic]
                                                   [--roi-align custom|standard]
"""

from __future__ import annotations

import argparse
import time

from maskrcnn_deploy.common.extras import require_extra
from maskrcnn_deploy.runtime.cli.checkpoint_options import add_checkpoint_options, checkpoint_options


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are HEIGHTxWIDTH, e.g. 800x1344, got {text!r}") from None
    return h, w


def add_parser(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="export a checkpoint to an ONNX deploy graph")
    ex.add_argument("checkpoint", help="checkpoint: this project's, torchvision's or Detectron2's (.pt/.pth/.pkl)")
    add_checkpoint_options(ex)
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
    ex.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_extra("export", "`maskrcnn-deploy export`")  # torch, torchvision, onnxscript
    from maskrcnn_deploy.export.onnx_export import ExportOptions, export_checkpoint

    t0 = time.monotonic()
    options = ExportOptions(input_size=args.input_size, batch_size=args.batch_size, dynamic=args.dynamic,
                            roi_align=args.roi_align, opset=args.opset, max_detections=args.max_detections)
    export_checkpoint(args.checkpoint, args.output, options, num_classes=args.num_classes,
                      **checkpoint_options(args))
    print(f"exported in {time.monotonic() - t0:.1f} s")
    return 0
