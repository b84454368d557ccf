"""Which intermediate tensors of two graphs are the same tensor: matched by name, in the reference's graph order.

The project's rewrites keep the float32 graph's tensor names (calibration/fp16.py, calibration/qdq.py), and only
add wrappers around them:

    float16 (calibration/fp16.py): a float16 node keeps its output's name (the tensor is float16); a float32
        tensor `x` that float16 nodes read gets a Cast to float16 named `x_fp16`; a Cast back to float32 gets a
        converter-made name (`<node>_output_cast_0`, `<tensor>_cast_...`).
    int8 (calibration/qdq.py, onnxruntime's QDQQuantizer): a quantized tensor `x` keeps its name as the float
        value its node computes; `x_QuantizeLinear_Output` (int8) and `x_DequantizeLinear_Output` (float, what
        the next quantized layer reads) wrap it; weights get the same pair around their initializer.

Seeing through: every wrapper output maps back, through its chain of Cast, QuantizeLinear and DequantizeLinear
nodes (SEE_THROUGH), to the tensor it wraps, whose name the artifact keeps; so a reference tensor `x` is
compared with the artifact tensor named `x`, the value the artifact's node computed (float16 where it
computes in float16), and the wrappers (`x_fp16`, `x_QuantizeLinear_Output`, `x_DequantizeLinear_Output`,
casts back to float32) are no rows of their own: their rounding shows in the error of the layer that reads
them. One case keeps the name on a wrapper: QDQQuantizer renames the producer's output of a quantized graph
output to `x_QuantizeLinear_Input` and gives `x` to the DequantizeLinear; that `x` is compared as it is, and
its row lists the ops between it and the tensor it wraps (`seen_through`). Wrapper tensors of weights map
back to initializers, which are no node outputs; so are a graph's inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

__all__ = ["SEE_THROUGH", "TensorPair", "MatchedTensors", "match_tensors", "node_depths"]

SEE_THROUGH = ("Cast", "QuantizeLinear", "DequantizeLinear")


@dataclass
class TensorPair:
    """One reference tensor and the artifact tensor it is compared with."""

    name: str                   # the reference tensor
    node: str                   # the reference node that computes it
    op: str                     # that node's op type
    index: int                  # position among the pairs: the reference graph's (topological) order
    depth: int                  # longest path, in nodes, from a graph input to the reference node
    inputs: list[str]           # the node's inputs that are pairs too (for the error a node adds)
    artifact: str               # the artifact tensor compared (the same name)
    seen_through: list[str] = field(default_factory=list)  # op types between artifact and the wrapped tensor


@dataclass
class MatchedTensors:
    """The pairs of two graphs, and the reference tensors left out."""

    pairs: list[TensorPair]
    not_in_artifact: list[str]  # reference node outputs with no artifact tensor of that name


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output if o}


def node_depths(model: onnx.ModelProto) -> dict[str, int]:
    """node name -> longest path in nodes from the graph inputs (a node reading only inputs and weights: 1).
    ONNX keeps nodes in topological order, so one pass suffices."""
    tensor_depth: dict[str, int] = {}
    depths = {}
    for node in model.graph.node:
        depth = 1 + max((tensor_depth.get(i, 0) for i in node.input if i), default=0)
        depths[node.name] = depth
        for o in node.output:
            tensor_depth[o] = depth
    return depths


def _wrapped(tensor: str, producers: dict[str, onnx.NodeProto]) -> tuple[str, list[str]]:
    """(the tensor a chain of SEE_THROUGH nodes ending in `tensor` wraps, the op types passed, nearest first)."""
    ops = []
    node = producers.get(tensor)
    while node is not None and node.op_type in SEE_THROUGH and node.input and node.input[0]:
        ops.append(node.op_type)
        tensor = node.input[0]
        node = producers.get(tensor)
    return tensor, ops


def _artifact_tensors(artifact: onnx.ModelProto) -> dict[str, tuple[str, list[str]]]:
    """Every artifact node output (not Constants) -> (its producer's op type, the op types of the wrapper
    chain producing it: [] for a tensor computed by any other node)."""
    producers = _producers(artifact)
    return {out: (node.op_type, _wrapped(out, producers)[1]) for node in artifact.graph.node
            if node.op_type != "Constant" for out in node.output if out}


def match_tensors(reference: onnx.ModelProto, artifact: onnx.ModelProto) -> MatchedTensors:
    """The reference's node outputs (not Constants) that the artifact has, in the reference's node order."""
    depths = node_depths(reference)
    stand_ins = _artifact_tensors(artifact)
    pairs, missing, paired = [], [], set()
    for node in reference.graph.node:
        if node.op_type == "Constant":
            continue
        for out in (o for o in node.output if o):
            if out not in stand_ins:
                missing.append(out)
                continue
            op, chain = stand_ins[out]
            seen_through = [] if op == node.op_type else chain  # a Cast of the reference itself is no wrapper
            pairs.append(TensorPair(out, node.name, node.op_type, len(pairs), depths[node.name],
                                    [i for i in node.input if i in paired], out, seen_through))
            paired.add(out)
    return MatchedTensors(pairs, missing)
