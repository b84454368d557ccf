"""Build a TensorRT engine from a deploy graph: `build_engine(onnx, engine, BuildOptions(...))`.

    maskrcnn-deploy build model.onnx -o model.engine [--plugin lib.so] [--min-shape ...] [--timing-cache t.cache]

Steps (TensorRT 10.x and 11.x Python API):
1. check the graph, the plugin library and the options before TensorRT is loaded (build_plan.py);
2. register TensorRT's built-in plugins (`init_libnvinfer_plugins`: the parser imports a standard RoiAlign
   node as ROIAlign_TRT from that registry), then, after checking that it was built for this TensorRT
   major, load our plugin library into the registry (`IPluginRegistry.load_library`);
3. create a network (strongly typed: always on TensorRT 11, where the flag is gone; on TensorRT 10
   when the graph carries its precision or --strongly-typed), parse the ONNX file (errors name nodes);
4. configure: optimization profile for dynamic inputs, workspace limit, optimization level, timing
   cache, TF32 off for fp32 engines unless --tf32, and on TensorRT 10's weakly typed path the FP16/INT8
   flags, a calibrator that only reads the `calibrate` cache, and layer precisions from a precision report;
5. build with a progress monitor, write the engine and `<engine>.json` (environment.py).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from maskrcnn_deploy.common.files import atomic_write
from maskrcnn_deploy.plugins.op_spec import OP_TYPE
from maskrcnn_deploy.runtime.backend.tensorrt.build_plan import (
    BuildOptions,
    BuildPlan,
    inspect_graph,
    onnx_node_of_layer,
    plan_build,
    resolve_profile,
)
from maskrcnn_deploy.runtime.backend.tensorrt.environment import (
    EngineMetadata,
    TensorRTError,
    TensorRTUnavailableError,
    check_plugin_major,
    package_version,
    require_cuda,
    require_tensorrt,
    sha256_file,
    trt_major,
    write_metadata,
)

try:  # NVIDIA's bindings; tensorrt-stubs alone imports as an empty namespace (require_tensorrt refuses it)
    import tensorrt as trt
except (ImportError, OSError):  # not installed, or its CUDA libraries are missing
    trt = None  # type: ignore[assignment]

__all__ = ["build_engine", "BuildOptions", "init_builtin_plugins", "resolve_plugin", "load_plugin_library",
           "make_logger"]

_LOADED_PLUGINS: dict[str, Any] = {}   # library SHA-256 -> handle returned by load_library
_BUILTIN_PLUGINS: list[bool] = []      # [True] once TensorRT's built-in plugins are registered
# read by the plugin library's load-time constructor (plugins/tensorrt/plugin_library.cpp): "0" leaves the
# registration to load_library, which registers the creator getCreators hands out
REGISTER_AT_LOAD_ENV = "MASKRCNN_DEPLOY_TRT_REGISTER_AT_LOAD"
_PLUGIN_BUILD_HINT = ("build it with `python -m maskrcnn_deploy.plugins.tensorrt.build_library` (docs/tensorrt.md), "
                      "or pass --plugin PATH")


def _log(message: str) -> None:
    print(f"[build] {message}", flush=True)


def resolve_plugin(plugin: str | Path | None, needed: bool) -> Path | None:
    """The plugin library to load: the given path, else the package's default when the graph needs it."""
    if plugin is None:
        if not needed:
            return None
        try:
            from maskrcnn_deploy.plugins.tensorrt.build_library import default_plugin_library
        except ImportError:
            raise TensorRTError("the graph has the custom MultiLevelRoIAlign node, which needs the TensorRT plugin "
                                "library, and maskrcnn_deploy.plugins.tensorrt.build_library (which knows its default path) "
                                "is not available: pass --plugin PATH") from None
        default = Path(default_plugin_library())
        if not default.is_file():  # not built on this machine: part of the backend is missing (exit 3)
            raise TensorRTUnavailableError(f"TensorRT plugin library not found: {default}; {_PLUGIN_BUILD_HINT}")
        plugin = default
    path = Path(plugin)
    if not path.is_file():
        raise TensorRTError(f"TensorRT plugin library not found: {path}; {_PLUGIN_BUILD_HINT}")
    return path.resolve()


