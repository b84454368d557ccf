"""The deployment subcommands of `maskrcnn-deploy`: export and check (thin layers over the library).

    maskrcnn-deploy export runs/r18/model_final.pt -o out/model.onnx [--input-size 800x1344] [--dynamic]
                                                   [--roi-align custom|standard]
    maskrcnn-deploy check runs/r18/model_final.pt out/model.onnx --data data/synth/val.json [--report r.json]
    maskrcnn-deploy build out/model.onnx -o out/model.engine        (runtime/cli_tensorrt.py)
"""

from __future__ import annotations

import argparse
import time


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
    from maskrcnn_deploy.runtime import parity
    from maskrcnn_deploy.runtime.coco import images_and_annotations
    from maskrcnn_deploy.runtime.evaluate import detections_to_coco_results, evaluate_coco
    from maskrcnn_deploy.runtime.predictor import load
    from maskrcnn_deploy.runtime.progress import Progress

    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        overrides[name] = float(value)
    tolerances = parity.tolerances_from(args.tolerance, **overrides)
    images, coco, ids = images_and_annotations(args.data, args.max_images)
    sides = {}
    for role, path in (("reference", args.reference), ("artifact", args.artifact)):
        predictor = load(path, threads=args.threads)
        progress = Progress(len(images), f"{role} ({predictor.backend})", interval=5.0)
        dets = []
        for i, image in enumerate(images):
            dets.extend(predictor.predict([image]))
            progress.update(i + 1)
        ap = None
        if coco is not None:
            cat_ids = predictor.category_ids or list(range(predictor.config.num_classes))
            results = [r for image_id, d in zip(ids, dets) for r in detections_to_coco_results(image_id, d, cat_ids)]
            ap = evaluate_coco(coco, results, image_ids=ids)
        sides[role] = (dets, ap)
    report = parity.check_parity(sides["reference"][0], sides["artifact"][0], tolerances,
                                 ref_ap=sides["reference"][1], test_ap=sides["artifact"][1])
    for line in report.summary_lines():
        print(line)
    if args.report:
        parity.write_report_json(report, args.report)
        print(f"report: {args.report}")
    if args.histogram:
        parity.save_error_histograms(report, args.histogram)
        print(f"histograms: {args.histogram}")
    print("PASS" if report.passed else "FAIL: " + "; ".join(report.failures))
    return 0 if report.passed else 1


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
    ch.set_defaults(func=cmd_check)

    from maskrcnn_deploy.runtime import cli_tensorrt
    cli_tensorrt.add_commands(sub)  # build (TensorRT engine)
