"""What a Triton model repository needs to know of an artifact: `served_model(path)` -> ServedModel.

    .onnx graph with standard ops -> platform "onnxruntime_onnx" (file model.onnx)
    .onnx graph with the custom MultiLevelRoIAlign node -> refused (BadInputError, exit 2): that node runs as a
        Python callback (onnxruntime-extensions) in this project's sessions, which Triton's ONNX Runtime backend
        cannot call; export `--roi-align standard`, or build an engine
    .engine/.plan TensorRT engine -> platform "tensorrt_plan" (file model.plan; the plugin library that
        `maskrcnn-deploy build` recorded is loaded by tritonserver --backend-config=tensorrt,plugins=...)

Batching, as Triton allows it (a model batches only when its first dimension is dynamic, -1):

    graph whose batch is dynamic (export --dynamic)   max_batch_size = --max-batch (default 8)
    graph whose batch is static B                     max_batch_size 0, the dims carry B (no dynamic batching)
    engine whose profile batch is 1..max (min < max)  max_batch_size = the profile's max (or --max-batch below it),
                                                      preferred batch = the profile's opt
    engine whose profile fixes the batch B            as a static graph

The engine's profile is read with the TensorRT predictor's own `engine_input_size` and metadata reader; its output
shapes and types come from the ONNX graph it was built from (the one its metadata names, or `onnx=`), whose SHA-256
must be the one the build recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from maskrcnn_deploy.common.errors import BadInputError, UsageError
from maskrcnn_deploy.common.files import file_digest
from maskrcnn_deploy.export.graph_io import graph_fit, read_graph_info, read_onnx, static_input_size
from maskrcnn_deploy.model.config import MaskRCNNConfig
from maskrcnn_deploy.model.fit import Fit
from maskrcnn_deploy.plugins.op_spec import OP_TYPE, is_custom_roi_align

__all__ = ["TritonTensor", "ServedModel", "served_model", "DEFAULT_MAX_BATCH", "CUSTOM_OP_REFUSAL"]

DEFAULT_MAX_BATCH = 8  # max_batch_size of a graph with a dynamic batch when --max-batch is not given
CUSTOM_OP_REFUSAL = ("it cannot run in Triton's ONNX Runtime backend because that op is a Python callback "
                     "(onnxruntime-extensions) in this project's ONNX Runtime sessions: export it with "
                     "`maskrcnn-deploy export CHECKPOINT --roi-align standard`, or build a TensorRT engine from it")

# ONNX TensorProto element type -> Triton data type
_TRITON_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
                 onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.INT32: "TYPE_INT32",
                 onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.INT8: "TYPE_INT8",
                 onnx.TensorProto.BOOL: "TYPE_BOOL"}


@dataclass
class TritonTensor:
    """One input or output of the served model: full shape, batch first, -1 where dynamic."""

    name: str
    data_type: str        # Triton's TYPE_FP32, TYPE_INT64, ...
    shape: list[int]


@dataclass
class ServedModel:
    """The main model of the repository and the settings its Python-backend steps need."""

    platform: str                      # "onnxruntime_onnx" | "tensorrt_plan"
    filename: str                      # model.onnx | model.plan (Triton's default file names)
    source: Path                       # the artifact, copied to <name>_model/1/<filename>
    inputs: list[TritonTensor]         # images [B,3,H,W], image_sizes [B,2]
    outputs: list[TritonTensor]        # boxes [B,N,4], scores [B,N], labels [B,N], masks [B,N,M,M], num_detections [B]
    max_batch_size: int                # 0: the batch is fixed and the dims carry it
    preferred_batch: int | None        # the engine profile's opt batch (dynamic batching's preferred size)
    settings: dict                     # stages.py's settings (graph.json of the Python steps)
    plugin_library: str | None = None  # an engine's TensorRT plugin library (None: no custom node)
    tensorrt_version: str | None = None


def served_model(path: str | Path, max_batch: int | None = None, onnx_path: str | Path | None = None) -> ServedModel:
    """The ServedModel of an .onnx graph or a .engine/.plan (see the module docstring); BadInputError otherwise."""
    path = Path(path)
    if max_batch is not None and max_batch < 1:
        raise UsageError(f"--max-batch must be >= 1, got {max_batch}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx_model(path, max_batch)
    if suffix in (".engine", ".plan"):
        return _engine_model(path, max_batch, onnx_path)
    raise UsageError(f"cannot package {path} for Triton: give an .onnx graph (exported with --roi-align standard) "
                     "or a .engine/.plan from `maskrcnn-deploy build`")


def _graph_tensors(values) -> list[TritonTensor]:
    """ONNX ValueInfos -> TritonTensors (symbolic dims -1)."""
    tensors = []
    for value in values:
        kind = value.type.tensor_type
        if kind.elem_type not in _TRITON_TYPES:
            raise BadInputError(f"graph tensor {value.name} has ONNX type {kind.elem_type}, which this packager does "
                                "not map to a Triton type: re-export the graph with `maskrcnn-deploy export`")
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
        tensors.append(TritonTensor(value.name, _TRITON_TYPES[kind.elem_type], shape))
    return tensors


def _batching(name: str, fixed_batch: int | None, max_batch: int | None, limit: int | None = None) -> int:
    """max_batch_size: 0 for a fixed batch; --max-batch (at most `limit`) or the default for a dynamic one."""
    if fixed_batch is not None:
        if max_batch is not None:
            raise UsageError(f"{name} has a fixed batch of {fixed_batch}, and Triton batches only models whose batch "
                             "dimension is dynamic: drop --max-batch, or re-export with --dynamic (an engine: rebuild "
                             "with a batch range in --min-shape/--max-shape)")
        return 0
    if limit is not None and max_batch is not None and max_batch > limit:
        raise UsageError(f"--max-batch {max_batch} is above {name}'s profile maximum batch {limit}: rebuild it with a "
                         f"larger --max-shape, or use --max-batch {limit} or less")
    return max_batch or limit or DEFAULT_MAX_BATCH


def _settings(info: dict, config: MaskRCNNConfig, fit: Fit, canvas: tuple[int, int] | None,
              fixed_batch: int | None, min_canvas: tuple[int, int] | None, max_batch_size: int) -> dict:
    """stages.py's settings: what the Python steps need to prepare images and read the outputs as `predict` does."""
    return {"config": config.to_dict(), "fit": fit.to_dict(), "input_size": list(canvas) if canvas else None,
            "batch_size": fixed_batch, "min_canvas": list(min_canvas) if min_canvas else None,
            "max_batch_size": max_batch_size, "class_names": info.get("class_names"),
            "category_ids": info.get("category_ids"), "mask_threshold": 0.5}


