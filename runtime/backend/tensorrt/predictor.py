"""TensorRT backend: `TensorRTPredictor(model.engine)`, the same `run_raw` outputs as ONNX Runtime's.

    from maskrcnn_deploy.runtime import load
    detections = load("model.engine").predict(["image.png"])     # or `maskrcnn-deploy check ref.pt model.engine`

Before TensorRT sees the engine, its metadata file (`model.engine.json`, environment.py) is checked:
present and well formed, the engine file unchanged since the build (SHA-256), the plugin library the
one it was built with (SHA-256), then this machine's TensorRT version and GPU model (name and compute
capability) the ones it was built for. Each refusal is one line saying to rebuild with
`maskrcnn-deploy build`. The model config and class names come from the ONNX metadata the build
copied into the engine metadata, the input size from the engine's optimization profile.

Execution uses TensorRT 10's name-based API (`set_input_shape`, `set_tensor_address`, `execute_async_v3`)
on device buffers from cuda_memory.py (cuda-python's runtime API, or pycuda), without torch. One run_raw:

    inputs  -> page-locked host buffers -> copy_to_device_async  (stream S)
    execute_async_v3(S)                                          (stream S)
    outputs <- copy_to_host_async into page-locked host buffers  (stream S)
    synchronize(S)                                               the only host wait, then the outputs are read

Device and page-locked buffers are kept per tensor and grow when a larger shape comes (dynamic engines);
`close()` releases them and the stream. Page-locked host memory makes the copies truly asynchronous (a
copy from pageable memory may make the host wait, and pycuda's async copies require page-locked memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskrcnn_deploy.export.graph_io import read_graph_info
from maskrcnn_deploy.model.config import MaskRCNNConfig
from maskrcnn_deploy.runtime.backend.tensorrt import cuda_memory as cuda
from maskrcnn_deploy.runtime.backend.tensorrt.engine_builder import (
    init_builtin_plugins,
    load_plugin_library,
    make_logger,
)
from maskrcnn_deploy.runtime.backend.tensorrt.environment import (
    EngineMetadata,
    RuntimeEnvironment,
    TensorRTError,
    check_compatibility,
    check_plugin,
    read_metadata,
    rebuild_hint,
    require_cuda,
    require_tensorrt,
    verify_engine_file,
)
from maskrcnn_deploy.runtime.predictor import Predictor, PredictorError

try:  # see engine_builder.py: tensorrt-stubs alone imports as an empty namespace package
    import tensorrt as trt
except (ImportError, OSError):
    trt = None  # type: ignore[assignment]

__all__ = ["TensorRTPredictor", "engine_input_size"]


def _shape(dims: trt.Dims) -> list[int]:
    return [int(dims[i]) for i in range(len(dims))]


def _text(shape: list[int] | tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def engine_input_size(meta: EngineMetadata) -> tuple[tuple[int, int] | None, int | None]:
    """((H, W) when the images profile fixes them, else None; batch when it is fixed, else None)."""
    images = meta.input_profile.get("images")
    if images is None:
        raise TensorRTError(f"the engine has no 'images' input in its profile {sorted(meta.input_profile)}: it is not "
                            f"a maskrcnn-deploy graph; {rebuild_hint(meta)}")
    lo, hi = images["min"], images["max"]
    size = (int(lo[2]), int(lo[3])) if lo[2:] == hi[2:] else None
    return size, (int(lo[0]) if lo[0] == hi[0] else None)


def _plugin_for(meta: EngineMetadata, plugin: str | Path | None) -> Path | None:
    """The plugin to load: the caller's, else the build's path, else the package default."""
    if plugin is not None or meta.plugin_sha256 is None:
        return Path(plugin) if plugin is not None else None
    if meta.plugin_library and Path(meta.plugin_library).is_file():
        return Path(meta.plugin_library)
    try:
        from maskrcnn_deploy.plugins.tensorrt.build_library import default_plugin_library
    except ImportError:
        return None
    return Path(default_plugin_library())


@dataclass
class _Binding:
    """One engine tensor's memory: page-locked host bytes and device bytes of the same capacity."""

    host: np.ndarray              # uint8 [capacity], page-locked (cuda.pinned_empty)
    device: cuda.DeviceBuffer

    def view(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The first bytes of the host buffer as an array of `shape` and `dtype`."""
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return self.host[:nbytes].view(dtype).reshape(shape)


def _numpy_dtypes() -> dict[Any, np.dtype]:
    """TensorRT data type -> numpy dtype for the types this backend binds."""
    return {trt.DataType.FLOAT: np.dtype(np.float32), trt.DataType.HALF: np.dtype(np.float16),
            trt.DataType.INT32: np.dtype(np.int32), trt.DataType.INT64: np.dtype(np.int64),
            trt.DataType.INT8: np.dtype(np.int8), trt.DataType.UINT8: np.dtype(np.uint8),
            trt.DataType.BOOL: np.dtype(np.bool_)}


class TensorRTPredictor(Predictor):
    """A `maskrcnn-deploy build` engine run by TensorRT on the current CUDA device."""

    backend = "tensorrt"

    def __init__(self, path: str | Path, plugin: str | Path | None = None, verbose: bool = False):
        path = Path(path)
        meta = read_metadata(path)
        verify_engine_file(path, meta)
        plugin_path = _plugin_for(meta, plugin)
        check_plugin(meta, plugin_path)
        info = read_graph_info(meta.onnx_metadata, f"{path}'s metadata")
        require_tensorrt(trt)
        gpu_name, capability = require_cuda()
        check_compatibility(meta, RuntimeEnvironment(str(trt.__version__), gpu_name, capability))
        self.meta = meta
        self.logger = make_logger(verbose)
        init_builtin_plugins(self.logger)  # an engine from a standard RoiAlign graph holds ROIAlign_TRT
        if plugin_path is not None and meta.plugin_sha256 is not None:
            load_plugin_library(plugin_path)
        self.runtime = trt.Runtime(self.logger)
        engine: trt.ICudaEngine | None = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise TensorRTError(f"TensorRT could not deserialize {path} (see its log above): {rebuild_hint(meta)}")
        context: trt.IExecutionContext | None = engine.create_execution_context()
        if context is None:
            raise TensorRTError(f"TensorRT could not create an execution context for {path} (GPU memory?)")
        self.engine, self.context = engine, context
        self._bind_names(path)
        self.bindings: dict[str, _Binding] = {}
        self.stream: cuda.Stream | None = cuda.create_stream()
        input_size, batch = engine_input_size(meta)
        super().__init__(MaskRCNNConfig.from_dict(info["config"]), input_size, batch, info.get("class_names"),
                         info.get("category_ids"))

    def _bind_names(self, path: Path) -> None:
        """Input and output names and their numpy dtypes; refuse a type or an input set we cannot bind."""
        engine, dtypes = self.engine, _numpy_dtypes()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes: dict[str, np.dtype] = {}
        for name in names:
            dtype = engine.get_tensor_dtype(name)
            if dtype not in dtypes:
                raise TensorRTError(f"engine tensor {name} has type {dtype}, which this backend does not bind")
            self.dtypes[name] = dtypes[dtype]
        if set(self.input_names) != {"images", "image_sizes"}:
            raise TensorRTError(f"{path} has inputs {self.input_names}, not the deploy graph's images, image_sizes: "
                                f"{rebuild_hint(self.meta)}")

    def _fit_profile(self, batch: np.ndarray) -> np.ndarray:
        """Pad a batch [B,3,H,W] smaller than the profile's minimum H, W with the image mean (what a static
        graph's preprocessing does); refuse one outside the profile otherwise."""
        lo, hi = self.meta.input_profile["images"]["min"], self.meta.input_profile["images"]["max"]
        height, width = max(batch.shape[2], lo[2]), max(batch.shape[3], lo[3])
        if (height, width) != tuple(batch.shape[2:]):
            mean = np.asarray(self.config.input_pad_value(), dtype=batch.dtype).reshape(1, 3, 1, 1)
            padded = np.broadcast_to(mean, (batch.shape[0], 3, height, width)).copy()
            padded[:, :, :batch.shape[2], :batch.shape[3]] = batch
            batch = padded
        shape = list(batch.shape)
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            raise PredictorError(f"input images {_text(shape)} is outside the engine's profile (min {_text(lo)}, max "
                                 f"{_text(hi)}): rebuild with --min-shape/--max-shape covering it, or predict with a "
                                 "batch size inside it")
        return batch

    def _binding(self, name: str, shape: tuple[int, ...]) -> tuple[_Binding, np.ndarray]:
        """The tensor's buffers, grown to hold `shape` (the old ones freed: no copy is in flight between
        runs, each run ends with a synchronize), and the host view of that shape."""
        dtype = self.dtypes[name]
        nbytes = max(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, 1)
        binding = self.bindings.get(name)
        if binding is None or binding.device.nbytes < nbytes:
            if binding is not None:
                self._release(binding)
            binding = self.bindings[name] = _Binding(cuda.pinned_empty(nbytes), cuda.malloc(nbytes))
        return binding, binding.view(shape, dtype)

    def _enqueue_inputs(self, feeds: dict[str, np.ndarray], stream: cuda.Stream) -> None:
        """Set each input's shape and address and queue its host-to-device copy on `stream`."""
        for name in self.input_names:
            array = feeds[name]
            if not self.context.set_input_shape(name, trt.Dims(list(array.shape))):
                raise PredictorError(f"TensorRT refused input {name} of shape {_text(array.shape)}")
            binding, host = self._binding(name, array.shape)
            np.copyto(host, array, casting="same_kind")
            cuda.copy_to_device_async(binding.device, host, stream)
            if not self.context.set_tensor_address(name, binding.device.ptr):
                raise TensorRTError(f"TensorRT refused the device address of input {name}")

    def _bind_outputs(self) -> dict[str, np.ndarray]:
        """Set each output's device address; returns the host views the results will be copied to."""
        hosts = {}
        for name in self.output_names:
            shape = _shape(self.context.get_tensor_shape(name))
            if min(shape, default=0) < 0:
                raise TensorRTError(f"output {name} has a data-dependent shape {shape}; the deploy graph's outputs "
                                    "are fixed-size: re-export it with `maskrcnn-deploy export`")
            binding, hosts[name] = self._binding(name, tuple(shape))
            if not self.context.set_tensor_address(name, binding.device.ptr):
                raise TensorRTError(f"TensorRT refused the device address of output {name}")
        return hosts

    def run_raw(self, batch: Any, sizes: Any) -> dict[str, np.ndarray]:
        """images [B,3,H,W] float32 0-1 (mean-padded), image_sizes [B,2] float32 (numpy, or anything
        np.asarray takes) -> {output name: numpy [B,...]} (float16 outputs as float32).

        Copies in, the engine and copies out are queued on one stream; the host waits once, before reading."""
        if self.stream is None:
            raise PredictorError("this TensorRT predictor was closed")
        stream = self.stream
        images = self._fit_profile(np.asarray(batch, dtype=self.dtypes["images"]))
        feeds = {"images": images, "image_sizes": np.asarray(sizes, dtype=self.dtypes["image_sizes"])}
        try:
            self._enqueue_inputs(feeds, stream)
            hosts = self._bind_outputs()
            if not self.context.execute_async_v3(stream.handle):
                raise TensorRTError("TensorRT failed to run the engine (see its log above)")
            for name, host in hosts.items():
                cuda.copy_to_host_async(host, self.bindings[name].device, stream)
        finally:  # the one host wait; on a failure too, so that no queued copy outlives a buffer freed later
            cuda.synchronize(stream)
        # copies: the page-locked buffers are reused by the next run
        return {name: host.astype(np.float32) if host.dtype == np.float16 else host.copy()
                for name, host in hosts.items()}

    @staticmethod
    def _release(binding: _Binding) -> None:
        cuda.free(binding.device)
        cuda.free_pinned(binding.host)

    def close(self) -> None:
        """Release the device and page-locked buffers and the stream (run_raw refuses to run afterwards)."""
        stream, self.stream = getattr(self, "stream", None), None
        if stream is None:
            return
        cuda.synchronize(stream)
        for binding in self.bindings.values():
            self._release(binding)
        self.bindings.clear()
        cuda.destroy_stream(stream)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the CUDA library may already be gone
            pass
