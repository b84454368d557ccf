"""What a TensorRT build will do, decided before TensorRT is loaded: options, input profile, precision.

Pure Python (onnx only), so every refusal of a bad combination is testable without TensorRT:

- TensorRT 11 builds only strongly typed networks: precision comes from the graph (float32 export,
  `convert --fp16` float16 graph, `calibrate` Q/DQ graph); `--precision`, `--calibration-cache` and
  `--precision-report` are refused there (their builder APIs were removed in 11.0).
- TensorRT 10 builds strongly typed by default when the graph carries its own precision (float16
  tensors or Q/DQ nodes); otherwise the deprecated "weakly typed" path applies `--precision
  fp16|int8` as builder flags, reads a calibration cache for INT8 and pins layers to the precisions
  of a `calibrate`/`convert` precision report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from maskrcnn_deploy.export.graph_io import metadata_of, read_onnx
from maskrcnn_deploy.plugins.op_spec import DOMAIN, OP_TYPE
from maskrcnn_deploy.runtime.backend.tensorrt.environment import TensorRTError, trt_major

__all__ = ["BuildOptions", "GraphInfo", "BuildPlan", "inspect_graph", "parse_shape_specs", "resolve_profile",
           "read_precision_report", "check_calibration_cache", "plan_build", "onnx_node_of_layer"]

PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATORS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration")  # cache header -> calibrator class
Shape = tuple[int, ...]


@dataclass
class BuildOptions:
    """Options of `build_engine` (the `maskrcnn-deploy build` flags). Paths may be str or Path."""

    plugin: str | Path | None = None          # plugin library; None: default_plugin_library() if the graph needs it
    strongly_typed: bool | None = None        # None: TensorRT 11 always; TensorRT 10 when the graph has its precision
    precision: str = "fp32"                   # TensorRT 10 weakly typed only: fp32 | fp16 | int8 (builder flags)
    calibration_cache: str | Path | None = None   # TensorRT 10 weakly typed int8: the `calibrate` .cache
    precision_report: str | Path | None = None    # TensorRT 10 weakly typed: pin layers to the report's precision
    precision_constraints: str = "obey"       # obey (fail if impossible) | prefer (warn and fall back)
    min_shapes: dict[str, Shape] = field(default_factory=dict)
    opt_shapes: dict[str, Shape] = field(default_factory=dict)
    max_shapes: dict[str, Shape] = field(default_factory=dict)
    timing_cache: str | Path | None = None    # loaded when it exists, written after the build
    workspace_mib: int | None = None          # builder workspace pool limit, MiB (None: TensorRT's default)
    opt_level: int | None = None              # builder optimization level 0..5 (None: TensorRT's default, 3)
    tf32: bool = False                        # fp32 engines: allow TF32 math (TensorRT's default); off: strict fp32
    verbose: bool = False                     # TensorRT's INFO log instead of WARNING

    def record(self) -> dict[str, Any]:
        """JSON-ready copy for the engine metadata."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass
class GraphInfo:
    """What the build needs to know about an ONNX deploy graph."""

    inputs: dict[str, list[int]]     # input -> dims, -1 where dynamic
    uses_custom_op: bool             # has maskrcnn_deploy::MultiLevelRoIAlign (needs the plugin)
    explicit_precision: str | None   # "int8" (Q/DQ nodes), "fp16" (float16 tensors) or None (float32 graph)
    metadata: dict[str, str]         # metadata_props (config and class names under "maskrcnn_deploy")


@dataclass
class BuildPlan:
    """The decisions `plan_build` takes; `build_engine` only carries them out."""

    strongly_typed: bool
    precision: str                   # fp32 | fp16 | int8, recorded in the metadata
    precision_source: str            # "graph" or "builder flags"
    fp16_flag: bool = False          # TensorRT 10 weakly typed: BuilderFlag.FP16
    int8_flag: bool = False          # TensorRT 10 weakly typed: BuilderFlag.INT8
    calibrator: str | None = None    # cache header algorithm -> which IInt8*Calibrator reads the cache
    layer_precisions: dict[str, str] = field(default_factory=dict)   # ONNX node -> fp32|fp16|int8
    tf32: bool = True                # BuilderFlag.TF32 (on by default, NvInfer.h): cleared for fp32 without --tf32


def inspect_graph(path: str | Path) -> GraphInfo:
    """Inputs, custom op, precision and metadata of an ONNX file (a one-line error if it is not one)."""
    model = read_onnx(path)
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = {i.name: [d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim]
              for i in graph.input if i.name not in initializers}
    ops = {(n.domain, n.op_type) for n in graph.node}
    half = onnx.TensorProto.FLOAT16
    has_half = (any(t.data_type == half for t in graph.initializer)
                or any(v.type.tensor_type.elem_type == half for v in [*graph.input, *graph.output, *graph.value_info])
                or any(a.name == "to" and a.i == half for n in graph.node if n.op_type == "Cast" for a in n.attribute))
    qdq = any(op in ("QuantizeLinear", "DequantizeLinear") for _, op in ops)
    return GraphInfo(inputs=inputs, uses_custom_op=(DOMAIN, OP_TYPE) in ops,
                     explicit_precision="int8" if qdq else "fp16" if has_half else None,
                     metadata=metadata_of(model))


