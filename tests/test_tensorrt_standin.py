"""`build_engine` and the TensorRT backend driven through a stand-in `tensorrt` module (TensorRT cannot
run here): the calls they make, in order, and the flags they set.

The stand-in records each TensorRT call as a string and answers with just enough for the code under test
to go on; its names follow tensorrt-stubs (mypy checks the real calls against those stubs in
test_tensorrt_python.py). What it cannot show is how a real TensorRT reacts: see docs/tensorrt.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
from onnx import TensorProto, helper

from maskrcnn_deploy.runtime.backend.tensorrt import engine_builder
from maskrcnn_deploy.runtime.backend.tensorrt import predictor as tensorrt_predictor
from maskrcnn_deploy.runtime.backend.tensorrt.build_plan import BuildOptions
from maskrcnn_deploy.runtime.backend.tensorrt.environment import (
    EngineMetadata,
    TensorRTError,
    read_metadata,
    sha256_file,
    write_metadata,
)

GPU = ("NVIDIA H100 80GB HBM3", "9.0")


def stand_in_tensorrt(version: str, calls: list[str]) -> SimpleNamespace:
    """A `tensorrt` module that records calls; builds succeed, deserializing returns None."""

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

        def deserialize_cuda_engine(self, data: bytes) -> None:
            calls.append("deserialize_cuda_engine")
            return None

    def init_libnvinfer_plugins(logger: Logger, namespace: str) -> bool:
        calls.append(f"init_libnvinfer_plugins {namespace!r}")
        return True

    return SimpleNamespace(
        __version__=version, Logger=Logger, Builder=Builder, OnnxParser=OnnxParser, Runtime=Runtime,
        init_libnvinfer_plugins=init_libnvinfer_plugins, get_plugin_registry=Registry,
        BuilderFlag=SimpleNamespace(FP16="FP16", INT8="INT8", TF32="TF32", OBEY_PRECISION_CONSTRAINTS="OBEY",
                                    PREFER_PRECISION_CONSTRAINTS="PREFER"),
        NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=0))


@pytest.fixture
def calls(monkeypatch):
    """The calls the stand-in TensorRT (version 10.14.1.48 unless a test says otherwise) receives."""
    recorded: list[str] = []
    use_tensorrt(monkeypatch, "10.14.1.48", recorded)
    return recorded


def use_tensorrt(monkeypatch, version: str, recorded: list[str]) -> None:
    trt = stand_in_tensorrt(version, recorded)
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
    helper.set_model_props(model, {"maskrcnn_deploy": '{"config": {}}'})
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
        onnx_metadata={"maskrcnn_deploy": json.dumps({"config": {}})}))
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
        build_seconds=1.0, onnx_metadata={"maskrcnn_deploy": json.dumps({"config": {}})}))
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
