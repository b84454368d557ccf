"""`maskrcnn-deploy build`: a TensorRT engine from an ONNX deploy graph
(runtime/backend/tensorrt/engine_builder.py):

    maskrcnn-deploy build model.onnx -o model.engine [--plugin lib.so] [--timing-cache t.cache]
                          [--min-shape images:1x3x800x800 --opt-shape ... --max-shape ...]
                          [--workspace-mib 4096] [--opt-level 3] [--tf32]
        TensorRT 10 weakly typed only: [--no-strongly-typed] [--precision fp16|int8]
                          [--calibration-cache model.int8.cache] [--precision-report model.int8.precision.json]

Writes model.engine and model.engine.json (docs/tensorrt.md). Bad input: one line, exit code 2.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    bu = sub.add_parser("build", help="build a TensorRT engine from an ONNX deploy graph (needs TensorRT and a GPU)")
    bu.add_argument("onnx", help="the .onnx from `export` (float32), `convert --fp16` or `calibrate` (Q/DQ)")
    bu.add_argument("-o", "--output", required=True, help="the .engine to write (metadata goes to OUTPUT.json)")
    bu.add_argument("--plugin", default=None,
                    help="MultiLevelRoIAlign plugin library (default: the package's build of plugins/tensorrt)")
    typed = bu.add_mutually_exclusive_group()
    typed.add_argument("--strongly-typed", dest="strongly_typed", action="store_true", default=None,
                       help="precision from the graph (TensorRT 11: always; TensorRT 10: default when the graph "
                            "has float16 tensors or Q/DQ nodes)")
    typed.add_argument("--no-strongly-typed", dest="strongly_typed", action="store_false",
                       help="TensorRT 10 only: weakly typed build with --precision flags (deprecated by NVIDIA)")
    bu.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32",
                    help="TensorRT 10 weakly typed: allow float16 (fp16) or int8 and float16 (int8) kernels")
    bu.add_argument("--calibration-cache", default=None,
                    help="TensorRT 10 weakly typed int8: the .cache written by `calibrate` (read, never calibrated)")
    bu.add_argument("--precision-report", default=None,
                    help="TensorRT 10 weakly typed: pin layers to a `calibrate`/`convert` .precision.json")
    bu.add_argument("--precision-constraints", choices=["obey", "prefer"], default="obey",
                    help="with --precision-report: fail (obey) or warn (prefer) when a layer cannot run as asked")
    for kind in ("min", "opt", "max"):
        bu.add_argument(f"--{kind}-shape", action="append", default=[], metavar="NAME:DIMS",
                        help=f"{kind} shape of a dynamic input, e.g. images:1x3x800x1344 (repeat, or comma-join)")
    bu.add_argument("--timing-cache", default=None, help="timing cache file: loaded when present, saved after")
    bu.add_argument("--workspace-mib", type=int, default=None, help="builder workspace limit in MiB")
    bu.add_argument("--opt-level", type=int, choices=range(6), default=None, metavar="0-5",
                    help="builder optimization level (TensorRT default 3)")
    bu.add_argument("--tf32", action="store_true",
                    help="fp32 engines: allow TF32 math (faster on Ampere and later, 10-bit mantissa products); "
                         "without it an fp32 build clears TensorRT's default TF32 flag")
    bu.add_argument("--verbose", action="store_true", help="TensorRT's INFO log")
    bu.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from maskrcnn_deploy.runtime.backend.tensorrt.build_plan import BuildOptions, parse_shape_specs
    from maskrcnn_deploy.runtime.backend.tensorrt.engine_builder import build_engine

    options = BuildOptions(
        plugin=args.plugin, strongly_typed=args.strongly_typed, precision=args.precision,
        calibration_cache=args.calibration_cache, precision_report=args.precision_report,
        precision_constraints=args.precision_constraints, min_shapes=parse_shape_specs(args.min_shape),
        opt_shapes=parse_shape_specs(args.opt_shape), max_shapes=parse_shape_specs(args.max_shape),
        timing_cache=args.timing_cache, workspace_mib=args.workspace_mib, opt_level=args.opt_level,
        tf32=args.tf32, verbose=args.verbose)
    meta = build_engine(args.onnx, args.output, options)
    print(f"engine: {args.output} (TensorRT {meta.tensorrt_version}, {meta.gpu_name}, precision {meta.precision}, "
          f"TF32 {'allowed' if meta.tf32 else 'off'})")
    return 0
