"""The config.pbtxt texts of the repository (Triton's ModelConfig in protobuf text format), written as text so that
packaging needs no tritonclient; tests/test_triton_package.py parses each with Triton's own schema.

    <name>             platform "ensemble": IMAGE (encoded bytes) -> BOXES, SCORES, LABELS, MASKS (RLE), NUM_DETECTIONS
    <name>_preprocess  backend "python" (stages.py preprocess)
    <name>_model       platform "onnxruntime_onnx" | "tensorrt_plan", dynamic batching when the batch is dynamic
    <name>_postprocess backend "python" (stages.py postprocess)

All four share max_batch_size (an ensemble may not batch more than a model it holds). With max_batch_size 0 (a
fixed-batch graph) every dims list carries its leading image dimension itself, so a client sends IMAGE as [n,1]
in both cases.
"""

from __future__ import annotations

from maskrcnn_deploy.runtime.triton.artifact import ServedModel, TritonTensor
from maskrcnn_deploy.runtime.triton.stages import POST_OUTPUTS, PRE_OUTPUTS

__all__ = ["model_names", "main_config", "preprocess_config", "postprocess_config", "ensemble_config",
           "QUEUE_DELAY_US"]

QUEUE_DELAY_US = 2000  # dynamic batching: how long a request may wait for others to fill a batch


def model_names(name: str) -> dict[str, str]:
    """The four models' names: ensemble, preprocess, model, postprocess."""
    return {"ensemble": name, "preprocess": f"{name}_preprocess", "model": f"{name}_model",
            "postprocess": f"{name}_postprocess"}


def _dims(shape: list[int], batched: bool, reshape: bool = True) -> str:
    """dims of a graph tensor; a batched one that is only the batch (num_detections [B]) is dims [1], which the
    graph itself sees reshaped to [] (`reshape`; the postprocess step takes it as [B,1])."""
    dims = shape[1:] if batched else shape
    if not dims:
        return "dims: [ 1 ] reshape: { shape: [ ] }" if reshape else "dims: [ 1 ]"
    return f"dims: [ {', '.join(str(int(d)) for d in dims)} ]"


def _tensors(kind: str, tensors: list[tuple[str, str, str]]) -> str:
    """`input [...]` / `output [...]` of (name, data type, dims text) triples."""
    rows = ",\n".join(f'  {{ name: "{name}" data_type: {dtype} {dims} }}' for name, dtype, dims in tensors)
    return f"{kind} [\n{rows}\n]\n"


def _graph_tensors(tensors: list[TritonTensor], batched: bool, reshape: bool = True) -> list[tuple[str, str, str]]:
    return [(t.name, t.data_type, _dims(t.shape, batched, reshape)) for t in tensors]


def _per_image(dims: list[int], batched: bool) -> str:
    """dims of a tensor with one row per image of the request: the batch dim, or an explicit leading -1."""
    return f"dims: [ {', '.join(str(d) for d in (dims if batched else [-1, *dims]))} ]"


def _header(name: str, max_batch_size: int, kind: str) -> str:
    return f'name: "{name}"\n{kind}\nmax_batch_size: {max_batch_size}\n'


def _instances(count: int, kind: str) -> str:
    return f"instance_group [\n  {{ count: {count} kind: {kind} }}\n]\n"


def main_config(served: ServedModel, name: str, instances: int) -> str:
    """The model itself: its graph's inputs and outputs, instance groups, dynamic batching when it batches."""
    batched = served.max_batch_size > 0
    text = f"# {served.source.name}, packaged by `maskrcnn-deploy package triton` (docs/serving.md)\n"
    if served.platform == "tensorrt_plan":
        text += (f"# TensorRT {served.tensorrt_version}: the engine runs only with that TensorRT version and GPU model\n"
                 + (f"# needs the plugin library {served.plugin_library}: start tritonserver with\n"
                    f'#   --backend-config=tensorrt,plugins="{served.plugin_library}"\n' if served.plugin_library else ""))
    text += _header(model_names(name)["model"], served.max_batch_size, f'platform: "{served.platform}"')
    text += _tensors("input", _graph_tensors(served.inputs, batched))
    text += _tensors("output", _graph_tensors(served.outputs, batched))
    text += _instances(instances, "KIND_GPU" if served.platform == "tensorrt_plan" else "KIND_AUTO")
    if batched:
        preferred = f"preferred_batch_size: [ {served.preferred_batch} ] " if served.preferred_batch else ""
        text += f"dynamic_batching {{ {preferred}max_queue_delay_microseconds: {QUEUE_DELAY_US} }}\n"
    return text


