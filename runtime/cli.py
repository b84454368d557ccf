"""`maskrcnn-deploy`: one command line over the library (a thin layer: parse, call, report).

    maskrcnn-deploy data synth --out data/synth --train 1000 --val 100
    maskrcnn-deploy train --data data/synth --out runs/r18 --time-limit 900
    maskrcnn-deploy eval runs/r18/model_final.pt --data data/synth/val.json
    maskrcnn-deploy predict runs/r18/model_final.pt data/synth/val --out out/pred
    maskrcnn-deploy export runs/r18/model_final.pt -o out/model.onnx
    maskrcnn-deploy check runs/r18/model_final.pt out/model.onnx --data data/synth/val.json
    maskrcnn-deploy demo

Errors the user can fix (bad input, missing files) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """A problem with what the user passed; printed as one line, exit code 2."""


# ----------------------------------------------------------------------------- data
def cmd_data_synth(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.runtime.synthetic import make_synthetic_dataset

    t0 = time.monotonic()
    paths = make_synthetic_dataset(args.out, num_train=args.train, num_val=args.val, seed=args.seed,
                                   image_size=(args.size, args.size))
    for split, path in paths.items():
        print(f"{split}: {path}")
    print(f"wrote {args.train} + {args.val} images in {time.monotonic() - t0:.1f} s")
    return 0


# ----------------------------------------------------------------------------- train
def _split_json(data: str, split: str) -> str:
    """`--data DIR` means DIR/{split}.json; `--data FILE.json` is used as is."""
    path = Path(data)
    if path.is_dir():
        path = path / f"{split}.json"
    if not path.exists():
        raise UsageError(f"no COCO annotations at {path}; make them with `maskrcnn-deploy data synth --out DIR`")
    return str(path)


def cmd_train(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.model import config as model_config
    from maskrcnn_deploy.model import train as train_module
    from maskrcnn_deploy.model.train import TrainConfig, train
    from maskrcnn_deploy.runtime.coco import CocoDetectionDataset

    train_json = _split_json(args.data, "train")
    num_classes = CocoDetectionDataset(train_json).num_classes
    presets = {"synthetic_r18": train_module.synthetic_model_config, "resnet18_fpn": model_config.resnet18_fpn,
               "resnet50_fpn": model_config.resnet50_fpn}
    mcfg = presets[args.preset](num_classes=num_classes)
    if args.image_size:
        mcfg.min_size = tuple(args.image_size) if len(args.image_size) > 1 else args.image_size[0]
        mcfg.max_size = args.max_size or max(args.image_size)
    tcfg = TrainConfig(train_json=train_json, out_dir=args.out, iterations=args.iterations,
                       batch_size=args.batch_size, lr=args.lr, warmup_iters=args.warmup_iters,
                       clip_grad_norm=args.clip_grad or None,
                       time_limit_s=args.time_limit, seed=args.seed, checkpoint_every=args.checkpoint_every,
                       num_workers=args.workers)
    final = train(tcfg, model_config=mcfg, resume=not args.no_resume, init_checkpoint=args.init)
    print(f"checkpoint: {final}")
    if args.eval:
        return cmd_eval(argparse.Namespace(checkpoint=str(final), data=_split_json(args.data, "val"),
                                           images=None, batch_size=2, max_images=None,
                                           out=str(Path(args.out) / "metrics.json")))
    return 0


# ----------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.model import load_checkpoint
    from maskrcnn_deploy.runtime.coco import CocoDetectionDataset
    from maskrcnn_deploy.runtime.inference import evaluate_model

    model, config, _ = load_checkpoint(args.checkpoint)
    dataset = CocoDetectionDataset(_split_json(args.data, "val"), args.images)
    if dataset.num_classes != config.num_classes:
        raise UsageError(f"{args.checkpoint} predicts {config.num_classes} classes (background included) "
                         f"but {args.data} has {dataset.num_classes}; evaluate on data with the same categories")
    t0 = time.monotonic()
    metrics = evaluate_model(model, dataset, batch_size=args.batch_size, max_images=args.max_images)
    metrics["eval_wall_s"] = round(time.monotonic() - t0, 1)
    print(f"bbox AP {metrics['bbox']['AP']:.4f}  AP50 {metrics['bbox']['AP50']:.4f} | "
          f"segm AP {metrics['segm']['AP']:.4f}  AP50 {metrics['segm']['AP50']:.4f} "
          f"({metrics['num_images']} images, {metrics['num_detections']} detections)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(metrics, indent=2))
        print(f"metrics: {args.out}")
    return 0


# ----------------------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.model import load_checkpoint
    from maskrcnn_deploy.runtime.coco import ImageLoadError, list_images, load_image
    from maskrcnn_deploy.runtime.inference import predict_images
    from maskrcnn_deploy.runtime.visualize import draw_detections, save_png

    model, config, extra = load_checkpoint(args.checkpoint)
    class_names = extra.get("class_names") or ["__background__"] + [f"class{i}" for i in range(1, config.num_classes)]
    paths: list[Path] = []
    for item in args.images:
        p = Path(item)
        if p.is_dir():
            paths.extend(list_images(p))
        elif p.exists():
            paths.append(p)
        else:
            raise UsageError(f"no such image or folder: {p}")
    if args.limit:
        paths = paths[:args.limit]
    if not paths:
        raise UsageError(f"no images found in {' '.join(args.images)} (png, jpg, jpeg, bmp)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for path in paths:
        try:
            image = load_image(path)
        except ImageLoadError as err:
            print(f"skipped: {err}", file=sys.stderr)
            failed.append(path)
            continue
        det = predict_images(model, [image])[0]
        keep = det["scores"] >= args.score_thresh
        drawn = draw_detections(image, {k: v[keep] for k, v in det.items()}, class_names, score_thresh=args.score_thresh)
        save_png(drawn, out / f"{path.stem}.png")
        print(f"{path.name}: {int(keep.sum())} detections -> {out / (path.stem + '.png')}")
    if failed:
        print(f"{len(failed)} of {len(paths)} images could not be read", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


# ----------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    """Synthetic data -> train (or reuse) ResNet-18-FPN -> evaluate -> draw predictions -> export to
    ONNX -> parity of ONNX Runtime against PyTorch."""
    from maskrcnn_deploy.runtime import cli_deploy

    out = Path(args.out)
    data = out / "data"
    if not (data / "val.json").exists():
        cmd_data_synth(argparse.Namespace(out=str(data), train=args.train_images, val=args.val_images,
                                          seed=0, size=256))
    run = out / "model"
    checkpoint = run / "model_final.pt"
    if not checkpoint.exists():
        cmd_train(build_parser().parse_args(
            ["train", "--data", str(data), "--out", str(run), "--iterations", str(args.iterations),
             "--time-limit", str(args.time_limit)]))
    else:
        print(f"reusing trained model {checkpoint}")
    cmd_eval(argparse.Namespace(checkpoint=str(checkpoint), data=str(data / "val.json"), images=None,
                                batch_size=2, max_images=None, out=str(out / "metrics.json")))
    code = cmd_predict(argparse.Namespace(checkpoint=str(checkpoint), images=[str(data / "val")],
                                          out=str(out / "predictions"), score_thresh=0.5, limit=8))
    onnx_path = out / "model.onnx"
    cli_deploy.cmd_export(build_parser().parse_args(["export", str(checkpoint), "-o", str(onnx_path)]))
    parity = cli_deploy.cmd_check(build_parser().parse_args(
        ["check", str(checkpoint), str(onnx_path), "--data", str(data / "val.json"), "--max-images", "20",
         "--report", str(out / "parity.json"), "--histogram", str(out / "parity.png")]))
    return code or parity


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskrcnn-deploy", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="make datasets").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="synthetic instance-segmentation scenes as COCO json + PNG")
    synth.add_argument("--out", required=True)
    synth.add_argument("--train", type=int, default=1000, help="training images")
    synth.add_argument("--val", type=int, default=100, help="held-out validation images")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=256, help="image side in pixels")
    synth.set_defaults(func=cmd_data_synth)

    tr = sub.add_parser("train", help="train Mask R-CNN on a COCO-format dataset")
    tr.add_argument("--data", required=True, help="folder with train.json/val.json, or a train json")
    tr.add_argument("--out", required=True, help="run folder (checkpoints, summary)")
    tr.add_argument("--preset", default="synthetic_r18", choices=["synthetic_r18", "resnet18_fpn", "resnet50_fpn"],
                    help="synthetic_r18: ResNet-18-FPN with the small-image CPU recipe (default); "
                         "resnet18_fpn / resnet50_fpn: COCO-scale settings")
    tr.add_argument("--iterations", type=int, default=1150)
    tr.add_argument("--batch-size", type=int, default=4)
    tr.add_argument("--lr", type=float, default=0.02)
    tr.add_argument("--warmup-iters", type=int, default=100)
    tr.add_argument("--clip-grad", type=float, default=10.0, help="gradient-norm clip (0 = off)")
    tr.add_argument("--image-size", type=int, nargs="+", default=None,
                    help="training min sizes (scale jitter picks one per batch); the last is used at test time")
    tr.add_argument("--max-size", type=int, default=None)
    tr.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds (checkpointed)")
    tr.add_argument("--checkpoint-every", type=int, default=250)
    tr.add_argument("--workers", type=int, default=1)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--init", default=None, help="start from this checkpoint's weights (fine-tuning)")
    tr.add_argument("--no-resume", action="store_true", help="ignore an existing OUT/last.pt")
    tr.add_argument("--eval", action="store_true", help="evaluate on the val split afterwards")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="COCO bbox and segm AP of a checkpoint (pycocotools)")
    ev.add_argument("checkpoint")
    ev.add_argument("--data", required=True, help="COCO json, or a folder holding val.json")
    ev.add_argument("--images", default=None, help="image folder (default: beside the json)")
    ev.add_argument("--batch-size", type=int, default=2)
    ev.add_argument("--max-images", type=int, default=None)
    ev.add_argument("--out", default=None, help="write metrics as JSON here")
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="draw predicted masks over images (PNG)")
    pr.add_argument("checkpoint")
    pr.add_argument("images", nargs="+", help="image files or folders")
    pr.add_argument("--out", required=True)
    pr.add_argument("--score-thresh", type=float, default=0.5)
    pr.add_argument("--limit", type=int, default=None, help="at most this many images")
    pr.set_defaults(func=cmd_predict)

    demo = sub.add_parser("demo", help="the whole flow on an embedded synthetic default")
    demo.add_argument("--out", default="out/demo")
    demo.add_argument("--train-images", type=int, default=1000)
    demo.add_argument("--val-images", type=int, default=100)
    demo.add_argument("--iterations", type=int, default=3000, help="as bench/train_synthetic.py")
    demo.add_argument("--time-limit", type=float, default=885.0, help="training budget, s (lr steps follow it)")
    demo.set_defaults(func=cmd_demo)

    from maskrcnn_deploy.runtime import cli_deploy
    cli_deploy.add_commands(sub)
    from maskrcnn_deploy.calibration import cli as cli_precision
    cli_precision.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, FileNotFoundError) as err:
        print(f"maskrcnn-deploy: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as err:  # CheckpointError, ImageLoadError, class-count mismatches
        print(f"maskrcnn-deploy: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as err:  # ours (ExportError, OnnxRuntimeError, NativeLibraryError) name the fix
        if not type(err).__module__.startswith("maskrcnn_deploy"):
            raise
        print(f"maskrcnn-deploy: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; completed checkpoints and outputs are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