def make_logger(verbose: bool = False) -> trt.ILogger:
    """TensorRT's stderr logger: warnings and errors, or INFO with `verbose`."""
    return trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)


def init_builtin_plugins(logger: trt.ILogger) -> None:
    """Register TensorRT's own plugins (libnvinfer_plugin) once per process, before any parse or deserialize.

    The ONNX parser imports a standard RoiAlign node (`export --roi-align standard`) as the ROIAlign_TRT
    plugin, found in this registry, and an engine holding it needs it again to deserialize; NVIDIA's
    samples call `trt.init_libnvinfer_plugins(logger, "")` first for this (samples/python/detectron2).
    """
    if _BUILTIN_PLUGINS:
        return
    if not trt.init_libnvinfer_plugins(logger, ""):
        _log("warning: TensorRT's built-in plugins could not be registered (init_libnvinfer_plugins returned "
             "False); graphs with a standard RoiAlign node will not parse or load")
    _BUILTIN_PLUGINS.append(True)


def load_plugin_library(path: Path) -> None:
    """Register a plugin library's creators with TensorRT (once per process and library content), after
    refusing a library compiled for another TensorRT major (it would register nothing)."""
    check_plugin_major(path, str(trt.__version__))
    key = sha256_file(path)  # by content: TensorRT refuses to register the same creators twice
    if key in _LOADED_PLUGINS:
        return
    registry: trt.IPluginRegistry = trt.get_plugin_registry()
    previous = os.environ.get(REGISTER_AT_LOAD_ENV)
    os.environ[REGISTER_AT_LOAD_ENV] = "0"  # TensorRT registers the creator from getCreators, not the library
    try:
        handle = registry.load_library(str(path.resolve()))
    finally:
        if previous is None:
            os.environ.pop(REGISTER_AT_LOAD_ENV, None)
        else:
            os.environ[REGISTER_AT_LOAD_ENV] = previous
    if handle is None:
        raise TensorRTError(f"TensorRT could not load plugin library {path} (see the TensorRT log above: it must "
                            "export getCreators and setLoggerFinder, be built for this TensorRT major version, and "
                            f"not register plugins another loaded library already has); {_PLUGIN_BUILD_HINT}")
    _LOADED_PLUGINS[key] = handle


