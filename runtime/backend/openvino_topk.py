"""ONNX TopK (ties: the lower index first) from OpenVINO's unstable TopK, exactly, for the OpenVINO backend.

OpenVINO imports ONNX TopK as `stable=False`. Its `stable=True` mode computes what ONNX specifies, but the CPU plugin
takes time in proportion to input x k: 1.8 s for the box head's 90000 -> 5000 at 800x1344, where the unstable
TopK takes 2.4 ms (bench/README.md, `openvino_settings.py`). Unstable TopK is exact whenever no two keys are equal,
so `stable_topk` builds ONNX's result from unstable TopKs over keys made unique (for mode "max"; "min" mirrors it):

1. threshold: the k-th largest value (an unstable TopK's values are right; only tied indices may differ);
2. picked: every value above the threshold, plus the first (k - that many) values equal to it, by index
   (a CumSum over the ties);
3. their positions, ascending: TopK of (n - position) over the picked (unique keys), n - key;
4. their values in order: a TopK of the k picked values (ties still in any order);
5. ties put back in index order: group g = how many times the sorted value changed before this place; the key
   g * k + (place in step 3's ascending list) is unique, and its ascending order is value order, then index order.

Every TopK in 3 to 5 sees unique keys, so what any TopK algorithm returns there is the one answer. The keys are
int32: k * k must stay below 2**31 (k <= 46340), else the op keeps `stable=True`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["make_topk_stable", "stable_topk"]

LARGEST_K = 46340  # k * k < 2**31: the int32 keys of step 5


def make_topk_stable(op) -> bool:
    """Replace the TopK `op` (opset 11, in an openvino.Model) by `stable_topk`'s subgraph; where that does not apply
    (k not a constant or above LARGEST_K, rank unknown, sort not by value, mode neither max nor min) set
    `stable=True` instead. Returns True when replaced."""
    attributes = op.get_attributes()
    k_source = op.input(1).get_source_output().get_node()
    rank = op.input(0).get_partial_shape().rank
    k = int(np.asarray(k_source.get_data()).reshape(-1)[0]) if k_source.get_type_name() == "Constant" else None
    if (k is None or not 0 < k <= LARGEST_K or rank.is_dynamic or attributes["sort"] != "value"
            or attributes["mode"] not in ("max", "min")):
        op.set_attribute("stable", True)
        return False
    axis = attributes["axis"] % rank.get_length()
    values, indices = stable_topk(op.input_value(0), k, axis, attributes["mode"], attributes["index_element_type"])
    op.output(0).replace(values.output(0))
    op.output(1).replace(indices.output(0))
    return True


def stable_topk(data, k: int, axis: int, mode: str, index_type: str):
    """(values, indices) nodes of ONNX TopK(data, k, axis, largest = mode == "max", sorted) in OpenVINO ops, with
    unstable TopKs only (module docstring). data: an output of a rank-known float tensor; axis >= 0."""
    import openvino.opset13 as ops

    rank = data.get_partial_shape().rank.get_length()
    beyond_op, reduce_op = (ops.greater, ops.reduce_min) if mode == "max" else (ops.less, ops.reduce_max)

    def topk(keys, key_mode, sort="value"):  # [.., k, ..] (values, int32 indices) of unique keys
        return ops.topk(keys, np.int32(k), axis, key_mode, sort, "i32", False)

    def along(first: int, stop: int):  # slice [first, stop) of the axis
        return lambda node: ops.slice(node, np.int32([first]), np.int32([stop]), np.int32([1]), np.int32([axis]))

    # 1. the k-th value
    threshold = reduce_op(topk(data, mode, "none").output(0), np.int32([axis]), True)  # [.., 1, ..]
    # 2. the k picked: beyond it, then the first ties
    beyond, tied = beyond_op(data, threshold), ops.equal(data, threshold)
    ties_wanted = ops.subtract(np.int32(k), ops.reduce_sum(ops.convert(beyond, "i32"), np.int32([axis]), True))
    tie_rank = ops.cumsum(ops.convert(tied, "i32"), np.int32(axis))  # 1 at the first tie
    picked = ops.logical_or(beyond, ops.logical_and(tied, ops.less_equal(tie_rank, ties_wanted)))
    # 3. their positions in ascending order
    n = ops.gather(ops.shape_of(data, "i32"), np.int32(axis), np.int32(0))  # scalar
    position = ops.reshape(ops.range(np.int32(0), n, np.int32(1), "i32"),
                           np.int64([1] * axis + [-1] + [1] * (rank - axis - 1)), False)  # broadcasts along axis
    from_end = topk(ops.select(picked, ops.subtract(n, position), np.int32(0)), "max").output(0)
    picked_position = ops.subtract(n, from_end)  # [.., k, ..]
    # 4. in value order
    by_value = topk(ops.gather_elements(data, picked_position, axis), mode)
    sorted_values, place = by_value.output(0), by_value.output(1)  # place: index into picked_position
    # 5. equal values in index order
    previous = ops.concat([along(0, 1)(sorted_values), along(0, -1)(sorted_values)], axis)
    group = ops.cumsum(ops.convert(ops.not_equal(sorted_values, previous), "i32"), np.int32(axis))
    order = topk(ops.add(ops.multiply(group, np.int32(k)), place), "min").output(1)
    values = ops.gather_elements(sorted_values, order, axis)
    indices = ops.gather_elements(picked_position, ops.gather_elements(place, order, axis), axis)
    return values, ops.convert(indices, index_type)