def parse_shape_specs(texts: list[str] | None) -> dict[str, Shape]:
    """["images:1x3x800x1344", "image_sizes:1x2"] (or comma-joined, as trtexec) -> {name: dims}."""
    shapes: dict[str, Shape] = {}
    for text in texts or []:
        for item in filter(None, (s.strip() for s in text.split(","))):
            name, sep, dims = item.rpartition(":")
            try:
                shape = tuple(int(d) for d in dims.lower().split("x"))
            except ValueError:
                shape = ()
            if not sep or not name or not shape or min(shape) < 0:
                raise TensorRTError(f"shapes are NAME:DIMS with DIMS like 1x3x800x1344, got {item!r}")
            shapes[name] = shape
    return shapes


def _example(dims: list[int]) -> str:
    return "x".join(str(d) if d >= 0 else "N" for d in dims)


def resolve_profile(inputs: dict[str, list[int]], mins: dict[str, Shape], opts: dict[str, Shape],
                    maxs: dict[str, Shape]) -> dict[str, dict[str, list[int]]]:
    """One optimization profile: input -> {"min", "opt", "max"} shapes.

    Static inputs keep the graph's shape (a given shape must equal it). A dynamic input needs
    --opt-shape alone (min = opt = max) or all three, as trtexec; an input whose only dynamic
    dimension is the batch (image_sizes [B,2]) takes the batch range of the inputs that were given.
    """
    for name in {*mins, *opts, *maxs}:
        if name not in inputs:
            raise TensorRTError(f"the graph has no input {name!r}; its inputs are "
                                f"{', '.join(f'{n} [{_example(d)}]' for n, d in inputs.items())}")
    profile: dict[str, dict[str, list[int]]] = {}
    batch: dict[str, int] | None = None
    given_first = sorted(inputs, key=lambda n: n not in opts and n not in mins and n not in maxs)
    for name in given_first:
        dims = inputs[name]
        given = {k: s.get(name) for k, s in (("min", mins), ("opt", opts), ("max", maxs))}
        if given["opt"] is not None and given["min"] is None and given["max"] is None:
            given["min"] = given["max"] = given["opt"]
        if any(v is not None for v in given.values()) and any(v is None for v in given.values()):
            raise TensorRTError(f"input {name}: give --opt-shape alone or all of --min-shape, --opt-shape, "
                                "--max-shape")
        if given["opt"] is None:
            if -1 not in dims:
                given = {k: tuple(dims) for k in given}
            elif batch is not None and -1 not in dims[1:]:
                given = {k: (batch[k], *dims[1:]) for k in given}
            else:
                raise TensorRTError(f"input {name} has dynamic dimensions [{_example(dims)}]: give its shapes, e.g. "
                                    f"--min-shape/--opt-shape/--max-shape {name}:{_example([max(d, 1) for d in dims])}")
        for kind, shape in given.items():
            assert shape is not None
            if len(shape) != len(dims) or any(d >= 0 and s != d for s, d in zip(shape, dims)):
                raise TensorRTError(f"--{kind}-shape {name}:{_example(list(shape))} does not fit the graph's "
                                    f"[{_example(dims)}] (N = any size)")
        lo, mid, hi = (list(given[k] or ()) for k in ("min", "opt", "max"))
        if not all(a <= b <= c for a, b, c in zip(lo, mid, hi)) or min(lo) < 1:
            raise TensorRTError(f"input {name}: shapes must satisfy 1 <= min <= opt <= max in every dimension, got "
                                f"min {_example(lo)}, opt {_example(mid)}, max {_example(hi)}")
        profile[name] = {"min": lo, "opt": mid, "max": hi}
        if batch is None and dims and dims[0] == -1:
            batch = {"min": lo[0], "opt": mid[0], "max": hi[0]}
    return {name: profile[name] for name in inputs}


def read_precision_report(path: str | Path) -> dict[str, str]:
    """ONNX node -> fp32|fp16|int8 from a `calibrate` / `convert --fp16` precision report (.precision.json),
    read by calibration/precision_report.py; its one-line errors are raised as TensorRTError."""
    from maskrcnn_deploy.calibration.precision_report import read_precision_report as read_report
    from maskrcnn_deploy.calibration.regions import PrecisionError

    try:
        return read_report(path)
    except PrecisionError as exc:
        raise TensorRTError(str(exc)) from None


