"""`maskrcnn-deploy data synth`: synthetic instance-segmentation scenes as COCO json + PNG
(model/data/synthetic.py).

    maskrcnn-deploy data synth --out data/synth --train 1000 --val 100 [--seed 0] [--size 256]
"""

from __future__ import annotations

import argparse
import time


def add_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="make datasets").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="synthetic instance-segmentation scenes as COCO json + PNG")
    synth.add_argument("--out", required=True)
    synth.add_argument("--train", type=int, default=1000, help="training images")
    synth.add_argument("--val", type=int, default=100, help="held-out validation images")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=256, help="image side in pixels")
    synth.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset

    t0 = time.monotonic()
    paths = make_synthetic_dataset(args.out, num_train=args.train, num_val=args.val, seed=args.seed,
                                   image_size=(args.size, args.size))
    for split, path in paths.items():
        print(f"{split}: {path}")
    print(f"wrote {args.train} + {args.val} images in {time.monotonic() - t0:.1f} s")
    return 0
