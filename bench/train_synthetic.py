"""Training-to-accuracy benchmark: ResNet-18-FPN Mask R-CNN from scratch on the synthetic set.

Goal (issue 2): segm AP >= 0.50 (COCO AP@[.5:.95]) on the held-out synthetic split after at
most 15 minutes of training on a 2-core CPU machine. Run by hand:

    .venv/bin/python bench/train_synthetic.py --out out/bench_train

It makes the data (seeded), trains with a wall-clock budget, evaluates with pycocotools, and
prints the figures plus a JSON summary (also written to OUT/summary.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from maskrcnn_deploy.model.checkpoint import load_checkpoint
from maskrcnn_deploy.model.data.coco import CocoDetectionDataset
from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset
from maskrcnn_deploy.model.train import TrainConfig, synthetic_model_config, train
from maskrcnn_deploy.runtime.evaluate import evaluate_predictor
from maskrcnn_deploy.runtime.load import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="out/bench_train")
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=3000, help="upper bound; the time budget ends the run")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--time-limit", type=float, default=885.0,
                        help="training budget, s (lr steps follow it); 15 s under 15 min leaves room for the "
                             "last iteration and the final checkpoint; 0 = no budget, --iterations ends the run")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--clip", type=float, default=10.0)
    parser.add_argument("--image-size", type=int, default=256, help="synthetic image side")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                        help="override a MaskRCNNConfig field, e.g. --set fpn_norm='\"bn\"'")
    args = parser.parse_args()

    out = Path(args.out)
    t_start = time.monotonic()
    paths = make_synthetic_dataset(out / "data", num_train=args.train_images, num_val=args.val_images, seed=0,
                                   image_size=(args.image_size, args.image_size))
    num_classes = CocoDetectionDataset(paths["train"]).num_classes
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    model_config = synthetic_model_config(num_classes, **overrides)
    print(f"model config: {model_config}", flush=True)

    t_train = time.monotonic()
    cfg = TrainConfig(train_json=str(paths["train"]), out_dir=str(out / "run"), iterations=args.iterations,
                      batch_size=args.batch_size, lr=args.lr, warmup_iters=args.warmup, clip_grad_norm=args.clip,
                      time_limit_s=args.time_limit or None, checkpoint_every=250)
    final = train(cfg, model_config=model_config, resume=False)
    train_s = time.monotonic() - t_train

    _, _, extra = load_checkpoint(final)
    t_eval = time.monotonic()
    metrics = evaluate_predictor(load(final), CocoDetectionDataset(paths["val"]), batch_size=2)  # the eager model
    eval_s = time.monotonic() - t_eval

    summary = {
        "segm_AP": round(metrics["segm"]["AP"], 4), "segm_AP50": round(metrics["segm"]["AP50"], 4),
        "bbox_AP": round(metrics["bbox"]["AP"], 4), "bbox_AP50": round(metrics["bbox"]["AP50"], 4),
        "iterations": int(extra["iteration"]), "batch_size": args.batch_size,
        "train_wall_s": round(train_s, 1), "eval_wall_s": round(eval_s, 1),
        "total_wall_s": round(time.monotonic() - t_start, 1),
        "val_images": metrics["num_images"], "model": "resnet18_fpn", "num_classes": num_classes,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "goal": "segm AP >= 0.50 within 15 min of training",
        "goal_met": metrics["segm"]["AP"] >= 0.50 and train_s <= 15 * 60,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"segm AP {summary['segm_AP']:.3f}  bbox AP {summary['bbox_AP']:.3f}  after "
          f"{summary['iterations']} iterations, training {train_s / 60:.1f} min, total {summary['total_wall_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
