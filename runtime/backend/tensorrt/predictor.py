"""TensorRT backend: `TensorRTPredictor(model.engine)`, the same `run_raw` outputs as ONNX Runtime's.

    from maskrcnn_deploy.runtime import load
    detections = load("model.engine").predict(["image.png"])     # or `maskrcnn-deploy check ref.pt model.engine`

Before TensorRT sees the engine, its metadata file (`model.engine.json`, environment.py) is checked:
present and well formed, the engine file unchanged since the build (SHA-256), the plugin library the
one it was built with (SHA-256), then this machine's TensorRT version and GPU model (name and compute
capability) the ones it was built for. Each refusal is one line saying to rebuild with
`maskrcnn-deploy build`. The model config and class names come from the ONNX metadata the build
copied into the engine metadata, the input size from the engine's optimization profile.

Execution uses TensorRT 10's name-based API (`set_input_shape`, `set_tensor_address`,
`execute_async_v3`) with torch CUDA tensors as device buffers on a torch CUDA stream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from maskrcnn_deploy.export.graph_io import read_graph_info
from maskrcnn_deploy.model.config import MaskRCNNConfig
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
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
                  trt.DataType.INT64: torch.int64, trt.DataType.INT8: torch.int8, trt.DataType.UINT8: torch.uint8,
                  trt.DataType.BOOL: torch.bool}
        self.dtypes: dict[str, torch.dtype] = {}
        for name in names:
            dtype = engine.get_tensor_dtype(name)
            if dtype not in dtypes:
                raise TensorRTError(f"engine tensor {name} has type {dtype}, which this backend does not bind")
            self.dtypes[name] = dtypes[dtype]
        if set(self.input_names) != {"images", "image_sizes"}:
            raise TensorRTError(f"{path} has inputs {self.input_names}, not the deploy graph's images, image_sizes: "
                                f"{rebuild_hint(meta)}")
        self.device = torch.device("cuda", torch.cuda.current_device())
        self.stream = torch.cuda.Stream(self.device)
        input_size, batch = engine_input_size(meta)
        super().__init__(MaskRCNNConfig.from_dict(info["config"]), input_size, batch, info.get("class_names"),
                         info.get("category_ids"))

    def _fit_profile(self, batch: torch.Tensor) -> torch.Tensor:
        """Pad a batch smaller than the profile's minimum H, W with the image mean (what a static graph's
        preprocessing does); refuse one outside the profile otherwise."""
        lo, hi = self.meta.input_profile["images"]["min"], self.meta.input_profile["images"]["max"]
        height, width = max(batch.shape[2], lo[2]), max(batch.shape[3], lo[3])
        if (height, width) != tuple(batch.shape[2:]):
            mean = torch.tensor(self.config.image_mean, dtype=batch.dtype).reshape(1, 3, 1, 1)
            padded = mean.expand(batch.shape[0], 3, height, width).clone()
            padded[:, :, :batch.shape[2], :batch.shape[3]] = batch
            batch = padded
        shape = list(batch.shape)
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            raise PredictorError(f"input images {_text(shape)} is outside the engine's profile (min {_text(lo)}, max "
                                 f"{_text(hi)}): rebuild with --min-shape/--max-shape covering it, or predict with a "
                                 "batch size inside it")
        return batch

    @torch.inference_mode()
    def run_raw(self, batch: torch.Tensor, sizes: torch.Tensor) -> dict[str, np.ndarray]:
        """images [B,3,H,W] float32 0-1 (mean-padded), image_sizes [B,2] -> {output name: numpy [B,...]}."""
        feeds = {"images": self._fit_profile(batch), "image_sizes": sizes}
        outputs: dict[str, torch.Tensor] = {}
        with torch.cuda.stream(self.stream):
            bound = []  # keep the device inputs alive until the stream is done
            for name in self.input_names:
                tensor = feeds[name].to(self.device, self.dtypes[name]).contiguous()
                if not self.context.set_input_shape(name, trt.Dims(list(tensor.shape))):
                    raise PredictorError(f"TensorRT refused input {name} of shape {_text(tuple(tensor.shape))}")
                self.context.set_tensor_address(name, tensor.data_ptr())
                bound.append(tensor)
            for name in self.output_names:
                shape = _shape(self.context.get_tensor_shape(name))
                if min(shape, default=0) < 0:
                    raise TensorRTError(f"output {name} has a data-dependent shape {shape}; the deploy graph's outputs "
                                        "are fixed-size: re-export it with `maskrcnn-deploy export`")
                outputs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
                self.context.set_tensor_address(name, outputs[name].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise TensorRTError("TensorRT failed to run the engine (see its log above)")
        self.stream.synchronize()
        del bound
        return {name: t.float().cpu().numpy() if t.dtype == torch.float16 else t.cpu().numpy()
                for name, t in outputs.items()}