def check_calibration_cache(path: str | Path, tensorrt_version: str) -> str:
    """The calibrator algorithm named by a cache whose header fits this TensorRT, or a one-line error.

    TensorRT silently ignores a cache written for another version or calibrator and then tries to
    calibrate, which this build cannot feed (it has no images); so the header is checked here.
    """
    from maskrcnn_deploy.calibration.trt_cache import read_calibration_cache, trt_version_number

    number, algorithm, scales = read_calibration_cache(path)
    mine = trt_version_number(".".join(tensorrt_version.split(".")[:3]))
    if number != mine:
        raise TensorRTError(f"{path} was written for TensorRT version number {number}, this is {mine} "
                            f"({tensorrt_version}): re-run `maskrcnn-deploy calibrate` with --trt-version "
                            f"{'.'.join(tensorrt_version.split('.')[:3])}")
    if algorithm not in CALIBRATORS:
        raise TensorRTError(f"{path} names the {algorithm} calibrator; the build reads {', '.join(CALIBRATORS)} "
                            "caches: re-run `maskrcnn-deploy calibrate` with --cache-algorithm EntropyCalibration2")
    if not scales:
        raise TensorRTError(f"{path} holds no tensor scales: re-run `maskrcnn-deploy calibrate`")
    return algorithm


def plan_build(info: GraphInfo, options: BuildOptions, tensorrt_version: str) -> BuildPlan:
    """Decide strongly typed or not and which precision APIs apply, refusing what this TensorRT cannot do.

    TF32: TensorRT allows it for float32 math by default (BuilderFlag.TF32, "Enabled by default", NvInfer.h
    of 10.14 and 11.1), so an fp32 engine would not be strict fp32; it is cleared unless --tf32 is given.
    """
    plan = _plan_precision(info, options, tensorrt_version)
    plan.tf32 = options.tf32 or plan.precision != "fp32"
    return plan


def _plan_precision(info: GraphInfo, options: BuildOptions, tensorrt_version: str) -> BuildPlan:
    if options.precision not in PRECISIONS:
        raise TensorRTError(f"--precision must be one of {', '.join(PRECISIONS)}, got {options.precision!r}")
    if options.precision_constraints not in ("obey", "prefer"):
        raise TensorRTError(f"--precision-constraints must be obey or prefer, got {options.precision_constraints!r}")
    weak_only = [flag for flag, used in (("--precision " + options.precision, options.precision != "fp32"),
                                         ("--calibration-cache", options.calibration_cache is not None),
                                         ("--precision-report", options.precision_report is not None)) if used]
    graph_precision = info.explicit_precision or "fp32"
    if trt_major(tensorrt_version) >= 11:
        if options.strongly_typed is False:
            raise TensorRTError(f"TensorRT {tensorrt_version} builds only strongly typed networks (the weakly typed "
                                "path was removed in 11.0): drop --no-strongly-typed")
        if weak_only:
            raise TensorRTError(f"{', '.join(weak_only)}: TensorRT {tensorrt_version} removed builder precision flags "
                                "and calibrators; put the precision in the graph (`maskrcnn-deploy convert --fp16` or "
                                "`maskrcnn-deploy calibrate`) and build that graph")
        return BuildPlan(strongly_typed=True, precision=graph_precision, precision_source="graph")
    strongly = options.strongly_typed if options.strongly_typed is not None else info.explicit_precision is not None
    if strongly:
        if weak_only:
            raise TensorRTError(f"{', '.join(weak_only)}: a strongly typed build takes every precision from the graph; "
                                "drop these flags, or pass --no-strongly-typed (TensorRT 10 only, deprecated)")
        return BuildPlan(strongly_typed=True, precision=graph_precision, precision_source="graph")
    plan = BuildPlan(strongly_typed=False, precision=options.precision, precision_source="builder flags",
                     fp16_flag=options.precision in ("fp16", "int8"), int8_flag=options.precision == "int8")
    if info.explicit_precision == "int8" and not plan.int8_flag:
        raise TensorRTError("the graph has Q/DQ nodes: build it strongly typed (the default), or weakly typed with "
                            "--precision int8")
    if options.calibration_cache is not None:
        if not plan.int8_flag:
            raise TensorRTError("--calibration-cache needs --precision int8")
        plan.calibrator = check_calibration_cache(options.calibration_cache, tensorrt_version)
    elif plan.int8_flag and info.explicit_precision != "int8":
        raise TensorRTError("--precision int8 on a float graph needs --calibration-cache (written by `maskrcnn-deploy "
                            "calibrate`), or build the Q/DQ graph `calibrate` writes")
    if options.precision_report is not None:
        plan.layer_precisions = read_precision_report(options.precision_report)
        if "int8" in plan.layer_precisions.values() and not plan.int8_flag:
            raise TensorRTError(f"{options.precision_report} puts layers in int8: add --precision int8 and "
                                "--calibration-cache")
        if "fp16" in plan.layer_precisions.values():
            plan.fp16_flag = True
            plan.precision = "fp16" if plan.precision == "fp32" else plan.precision
    return plan


def onnx_node_of_layer(layer_name: str, layer_metadata: str) -> str:
    """The ONNX node a parsed TensorRT layer came from.

    TensorRT 10's ONNX parser records it in the layer's metadata as "[ONNX Layer: <node>]" and names
    the first layer of a node after it (helper layers get a suffix); the metadata wins when present.
    """
    marker = "[ONNX Layer: "
    start = layer_metadata.find(marker)
    if start >= 0:
        end = layer_metadata.find("]", start)
        if end > start:
            return layer_metadata[start + len(marker):end]
    return layer_name
