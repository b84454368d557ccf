"""Both graphs in ONNX Runtime through Polygraphy, with the matched intermediate tensors as outputs.

    ref, art = graph_runners(reference_model, artifact_model, matched, threads)
    with ref, art:
        outputs = ref.infer(feed), art.infer(feed)

Outputs are marked with Polygraphy's `ModifyOutputs` (polygraphy.backend.onnx): all of a graph's tensors
(`constants.MARK_ALL`) when the two graphs have the same tensors, else exactly the matched names, so that
tensors only one side has cost neither memory nor time. Marking a tensor as an output stops ONNX Runtime
fusing the node that computes it with its reader (a fused Conv+Relu, or an INT8 DequantizeLinear-Conv-
QuantizeLinear unit run as one QLinearConv), so the marked graphs compute each layer on its own; in a Q/DQ
graph a convolution then runs in float on dequantized int8 weights and inputs, which holds the same values
up to float32 summation order.

The runner is Polygraphy's `OnnxrtRunner`, but the session comes from plugins/onnxruntime_op.py
`load_session`, not from Polygraphy's `SessionFromOnnx`: that loader makes its own SessionOptions and takes
none, so it cannot register the onnxruntime-extensions library that hosts the custom MultiLevelRoIAlign node,
nor hand ONNX Runtime the PyOp form of the node's attributes (`for_pyop`). `OnnxrtRunner` accepts a callable
that returns a session, so the session is built the way runtime/backend/onnxrt.py builds it, when the runner
is activated. A graph exported with the standard-ops RoIAlign (`export --roi-align standard`) needs no
registration; it is the fallback where onnxruntime-extensions is missing.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import onnx

from maskrcnn_deploy.common.errors import BackendUnavailableError
from maskrcnn_deploy.plugins.onnxruntime_op import OnnxRuntimeExtensionsMissing, load_session
from maskrcnn_deploy.runtime.diverge.tensors import MatchedTensors

__all__ = ["mark_outputs", "graph_runner", "graph_runners"]


def mark_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` whose outputs are exactly `names` (all its node outputs when that is every one)."""
    from polygraphy import constants
    from polygraphy.backend.onnx import ModifyOutputs
    from polygraphy.backend.onnx import util as onnx_util

    everything = set(onnx_util.all_tensor_names(model))
    outputs = constants.MARK_ALL if everything == set(names) else list(names)
    return ModifyOutputs(model, outputs=outputs, copy=True)()


def _session(model: onnx.ModelProto, threads: int | None, name: str):
    """load_session, with the fallback named when the custom node's host library is missing."""
    try:
        return load_session(model, threads, name=name)
    except OnnxRuntimeExtensionsMissing as err:
        raise BackendUnavailableError(f"{err}; or compare graphs exported with the standard-ops RoIAlign "
                                      "(`maskrcnn-deploy export --roi-align standard`), which need no custom op") \
            from None


def graph_runner(model: onnx.ModelProto, names: list[str], threads: int | None, name: str | Path, role: str):
    """Polygraphy OnnxrtRunner over `model` with `names` marked as outputs (the session is built on activation)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner

    marked = mark_outputs(model, names)
    return OnnxrtRunner(partial(_session, marked, threads, str(name)), name=role)


def graph_runners(reference: onnx.ModelProto, artifact: onnx.ModelProto, matched: MatchedTensors,
                  threads: int | None = None, names: tuple[str | Path, str | Path] = ("reference", "artifact")):
    """(reference runner, artifact runner): each with its side of the matched tensors as outputs."""
    ref = graph_runner(reference, [p.name for p in matched.pairs], threads, names[0], "reference")
    art = graph_runner(artifact, list(dict.fromkeys(p.artifact for p in matched.pairs)), threads, names[1],
                       "artifact")
    return ref, art
