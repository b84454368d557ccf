"""OpenVINO backend: the standard-ops deploy graph (`export --roi-align standard`) on OpenVINO's CPU plugin,
with the pre- and post-processing of every predictor (runtime/predictor.py) and the graph settings of the ONNX
Runtime backend (runtime/backend/onnxrt.py `graph_predictor_args`). Needs the `[openvino]` extra; no torch.

The .onnx is read by OpenVINO's ONNX frontend, then three things are set so that OpenVINO computes what ONNX
Runtime (the reference ONNX semantics) computes, found by comparing the two on the same graph:

- precision: the CPU plugin runs float32 graphs in bf16 on CPUs with AVX-512 BF16 or AMX (its default
  `INFERENCE_PRECISION_HINT`); boxes then move by pixels and scores by 1e-2. The graph is compiled with the
  hint f32: float32 ops stay float32 (a Q/DQ graph's INT8 regions still run INT8).
- TopK ties: the frontend imports ONNX TopK with `stable=False`; ONNX Runtime returns tied values lowest index
  first. Every TopK is replaced by the same result built from unstable TopKs over unique keys
  (runtime/backend/openvino_topk.py), so equal scores keep the same order (and the same survivors). OpenVINO's own
  `stable=True` computes that too, but in time proportional to input x k (~3 s of 6 s on an R50 at 800x1344).
- NonMaxSuppression at IoU == threshold: ONNX (its reference implementation), ONNX Runtime and torchvision
  suppress a box only when IoU > iou_threshold; OpenVINO's NMS also when IoU == iou_threshold. Each NMS's
  threshold is raised to the next float32 above it: IoU >= next(t) is IoU > t for float32 IoUs
  (tests/test_openvino.py runs a two-box graph at IoU exactly 0.5 in both runtimes).

A graph with our custom RoIAlign node (plugins/op_spec.py) is refused in one line (export `--roi-align standard`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskrcnn_deploy.common.extras import require_extra
from maskrcnn_deploy.export.graph_io import read_graph_info, read_onnx
from maskrcnn_deploy.plugins.op_spec import DOMAIN, OP_TYPE, is_custom_roi_align
from maskrcnn_deploy.runtime.backend.onnxrt import graph_predictor_args
from maskrcnn_deploy.runtime.backend.openvino_topk import make_topk_stable
from maskrcnn_deploy.runtime.predictor import Predictor, PredictorError

__all__ = ["OpenVINOPredictor", "read_model", "compile_model", "match_onnx_semantics", "raise_nms_thresholds"]


def read_model(path: str | Path, graph=None, core=None):
    """The .onnx at `path` (`graph`: its onnx.ModelProto when already read) as an openvino.Model with
    `match_onnx_semantics` applied; PredictorError (exit 2) for a custom-op graph, MissingExtraError (exit 3)
    without OpenVINO."""
    require_extra("openvino", "the OpenVINO backend (`--backend openvino`)")
    import openvino as ov

    graph = graph if graph is not None else read_onnx(path)
    if any(is_custom_roi_align(node) for node in graph.graph.node):
        raise PredictorError(f"{path} uses the custom RoIAlign op ({DOMAIN}::{OP_TYPE}), which OpenVINO does not run: "
                             "export it with `maskrcnn-deploy export ... --roi-align standard`")
    try:
        model = (core or ov.Core()).read_model(str(path))
    except RuntimeError as exc:
        raise PredictorError(f"OpenVINO cannot read {path}: {str(exc).strip().splitlines()[0]}") from None
    return match_onnx_semantics(model)


def match_onnx_semantics(model):
    """Make every TopK break ties as ONNX does and raise every NonMaxSuppression's iou_threshold to the next float32
    (see the module docstring), in place; returns `model`."""
    for op in model.get_ops():  # a list: replacing a TopK does not change it
        if op.get_type_name() == "TopK":
            make_topk_stable(op)
    raise_nms_thresholds(model)
    model.validate_nodes_and_infer_types()
    return model


def raise_nms_thresholds(model) -> None:
    """Raise every NonMaxSuppression's constant iou_threshold to the next float32, in place: OpenVINO suppresses at
    IoU >= threshold, ONNX above it (module docstring)."""
    import openvino as ov

    for op in model.get_ops():
        if op.get_type_name() != "NonMaxSuppression" or op.get_input_size() <= 3:
            continue
        source = op.input(3).get_source_output().get_node()  # iou_threshold: a scalar or [1] constant
        if source.get_type_name() != "Constant":
            raise PredictorError(f"NonMaxSuppression {op.get_friendly_name()} has a computed iou_threshold: "
                                 "OpenVINO's backend needs a constant one")
        value = np.asarray(source.get_data(), dtype=np.float32)
        raised = np.array(np.nextafter(value, np.float32(np.inf)), dtype=np.float32).reshape(value.shape)
        op.input(3).replace_source_output(ov.op.Constant(raised).output(0))


def compile_model(model, threads: int | None = None, core=None):
    """A CPU CompiledModel of `model` in float32 inference precision (no bf16), with `threads` inference threads
    (None: OpenVINO's default, every core)."""
    import openvino as ov

    config = {ov.properties.hint.inference_precision: ov.Type.f32}
    if threads:
        config[ov.properties.inference_num_threads] = threads
    return (core or ov.Core()).compile_model(model, "CPU", config)


class OpenVINOPredictor(Predictor):
    """A standard-ops deploy graph (.onnx) in OpenVINO on the CPU."""

    backend = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None):
        require_extra("openvino", "the OpenVINO backend (`--backend openvino`)")  # before reading any file
        graph = read_onnx(path)
        model = read_model(path, graph)
        info = read_graph_info(graph, path)
        try:
            self.compiled = compile_model(model, threads)
        except RuntimeError as exc:  # an op or shape the CPU plugin cannot compile: this graph cannot run here
            raise PredictorError(f"OpenVINO cannot compile {path}: {str(exc).strip().splitlines()[0]}") from None
        self.request = self.compiled.create_infer_request()
        self.output_names = [output.get_any_name() for output in self.compiled.outputs]
        dims = self.compiled.inputs[0].get_partial_shape()  # [B,3,H,W]
        shape = [d.get_length() if d.is_static else None for d in dims]
        super().__init__(*graph_predictor_args(info, shape))

    def run_raw(self, batch: np.ndarray, sizes: np.ndarray) -> dict[str, np.ndarray]:
        """batch float32 [B,3,H,W], sizes float32 [B,2] (Predictor.run_raw) -> the graph's outputs (copies: the
        request's buffers are reused by the next call)."""
        results = self.request.infer({"images": np.ascontiguousarray(batch, dtype=np.float32),
                                      "image_sizes": np.ascontiguousarray(sizes, dtype=np.float32)})
        return {name: np.asarray(value) for name, value in zip(self.output_names, results.values())}
