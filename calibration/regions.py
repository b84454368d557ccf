"""Which nodes of a deploy graph may run in reduced precision, and in which layer group.

The *network region* is the convolutional network proper, found from the graph itself:

    weighted layers : Conv / Gemm / ConvTranspose whose weight is an initializer; its layer group is
                      the first three dotted parts of the weight's name (torchvision parameter names
                      survive the export), e.g. "backbone.body.layer2", "roi_heads.mask_head.1"
    glue ops        : Relu, Add (residual and FPN top-down), MaxPool, Resize whose every activation
                      input comes from inside the region; they join the group of their first input

Everything else stays float in every precision: RoIAlign, NMS, top-k, box decoding (exp, clip),
level assignment, scores (sigmoid, softmax) and the layers producing final logits
(`FLOAT_LOGIT_LAYERS`: RPN objectness/deltas, box classifier/regressor, mask logits). Those logit
layers are excluded from INT8 only (`with_logits=True` adds them back for FP16, whose range check
decides per node).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from maskrcnn_deploy.common.errors import BadInputError

__all__ = ["PrecisionError", "Region", "find_region", "check_float_graph", "WEIGHTED_OPS", "GLUE_OPS",
           "FLOAT_LOGIT_LAYERS"]

WEIGHTED_OPS = ("Conv", "Gemm", "ConvTranspose")
GLUE_OPS = ("Relu", "Add", "MaxPool", "Resize")
# final logits feed box decoding, scores and mask probabilities: INT8 error there moves boxes and masks
FLOAT_LOGIT_LAYERS = ("rpn.head.cls_logits", "rpn.head.bbox_pred", "roi_heads.box_predictor",
                      "roi_heads.mask_predictor.mask_fcn_logits")
_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm",
                  "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}


class PrecisionError(BadInputError, ValueError):
    """A graph or input the precision tools cannot use; the message is one line."""


@dataclass
class Region:
    """The network region of a graph: node name -> layer group, in graph order."""

    groups: dict[str, str]

    def nodes(self, groups=None) -> list[str]:
        """Names of the region's nodes, all of them or those in `groups`."""
        return [n for n, g in self.groups.items() if groups is None or g in groups]

    def group_names(self) -> list[str]:
        """Layer groups in graph order."""
        return list(dict.fromkeys(self.groups.values()))


def _activation_inputs(node: onnx.NodeProto, initializers: set[str]) -> list[str]:
    names = node.input[:1] if node.op_type in ("Resize", "MaxPool", "Relu") else node.input
    return [n for n in names if n and n not in initializers]


def find_region(model: onnx.ModelProto, with_logits: bool = False) -> Region:
    """The network region (see the module docstring) of a float deploy graph."""
    initializers = {init.name for init in model.graph.initializer}
    constants = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    producer_group: dict[str, str] = {}  # tensor -> group of the region node producing it
    groups: dict[str, str] = {}
    for node in model.graph.node:
        group = None
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in initializers:
            weight = node.input[1]
            if with_logits or not weight.startswith(FLOAT_LOGIT_LAYERS):
                group = ".".join(weight.split(".")[:3])
        elif node.op_type in GLUE_OPS:
            inputs = [n for n in _activation_inputs(node, initializers) if n not in constants]
            if inputs and all(n in producer_group for n in inputs):
                group = producer_group[inputs[0]]
        if group is not None:
            if not node.name or node.name in groups:
                raise PrecisionError(f"node names must be unique and non-empty (node {node.name!r}, "
                                     f"{node.op_type}): re-export with `maskrcnn-deploy export`")
            groups[node.name] = group
            for out in node.output:
                producer_group[out] = group
    if not groups:
        raise PrecisionError("found no Conv/Gemm layers with initializer weights: "
                             "is this a graph from `maskrcnn-deploy export`?")
    return Region(groups)


def check_float_graph(model: onnx.ModelProto, source: str) -> None:
    """Refuse graphs that are already quantized or already float16: convert the float32 export."""
    quantized = sorted({n.op_type for n in model.graph.node if n.op_type in _QUANTIZED_OPS})
    if quantized:
        raise PrecisionError(f"{source} is already quantized (has {', '.join(quantized)}): "
                             "calibrate the float32 graph from `maskrcnn-deploy export` instead")
    halves = [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    inputs16 = [i.name for i in model.graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16]
    if halves or inputs16:
        raise PrecisionError(f"{source} is already float16 (e.g. {(halves + inputs16)[0]!r}): "
                             "start from the float32 graph from `maskrcnn-deploy export`")
