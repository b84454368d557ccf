"""Checkpoint -> ONNX deploy graph with the current exporter (torch.onnx.export(dynamo=True)), checked.

`export_onnx(model, path, options)` traces `DeployMaskRCNN` with torch.export, translates the fused
RoIAlign op to one custom node (or standard ops) and NMS to NonMaxSuppression through the
exporter's custom_translation_table, then verifies the file: onnx.checker (full check), shape
inference with every output shape known (static mode), no dead nodes, and an IR version the
installed ONNX Runtime accepts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from maskrcnn_deploy.common.errors import BadInputError
from maskrcnn_deploy.common.files import atomic_write
from maskrcnn_deploy.model.fit import Fit
from maskrcnn_deploy.model.mask_rcnn import MaskRCNN

from . import onnx_ops
from .deploy_model import OUTPUT_NAMES, DeployMaskRCNN
from .graph_io import GRAPH_FORMAT, write_graph_info
from .graph_optimizer import optimize_graph
from .nms import nms_keep_onnx

__all__ = ["ExportError", "ExportOptions", "default_input_size", "export_onnx", "export_checkpoint", "verify_onnx",
           "INPUT_NAMES"]

INPUT_NAMES = ("images", "image_sizes")
MIN_OPSET, MAX_OPSET = 18, 20  # RoiAlign-16 semantics; torchlib is written at opset 18
MAX_IR_VERSION = 10            # what onnxruntime >= 1.18 loads


class ExportError(BadInputError, RuntimeError):
    """The model or the options cannot be exported, or the exported file failed a check."""


@dataclass
class ExportOptions:
    input_size: tuple[int, int] | None = None  # (height, width) of the static input; None = from the config
    batch_size: int = 1
    dynamic: bool = False                       # dynamic batch, height and width
    roi_align: str = "custom"                   # "custom" (one MultiLevelRoIAlign node) or "standard"
    opset: int = 18
    max_detections: int | None = None           # default: the config's detections_per_img


def default_input_size(config) -> tuple[int, int]:
    """The padded size of a landscape image at the test scale: (min_size, max_size) rounded up to
    size_divisible, i.e. 800x1344 for torchvision's (800, 1333)."""
    d = config.size_divisible
    return (int(math.ceil(config.test_min_size / d) * d), int(math.ceil(config.max_size / d) * d))


def _check_options(options: ExportOptions, config) -> tuple[int, int]:
    if not MIN_OPSET <= options.opset <= MAX_OPSET:
        raise ExportError(f"opset {options.opset} is not supported: use {MIN_OPSET}..{MAX_OPSET}")
    if options.roi_align not in ("custom", "standard"):
        raise ExportError(f"--roi-align must be 'custom' or 'standard', got {options.roi_align!r}")
    size = options.input_size or default_input_size(config)
    if any(s <= 0 or s % config.size_divisible for s in size):
        raise ExportError(f"input size {size[0]}x{size[1]} must be positive multiples of {config.size_divisible}")
    if options.batch_size < 1:
        raise ExportError(f"batch size must be >= 1, got {options.batch_size}")
    return size


def fit_config_to_canvas(config, size: tuple[int, int]):
    """The config a static graph of input `size` (H, W) records: when the canvas is smaller than the
    test size (short side min_size, long side max_size), the test size becomes the canvas's (one line
    says so), so the graph's metadata tells the size images are really resized to."""
    min_size, max_size = min(config.test_min_size, min(size)), min(config.max_size, max(size))
    if (min_size, max_size) == (config.test_min_size, config.max_size):
        return config
    print(f"[export] the {size[0]}x{size[1]} input is smaller than the model's test size {config.test_min_size} "
          f"(long side {config.max_size}): images are resized to {min_size} (long side {max_size}) to fit it",
          flush=True)
    return dataclasses.replace(config, min_size=min_size, max_size=max_size)


def export_checkpoint(checkpoint: str | Path, path: str | Path, options: ExportOptions | None = None,
                      num_classes: int | None = None, source: str | None = None,
                      bn_eps: float | None = None) -> onnx.ModelProto:
    """Export a checkpoint of any source `load_checkpoint` reads (ours, torchvision, Detectron2).

    num_classes, when given, must match the checkpoint's. source / bn_eps: how to read the file (see
    `load_checkpoint`); the source found and the backbone's BatchNorm eps are recorded in the metadata."""
    from maskrcnn_deploy.model.checkpoint import CheckpointError, load_checkpoint

    try:
        model, config, extra = load_checkpoint(checkpoint, source=source, bn_eps=bn_eps)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    if num_classes is not None and num_classes != config.num_classes:
        raise ExportError(f"{checkpoint} has {config.num_classes} classes (background included), "
                          f"not {num_classes}: export the checkpoint that was trained for your classes")
    labels = {k: extra[k] for k in ("class_names", "category_ids") if k in extra}
    labels["checkpoint"] = {"source": extra.get("source", "maskrcnn-deploy"), "bn_eps": config.norm_eps}
    return export_onnx(model, path, options, labels)