def _python_config(name: str, role: str, served: ServedModel, inputs, outputs, instances: int) -> str:
    text = _header(name, served.max_batch_size, 'backend: "python"')
    text += _tensors("input", inputs) + _tensors("output", outputs) + _instances(instances, "KIND_CPU")
    return text + f'parameters {{ key: "role" value: {{ string_value: "{role}" }} }}\n'


def _by_name(tensors: list[TritonTensor], batched: bool) -> dict[str, tuple[str, str, str]]:
    return {row[0]: row for row in _graph_tensors(tensors, batched)}


def preprocess_config(served: ServedModel, name: str, instances: int) -> str:
    """IMAGE bytes -> the model's inputs (same types and dims) and original_sizes."""
    batched = served.max_batch_size > 0
    graph_inputs = _by_name(served.inputs, batched)
    outputs = [graph_inputs["images"], graph_inputs["image_sizes"],
               ("original_sizes", "TYPE_INT64", _per_image([2], batched))]
    assert [row[0] for row in outputs] == list(PRE_OUTPUTS)
    return _python_config(model_names(name)["preprocess"], "preprocess", served,
                          [("IMAGE", "TYPE_STRING", _per_image([1], batched))], outputs, instances)


def _client_outputs(batched: bool) -> list[tuple[str, str, str]]:
    """The ensemble's (and postprocess's) outputs, one row per image (stages.py's postprocess)."""
    rows = [("BOXES", "TYPE_FP32", [-1, 4]), ("SCORES", "TYPE_FP32", [-1]), ("LABELS", "TYPE_INT64", [-1]),
            ("MASKS", "TYPE_STRING", [-1]), ("NUM_DETECTIONS", "TYPE_INT64", [1])]
    assert [row[0] for row in rows] == list(POST_OUTPUTS)
    return [(n, t, _per_image(d, batched)) for n, t, d in rows]


def postprocess_config(served: ServedModel, name: str, instances: int) -> str:
    """The model's outputs, image_sizes and original_sizes -> the client's outputs."""
    batched = served.max_batch_size > 0
    inputs = (_graph_tensors(served.outputs, batched, reshape=False) + [_by_name(served.inputs, batched)["image_sizes"]]
              + [("original_sizes", "TYPE_INT64", _per_image([2], batched))])
    return _python_config(model_names(name)["postprocess"], "postprocess", served, inputs, _client_outputs(batched),
                          instances)


def _step(model: str, inputs: list[str], outputs: list[str]) -> str:
    maps = [f'input_map {{ key: "{k}" value: "{k}" }}' for k in inputs]
    maps += [f'output_map {{ key: "{k}" value: "{k}" }}' for k in outputs]
    return f'    {{\n      model_name: "{model}"\n      model_version: -1\n      ' + "\n      ".join(maps) + "\n    }"


def ensemble_config(served: ServedModel, name: str) -> str:
    """IMAGE -> preprocess -> model -> postprocess -> the client's outputs (ensemble tensors keep their names)."""
    batched, names = served.max_batch_size > 0, model_names(name)
    graph_in, graph_out = [t.name for t in served.inputs], [t.name for t in served.outputs]
    steps = [_step(names["preprocess"], ["IMAGE"], list(PRE_OUTPUTS)), _step(names["model"], graph_in, graph_out),
             _step(names["postprocess"], [*graph_out, "image_sizes", "original_sizes"], list(POST_OUTPUTS))]
    text = _header(name, served.max_batch_size, 'platform: "ensemble"')
    text += _tensors("input", [("IMAGE", "TYPE_STRING", _per_image([1], batched))])
    text += _tensors("output", _client_outputs(batched))
    return text + "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n"
