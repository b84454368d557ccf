"""`maskrcnn-deploy convert --fp16`: a mixed-precision float16 graph with the fragile parts kept float32
(calibration/convert.py), and its precision report.

    maskrcnn-deploy convert --fp16 model.onnx -o model.fp16.onnx (--data data/train.json | --ranges R.json)
"""

from __future__ import annotations

import argparse
import time

from maskrcnn_deploy.common.errors import UsageError
from maskrcnn_deploy.common.extras import require_extra


def add_parser(sub: argparse._SubParsersAction) -> None:
    co = sub.add_parser("convert", help="FP16: a mixed-precision float16 graph with fragile parts kept float32")
    co.add_argument("model", help="float32 .onnx from `maskrcnn-deploy export`")
    co.add_argument("-o", "--output", required=True)
    co.add_argument("--fp16", action="store_true", help="convert to mixed float16 (the only target so far)")
    co.add_argument("--data", default=None, help="images whose activation ranges decide what stays float32")
    co.add_argument("--ranges", default=None, help="<stem>.ranges.json from `calibrate` instead of --data")
    co.add_argument("--num-images", type=int, default=32)
    co.add_argument("--batch-size", type=int, default=1)
    co.add_argument("--fp16-io", action="store_true", help="float16 graph inputs and outputs (default float32)")
    co.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.calibration.convert import convert_fp16_file

    if not args.fp16:
        raise UsageError("convert needs a target precision: --fp16")
    require_extra("calibrate", "`maskrcnn-deploy convert --fp16`")
    t0 = time.monotonic()
    result = convert_fp16_file(args.model, args.output, data=args.data, ranges=args.ranges,
                               num_images=args.num_images, batch_size=args.batch_size, fp16_io=args.fp16_io)
    print(f"wrote {result.output}: {result.fp16_nodes} nodes float16, {result.fp32_nodes} float32 "
          f"(report {result.report}) in {time.monotonic() - t0:.0f} s")
    return 0