def _onnx_model(path: Path, max_batch: int | None) -> ServedModel:
    """An exported graph with standard ops (the custom node refused)."""
    model = read_onnx(path)
    if any(is_custom_roi_align(node) for node in model.graph.node):
        raise BadInputError(f"{path} holds the custom {OP_TYPE} node (export --roi-align custom): "
                            + CUSTOM_OP_REFUSAL)
    info = read_graph_info(model, path)
    fixed_batch, canvas = static_input_size(model)
    config = MaskRCNNConfig.from_dict(info["config"])
    max_batch_size = _batching(str(path), fixed_batch, max_batch)
    settings = _settings(info, config, graph_fit(info, config, canvas), canvas, fixed_batch, None, max_batch_size)
    return ServedModel("onnxruntime_onnx", "model.onnx", path, _graph_tensors(model.graph.input),
                       _graph_tensors(model.graph.output), max_batch_size, None, settings)


def _engine_graph(path: Path, meta, onnx_path: str | Path | None) -> onnx.ModelProto:
    """The ONNX graph the engine was built from (its output shapes and types), checked against the build's SHA-256."""
    graph = Path(onnx_path or meta.onnx_path)
    if not graph.is_file():
        raise BadInputError(f"{path} was built from {graph}, which is not here: pass --onnx GRAPH (the graph it was "
                            "built from; its output shapes and types go into config.pbtxt)")
    if file_digest(graph) != meta.onnx_sha256:
        raise BadInputError(f"{graph} is not the graph {path} was built from (SHA-256 differs): pass --onnx with that "
                            "graph, or rebuild the engine from this one")
    return read_onnx(graph)


def _engine_model(path: Path, max_batch: int | None, onnx_path: str | Path | None) -> ServedModel:
    """A `maskrcnn-deploy build` engine: its metadata (checked as the predictor checks it) and profile."""
    from maskrcnn_deploy.runtime.backend.tensorrt.environment import read_metadata, verify_engine_file
    from maskrcnn_deploy.runtime.backend.tensorrt.predictor import engine_input_size

    meta = read_metadata(path)
    verify_engine_file(path, meta)
    canvas, fixed_batch = engine_input_size(meta)
    lo, opt, hi = (meta.input_profile["images"][k] for k in ("min", "opt", "max"))
    if fixed_batch is None and lo[0] != 1:
        raise BadInputError(f"{path}'s profile starts at batch {lo[0]}, and Triton sends batches of 1 and up: rebuild "
                            f"it with --min-shape images:1x{'x'.join(map(str, lo[1:]))}")
    info = read_graph_info(meta.onnx_metadata, f"{path}'s metadata")
    config = MaskRCNNConfig.from_dict(info["config"])
    max_batch_size = _batching(str(path), fixed_batch, max_batch, limit=int(hi[0]))
    graph = _engine_graph(path, meta, onnx_path)
    batch = fixed_batch if fixed_batch is not None else -1
    height, width = canvas if canvas else (-1, -1)
    inputs = [TritonTensor(t.name, t.data_type, [batch, 3, height, width] if t.name == "images" else [batch, *t.shape[1:]])
              for t in _graph_tensors(graph.graph.input)]
    outputs = [TritonTensor(t.name, t.data_type, [batch, *t.shape[1:]]) for t in _graph_tensors(graph.graph.output)]
    min_canvas = None if canvas else (int(lo[2]), int(lo[3]))  # the predictor's _fit_profile pads up to it
    settings = _settings(info, config, Fit.of(config, canvas), canvas, fixed_batch, min_canvas, max_batch_size)
    preferred = int(opt[0]) if max_batch_size and 1 < int(opt[0]) <= max_batch_size else None
    return ServedModel("tensorrt_plan", "model.plan", path, inputs, outputs, max_batch_size, preferred, settings,
                       meta.plugin_library if meta.plugin_sha256 else None, meta.tensorrt_version)
