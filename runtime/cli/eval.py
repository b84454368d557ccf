"""`maskrcnn-deploy eval`: COCO bbox and segm AP of a checkpoint (runtime/evaluate.py, pycocotools), resumable
after an interrupt.

    maskrcnn-deploy eval runs/r18/model_final.pt --data data/synth/val.json [--out metrics.json]
                         [--ray [ADDRESS] [--ray-workers N]]     # the batches spread over a Ray cluster
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from maskrcnn_deploy.common.errors import UsageError
from maskrcnn_deploy.common.extras import require_extra
from maskrcnn_deploy.runtime.cli.checkpoint_options import (
    add_checkpoint_options,
    add_ray_options,
    checkpoint_options,
    require_torch_for_checkpoints,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="COCO bbox and segm AP of a checkpoint (pycocotools)")
    ev.add_argument("checkpoint", help="checkpoint (.pt/.pth/.pkl), ONNX graph or TensorRT engine")
    add_checkpoint_options(ev)
    ev.add_argument("--data", required=True, help="COCO json, or a folder holding val.json")
    ev.add_argument("--images", default=None, help="image folder (default: beside the json)")
    ev.add_argument("--batch-size", type=int, default=2)
    ev.add_argument("--max-images", type=int, default=None)
    ev.add_argument("--out", default=None, help="write metrics as JSON here")
    ev.add_argument("--no-resume", action="store_true",
                    help="start afresh, ignoring the progress an interrupted run left in <out>.eval-progress.jsonl "
                         "(or <checkpoint>.eval-progress.jsonl without --out)")
    add_ray_options(ev)
    ev.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.ray is not None:
        require_extra("ray", "`maskrcnn-deploy eval --ray`")
    require_torch_for_checkpoints("eval", [args.checkpoint])
    return evaluate_checkpoint(args.checkpoint, args.data, images=args.images, batch_size=args.batch_size,
                               max_images=args.max_images, out=args.out, resume=not args.no_resume,
                               ray=args.ray, ray_workers=args.ray_workers, **checkpoint_options(args))


def evaluate_checkpoint(checkpoint: str, data: str, images: str | None = None, batch_size: int = 2,
                        max_images: int | None = None, out: str | None = None, resume: bool = True,
                        source: str | None = None, bn_eps: float | None = None, ray: str | None = None,
                        ray_workers: int | None = None) -> int:
    """Evaluate, print the APs and write them to `out` (JSON); each image's results are journaled as they
    come, so a rerun after an interrupt (Ctrl-C) resumes. `data`: a COCO json or a folder with val.json.
    source / bn_eps: how to read the checkpoint (runtime/cli/checkpoint_options.py). ray: a Ray address
    ("local", "auto", host:port) to spread the batches over Ray workers (runtime/distributed.py)."""
    from maskrcnn_deploy.common.files import write_json
    from maskrcnn_deploy.model.data.coco import CocoDetectionDataset
    from maskrcnn_deploy.model.train_coco import coco_split
    from maskrcnn_deploy.runtime.evaluate import evaluate_predictor, evaluation_journal
    from maskrcnn_deploy.runtime.load import load

    predictor = None  # with --ray the model is loaded only on the workers (which check its classes)
    if ray is None:  # a checkpoint runs as the original eager model; an .onnx or engine works too
        predictor = load(checkpoint, source=source, bn_eps=bn_eps)
    dataset = CocoDetectionDataset(coco_split(data, "val"), images)
    if predictor is not None and dataset.num_classes != predictor.config.num_classes:
        raise UsageError(f"{checkpoint} predicts {predictor.config.num_classes} classes (background included) "
                         f"but {data} has {dataset.num_classes}; evaluate on data with the same categories")
    journal_path = Path(f"{out or checkpoint}.eval-progress.jsonl")
    journal = evaluation_journal(journal_path, checkpoint, dataset, batch_size, max_images, resume=resume)
    t0 = time.monotonic()
    try:
        if predictor is not None:
            metrics = evaluate_predictor(predictor, dataset, batch_size=batch_size, max_images=max_images,
                                         journal=journal)
        else:
            from maskrcnn_deploy.runtime.distributed import evaluate_on_ray
            metrics = evaluate_on_ray(checkpoint, dataset, batch_size, max_images=max_images, journal=journal,
                                      checkpoint={"source": source, "bn_eps": bn_eps}, address=ray,
                                      workers=ray_workers)
    finally:
        journal.close()
    metrics["eval_wall_s"] = round(time.monotonic() - t0, 1)
    print(f"bbox AP {metrics['bbox']['AP']:.4f}  AP50 {metrics['bbox']['AP50']:.4f} | "
          f"segm AP {metrics['segm']['AP']:.4f}  AP50 {metrics['segm']['AP50']:.4f} "
          f"({metrics['num_images']} images, {metrics['num_detections']} detections)")
    if out:
        write_json(out, metrics)
        print(f"metrics: {out}")
    journal.remove()
    return 0
