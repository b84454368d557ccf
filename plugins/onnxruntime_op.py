"""ONNX Runtime backend for the deploy graph, custom RoIAlign node included.

The custom node `maskrcnn_deploy::MultiLevelRoIAlign` runs our native CPU kernel (plugins/) as an
onnxruntime-extensions Python op. Why not a native ORT custom-op library: ONNX Runtime's C API
headers are in no registry package reachable here (the onnxruntime and onnxruntime-extensions
wheels ship none), so the op is registered through onnxruntime-extensions' PyOp, whose callback
hands the input buffers (numpy arrays, no copies through Python lists) as zero-copy tensors to the
PyTorch custom op, i.e. the same C kernel and input checks PyTorch uses. onnxruntime-extensions' own callback returns outputs as Python
lists (`tolist()`: 2.3 s for a 1000x256x7x7 result); `_return_arrays` replaces it with one that
returns the numpy array itself (0.05 s for the same result). Cost per call: one Python round trip
and one copy of the inputs and of the output (measured in bench/onnx_runtime_speed.py).

PyOps read only scalar attributes (int, float, string), so `load_session` re-encodes the node's
`spatial_scales` float list as a string in the in-memory copy it hands to ONNX Runtime; the file
on disk, which TensorRT consumes, is unchanged.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx

from maskrcnn_deploy.common.errors import BackendUnavailableError, BadInputError
from maskrcnn_deploy.common.interrupts import deferred_interrupt
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


@lru_cache(maxsize=None)
def _register_pyop() -> None:
    """Define the PyOp once per process (onnxruntime-extensions keeps a global registry)."""
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    PyCustomOpDef.install_hooker(_return_arrays)

    import torch

    from maskrcnn_deploy.plugins.torch_ops import multilevel_roi_align_op

    attrs = {"output_height": PyCustomOpDef.dt_int64, "output_width": PyCustomOpDef.dt_int64,
             "sampling_ratio": PyCustomOpDef.dt_int64, "aligned": PyCustomOpDef.dt_int64,
             "spatial_scales": PyCustomOpDef.dt_string, "canonical_scale": PyCustomOpDef.dt_float,
             "canonical_level": PyCustomOpDef.dt_int64, "level_eps": PyCustomOpDef.dt_float,
             "mode": PyCustomOpDef.dt_string}

    @onnx_op(op_type=f"{DOMAIN}::{OP_TYPE}", inputs=[PyCustomOpDef.dt_float] * 5, outputs=[PyCustomOpDef.dt_float],
             attrs=attrs)
    def multilevel_roi_align(rois, p2, p3, p4, p5, **attr):
        # the PyTorch custom op over zero-copy views: same input checks, same kernel, same threading
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        scales = [float(s) for s in attr["spatial_scales"].split()]
        pooled = multilevel_roi_align_op(as_tensor(rois), [as_tensor(p) for p in (p2, p3, p4, p5)],
                                         attr["output_height"], attr["output_width"], scales, attr["sampling_ratio"],
                                         bool(attr["aligned"]), attr["mode"], attr["canonical_scale"],
                                         attr["canonical_level"], attr["level_eps"])
        return pooled.numpy()


def custom_op_library_path() -> str:
    """The onnxruntime-extensions library that hosts our PyOp (register with SessionOptions)."""
    try:
        from onnxruntime_extensions import get_library_path
    except ImportError:
        raise OnnxRuntimeExtensionsMissing("this graph has the custom MultiLevelRoIAlign node, which needs "
                               "onnxruntime-extensions: pip install onnxruntime-extensions") from None
    _register_pyop()
    return get_library_path()


def providers() -> list[str]:
    """CUDA first when onnxruntime-gpu provides it, then CPU."""
    import onnxruntime as ort
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def for_pyop(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of the graph with each MultiLevelRoIAlign's spatial_scales list as a string attribute."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for node in model.graph.node:
        if is_custom_roi_align(node):
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
