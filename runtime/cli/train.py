"""`maskrcnn-deploy train`: Mask R-CNN on a COCO-format dataset (model/train_coco.py), optionally evaluated
on the val split afterwards (as `eval` does).

    maskrcnn-deploy train --data data/synth --out runs/r18 [--preset synthetic_r18] [--time-limit 900] [--eval]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from maskrcnn_deploy.common.extras import require_extra
from maskrcnn_deploy.model.train_coco import PRESETS, CocoTraining

_DEFAULT = {f.name: f.default for f in dataclasses.fields(CocoTraining)}  # the recipe's defaults, one home


def add_parser(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("train", help="train Mask R-CNN on a COCO-format dataset")
    tr.add_argument("--data", required=True, help="folder with train.json/val.json, or a train json")
    tr.add_argument("--out", required=True, help="run folder (checkpoints, summary)")
    tr.add_argument("--preset", default=_DEFAULT["preset"], choices=PRESETS,
                    help="synthetic_r18: ResNet-18-FPN with the small-image CPU recipe (default); "
                         "resnet18_fpn / resnet50_fpn: COCO-scale settings")
    tr.add_argument("--iterations", type=int, default=_DEFAULT["iterations"])
    tr.add_argument("--batch-size", type=int, default=_DEFAULT["batch_size"])
    tr.add_argument("--lr", type=float, default=_DEFAULT["lr"])
    tr.add_argument("--warmup-iters", type=int, default=_DEFAULT["warmup_iters"])
    tr.add_argument("--clip-grad", type=float, default=_DEFAULT["clip_grad"], help="gradient-norm clip (0 = off)")
    tr.add_argument("--image-size", type=int, nargs="+", default=None,
                    help="training min sizes (scale jitter picks one per batch); the last is used at test time")
    tr.add_argument("--max-size", type=int, default=None)
    tr.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds (checkpointed)")
    tr.add_argument("--checkpoint-every", type=int, default=_DEFAULT["checkpoint_every"])
    tr.add_argument("--workers", type=int, default=_DEFAULT["workers"])
    tr.add_argument("--seed", type=int, default=_DEFAULT["seed"])
    tr.add_argument("--init", default=None, help="start from this checkpoint's weights (fine-tuning)")
    tr.add_argument("--no-resume", action="store_true", help="ignore an existing OUT/last.pt")
    tr.add_argument("--eval", action="store_true", help="evaluate on the val split afterwards")
    tr.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_extra("export", "`maskrcnn-deploy train`", ("torch", "torchvision"))
    from maskrcnn_deploy.model.train_coco import coco_split, train_on_coco
    from maskrcnn_deploy.runtime.cli.eval import evaluate_checkpoint

    final = train_on_coco(CocoTraining(
        data=args.data, out=args.out, preset=args.preset, iterations=args.iterations, batch_size=args.batch_size,
        lr=args.lr, warmup_iters=args.warmup_iters, clip_grad=args.clip_grad, image_size=args.image_size,
        max_size=args.max_size, time_limit_s=args.time_limit, checkpoint_every=args.checkpoint_every,
        workers=args.workers, seed=args.seed, init=args.init, resume=not args.no_resume))
    print(f"checkpoint: {final}")
    if args.eval:
        return evaluate_checkpoint(str(final), coco_split(args.data, "val"), out=str(Path(args.out) / "metrics.json"))
    return 0
