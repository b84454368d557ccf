"""`maskrcnn-deploy`: one command line over the library (a thin layer: parse, call, report).

    maskrcnn-deploy data synth --out data/synth --train 1000 --val 100
    maskrcnn-deploy train --data data/synth --out runs/r18 --time-limit 900
    maskrcnn-deploy eval runs/r18/model_final.pt --data data/synth/val.json
    maskrcnn-deploy predict runs/r18/model_final.pt data/synth/val --out out/pred
    maskrcnn-deploy export runs/r18/model_final.pt -o out/model.onnx
    maskrcnn-deploy check runs/r18/model_final.pt out/model.onnx --data data/synth/val.json
    maskrcnn-deploy demo

Exit codes (runtime/exit_codes.py): 0 success, 1 parity FAIL, 2 bad input (one line naming the problem
and the fix), 3 backend unavailable on this machine (TensorRT, CUDA GPU, plugin), 4 internal error (a
bug: traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import traceback
from pathlib import Path

from maskrcnn_deploy.common.errors import BackendUnavailableError, BadInputError, UsageError
from maskrcnn_deploy.runtime.exit_codes import (
    EXIT_BACKEND_UNAVAILABLE,
    EXIT_BAD_INPUT,
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARITY_FAILURE,
)


# ----------------------------------------------------------------------------- data
def cmd_data_synth(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset

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
    from maskrcnn_deploy.model.data.coco import CocoDetectionDataset
    from maskrcnn_deploy.model.train import TrainConfig, train

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
                                           out=str(Path(args.out) / "metrics.json"), no_resume=False))
    return 0


# ----------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.common.files import write_json
    from maskrcnn_deploy.model.checkpoint import load_checkpoint
    from maskrcnn_deploy.model.data.coco import CocoDetectionDataset
    from maskrcnn_deploy.runtime.evaluate import evaluate_model, evaluation_journal

    model, config, _ = load_checkpoint(args.checkpoint)
    dataset = CocoDetectionDataset(_split_json(args.data, "val"), args.images)
    if dataset.num_classes != config.num_classes:
        raise UsageError(f"{args.checkpoint} predicts {config.num_classes} classes (background included) "
                         f"but {args.data} has {dataset.num_classes}; evaluate on data with the same categories")
    # each image's results are journaled as they come: a rerun after an interrupt (Ctrl-C) resumes
    journal_path = Path(f"{args.out or args.checkpoint}.eval-progress.jsonl")
    journal = evaluation_journal(journal_path, args.checkpoint, dataset, args.batch_size, args.max_images,
                                 resume=not args.no_resume)
    t0 = time.monotonic()
    try:
        metrics = evaluate_model(model, dataset, batch_size=args.batch_size, max_images=args.max_images,
                                 journal=journal)
    finally:
        journal.close()
    metrics["eval_wall_s"] = round(time.monotonic() - t0, 1)
    print(f"bbox AP {metrics['bbox']['AP']:.4f}  AP50 {metrics['bbox']['AP50']:.4f} | "
          f"segm AP {metrics['segm']['AP']:.4f}  AP50 {metrics['segm']['AP50']:.4f} "
          f"({metrics['num_images']} images, {metrics['num_detections']} detections)")
    if args.out:
        write_json(args.out, metrics)
        print(f"metrics: {args.out}")
    journal.remove()
    return 0


# ----------------------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> int:
    """Draw the detections over each image as OUT/<image stem>.png. Every readable image is drawn;
    each unreadable one is named with its reason, and then the count makes the exit code 2."""
    from maskrcnn_deploy.model.data.coco import ImageLoadError, list_images, load_image, unreadable_summary
    from maskrcnn_deploy.runtime.load import load
    from maskrcnn_deploy.runtime.predictor import PredictorError
    from maskrcnn_deploy.runtime.visualize import draw_detections, save_png

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
    predictor = load(args.checkpoint)
    class_names = predictor.class_names or \
        ["__background__"] + [f"class{i}" for i in range(1, predictor.config.num_classes)]
    out = Path(args.out)
    unreadable, unfit = [], []  # named apart: an image that does not fit was read
    for path, name in zip(paths, _output_names(paths)):
        try:
            image = load_image(path)
            det = predictor.predict([image], min_score=args.score_thresh)[0]  # pastes kept masks only
        except ImageLoadError as err:
            print(err, file=sys.stderr)
            unreadable.append(path)
            continue
        except PredictorError as err:
            print(f"cannot use image {path}: {err}", file=sys.stderr)
            unfit.append(path)
            continue
        save_png(draw_detections(image, det, class_names, score_thresh=args.score_thresh), out / name)
        print(f"{path.name}: {len(det['scores'])} detections -> {out / name}")
    if unreadable:
        print(unreadable_summary(unreadable, len(paths)), file=sys.stderr)
    if unfit:
        print(f"{len(unfit)} of {len(paths)} images do not fit this model: "
              f"{', '.join(p.name for p in unfit)}", file=sys.stderr)
    if unreadable or unfit:
        return EXIT_BAD_INPUT
    return 0


def _output_names(paths: list[Path]) -> list[str]:
    """PNG name per input: `a.png` for a.jpg; `a.jpg.png` when inputs share the stem (a.jpg, a.png);
    `a.jpg-2.png`, ... when the same name comes from several folders."""
    stems = collections.Counter(p.stem for p in paths)
    names = [f"{p.stem}.png" if stems[p.stem] == 1 else f"{p.name}.png" for p in paths]
    seen: collections.Counter = collections.Counter()
    unique = []
    for name in names:
        seen[name] += 1
        unique.append(name if seen[name] == 1 else f"{name[:-len('.png')]}-{seen[name]}.png")
    return unique


# ----------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    """The whole toolchain on the embedded synthetic default (runtime/demo.py); exit 1 if a parity check fails."""
    from maskrcnn_deploy.runtime.demo import DemoSettings, run_demo

    rows = run_demo(DemoSettings(out=Path(args.out), train_images=args.train_images, val_images=args.val_images,
                                 iterations=args.iterations, time_limit_s=args.time_limit,
                                 calibration_images=args.calibration_images, check_images=args.check_images,
                                 threads=args.threads))
    return EXIT_PARITY_FAILURE if any(r.parity == "FAIL" for r in rows) else EXIT_OK


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
    ev.add_argument("--no-resume", action="store_true",
                    help="start afresh, ignoring the progress an interrupted run left in <out>.eval-progress.jsonl "
                         "(or <checkpoint>.eval-progress.jsonl without --out)")
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="draw predicted masks over images (PNG)")
    pr.add_argument("checkpoint", help="checkpoint (.pt), ONNX deploy graph (.onnx) or TensorRT engine")
    pr.add_argument("images", nargs="+", help="image files or folders (png, jpg, jpeg, bmp; any mode: made RGB)")
    pr.add_argument("--out", required=True)
    pr.add_argument("--score-thresh", type=float, default=0.5)
    pr.add_argument("--limit", type=int, default=None, help="at most this many images")
    pr.set_defaults(func=cmd_predict)

    demo = sub.add_parser("demo", help="the whole flow on an embedded synthetic default")
    demo.add_argument("--out", default="out/demo")
    demo.add_argument("--train-images", type=int, default=1000)
    demo.add_argument("--val-images", type=int, default=100)
    demo.add_argument("--iterations", type=int, default=3000, help="as bench/train_synthetic.py")
    demo.add_argument("--time-limit", type=float, default=660.0,
                      help="training budget, s (lr steps follow it); the whole demo fits in 20 min on 2 cores")
    demo.add_argument("--calibration-images", type=int, default=32, help="for the FP16 ranges and INT8 scales")
    demo.add_argument("--check-images", type=int, default=None, help="val images per check (default: all)")
    demo.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    demo.set_defaults(func=cmd_demo)

    from maskrcnn_deploy.runtime import cli_deploy
    cli_deploy.add_commands(sub)
    from maskrcnn_deploy.runtime import cli_bench
    cli_bench.add_commands(sub)  # bench (speed side by side)
    from maskrcnn_deploy.calibration import cli as cli_precision
    cli_precision.add_commands(sub)
    return parser


def _error(err: BaseException) -> None:
    print(f"maskrcnn-deploy: error: {err}", file=sys.stderr)


def _internal_error() -> int:
    """A bug: show the traceback, and exit 4 so that a crash never reads as a parity failure (1)."""
    traceback.print_exc()
    print("maskrcnn-deploy: internal error (a bug, not your input): please report it with the traceback above",
          file=sys.stderr)
    return EXIT_INTERNAL_ERROR


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exceptions become the exit codes of runtime/exit_codes.py (argparse itself
    exits 2, EXIT_BAD_INPUT, on bad options). Commands return 0, or 1 for a failed parity check."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted; completed checkpoints and outputs are kept: run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except BackendUnavailableError as err:  # TensorRT missing or too old, no CUDA GPU, plugin not built here
        _error(err)
        return EXIT_BACKEND_UNAVAILABLE
    except (BadInputError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as err:
        _error(err)  # ours (CheckpointError, ImageLoadError, PredictorError, ExportError, TensorRTError, ...)
        return EXIT_BAD_INPUT  # name the problem and the fix; a ValueError from numpy or torch is a bug (4)
    except Exception:
        return _internal_error()


if __name__ == "__main__":
    # `python -m maskrcnn_deploy.runtime.cli`: run the imported module's main, the same one the
    # `maskrcnn-deploy` script runs, so there is one copy of this module's state whichever way it starts
    from maskrcnn_deploy.runtime.cli import main as installed_main

    sys.exit(installed_main())