def _progress_monitor() -> trt.IProgressMonitor | None:
    """Prints the builder's top-level phases and, every 10 s, the step reached (None before TensorRT 10)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class BuildProgress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()          # TensorRT may call from several threads
            self._t0 = self._last = time.monotonic()
            self._depth: dict[str, int] = {}
            self._steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                depth = 0 if parent_phase is None else self._depth.get(parent_phase, 0) + 1
                self._depth[phase_name], self._steps[phase_name] = depth, num_steps
                if depth <= 1:
                    _log(f"{'  ' * depth}{phase_name} ({num_steps} steps) at {time.monotonic() - self._t0:.0f} s")

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                now = time.monotonic()
                if now - self._last >= 10.0 and self._depth.get(phase_name, 0) <= 1:
                    self._last = now
                    _log(f"  {phase_name}: step {step + 1}/{self._steps.get(phase_name, '?')} "
                         f"at {now - self._t0:.0f} s")
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                if self._depth.pop(phase_name, 1) == 0:
                    _log(f"{phase_name} done at {time.monotonic() - self._t0:.0f} s")

    return BuildProgress()


def _cache_calibrator(cache: bytes, algorithm: str) -> trt.IInt8Calibrator:
    """A TensorRT 10 calibrator that hands TensorRT the `calibrate` cache and no batches.

    With a cache whose header matches, TensorRT reads the scales and skips calibration; get_batch is
    then never needed (it returns no batch, which ends calibration if it ever were). The class must
    be the one named in the cache header, or TensorRT ignores the cache.
    """

    class CacheOnly:
        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int]:
            return []

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, data: Any) -> None:
            return None  # the user's cache file stays as `calibrate` wrote it

    class Entropy2(CacheOnly, trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

    class Entropy(CacheOnly, trt.IInt8EntropyCalibrator):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator.__init__(self)

    class MinMax(CacheOnly, trt.IInt8MinMaxCalibrator):
        def __init__(self) -> None:
            trt.IInt8MinMaxCalibrator.__init__(self)

    classes: dict[str, type[trt.IInt8Calibrator]] = {"EntropyCalibration2": Entropy2, "EntropyCalibration": Entropy,
                                                      "MinMaxCalibration": MinMax}
    return classes[algorithm]()


def _parse_error(parser: trt.OnnxParser, onnx_path: Path) -> TensorRTError:
    """One line for the first parser error (node name, operator, description); the rest go to stderr."""
    lines = []
    for i in range(parser.num_errors):
        error: trt.ParserError = parser.get_error(i)
        node = error.node_name() if hasattr(error, "node_name") else f"#{error.node()}"
        op = error.node_operator() if hasattr(error, "node_operator") else ""
        desc = " ".join(error.desc().split())
        lines.append(f"node {node!r}{f' ({op})' if op else ''}: {desc}")
    for line in lines[1:]:
        print(f"[build] parser: {line}", file=sys.stderr)
    first = lines[0] if lines else "the parser reported no detail"
    hint = (f"; is the {OP_TYPE} plugin library loaded and built for this TensorRT (--plugin)?"
            if OP_TYPE in first else "")
    more = f" (and {len(lines) - 1} more, above)" if len(lines) > 1 else ""
    return TensorRTError(f"TensorRT cannot parse {onnx_path}: {first}{more}{hint}")


def _apply_layer_precisions(network: trt.INetworkDefinition, config: trt.IBuilderConfig, plan: BuildPlan,
                            constraints: str) -> None:
    """TensorRT 10 weakly typed: pin each layer of a reported ONNX node to the report's precision."""
    dtypes = {"fp32": trt.DataType.FLOAT, "fp16": trt.DataType.HALF, "int8": trt.DataType.INT8}
    floats = (trt.DataType.FLOAT, trt.DataType.HALF)
    counts = {"fp32": 0, "fp16": 0, "int8": 0}
    matched: set[str] = set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        node = onnx_node_of_layer(layer.name, layer.metadata if hasattr(layer, "metadata") else "")
        precision = plan.layer_precisions.get(node)
        if precision is None or layer.type in (trt.LayerType.CONSTANT, trt.LayerType.SHAPE):
            continue
        if any(layer.get_output(k).dtype not in floats for k in range(layer.num_outputs)):
            continue  # shape/index arithmetic: no float precision to choose
        layer.precision = dtypes[precision]
        counts[precision] += 1
        matched.add(node)
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS if constraints == "obey"
                    else trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    unmatched = len(set(plan.layer_precisions) - matched)
    _log(f"layer precisions ({constraints}): {counts['int8']} int8, {counts['fp16']} fp16, {counts['fp32']} fp32 "
         f"layers; {unmatched} report nodes have no float layer in the network")


def _timing_cache(config: trt.IBuilderConfig, path: Path | None) -> None:
    """Attach the timing cache from `path` (a new one when absent or made by another TensorRT/GPU)."""
    if path is None:
        return
    data = path.read_bytes() if path.is_file() else b""
    try:
        cache: trt.ITimingCache | None = config.create_timing_cache(data)
    except RuntimeError:  # the bindings raise on bytes that are not a timing cache
        cache = None
    if cache is None or not config.set_timing_cache(cache, False):
        _log(f"timing cache {path} does not fit this TensorRT/GPU; starting a new one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    elif data:
        _log(f"timing cache {path}: {len(data)} bytes loaded")


def _configure(builder: trt.Builder, network: trt.INetworkDefinition, options: BuildOptions, plan: BuildPlan,
               profile_shapes: dict[str, dict[str, list[int]]], dynamic: bool) -> tuple[trt.IBuilderConfig, list[Any]]:
    """The builder config; also returns objects TensorRT holds by reference (calibrator, monitor)."""
    config = builder.create_builder_config()
    keep: list[Any] = []
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mib) << 20)
    if options.opt_level is not None:
        config.builder_optimization_level = int(options.opt_level)
    profile = None
    if dynamic:
        profile = builder.create_optimization_profile()
        for name, shapes in profile_shapes.items():
            profile.set_shape(name, trt.Dims(shapes["min"]), trt.Dims(shapes["opt"]), trt.Dims(shapes["max"]))
        if config.add_optimization_profile(profile) < 0:
            raise TensorRTError(f"TensorRT rejected the optimization profile {profile_shapes}: check the shapes")
    _timing_cache(config, Path(options.timing_cache) if options.timing_cache is not None else None)
    if not plan.tf32:  # TensorRT enables TF32 by default (NvInfer.h, BuilderFlag::kTF32)
        config.clear_flag(trt.BuilderFlag.TF32)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.int8_flag:
        config.set_flag(trt.BuilderFlag.INT8)
    if plan.calibrator is not None and options.calibration_cache is not None:
        calibrator = _cache_calibrator(Path(options.calibration_cache).read_bytes(), plan.calibrator)
        config.int8_calibrator = calibrator
        if profile is not None:
            config.set_calibration_profile(profile)
        keep.append(calibrator)
    if plan.layer_precisions:
        _apply_layer_precisions(network, config, plan, options.precision_constraints)
    monitor = _progress_monitor()
    if monitor is not None:
        config.progress_monitor = monitor
        keep.append(monitor)
    return config, keep


