"""ONNX Runtime backend for the deploy graph, custom RoIAlign node included; imports no torch.

The custom node `maskrcnn_deploy::MultiLevelRoIAlign` runs our native CPU kernel (plugins/) as an
onnxruntime-extensions Python op. Why not a native ORT custom-op library: ONNX Runtime's C API
headers are in no registry package reachable here (the onnxruntime and onnxruntime-extensions
wheels ship none), so the op is registered through onnxruntime-extensions' PyOp, whose callback
passes the input buffers (numpy arrays, zero-copy pointers) through ctypes to the C kernel
(plugins/native.py `forward_cpu`: the same entry point, argument structs and kernel as the PyTorch
op) and returns a numpy output. onnxruntime-extensions' own callback returns outputs as Python
lists (`tolist()`: 2.3 s for a 1000x256x7x7 result); `_return_arrays` replaces it with one that
returns the numpy array itself (0.05 s for the same result). Cost per call: one Python round trip
and one copy of the inputs and of the output (measured in bench/onnx_runtime_speed.py).

onnxruntime-extensions' package `__init__` imports torch when it can (for a Whisper converter we do
not use); `_import_extensions` hides torch during that import, so a session never loads it.

PyOps read only scalar attributes (int, float, string) and take a fixed number of inputs, so
`load_session` re-encodes the node's `spatial_scales` float list as a string, and gives a node without
the optional `extents` input (graphs exported before it existed) an empty [0,2] one, in the in-memory
copy it hands to ONNX Runtime; the file on disk, which TensorRT consumes, is unchanged.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from maskrcnn_deploy.common.errors import BackendUnavailableError, BadInputError
from maskrcnn_deploy.common.interrupts import deferred_interrupt
from maskrcnn_deploy.plugins import native
from maskrcnn_deploy.plugins.op_spec import DOMAIN, OP_TYPE, is_custom_roi_align

__all__ = ["OnnxRuntimeError", "load_session", "run_session", "custom_op_library_path", "providers", "for_pyop"]

class OnnxRuntimeError(BadInputError, RuntimeError):
    """The ONNX file cannot be loaded or run by ONNX Runtime."""


class OnnxRuntimeExtensionsMissing(OnnxRuntimeError, BackendUnavailableError):
    """onnxruntime-extensions, which hosts our custom RoIAlign op in ONNX Runtime, is not installed (exit 3)."""


def _scales_to_text(scales) -> str:
    return " ".join(repr(float(s)) for s in scales)


def _return_arrays(op_id: int, inputs: list, attributes: dict) -> tuple:
    """onnxruntime-extensions' PyOp callback, returning numpy outputs instead of Python lists."""
    from onnxruntime_extensions import _ocos

    op = _ocos.Opdef._odlist[op_id]
    result = op.body(*inputs, **op.cast_attributes(attributes))
    outputs = result if isinstance(result, tuple) else (result,)
    flat = []
    for out in outputs:
        out = np.ascontiguousarray(out)
        flat += [out.shape, out.reshape(-1)]
    return (op_id, *flat)


def _import_extensions():
    """onnxruntime_extensions, imported with torch hidden (unless torch is loaded already): its `__init__`
    tries `import torch` and carries on without it."""
    if "torch" in sys.modules or "onnxruntime_extensions" in sys.modules:
        import onnxruntime_extensions
        return onnxruntime_extensions
    sys.modules["torch"] = None  # `import torch` raises ImportError while this entry is None
    try:
        import onnxruntime_extensions
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]
    return onnxruntime_extensions


def _multilevel_roi_align(rois, p2, p3, p4, p5, extents, **attr) -> np.ndarray:
    """The PyOp's body: rois [K,5], P2..P5 [B,C,H_l,W_l] and extents [B,2] or [0,2] (none; float32 numpy)
    -> [K,C,oh,ow] from the C kernel."""
    scales = [float(s) for s in attr["spatial_scales"].split()]
    return native.forward_cpu(rois, [p2, p3, p4, p5], attr["output_height"], attr["output_width"], scales,
                              attr["sampling_ratio"], bool(attr["aligned"]), attr["mode"], attr["canonical_scale"],
                              attr["canonical_level"], attr["level_eps"], extents=extents if len(extents) else None)


