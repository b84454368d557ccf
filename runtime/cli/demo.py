"""`maskrcnn-deploy demo`: the whole toolchain on the embedded synthetic default (runtime/demo.py);
exit 1 if a parity check fails.

    maskrcnn-deploy demo [--out out/demo] [--time-limit 660] [--check-images N] [--threads N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from maskrcnn_deploy.common.extras import require_extra
from maskrcnn_deploy.runtime.cli.exit_codes import EXIT_OK, EXIT_PARITY_FAILURE
from maskrcnn_deploy.runtime.demo import DemoSettings

_DEFAULT = DemoSettings()  # the demo's defaults, one home (runtime/demo.py imports nothing heavy at the top)


def add_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="the whole flow on an embedded synthetic default")
    demo.add_argument("--out", default=str(_DEFAULT.out))
    demo.add_argument("--train-images", type=int, default=_DEFAULT.train_images)
    demo.add_argument("--val-images", type=int, default=_DEFAULT.val_images)
    demo.add_argument("--iterations", type=int, default=_DEFAULT.iterations, help="as bench/train_synthetic.py")
    demo.add_argument("--time-limit", type=float, default=_DEFAULT.time_limit_s,
                      help="training budget, s (lr steps follow it); the whole demo fits in 20 min on 2 cores")
    demo.add_argument("--calibration-images", type=int, default=_DEFAULT.calibration_images,
                      help="for the FP16 ranges and INT8 scales")
    demo.add_argument("--check-images", type=int, default=_DEFAULT.check_images,
                      help="val images per check (default: all)")
    demo.add_argument("--threads", type=int, default=_DEFAULT.threads, help="ONNX Runtime intra-op threads")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_extra("export", "`maskrcnn-deploy demo`")  # trains and exports, then writes the fp16 graph
    require_extra("calibrate", "`maskrcnn-deploy demo`")
    from maskrcnn_deploy.runtime.demo import run_demo

    rows = run_demo(DemoSettings(out=Path(args.out), train_images=args.train_images, val_images=args.val_images,
                                 iterations=args.iterations, time_limit_s=args.time_limit,
                                 calibration_images=args.calibration_images, check_images=args.check_images,
                                 threads=args.threads))
    return EXIT_PARITY_FAILURE if any(r.parity == "FAIL" for r in rows) else EXIT_OK