def export_onnx(model: MaskRCNN, path: str | Path, options: ExportOptions | None = None,
                labels: dict | None = None) -> onnx.ModelProto:
    """Export `model` to `path`; returns the verified ModelProto.

    labels: optional {"class_names": [...], "category_ids": [...], "checkpoint": {...}} stored in the file's
    metadata.
    """
    options = options or ExportOptions()
    size = _check_options(options, model.config)
    config = model.config if options.dynamic else fit_config_to_canvas(model.config, size)
    fit = Fit.of(config, None if options.dynamic else size)  # how the runtime resizes images for this graph
    if model.training:
        print("[export] the model was in training mode; exporting it in eval mode", flush=True)
    model.eval()
    deploy = DeployMaskRCNN(model, options.max_detections).eval()
    # torch.export specializes a dimension traced at size 0 or 1, so a dynamic batch is traced with two images
    batch_size = max(options.batch_size, 2) if options.dynamic else options.batch_size
    images = torch.zeros(batch_size, 3, *size)
    image_sizes = torch.tensor([list(size)] * batch_size, dtype=torch.float32)
    roi_translation = (onnx_ops.multilevel_roi_align_custom if options.roi_align == "custom"
                       else onnx_ops.multilevel_roi_align_standard)
    if options.roi_align == "custom":
        onnx_ops.register_schema()
    dynamic_shapes = None
    if options.dynamic:
        batch = torch.export.Dim("batch", min=1, max=64)
        dynamic_shapes = {"images": {0: batch, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC},
                          "image_sizes": {0: batch}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"[export] tracing {model.config.backbone_depth}-layer Mask R-CNN at {size[0]}x{size[1]}, "
          f"batch {options.batch_size}{' (dynamic)' if options.dynamic else ''}, RoIAlign {options.roi_align}",
          flush=True)
    with torch.no_grad():
        program = torch.onnx.export(
            deploy, (images, image_sizes), dynamo=True, opset_version=options.opset, input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES), dynamic_shapes=dynamic_shapes, external_data=False, optimize=False,
            custom_translation_table={
                torch.ops.maskrcnn_deploy.multilevel_roi_align.default: roi_translation,
                torch.ops.maskrcnn_deploy.nms_keep.default: nms_keep_onnx,
            })
    optimize_graph(program.model)  # onnxscript's optimizer less its quadratic SlicesSplit rule (graph_optimizer.py)
    proto = program.model_proto
    proto.doc_string = (f"maskrcnn-deploy: Mask R-CNN {model.config.backbone_depth}-layer backbone, "
                        f"{model.config.num_classes} classes, RoIAlign {options.roi_align}")
    meta = {"config": config.to_dict(), "fit": fit.to_dict(), "roi_align": options.roi_align,
            "dynamic": options.dynamic, "graph_format": GRAPH_FORMAT, **(labels or {})}
    write_graph_info(proto, meta)
    def save_verified(tmp: Path) -> None:  # checked before it takes the final name: a bad graph is never left
        onnx.save_model(proto, str(tmp))
        verify_onnx(tmp, static=not options.dynamic, name=path)

    atomic_write(path, save_verified)
    print(f"[export] wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MiB, {len(proto.graph.node)} nodes)", flush=True)
    return proto


def verify_onnx(path: str | Path, static: bool = True, name: str | Path | None = None) -> onnx.ModelProto:
    """Full onnx.checker, shape inference (static: every output shape known), no dead nodes, IR version.
    name: the file errors name (default `path`; the exporter checks a temporary before renaming it)."""
    onnx_ops.register_schema()
    shown = path if name is None else name
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{shown} fails onnx.checker: {str(exc).splitlines()[0]}") from None
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True, strict_mode=True)
    if model.ir_version > MAX_IR_VERSION:
        raise ExportError(f"{shown} has IR version {model.ir_version}; onnxruntime reads up to {MAX_IR_VERSION}")
    if static:
        for out in model.graph.output:
            dims = out.type.tensor_type.shape.dim
            if not dims and out.name != "num_detections" or any(not d.HasField("dim_value") for d in dims):
                raise ExportError(f"{shown}: output {out.name} has no static shape after shape inference: "
                                  f"{[d.dim_value or d.dim_param for d in dims]}")
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    dead = [node.name or node.op_type for node in model.graph.node if not any(o in used for o in node.output)]
    if dead:
        raise ExportError(f"{shown}: {len(dead)} dead node(s) left after simplification, e.g. {dead[:3]}")
    return model
