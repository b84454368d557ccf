"""`build_engine` and the TensorRT backend driven through a stand-in `tensorrt` module (TensorRT cannot
run here): the calls they make, in order, and the flags they set; and the backend's whole `run_raw` on a
numpy-backed stand-in of cuda_memory.py (allocation, copies, execute, synchronize, read).

The stand-ins record each call as a string and answer with just enough for the code under test to go on;
their names follow tensorrt-stubs and cuda_memory.py (mypy checks the real calls against tensorrt-stubs and
tests/stubs/cuda in test_tensorrt_python.py). The CUDA stand-in runs queued work only at `synchronize`, as a
GPU may, so reading a result before synchronizing reads stale bytes. What they cannot show is how a real
TensorRT and GPU react: see docs/tensorrt.md.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from maskrcnn_deploy.runtime.backend.tensorrt import cuda_memory, engine_builder
from maskrcnn_deploy.runtime.backend.tensorrt import predictor as tensorrt_predictor
from maskrcnn_deploy.runtime.backend.tensorrt.build_plan import BuildOptions
from maskrcnn_deploy.runtime.backend.tensorrt.environment import (
    EngineMetadata,
    TensorRTError,
    read_metadata,
    sha256_file,
    write_metadata,
)
from maskrcnn_deploy.runtime.predictor import PredictorError

GPU = ("NVIDIA H100 80GB HBM3", "9.0")


def stand_in_tensorrt(version: str, calls: list[str], engine: object = None) -> SimpleNamespace:
    """A `tensorrt` module that records calls; builds succeed, deserializing returns `engine` (None: fails)."""

    class Logger:
        INFO, WARNING = "INFO", "WARNING"

        def __init__(self, severity: str) -> None:
            calls.append("Logger")

    class BuilderConfig:
        def __init__(self) -> None:
            self.flags = {"TF32"}  # TensorRT's default (NvInfer.h: kTF32 "Enabled by default")

        def set_flag(self, flag: str) -> None:
            calls.append(f"set_flag {flag}")
            self.flags.add(flag)

        def clear_flag(self, flag: str) -> None:
            calls.append(f"clear_flag {flag}")
            self.flags.discard(flag)

    class Builder:
        def __init__(self, logger: Logger) -> None:
            calls.append("Builder")

        def create_network(self, flags: int) -> str:
            return "network"

        def create_builder_config(self) -> BuilderConfig:
            self.config = BuilderConfig()
            return self.config

        def build_serialized_network(self, network: str, config: BuilderConfig) -> bytes:
            calls.append("build_serialized_network flags=" + ",".join(sorted(config.flags)))
            return b"engine bytes"

    class OnnxParser:
        def __init__(self, network: str, logger: Logger) -> None:
            calls.append("OnnxParser")

        def parse_from_file(self, path: str) -> bool:
            calls.append("parse_from_file")
            return True

    class Registry:
        def load_library(self, path: str) -> str:
            calls.append("load_library")
            calls.append(f"{engine_builder.REGISTER_AT_LOAD_ENV}={os.environ.get(engine_builder.REGISTER_AT_LOAD_ENV)}")
            return "handle"

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            calls.append("Runtime")

        def deserialize_cuda_engine(self, data: bytes) -> object:
            calls.append("deserialize_cuda_engine")
            return engine

    def init_libnvinfer_plugins(logger: Logger, namespace: str) -> bool:
        calls.append(f"init_libnvinfer_plugins {namespace!r}")
        return True

    return SimpleNamespace(
        __version__=version, Logger=Logger, Builder=Builder, OnnxParser=OnnxParser, Runtime=Runtime,
        init_libnvinfer_plugins=init_libnvinfer_plugins, get_plugin_registry=Registry,
        BuilderFlag=SimpleNamespace(FP16="FP16", INT8="INT8", TF32="TF32", OBEY_PRECISION_CONSTRAINTS="OBEY",
                                    PREFER_PRECISION_CONSTRAINTS="PREFER"),
        NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=0),
        DataType=SimpleNamespace(FLOAT="FLOAT", HALF="HALF", INT32="INT32", INT64="INT64", INT8="INT8", UINT8="UINT8",
                                 BOOL="BOOL", BF16="BF16"),
        TensorIOMode=SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"), Dims=tuple)


@pytest.fixture
def calls(monkeypatch):
    """The calls the stand-in TensorRT (version 10.14.1.48 unless a test says otherwise) receives."""
    recorded: list[str] = []
    use_tensorrt(monkeypatch, "10.14.1.48", recorded)
    return recorded


def use_tensorrt(monkeypatch, version: str, recorded: list[str], engine: object = None) -> None:
    trt = stand_in_tensorrt(version, recorded, engine)
    for module in (engine_builder, tensorrt_predictor):
        monkeypatch.setattr(module, "trt", trt)
        monkeypatch.setattr(module, "require_cuda", lambda: GPU)
    monkeypatch.setattr(engine_builder, "_BUILTIN_PLUGINS", [])
    monkeypatch.setattr(engine_builder, "_LOADED_PLUGINS", {})


def graph(path: Path, custom: bool = False, half: bool = False) -> Path:
    """A static graph with the deploy graph's inputs (enough for the build's checks; never run)."""
    nodes = [helper.make_node("Identity", ["images"], ["features"], name="/identity")]
    if custom:
        nodes.append(helper.make_node("MultiLevelRoIAlign", ["image_sizes", "features"], ["pooled"],
                                      domain="maskrcnn_deploy", name="/roi_align"))
    if half:
        nodes.append(helper.make_node("Cast", ["features"], ["half"], to=TensorProto.FLOAT16, name="/cast"))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32]),
                                       helper.make_tensor_value_info("image_sizes", TensorProto.FLOAT, [1, 2])],
                          [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 3, 32, 32])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("maskrcnn_deploy", 1)])
    helper.set_model_props(model, {"maskrcnn_deploy": '{"config": {}, "graph_format": 2}'})
    onnx.save(model, str(path))
    return path


def plugin_file(path: Path, major: int | None) -> Path:
    """A file standing for the plugin library, with the marker plugin_library.cpp writes (or none)."""
    marker = b"" if major is None else b"maskrcnn_deploy TensorRT plugin built for TensorRT major %d;" % major
    path.write_bytes(b"\x7fELF...." + marker + b"....")
    return path


# ----------------------------------------------------------------------------- built-in plugins (issue 18, item 3)
def test_build_registers_tensorrt_plugins_before_parsing(calls, tmp_path):
    engine_builder.build_engine(graph(tmp_path / "m.onnx", custom=True), tmp_path / "m.engine",
                                BuildOptions(plugin=plugin_file(tmp_path / "lib.so", 10)))
    init = calls.index("init_libnvinfer_plugins ''")
    assert init < calls.index("load_library") < calls.index("OnnxParser") < calls.index("parse_from_file")
    assert calls.count("init_libnvinfer_plugins ''") == 1


def test_load_library_asks_the_plugin_not_to_register_itself_at_load(calls, tmp_path, monkeypatch):
    # with it, the library's getCreators hands TensorRT the creator and the load registers it (the path
    # checked against the stand-in libnvinfer by the load-library-only scenario of test_tensorrt_plugin.py)
    monkeypatch.delenv(engine_builder.REGISTER_AT_LOAD_ENV, raising=False)
    engine_builder.build_engine(graph(tmp_path / "m.onnx", custom=True), tmp_path / "m.engine",
                                BuildOptions(plugin=plugin_file(tmp_path / "lib.so", 10)))
    assert calls[calls.index("load_library") + 1] == f"{engine_builder.REGISTER_AT_LOAD_ENV}=0"
    assert engine_builder.REGISTER_AT_LOAD_ENV not in os.environ  # restored afterwards


def test_backend_registers_tensorrt_plugins_before_deserializing(calls, tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine bytes")
    write_metadata(engine, EngineMetadata(
        tensorrt_version="10.14.1.48", gpu_name=GPU[0], compute_capability=GPU[1], precision="fp32",
        precision_source="graph", strongly_typed=True, input_profile={}, plugin_library=None, plugin_sha256=None,
        onnx_path="m.onnx", onnx_sha256="0" * 64, engine_sha256=sha256_file(engine), engine_bytes=12,
        package_version="0", build_time_utc="2026-01-01T00:00:00Z", build_seconds=1.0,
        onnx_metadata={"maskrcnn_deploy": json.dumps({"config": {}, "graph_format": 2})}))
    with pytest.raises(TensorRTError, match="could not deserialize"):
        tensorrt_predictor.TensorRTPredictor(engine)
    assert calls.index("init_libnvinfer_plugins ''") < calls.index("deserialize_cuda_engine")


# ----------------------------------------------------------------------------- TF32 (issue 18, item 6)
@pytest.mark.parametrize("version, options, half, tf32", [
    ("10.14.1.48", BuildOptions(), False, False),                         # fp32, weakly typed: strict fp32
    ("10.14.1.48", BuildOptions(tf32=True), False, True),                 # --tf32 keeps TensorRT's default
    ("11.1.0.106", BuildOptions(), False, False),                         # TensorRT 11, fp32 graph
    ("10.14.1.48", BuildOptions(), True, True),                           # fp16 graph: TF32 left on
    ("10.14.1.48", BuildOptions(strongly_typed=False, precision="fp16"), False, True),
])
def test_fp32_builds_clear_tf32_unless_asked(monkeypatch, tmp_path, version, options, half, tf32):
    recorded: list[str] = []
    use_tensorrt(monkeypatch, version, recorded)
    meta = engine_builder.build_engine(graph(tmp_path / "m.onnx", half=half), tmp_path / "m.engine", options)
    built = [c for c in recorded if c.startswith("build_serialized_network")]
    assert len(built) == 1 and ("TF32" in built[0].split("=")[1].split(",")) == tf32, recorded
    assert ("clear_flag TF32" in recorded) == (not tf32)
    assert meta.tf32 == tf32 and read_metadata(tmp_path / "m.engine").tf32 == tf32


def test_metadata_without_tf32_reads_as_tensorrt_default(calls, tmp_path):
    engine_builder.build_engine(graph(tmp_path / "m.onnx"), tmp_path / "m.engine")
    meta_file = tmp_path / "m.engine.json"
    raw = json.loads(meta_file.read_text())
    del raw["tf32"]  # written before TF32 was recorded: TensorRT's default was on
    meta_file.write_text(json.dumps(raw))
    assert read_metadata(tmp_path / "m.engine").tf32 is True


# ----------------------------------------------------------------------------- plugin major (issue 18, item 1)
@pytest.mark.parametrize("version, major, message", [
    ("11.1.0.106", 10, "was built for TensorRT 10, this is TensorRT 11.1.0.106: rebuild it against TensorRT 11"),
    ("10.14.1.48", 11, "was built for TensorRT 11, this is TensorRT 10.14.1.48: rebuild it against TensorRT 10"),
    ("10.14.1.48", None, "does not record the TensorRT major it was built for"),
])
def test_build_refuses_a_plugin_built_for_another_major(monkeypatch, tmp_path, version, major, message):
    recorded: list[str] = []
    use_tensorrt(monkeypatch, version, recorded)
    with pytest.raises(TensorRTError) as refused:
        engine_builder.build_engine(graph(tmp_path / "m.onnx", custom=True), tmp_path / "m.engine",
                                    BuildOptions(plugin=plugin_file(tmp_path / "lib.so", major)))
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert "load_library" not in recorded and "OnnxParser" not in recorded


def test_backend_refuses_a_plugin_built_for_another_major(monkeypatch, tmp_path):
    recorded: list[str] = []
    use_tensorrt(monkeypatch, "11.1.0.106", recorded)
    plugin, engine = plugin_file(tmp_path / "lib.so", 10), tmp_path / "m.engine"
    engine.write_bytes(b"engine bytes")
    write_metadata(engine, EngineMetadata(
        tensorrt_version="11.1.0.106", gpu_name=GPU[0], compute_capability=GPU[1], precision="fp32",
        precision_source="graph", strongly_typed=True, input_profile={}, plugin_library=str(plugin),
        plugin_sha256=sha256_file(plugin), onnx_path="m.onnx", onnx_sha256="0" * 64,
        engine_sha256=sha256_file(engine), engine_bytes=12, package_version="0", build_time_utc="2026-01-01T00:00:00Z",
        build_seconds=1.0, onnx_metadata={"maskrcnn_deploy": json.dumps({"config": {}, "graph_format": 2})}))
    with pytest.raises(TensorRTError, match="was built for TensorRT 10, this is TensorRT 11.1.0.106"):
        tensorrt_predictor.TensorRTPredictor(engine)
    assert "load_library" not in recorded and "deserialize_cuda_engine" not in recorded


def test_cli_tf32_flag(calls, tmp_path, capsys):
    from maskrcnn_deploy.runtime.cli import main

    onnx_path = graph(tmp_path / "m.onnx")
    assert main(["build", str(onnx_path), "-o", str(tmp_path / "strict.engine")]) == 0
    assert main(["build", str(onnx_path), "-o", str(tmp_path / "tf32.engine"), "--tf32"]) == 0
    assert read_metadata(tmp_path / "strict.engine").tf32 is False
    assert read_metadata(tmp_path / "tf32.engine").tf32 is True
    out = capsys.readouterr().out
    assert "precision fp32, TF32 off)" in out and "precision fp32, TF32 allowed)" in out


# ----------------------------------------------------------------------------- run_raw on stand-in CUDA memory (issue 20)
class StandInCuda:
    """cuda_memory.py's calls on numpy. Device memory is a byte array per address, page-locked memory the
    arrays pinned_empty handed out; copies and the engine are queued per stream and run at `synchronize`."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.device: dict[int, np.ndarray] = {}       # address -> uint8 [nbytes]
        self.pinned: list[np.ndarray] = []            # live page-locked arrays
        self.queues: dict[int, list[Callable[[], None]]] = {}
        self.next_ptr = 0x10000

    def create_stream(self) -> cuda_memory.Stream:
        handle = 0x51 + len(self.queues)
        self.queues[handle] = []
        self.calls.append(f"create_stream {handle}")
        return cuda_memory.Stream(handle, native=f"cudaStream_t {handle}")

    def destroy_stream(self, stream: cuda_memory.Stream) -> None:
        assert not self.queues.pop(stream.handle), "stream destroyed with work queued"
        self.calls.append(f"destroy_stream {stream.handle}")

    def malloc(self, nbytes: int) -> cuda_memory.DeviceBuffer:
        ptr, self.next_ptr = self.next_ptr, self.next_ptr + nbytes + 256
        self.device[ptr] = np.full(nbytes, 0xCD, np.uint8)  # uninitialized, as cudaMalloc's
        self.calls.append(f"malloc {nbytes}")
        return cuda_memory.DeviceBuffer(ptr, nbytes)

    def free(self, buffer: cuda_memory.DeviceBuffer) -> None:
        del self.device[buffer.ptr]
        self.calls.append(f"free {buffer.nbytes}")

    def pinned_empty(self, nbytes: int) -> np.ndarray:
        array = np.full(nbytes, 0xAB, np.uint8)
        self.pinned.append(array)
        self.calls.append(f"pinned_empty {nbytes}")
        return array

    def free_pinned(self, array: np.ndarray) -> None:
        self.pinned = [p for p in self.pinned if p is not array]
        self.calls.append(f"free_pinned {array.nbytes}")

    def _check_host(self, array: np.ndarray) -> np.ndarray:
        assert any(np.shares_memory(array, p) for p in self.pinned), "async copy from/to pageable memory"
        assert array.flags.c_contiguous
        return array.reshape(-1).view(np.uint8)

    def copy_to_device_async(self, dst: cuda_memory.DeviceBuffer, src: np.ndarray, stream: cuda_memory.Stream) -> None:
        data = self._check_host(src)
        assert data.nbytes <= dst.nbytes
        self.enqueue(stream.handle, lambda: self.device[dst.ptr].__setitem__(slice(0, data.nbytes), data))
        self.calls.append(f"copy_to_device {dst.ptr:#x} stream {stream.handle}")

    def copy_to_host_async(self, dst: np.ndarray, src: cuda_memory.DeviceBuffer, stream: cuda_memory.Stream) -> None:
        data = self._check_host(dst)
        assert data.nbytes <= src.nbytes
        self.enqueue(stream.handle, lambda: data.__setitem__(slice(None), self.device[src.ptr][:data.nbytes]))
        self.calls.append(f"copy_to_host {src.ptr:#x} stream {stream.handle}")

    def enqueue(self, handle: int, work: Callable[[], None]) -> None:
        self.queues[handle].append(work)  # KeyError: not a stream of ours

    def synchronize(self, stream: cuda_memory.Stream) -> None:
        for work in self.queues[stream.handle]:
            work()
        self.queues[stream.handle].clear()
        self.calls.append(f"synchronize {stream.handle}")

    def read(self, ptr: int, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        count = int(np.prod(shape))
        return self.device[ptr][:count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)


def engine_outputs(images: np.ndarray, sizes: np.ndarray) -> dict[str, np.ndarray]:
    """What the stand-in engine computes: boxes [B,2,4] float32, scores [B,2] float16, labels [B,2] int64."""
    boxes = np.zeros((len(images), 2, 4), np.float32)
    boxes[:, :, 2], boxes[:, :, 3] = sizes[:, None, 1], sizes[:, None, 0]
    boxes[:, 1] *= 0.5
    scores = np.stack([images.mean(axis=(1, 2, 3)), images.max(axis=(1, 2, 3))], 1).astype(np.float16)
    return {"boxes": boxes, "scores": scores, "labels": np.tile(np.arange(1, 3, dtype=np.int64), (len(images), 1))}


class StandInEngine:
    """A deploy-graph-shaped engine (inputs images, image_sizes; outputs as engine_outputs) whose context runs
    on StandInCuda: execute_async_v3 queues reading the inputs and writing the outputs at the set addresses."""

    tensors = {"images": ("INPUT", "FLOAT"), "image_sizes": ("INPUT", "FLOAT"), "boxes": ("OUTPUT", "FLOAT"),
               "scores": ("OUTPUT", "HALF"), "labels": ("OUTPUT", "INT64")}
    num_io_tensors = len(tensors)

    def __init__(self, cuda: StandInCuda, calls: list[str]) -> None:
        self.cuda, self.calls = cuda, calls

    def get_tensor_name(self, index: int) -> str:
        return list(self.tensors)[index]

    def get_tensor_mode(self, name: str) -> str:
        return self.tensors[name][0]

    def get_tensor_dtype(self, name: str) -> str:
        return self.tensors[name][1]

    def create_execution_context(self) -> StandInContext:
        return StandInContext(self.cuda, self.calls)


class StandInContext:
    def __init__(self, cuda: StandInCuda, calls: list[str]) -> None:
        self.cuda, self.calls = cuda, calls
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, dims: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(dims)
        self.calls.append(f"set_input_shape {name} {'x'.join(map(str, dims))}")
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        batch = self.shapes["images"][0]
        return {"boxes": (batch, 2, 4), "scores": (batch, 2), "labels": (batch, 2)}[name]

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        assert ptr in self.cuda.device, f"{name}: {ptr:#x} is not device memory"
        self.addresses[name] = ptr
        self.calls.append(f"set_tensor_address {name} {ptr:#x}")
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        if getattr(self, "fail", False):
            self.calls.append("execute_async_v3 failed")
            return False
        addresses, shapes = dict(self.addresses), dict(self.shapes)

        def run() -> None:
            images = self.cuda.read(addresses["images"], shapes["images"], np.float32)
            sizes = self.cuda.read(addresses["image_sizes"], shapes["image_sizes"], np.float32)
            for name, value in engine_outputs(images, sizes).items():
                self.cuda.read(addresses[name], value.shape, value.dtype.type)[...] = value

        self.cuda.enqueue(stream_handle, run)
        self.calls.append(f"execute_async_v3 stream {stream_handle}")
        return True


def standin_predictor(monkeypatch, tmp_path: Path, recorded: list[str]) -> tuple[object, StandInCuda]:
    """A TensorRTPredictor on the stand-in TensorRT and CUDA, for a dynamic profile 1..2 x 3 x 32..64 x 32..64."""
    cuda = StandInCuda(recorded)
    use_tensorrt(monkeypatch, "10.14.1.48", recorded, StandInEngine(cuda, recorded))
    monkeypatch.setattr(tensorrt_predictor, "cuda", cuda)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine bytes")
    write_metadata(engine, EngineMetadata(
        tensorrt_version="10.14.1.48", gpu_name=GPU[0], compute_capability=GPU[1], precision="fp32",
        precision_source="graph", strongly_typed=True,
        input_profile={"images": {"min": [1, 3, 32, 32], "opt": [1, 3, 32, 48], "max": [2, 3, 64, 64]},
                       "image_sizes": {"min": [1, 2], "opt": [1, 2], "max": [2, 2]}},
        plugin_library=None, plugin_sha256=None, onnx_path="m.onnx", onnx_sha256="0" * 64,
        engine_sha256=sha256_file(engine), engine_bytes=12, package_version="0", build_time_utc="2026-01-01T00:00:00Z",
        build_seconds=1.0, onnx_metadata={"maskrcnn_deploy": json.dumps({"config": {}, "graph_format": 2})}))
    return tensorrt_predictor.TensorRTPredictor(engine), cuda


def _inputs(batch: int, height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    images = np.random.default_rng(seed).random((batch, 3, height, width), dtype=np.float32)
    return images, np.tile(np.array([[height - 2, width - 3]], np.float32), (batch, 1))


def test_run_raw_copies_and_executes_on_one_stream_then_synchronizes_once(monkeypatch, tmp_path):
    recorded: list[str] = []
    predictor, cuda = standin_predictor(monkeypatch, tmp_path, recorded)
    stream = predictor.stream.handle
    assert recorded.count(f"create_stream {stream}") == 1
    images, sizes = _inputs(1, 32, 40)
    start = len(recorded)
    raw = predictor.run_raw(images, sizes)
    run = recorded[start:]
    kinds = [call.split()[0] for call in run]
    # inputs copied in, then the engine, then the outputs copied out, all on the predictor's one stream
    h2d = [i for i, k in enumerate(kinds) if k == "copy_to_device"]
    d2h = [i for i, k in enumerate(kinds) if k == "copy_to_host"]
    assert len(h2d) == 2 and len(d2h) == 3 and kinds.count("execute_async_v3") == 1
    assert max(h2d) < kinds.index("execute_async_v3") < min(d2h), run
    assert all(call.endswith(f"stream {stream}") for call, k in zip(run, kinds)
               if k in ("copy_to_device", "copy_to_host", "execute_async_v3"))
    # one host wait, after the last copy and before the outputs are read (the last CUDA call of the run)
    assert kinds.count("synchronize") == 1 and run[-1] == f"synchronize {stream}"
    # each input's device address is the one its copy wrote, each output's the one its copy read
    address = {c.split()[1]: c.split()[2] for c in run if c.startswith("set_tensor_address")}
    assert {c.split()[1] for c in run if c.startswith("copy_to_device")} == {address["images"], address["image_sizes"]}
    assert {c.split()[1] for c in run if c.startswith("copy_to_host")} == {address[n] for n in ("boxes", "scores",
                                                                                                 "labels")}
    # the results went through the device: the engine computed them from the copied inputs
    expected = engine_outputs(images, sizes)
    assert set(raw) == set(expected)
    assert raw["scores"].dtype == np.float32 and np.array_equal(raw["scores"], expected["scores"].astype(np.float32))
    assert raw["boxes"].dtype == np.float32 and np.array_equal(raw["boxes"], expected["boxes"])
    assert raw["labels"].dtype == np.int64 and np.array_equal(raw["labels"], expected["labels"])
    assert not any(np.shares_memory(raw[n], p) for n in raw for p in cuda.pinned)  # copies, not the reused buffers


def test_run_raw_reuses_grows_and_frees_its_buffers(monkeypatch, tmp_path):
    import torch

    recorded: list[str] = []
    predictor, cuda = standin_predictor(monkeypatch, tmp_path, recorded)
    small, small_sizes = _inputs(1, 32, 40, seed=1)
    first = predictor.run_raw(small, small_sizes)
    allocations = sum(c.startswith("malloc ") for c in recorded)
    assert len(cuda.device) == len(cuda.pinned) == 5  # one device and one page-locked buffer per tensor
    again = predictor.run_raw(torch.from_numpy(small), torch.from_numpy(small_sizes))  # tensor-likes: np.asarray
    assert sum(c.startswith("malloc ") for c in recorded) == allocations  # same shapes: no new memory
    assert all(np.array_equal(first[n], again[n]) for n in first)
    large, large_sizes = _inputs(2, 48, 64, seed=2)
    grown = predictor.run_raw(large, large_sizes)  # every tensor grows: old buffers freed, new ones taken
    assert sum(c.startswith("free ") for c in recorded) == 5 and len(cuda.device) == len(cuda.pinned) == 5
    expected = engine_outputs(large, large_sizes)
    assert all(np.array_equal(grown[n], expected[n].astype(grown[n].dtype)) for n in expected)
    assert np.array_equal(first["boxes"], engine_outputs(small, small_sizes)["boxes"])  # earlier results untouched
    padded = predictor.run_raw(*_inputs(1, 20, 40, seed=3))  # below the profile's minimum height: mean-padded
    assert padded["boxes"].shape == (1, 2, 4) and "set_input_shape images 1x3x32x40" in recorded
    predictor.close()
    assert cuda.device == {} and cuda.pinned == [] and recorded[-1].startswith("destroy_stream")
    with pytest.raises(PredictorError, match="closed"):
        predictor.run_raw(small, small_sizes)
    predictor.close()  # twice: nothing left to release


def test_a_failed_run_still_waits_for_its_queued_copies(monkeypatch, tmp_path):
    """The input copies are queued before TensorRT refuses to run: the stream is synchronized before the
    error leaves run_raw, so no copy is left to read a buffer a later run frees."""
    recorded: list[str] = []
    predictor, cuda = standin_predictor(monkeypatch, tmp_path, recorded)
    predictor.context.fail = True
    with pytest.raises(TensorRTError, match="failed to run the engine"):
        predictor.run_raw(*_inputs(1, 32, 32))
    assert recorded[-2:] == ["execute_async_v3 failed", f"synchronize {predictor.stream.handle}"]
    assert not cuda.queues[predictor.stream.handle]
    predictor.context.fail = False
    larger, sizes = _inputs(2, 64, 64)
    assert np.array_equal(predictor.run_raw(larger, sizes)["boxes"], engine_outputs(larger, sizes)["boxes"])


def test_build_without_a_cuda_library_exits_3(calls, tmp_path, monkeypatch, capsys):
    """TensorRT here but neither cuda-python nor pycuda: one line naming `pip install cuda-python`, exit 3."""
    from maskrcnn_deploy.runtime.backend.tensorrt.environment import require_cuda
    from maskrcnn_deploy.runtime.cli import main

    monkeypatch.setattr(engine_builder, "require_cuda", require_cuda)  # the real one, not the fixture's GPU
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(cuda_memory, "_API", [])
    assert main(["build", str(graph(tmp_path / "m.onnx")), "-o", str(tmp_path / "m.engine")]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith(cuda_memory.NOT_INSTALLED), err
    assert "pip install cuda-python" in err and "Builder" not in calls