@lru_cache(maxsize=None)
def _register_pyop() -> None:
    """Define the PyOp once per process (onnxruntime-extensions keeps a global registry)."""
    ext = _import_extensions()
    ext.PyCustomOpDef.install_hooker(_return_arrays)
    dt = ext.PyCustomOpDef
    attrs = {"output_height": dt.dt_int64, "output_width": dt.dt_int64, "sampling_ratio": dt.dt_int64,
             "aligned": dt.dt_int64, "spatial_scales": dt.dt_string, "canonical_scale": dt.dt_float,
             "canonical_level": dt.dt_int64, "level_eps": dt.dt_float, "mode": dt.dt_string}
    ext.onnx_op(op_type=f"{DOMAIN}::{OP_TYPE}", inputs=[dt.dt_float] * 6, outputs=[dt.dt_float],
                attrs=attrs)(_multilevel_roi_align)


def custom_op_library_path() -> str:
    """The onnxruntime-extensions library that hosts our PyOp (register with SessionOptions)."""
    try:
        ext = _import_extensions()
    except ImportError:
        raise OnnxRuntimeExtensionsMissing("this graph has the custom MultiLevelRoIAlign node, which needs "
                               "onnxruntime-extensions: pip install onnxruntime-extensions") from None
    _register_pyop()
    return ext.get_library_path()


def providers() -> list[str]:
    """CUDA first when onnxruntime-gpu provides it, then CPU."""
    import onnxruntime as ort
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


_NO_EXTENTS = "maskrcnn_deploy_no_extents"  # the empty [0,2] extents given to nodes exported without them


def for_pyop(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of the graph with each MultiLevelRoIAlign's spatial_scales list as a string attribute and its
    optional extents input present (an empty [0,2] initializer where the node has none)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for node in model.graph.node:
        if is_custom_roi_align(node):
            if len(node.input) < 6 or not node.input[5]:
                del node.input[5:]
                node.input.append(_NO_EXTENTS)
                if not any(init.name == _NO_EXTENTS for init in model.graph.initializer):
                    model.graph.initializer.append(numpy_helper.from_array(np.zeros((0, 2), np.float32),
                                                                                _NO_EXTENTS))
            for i, attr in enumerate(node.attribute):
                if attr.name == "spatial_scales" and attr.type == onnx.AttributeProto.FLOATS:
                    node.attribute[i].CopyFrom(onnx.helper.make_attribute("spatial_scales", _scales_to_text(attr.floats)))
    return model


def load_session(model: onnx.ModelProto, threads: int | None = None, name: str | Path = "the graph"):
    """An InferenceSession for a deploy graph (read with export/graph_io.read_onnx), with our custom op
    registered when the graph uses it; `name` (its file) is for messages."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # idle intra-op threads sleep instead of spinning: the custom op runs its own kernel threads
    # between ONNX Runtime's ops, and spinning pool threads would take their cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    if any(is_custom_roi_align(n) for n in model.graph.node):
        options.register_custom_ops_library(custom_op_library_path())
        model = for_pyop(model)
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers())
    except Exception as exc:
        raise OnnxRuntimeError(f"ONNX Runtime cannot load {name}: {str(exc).splitlines()[0]}") from None


def run_session(session, images: np.ndarray, image_sizes: np.ndarray) -> dict[str, np.ndarray]:
    """images [B,3,H,W] float32, image_sizes [B,2] float32 -> {output name: array}."""
    names = [o.name for o in session.get_outputs()]
    with deferred_interrupt():  # a Ctrl-C inside our op's Python callback would abort the process
        outputs = session.run(names, {"images": images.astype(np.float32, copy=False),
                                      "image_sizes": image_sizes.astype(np.float32, copy=False)})
    return dict(zip(names, outputs))
