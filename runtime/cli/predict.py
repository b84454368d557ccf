"""`maskrcnn-deploy predict`: detections drawn over images as PNG, from a checkpoint, ONNX graph or TensorRT
engine (runtime/load.py, runtime/visualize.py).

    maskrcnn-deploy predict runs/r18/model_final.pt data/synth/val --out out/pred [--score-thresh 0.5] [--limit N]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

from maskrcnn_deploy.common.errors import UsageError
from maskrcnn_deploy.runtime.cli.checkpoint_options import (
    add_backend_option,
    add_checkpoint_options,
    checkpoint_options,
    require_torch_for_checkpoints,
)
from maskrcnn_deploy.runtime.cli.exit_codes import EXIT_BAD_INPUT, EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("predict", help="draw predicted masks over images (PNG)")
    pr.add_argument("checkpoint", help="checkpoint (.pt/.pth/.pkl), ONNX deploy graph (.onnx) or TensorRT engine")
    add_checkpoint_options(pr)
    add_backend_option(pr)
    pr.add_argument("images", nargs="+", help="image files or folders (png, jpg, jpeg, bmp; any mode: made RGB)")
    pr.add_argument("--out", required=True)
    pr.add_argument("--score-thresh", type=float, default=0.5)
    pr.add_argument("--limit", type=int, default=None, help="at most this many images")
    pr.set_defaults(func=run)


def _image_paths(items: list[str], limit: int | None) -> list[Path]:
    """The image files named, folders expanded (UsageError for a path that is not there, or no image)."""
    from maskrcnn_deploy.model.data.images import list_images

    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths.extend(list_images(p))
        elif p.exists():
            paths.append(p)
        else:
            raise UsageError(f"no such image or folder: {p}")
    if limit:
        paths = paths[:limit]
    if not paths:
        raise UsageError(f"no images found in {' '.join(items)} (png, jpg, jpeg, bmp)")
    return paths


def run(args: argparse.Namespace) -> int:
    """Draw the detections over each image as OUT/<image stem>.png. Every readable image is drawn;
    each unreadable one is named with its reason, and then the count makes the exit code 2."""
    from maskrcnn_deploy.export.preprocess import ImageFitError
    from maskrcnn_deploy.model.data.images import ImageLoadError, load_rgb, unreadable_summary
    from maskrcnn_deploy.runtime.load import load
    from maskrcnn_deploy.runtime.predictor import PredictorError
    from maskrcnn_deploy.runtime.visualize import draw_detections, save_png

    paths = _image_paths(args.images, args.limit)
    require_torch_for_checkpoints("predict", [args.checkpoint])
    predictor = load(args.checkpoint, backend=args.backend, **checkpoint_options(args))
    class_names = predictor.class_names or \
        ["__background__"] + [f"class{i}" for i in range(1, predictor.config.num_classes)]
    out = Path(args.out)
    unreadable, unfit = [], []  # named apart: an image that does not fit was read
    for path, name in zip(paths, output_names(paths)):
        try:
            image = load_rgb(path)  # uint8 [H,W,3], no torch: predictors and drawing take it as it is
            det = predictor.predict([image], min_score=args.score_thresh)[0]  # pastes kept masks only
        except ImageLoadError as err:
            print(err, file=sys.stderr)
            unreadable.append(path)
            continue
        except (PredictorError, ImageFitError) as err:  # read, but this model or graph cannot take it
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
    return EXIT_BAD_INPUT if unreadable or unfit else EXIT_OK


def output_names(paths: list[Path]) -> list[str]:
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