def build_engine(onnx_path: str | Path, engine_path: str | Path, options: BuildOptions | None = None
                 ) -> EngineMetadata:
    """Build `engine_path` (and `<engine_path>.json`) from a deploy graph; returns the metadata written.

    Everything that can be checked without TensorRT (graph, plugin file, option combinations, shapes)
    is checked first; every refusal is a one-line TensorRTError naming the fix.
    """
    options = options or BuildOptions()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    info = inspect_graph(onnx_path)
    profile_shapes = resolve_profile(info.inputs, options.min_shapes, options.opt_shapes, options.max_shapes)
    plugin = resolve_plugin(options.plugin, info.uses_custom_op)
    require_tensorrt(trt)
    version = str(trt.__version__)
    plan = plan_build(info, options, version)
    gpu_name, capability = require_cuda()
    t0 = time.monotonic()
    logger = make_logger(options.verbose)
    init_builtin_plugins(logger)
    if plugin is not None:
        load_plugin_library(plugin)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed and trt_major(version) < 11:  # TensorRT 11: always strongly typed, the flag is ignored
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise _parse_error(parser, onnx_path)
    dynamic = any(-1 in dims for dims in info.inputs.values())
    config, keep_alive = _configure(builder, network, options, plan, profile_shapes, dynamic)
    _log(f"TensorRT {version} on {gpu_name} (sm {capability}): {onnx_path.name}, "
         f"{'strongly typed' if plan.strongly_typed else 'weakly typed'}, precision {plan.precision} "
         f"({plan.precision_source}), TF32 {'allowed' if plan.tf32 else 'off'}; this takes minutes")
    serialized = builder.build_serialized_network(network, config)
    del keep_alive
    if serialized is None:
        raise TensorRTError(f"TensorRT could not build an engine from {onnx_path} (its log above says why)")
    atomic_write(engine_path, lambda tmp: tmp.write_bytes(bytes(serialized)))
    if options.timing_cache is not None:
        timing = config.get_timing_cache()
        if timing is not None:
            Path(options.timing_cache).write_bytes(bytes(timing.serialize()))
    meta = EngineMetadata(
        tensorrt_version=version, gpu_name=gpu_name, compute_capability=capability, precision=plan.precision,
        precision_source=plan.precision_source, strongly_typed=plan.strongly_typed, tf32=plan.tf32,
        input_profile=profile_shapes,
        plugin_library=str(plugin) if plugin is not None else None,
        plugin_sha256=sha256_file(plugin) if plugin is not None else None,
        onnx_path=str(onnx_path), onnx_sha256=sha256_file(onnx_path), engine_sha256=sha256_file(engine_path),
        engine_bytes=engine_path.stat().st_size, package_version=package_version(),
        build_time_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        build_seconds=round(time.monotonic() - t0, 1), builder=options.record(), onnx_metadata=info.metadata)
    meta_file = write_metadata(engine_path, meta)
    _log(f"wrote {engine_path} ({meta.engine_bytes / 2 ** 20:.1f} MiB) and {meta_file.name} "
         f"in {meta.build_seconds:.0f} s")
    return meta
